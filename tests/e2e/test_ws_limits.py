"""WebSocket limits, end to end: slow consumers, message rate, sockets per user, idle sockets.

Each test starts its own server with the limit under test turned down.
(Too many in-flight ops is hard to provoke from outside and is not covered here.)
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx
import pytest
import trio
from trio_websocket import wrap_client_stream

from collab.http.ws_endpoint import MAX_RATE_STRIKES
from collab.protocol.server_frames import CloseCode
from tests.conftest import start_server
from tests.e2e.ws_helpers import (
    Closed, Conn, close_ws, connect_ws, create_op, new_project, new_user, open_ws, project_seq, ws_url,
)

BIG = "x" * 16_000  # a large description makes each event ~16 kB, so socket buffers fill quickly


async def _connect_unread(nursery: trio.Nursery, base_url: str, token: str) -> Conn:
    """A socket with a tiny kernel receive buffer, and a client that buffers one
    message: once the test stops reading, the server's sends block almost at once."""
    parts = urlsplit(ws_url(base_url))
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: caps the TCP window
    await sock.connect((parts.hostname, parts.port))
    stream = trio.SocketStream(sock)
    ws = await wrap_client_stream(nursery, stream, parts.netloc, parts.path,
                                  extra_headers=[(b"Authorization", f"Bearer {token}".encode())], message_queue_size=1)
    conn = Conn(ws)
    await conn.expect("welcome")
    return conn


