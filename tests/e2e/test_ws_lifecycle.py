"""WebSocket sockets across server lifecycles: graceful shutdown and kill -9.

- Graceful: leaving the server's context while sockets are open closes every
  one of them with 4000 (reconnect), never an abrupt 1006.
- kill -9 (a real `collab serve` process): every op acknowledged before the
  kill is in the change log under its seq and client op id, nothing that was
  never sent is, and resending the unanswered ops afterwards applies each
  exactly once.
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed

from collab.protocol.server_frames import CloseCode
from tests.conftest import start_server
from tests.e2e.test_durability import open_collab_server
from tests.e2e.ws_helpers import (
    Closed, close_ws, connect_ws, create_op, new_project, new_user, open_ws, changes,
)
from tests.helpers import login


async def test_graceful_shutdown_closes_every_socket_with_4000(settings):
    async with trio.open_nursery() as nursery:
        async with start_server(settings) as running:
            async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
                alice, bob = await new_user(http), await new_user(http)
                pid = await new_project(http, alice, (bob, "member"))
            conns = [await connect_ws(nursery, running.base_url, user.token) for user in (alice, bob, alice)]
            idle, watching, writing = conns
            await watching.subscribe(pid)
            await writing.subscribe(pid)
            await watching.send({"type": "presence", "project_id": pid, "state": {}})
            ack = await writing.op(pid, create_op("before shutdown"), "before-shutdown")
            assert ack["type"] == "ack"
            for conn in conns:
                await conn.ping()
            # Leaving the block stops the server with these sockets open.
        codes = [await conn.closed() for conn in conns]
        for conn in conns:
            await close_ws(conn)
        nursery.cancel_scope.cancel()
    assert codes == [CloseCode.GOING_AWAY] * len(conns), [(c.close_code, c.close_reason) for c in conns]


async def test_graceful_shutdown_also_closes_a_socket_still_waiting_to_authenticate(settings):
    """A socket that has not sent its auth frame yet is open too: it gets 4000, not a cut."""
    async with trio.open_nursery() as nursery:
        async with start_server(settings.replace(ws_auth_timeout_s=30.0)) as running:
            async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
                alice = await new_user(http)
            ready = await connect_ws(nursery, running.base_url, alice.token)
            pending = await connect_ws(nursery, running.base_url, None)
            await ready.ping()
        codes = (await ready.closed(), await pending.closed())
        for conn in (ready, pending):
            await close_ws(conn)
        nursery.cancel_scope.cancel()
    assert codes[0] == CloseCode.GOING_AWAY
    assert codes[1] == CloseCode.GOING_AWAY, (codes, pending.close_reason)


OPS = 50
KILL_AFTER_ACKS = 20
WINDOW = 6


@pytest.mark.slow
async def test_kill_9_mid_stream_loses_no_acknowledged_op_and_invents_none(database_url: str, tmp_path: Path) -> None:
    sent: list[str] = []          # every op id handed to the socket (whether or not it arrived)
    acks: dict[str, int] = {}     # op id -> acknowledged seq
    rejected: dict[str, dict] = {}
    titles = {f"kill9-{i}": f"op {i}" for i in range(OPS)}

    async with open_collab_server(database_url, tmp_path) as first:
        async with httpx.AsyncClient(base_url=first.base_url, timeout=10) as http:
            alice = await new_user(http)
            pid = await new_project(http, alice, name="Crash")
        with trio.fail_after(40):
            async with open_ws(first.base_url, alice.token) as conn:
                pending = list(titles)
                try:
                    while pending or len(sent) > len(acks) + len(rejected):
                        while pending and len(sent) - len(acks) - len(rejected) < WINDOW:
                            op_id = pending.pop(0)
                            sent.append(op_id)
                            await conn.send_op(pid, create_op(titles[op_id]), op_id)
                        reply = await conn.expect(lambda f: f["type"] in ("ack", "error") and f.get("id") in titles)
                        if reply["type"] == "ack":
                            acks[reply["id"]] = reply["seq"]
                        else:
                            rejected[reply["id"]] = reply
                        if len(acks) == KILL_AFTER_ACKS:
                            first.kill()  # mid-stream: ops in flight, nothing flushed, no goodbye
                except (Closed, ConnectionClosed):
                    pass
        with trio.fail_after(10):
            await first.process.wait()
        assert first.process.returncode == -signal.SIGKILL
    assert len(acks) >= KILL_AFTER_ACKS and not rejected, rejected
    assert len(sent) < OPS, "the kill came too late to be mid-stream"

    async with open_collab_server(database_url, tmp_path) as second:
        async with httpx.AsyncClient(base_url=second.base_url, timeout=10) as http:
            alice.token = (await login(http, alice.email))["access_token"]
            log = await changes(http, alice, pid)
            seqs = [e["seq"] for e in log]
            assert seqs == list(range(1, len(log) + 1)), seqs  # gap-free after the crash
            by_op = {e["client_op_id"]: e for e in log if e["client_op_id"] is not None}
            assert len(by_op) == len([e for e in log if e["client_op_id"] is not None])  # each id once
            # Every acknowledged op survived, under the seq its ack named.
            for op_id, seq in acks.items():
                assert op_id in by_op, f"acknowledged op {op_id} (seq {seq}) is gone after kill -9"
                assert by_op[op_id]["seq"] == seq and by_op[op_id]["kind"] == "task.created"
                assert by_op[op_id]["data"]["task"]["title"] == titles[op_id]
            # Nothing was invented: every op id in the log was really sent.
            assert set(by_op) <= set(sent), set(by_op) - set(sent)

            # The client resends what it never heard back about, then the rest: each applies once.
            async with open_ws(second.base_url, alice.token) as conn:
                for op_id in titles:
                    if op_id in acks:
                        continue
                    reply = await conn.op(pid, create_op(titles[op_id]), op_id)
                    assert reply["type"] == "ack", reply
                    if op_id in by_op:  # committed before the kill, ack lost with the process
                        assert reply.get("duplicate") is True and reply["seq"] == by_op[op_id]["seq"], reply
                    else:
                        assert "duplicate" not in reply, reply
            listed = await http.get("/api/v1/tasks", headers=alice.auth, params={"project_id": pid, "limit": 100})
            assert listed.status_code == 200
            assert sorted(t["title"] for t in listed.json()["data"]) == sorted(titles.values())
            final = await changes(http, alice, pid)
            assert sorted(e["client_op_id"] for e in final if e["client_op_id"]) == sorted(titles)