async def test_a_subscriber_that_never_reads_gets_resync_then_close_4001(settings):
    limits = settings.replace(ws_max_queued_events=8, ws_messages_per_s=100_000.0, ws_message_burst=100_000)
    async with start_server(limits) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
            alice = await new_user(http)
            projects = [await new_project(http, alice, name=f"Busy {k}") for k in range(3)]
            async with trio.open_nursery() as nursery:
                slow = await _connect_unread(nursery, running.base_url, alice.token)
                base = {pid: (await slow.subscribe(pid))["seq"] for pid in projects}
                # From here on the slow socket is not read until the producer is done.
                async with open_ws(running.base_url, alice.token) as producer:
                    rounds, in_flight = 100, 30
                    for start in range(0, rounds, in_flight // 3):
                        op_ids = []
                        for i in range(start, min(start + in_flight // 3, rounds)):
                            for k, pid in enumerate(projects):
                                op_id = f"big-{k}-{i}"
                                op_ids.append(op_id)
                                await producer.send_op(pid, create_op(f"big {k} {i}", description=BIG), op_id)
                        for op_id in op_ids:
                            ack = await producer.expect(
                                lambda f, i=op_id: f.get("id") == i and f["type"] in ("ack", "error")
                            )
                            assert ack["type"] == "ack", ack
                final = {pid: await project_seq(http, alice, pid) for pid in projects}
                assert all(final[pid] == base[pid] + rounds for pid in projects)

                # Now read what the slow socket got: resyncs, then the slow-consumer close.
                code = await slow.closed(timeout=20)
                await close_ws(slow)
                nursery.cancel_scope.cancel()

        resyncs = [f for f in slow.seen if f["type"] == "resync"]
        assert resyncs, [f["type"] for f in slow.seen][-20:]
        assert code == CloseCode.SLOW_CONSUMER, (code, slow.close_reason)
        for resync in resyncs:
            pid = resync["project_id"]
            assert pid in projects
            got = [
                f["seq"] for f in slow.seen[:slow.seen.index(resync)] if f["type"] == "event" and f["project_id"] == pid
            ]
            # What arrived is gap-free, and `since` is exactly the last event that arrived:
            # resubscribing with it loses nothing.
            assert got == list(range(base[pid] + 1, base[pid] + 1 + len(got)))
            assert resync["since"] == (got[-1] if got else base[pid]), (resync, got[-5:])
            later = [
                f for f in slow.seen[slow.seen.index(resync) + 1:]
                if f.get("project_id") == pid and f["type"] == "event"
            ]
            assert later == [], "events after a resync, without a new subscribe"
        # Resume works from the resync point.
        first = resyncs[0]
        async with open_ws(running.base_url, alice.token) as again:
            sub = await again.subscribe(first["project_id"], since=first["since"])
            caught_up = [e["seq"] for e in sub.get("events", [])] if "events" in sub else None
            if caught_up is not None:
                assert caught_up == list(range(first["since"] + 1, final[first["project_id"]] + 1))
            else:
                assert sub["reset"] is True  # further back than the catch-up window: a snapshot


async def test_message_rate_limit_answers_rate_limited_and_keeps_the_socket(settings):
    async with start_server(settings.replace(ws_messages_per_s=5.0, ws_message_burst=5)) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
            alice = await new_user(http)
        async with open_ws(running.base_url, alice.token) as conn:
            sent = 15
            for i in range(sent):  # well under MAX_RATE_STRIKES
                await conn.send({"type": "ping", "id": f"burst-{i}"})
            replies = [await conn.recv() for _ in range(sent)]
            pongs = [r for r in replies if r["type"] == "pong"]
            limited = [r for r in replies if r["type"] == "error"]
            assert len(pongs) + len(limited) == sent, replies
            assert len(pongs) >= 5 and limited, replies  # the burst passes, the excess does not
            assert pongs[:5] == [{"type": "pong", "id": f"burst-{i}"} for i in range(5)]
            for error in limited:
                assert error["code"] == "rate_limited" and error["retryable"] is True, error
            # The socket stays open and usable once the bucket refills (5 per second).
            with trio.fail_after(10):
                while True:
                    await conn.send({"type": "ping", "id": "later"})
                    reply = await conn.recv()
                    if reply["type"] == "pong":
                        assert reply["id"] == "later"
                        break
                    assert reply["code"] == "rate_limited", reply
                    await trio.sleep(0.2)  # one token's worth of refill
            assert conn.close_code is None


async def test_persistent_flooding_closes_4003_and_the_connection_ends(settings):
    """After the 4003 close the server must also end the TCP connection.

    The flood leaves more unread messages on the server than hypercorn's app
    queue holds (max_app_queue_size = 10): the server must still drain them and
    finish the close handshake, or the connection (and its tasks) leaks until
    the server stops.
    """
    # 0.1 messages per second: no token comes back during the test.
    async with start_server(settings.replace(ws_messages_per_s=0.1, ws_message_burst=1)) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
            alice = await new_user(http)
        with trio.move_on_after(10) as teardown:
            async with open_ws(running.base_url, alice.token, how="header") as conn:
                assert (await conn.ping("only-one"))["id"] == "only-one"
                for i in range(MAX_RATE_STRIKES + 20):
                    try:
                        await conn.send({"type": "ping", "id": f"flood-{i}"})
                    except Exception:  # noqa: BLE001 - closed under our feet: that is the point
                        break
                assert await conn.closed() == CloseCode.RATE_LIMITED
            # Leaving open_ws waits for the server to close the TCP connection (RFC 6455 §7.1.1).
        limited = [f for f in conn.seen if f["type"] == "error"]
        assert len(limited) == MAX_RATE_STRIKES and all(f["code"] == "rate_limited" for f in limited)
        assert not any(f["type"] == "pong" and f["id"].startswith("flood-") for f in conn.seen)
        assert not teardown.cancelled_caught, (
            "the server sent close 4003 but never closed the TCP connection: its handler returned without "
            "draining the client's queued messages, so hypercorn blocks forever on its full app queue"
        )


async def test_a_third_socket_of_a_user_closes_4503(settings):
    async with start_server(settings.replace(ws_max_sockets_per_user=2)) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
            alice = await new_user(http)
        async with open_ws(running.base_url, alice.token) as one, \
                open_ws(running.base_url, alice.token, how="header") as two:
            async with open_ws(running.base_url) as three:
                await three.send({"type": "auth", "token": alice.token})
                assert await three.closed() == CloseCode.TOO_MANY_SOCKETS
            assert not any(f["type"] == "welcome" for f in three.seen)
            # The first two are unaffected.
            assert (await one.ping())["type"] == "pong" and (await two.ping())["type"] == "pong"


async def test_another_users_sockets_do_not_count(settings):
    how = "header"
    async with start_server(settings.replace(ws_max_sockets_per_user=1)) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
            alice, bob = await new_user(http), await new_user(http)
        async with open_ws(running.base_url, alice.token, how=how) as a:
            async with open_ws(running.base_url, bob.token, how=how) as b:
                assert (await b.ping())["type"] == "pong"
            with pytest.raises(Closed) as refused:
                async with open_ws(running.base_url, alice.token, how=how):
                    pass
            assert refused.value.code == CloseCode.TOO_MANY_SOCKETS
            assert (await a.ping())["type"] == "pong"


async def test_an_idle_socket_closes_4002(settings):
    async with start_server(settings.replace(ws_idle_timeout_s=1.0)) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
            alice = await new_user(http)
            pid = await new_project(http, alice)
        async with open_ws(running.base_url, alice.token) as conn:
            assert conn.seen[0]["limits"]["idle_timeout_s"] == 1.0
            await conn.subscribe(pid)  # being subscribed does not count as activity
            assert await conn.closed() == CloseCode.IDLE_TIMEOUT


async def test_sockets_per_user_holds_when_sockets_open_at_the_same_time(settings):
    """The limit is a limit even for sockets that authenticate concurrently."""
    limit, attempts = 2, 8
    async with start_server(settings.replace(ws_max_sockets_per_user=limit)) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
            alice = await new_user(http)
        async with trio.open_nursery() as nursery:
            conns = [await connect_ws(nursery, running.base_url, None) for _ in range(attempts)]
            async with trio.open_nursery() as senders:
                for conn in conns:
                    senders.start_soon(conn.send, {"type": "auth", "token": alice.token})
            outcomes = []
            for conn in conns:
                try:
                    first = await conn.recv()
                    outcomes.append(first["type"])
                except Closed as closed:
                    outcomes.append(closed.code)
            for conn in conns:
                await close_ws(conn)
            nursery.cancel_scope.cancel()
    assert outcomes.count("welcome") == limit, outcomes
    assert outcomes.count(CloseCode.TOO_MANY_SOCKETS) == attempts - limit, outcomes
