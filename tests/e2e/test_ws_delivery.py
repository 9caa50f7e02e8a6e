"""Delivery guarantees over the WebSocket (DESIGN.md §5): total order, ack after
commit, exactly-once ops across reconnects and restarts, resume from the change
log, one stream for REST and WebSocket, members only, presence, logout.

Barriers, not sleeps: a ``ping`` is answered after everything already queued
for the socket, and the project actor publishes a commit's events before the
caller (REST or op) resumes, so "write, then ping" proves what a socket got.
"""

from __future__ import annotations

import httpx
import trio

from collab.protocol.server_frames import CloseCode
from tests.conftest import start_server
from tests.e2e.ws_helpers import (
    Conn, changes, create_op, new_project, new_user, open_ws, project_seq, rest_task, task_titles, upgrade_refused,
    ws_url,
)
from tests.helpers import bearer, login


def _same_event(live: dict, logged: dict) -> None:
    """A live/catch-up ``event`` frame and the REST change-log row of the same seq agree."""
    assert live["seq"] == logged["seq"]
    assert live["kind"] == logged["kind"], (live, logged)
    assert live["actor_id"] == logged["actor_id"], (live, logged)
    assert live["client_op_id"] == logged["client_op_id"], (live, logged)
    assert live["data"] == logged["data"], (live, logged)


# --- order ---------------------------------------------------------------------------------------

async def test_two_clients_see_every_event_in_the_same_order_and_acks_carry_the_seq(server, client):
    alice, bob = await new_user(client), await new_user(client)
    pid = await new_project(client, alice, (bob, "member"))
    per_client = 25
    async with open_ws(server.base_url, alice.token) as a, open_ws(server.base_url, bob.token) as b:
        base = (await a.subscribe(pid))["seq"]
        assert (await b.subscribe(pid))["seq"] == base

        sent: dict[str, list[str]] = {"a": [], "b": []}

        async def pump(conn: Conn, name: str) -> None:
            for i in range(per_client):
                op_id = f"{name}-{i}"
                sent[name].append(op_id)
                await conn.send_op(pid, create_op(f"{name} task {i}"), op_id)
                await trio.lowlevel.checkpoint()  # let the other client interleave

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, a, "a")
            nursery.start_soon(pump, b, "b")

        acks: dict[str, dict] = {}
        for conn, name in ((a, "a"), (b, "b")):
            for op_id in sent[name]:
                reply = await conn.expect(lambda f, i=op_id: f.get("id") == i and f["type"] in ("ack", "error"))
                assert reply["type"] == "ack", reply
                acks[op_id] = reply
        last = base + 2 * per_client
        assert max(ack["seq"] for ack in acks.values()) == last
        await a.events_until(pid, last)
        await b.events_until(pid, last)
        await a.ping()  # anything extra (a duplicate, say) would arrive before these pongs
        await b.ping()
        seen_a, seen_b = a.events(pid), b.events(pid)

    assert seen_a == seen_b  # same events, same order, byte for byte
    assert [e["seq"] for e in seen_a] == list(range(base + 1, last + 1))  # no gap, no duplicate
    by_op = {e["client_op_id"]: e for e in seen_a}
    assert set(by_op) == set(acks)
    for op_id, ack in acks.items():
        event = by_op[op_id]
        assert event["seq"] == ack["seq"], (op_id, ack, event)
        assert event["kind"] == "task.created"
        assert event["actor_id"] == (alice.id if op_id.startswith("a-") else bob.id)
        assert event["data"]["task"]["id"] == ack["result"]["id"]
        assert event["data"]["task"]["title"] == ack["result"]["title"]
        assert "duplicate" not in ack
    # One client's ops apply in the order it sent them.
    for name in ("a", "b"):
        seqs = [acks[op_id]["seq"] for op_id in sent[name]]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # The live stream is the change log.
    logged = await changes(client, alice, pid, since=base)
    assert len(logged) == len(seen_a)
    for live, row in zip(seen_a, logged, strict=True):
        _same_event(live, row)


async def test_rest_writes_reach_websocket_subscribers(server, client):
    alice, bob = await new_user(client), await new_user(client)
    pid = await new_project(client, alice, (bob, "member"))
    async with open_ws(server.base_url, bob.token) as conn:
        base = (await conn.subscribe(pid))["seq"]
        task = await rest_task(client, alice, pid, "over REST", priority="high")
        created = await conn.expect("event", project_id=pid, seq=base + 1)
        assert created["kind"] == "task.created" and created["actor_id"] == alice.id
        assert created["client_op_id"] is None
        assert task["id"] in str(created["data"]) and task["version"] == base + 1

        updated = await client.put(f"/api/v1/tasks/{task['id']}", headers=alice.auth, json={"title": "renamed"})
        assert updated.status_code == 200, updated.text
        event = await conn.expect("event", project_id=pid, seq=base + 2)
        assert event["kind"] == "task.updated" and "renamed" in str(event["data"])
        assert updated.json()["version"] == base + 2

        moved = await client.put(f"/api/v1/tasks/{task['id']}/status", headers=alice.auth, json={"status": "done"})
        assert moved.status_code == 200, moved.text
        await conn.expect("event", project_id=pid, seq=base + 3)
        await conn.ping()
    assert [e["seq"] for e in conn.events(pid)] == [base + 1, base + 2, base + 3]
    for live, row in zip(conn.events(pid), await changes(client, alice, pid, since=base), strict=True):
        _same_event(live, row)


# --- resume ----------------------------------------------------------------------------------------

async def test_resume_with_since_gets_exactly_the_missed_events_in_order(server, client):
    alice = await new_user(client)
    pid = await new_project(client, alice)
    async with open_ws(server.base_url, alice.token) as conn:
        base = (await conn.subscribe(pid))["seq"]
        tasks = [await rest_task(client, alice, pid, f"seen {i}") for i in range(3)]
        await conn.events_until(pid, base + 3)
        last_seen = conn.events(pid)[-1]["seq"]
    assert last_seen == base + 3

    # Offline: four more changes.
    await rest_task(client, alice, pid, "missed 1")
    await rest_task(client, alice, pid, "missed 2")
    renamed = await client.put(f"/api/v1/tasks/{tasks[0]['id']}", headers=alice.auth, json={"title": "missed 3"})
    assert renamed.status_code == 200
    deleted = await client.delete(f"/api/v1/tasks/{tasks[1]['id']}", headers=alice.auth)
    assert deleted.status_code == 204
    now = await project_seq(client, alice, pid)
    assert now == last_seen + 4

    async with open_ws(server.base_url, alice.token) as conn:
        sub = await conn.subscribe(pid, since=last_seen)
        assert sub["type"] == "subscribed" and sub["seq"] == now
        assert "snapshot" not in sub
        missed = sub["events"]
        assert [e["seq"] for e in missed] == list(range(last_seen + 1, now + 1))
        assert [e["kind"] for e in missed] == ["task.created", "task.created", "task.updated", "task.deleted"]
        assert all(e["type"] == "event" and e["project_id"] == pid for e in missed)
        for caught_up, row in zip(missed, await changes(client, alice, pid, since=last_seen), strict=True):
            _same_event(caught_up, row)
        # Live events continue right after the catch-up, no gap, no repeat.
        await rest_task(client, alice, pid, "live again")
        await conn.expect("event", project_id=pid, seq=now + 1)
        await conn.ping()
        assert [e["seq"] for e in conn.events(pid)] == [now + 1]

        # Resubscribing at the current seq: nothing missed.
        again = await conn.subscribe(pid, since=now + 1)
        assert again["events"] == [] and again["seq"] == now + 1


async def test_since_older_than_the_catch_up_window_gets_a_snapshot_with_reset(settings):
    async with start_server(settings.replace(ws_max_catchup_events=3)) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
            alice = await new_user(http)
            pid = await new_project(http, alice)
            start = await project_seq(http, alice, pid)
            for i in range(5):
                await rest_task(http, alice, pid, f"t{i}")
            now = start + 5
            async with open_ws(running.base_url, alice.token) as conn:
                old = await conn.subscribe(pid, since=start)
                assert old["type"] == "subscribed" and old["reset"] is True and "events" not in old
                assert old["seq"] == now and old["snapshot"]["project"]["seq"] == now
                assert sorted(t["title"] for t in old["snapshot"]["tasks"]) == [f"t{i}" for i in range(5)]

                edge = await conn.subscribe(pid, since=now - 3)  # exactly the window: catch-up
                assert [e["seq"] for e in edge["events"]] == [now - 2, now - 1, now] and "snapshot" not in edge

                ahead = await conn.subscribe(pid, since=now + 10)  # a seq from the future: start over
                assert ahead["reset"] is True and ahead["seq"] == now and "snapshot" in ahead

                # Still subscribed and live after all that.
                await rest_task(http, alice, pid, "live")
                await conn.expect("event", project_id=pid, seq=now + 1)


# --- exactly once -------------------------------------------------------------------------------------

async def test_a_resent_op_after_a_reconnect_is_acknowledged_with_its_original_seq(server, client):
    alice = await new_user(client)
    pid = await new_project(client, alice)
    async with open_ws(server.base_url, alice.token) as conn:
        first = await conn.op(pid, create_op("exactly once"), "create-once")
    assert first["type"] == "ack" and "duplicate" not in first
    async with open_ws(server.base_url, alice.token) as conn:
        await conn.subscribe(pid)
        again = await conn.op(pid, create_op("exactly once"), "create-once")
        assert again["type"] == "ack", again
        assert again["seq"] == first["seq"] and again.get("duplicate") is True
        assert again["result"]["id"] == first["result"]["id"]
        await conn.ping()
        assert conn.events(pid) == []  # nothing new was committed or broadcast
    assert await task_titles(client, alice, pid) == ["exactly once"]
    logged = await changes(client, alice, pid)
    assert [e["client_op_id"] for e in logged].count("create-once") == 1


async def test_an_op_resent_after_an_unread_ack_is_applied_once(server, client):
    """The client sent an op and lost the connection before reading any answer."""
    alice = await new_user(client)
    pid = await new_project(client, alice)
    async with open_ws(server.base_url, alice.token) as conn:
        await conn.send_op(pid, create_op("maybe applied"), "lost-ack")
    async with open_ws(server.base_url, alice.token) as conn:
        reply = await conn.op(pid, create_op("maybe applied"), "lost-ack")
        assert reply["type"] == "ack", reply
    assert await task_titles(client, alice, pid) == ["maybe applied"]
    logged = await changes(client, alice, pid)
    assert [e["seq"] for e in logged if e["client_op_id"] == "lost-ack"] == [reply["seq"]]


async def test_a_resent_op_after_a_server_restart_is_acknowledged_with_its_original_seq(settings):
    async with start_server(settings) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
            alice = await new_user(http)
            pid = await new_project(http, alice)
        async with open_ws(running.base_url, alice.token) as conn:
            first = await conn.op(pid, create_op("survives restarts"), "restart-op")
            other = await conn.op(pid, create_op("another"), "restart-other")
        assert first["type"] == "ack" and other["type"] == "ack"

    async with start_server(settings) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
            tokens = await login(http, alice.email)
            alice.token = tokens["access_token"]
            async with open_ws(running.base_url, alice.token) as conn:
                again = await conn.op(pid, create_op("survives restarts"), "restart-op")
                assert again["type"] == "ack", again
                assert again["seq"] == first["seq"] and again.get("duplicate") is True
                assert again["result"]["id"] == first["result"]["id"]
                fresh = await conn.op(pid, create_op("new after restart"), "restart-new")
                assert fresh["type"] == "ack" and fresh["seq"] == other["seq"] + 1
            assert sorted(await task_titles(http, alice, pid)) == ["another", "new after restart", "survives restarts"]
            logged = await changes(http, alice, pid)
            assert [e["client_op_id"] for e in logged].count("restart-op") == 1


# --- members only ----------------------------------------------------------------------------------------

async def test_non_members_receive_nothing_of_a_project(server, client):
    users = [await new_user(client) for _ in range(3)]
    u1, u2, u3 = users
    projects = [
        await new_project(client, u1, (u2, "member"), name="P0"),   # u1, u2
        await new_project(client, u2, (u3, "manager"), name="P1"),  # u2, u3
        await new_project(client, u3, name="P2"),                   # u3
    ]
    members = {projects[0]: {u1.id, u2.id}, projects[1]: {u2.id, u3.id}, projects[2]: {u3.id}}
    secrets: dict[str, set[str]] = {pid: {pid} for pid in projects}  # strings that identify each project

    async with open_ws(server.base_url, u1.token) as c1, open_ws(server.base_url, u2.token) as c2, \
            open_ws(server.base_url, u3.token) as c3:
        conns = {u1.id: c1, u2.id: c2, u3.id: c3}
        start: dict[str, int] = {}
        for user in users:
            conn = conns[user.id]
            for pid in projects:
                sub = await conn.subscribe(pid)
                if user.id in members[pid]:
                    assert sub["type"] == "subscribed", sub
                    assert start.setdefault(pid, sub["seq"]) == sub["seq"]
                    await conn.send({"type": "presence", "project_id": pid, "state": {}})
                else:
                    assert sub["type"] == "error" and sub["code"] == "forbidden", sub
                    await conn.send({"type": "presence", "project_id": pid, "state": {}})
                    refused = await conn.expect("error")
                    assert refused["code"] == "not_found", refused
        # Everyone writes everywhere: over the socket and over REST.
        for user in users:
            conn = conns[user.id]
            for k, pid in enumerate(projects):
                op_id = f"{user.username}-P{k}-op"
                reply = await conn.op(pid, create_op(f"by {user.username} in P{k}"), op_id)
                rest = await client.post("/api/v1/tasks", headers=user.auth,
                                         json={"title": f"rest by {user.username} in P{k}", "project_id": pid})
                if user.id in members[pid]:
                    assert reply["type"] == "ack" and rest.status_code == 201, (reply, rest.text)
                    secrets[pid] |= {op_id, reply["result"]["id"], rest.json()["id"]}
                else:
                    assert reply["type"] == "error" and reply["code"] == "forbidden", reply
                    assert rest.status_code == 403, rest.text
        # A task assigned inside P1 (notifications go to the assignee only).
        assigned = await rest_task(client, u2, projects[1], "assigned", assignee_id=u3.id)
        secrets[projects[1]].add(assigned["id"])
        final = {pid: await project_seq(client, owner, pid) for pid, owner in zip(projects, users, strict=True)}
        for user in users:
            conn = conns[user.id]
            for pid in projects:
                if user.id in members[pid]:
                    await conn.events_until(pid, final[pid])
            await conn.ping()
        for user in users:
            conn = conns[user.id]
            for pid in projects:
                if user.id in members[pid]:
                    continue
                for message in conn.messages:
                    for secret in secrets[pid]:
                        assert secret not in message, (user.username, pid, secret, message[:300])
            # And each member saw its projects' whole streams.
            for pid in projects:
                if user.id in members[pid]:
                    assert [e["seq"] for e in conn.events(pid)] == list(range(start[pid] + 1, final[pid] + 1))


async def test_a_removed_member_is_unsubscribed_at_once_and_receives_nothing_more(server, client):
    alice, bob = await new_user(client), await new_user(client)
    pid = await new_project(client, alice, (bob, "member"))
    async with open_ws(server.base_url, alice.token) as a, open_ws(server.base_url, bob.token) as b:
        await a.subscribe(pid)
        await b.subscribe(pid)
        await b.send({"type": "presence", "project_id": pid, "state": {}})
        await a.expect("presence", project_id=pid)
        removed = await client.delete(f"/api/v1/projects/{pid}/members/{bob.id}", headers=alice.auth)
        assert removed.status_code == 204, removed.text
        ended = await b.expect("unsubscribed", project_id=pid)
        assert ended["reason"] == "removed"
        left = await a.expect("presence", project_id=pid)
        assert left.get("left", {}).get("user_id") == bob.id, left

        # Alice keeps writing, over REST and over the socket.
        secret_task = await rest_task(client, alice, pid, "after removal")
        ack = await a.op(pid, create_op("after removal too"), "after-removal")
        assert ack["type"] == "ack"
        await a.expect("event", project_id=pid, seq=ack["seq"])
        await b.ping()  # everything queued for bob arrives before this pong
        after = b.seen[b.seen.index(ended) + 1:]
        assert not any(f.get("project_id") == pid for f in after if f["type"] != "error"), after
        assert not any(secret_task["id"] in m or "after-removal" in m for m in b.messages)
        removal = [e for e in b.events(pid) if e["kind"] == "member.removed"]
        assert removal and b.seen.index(removal[0]) < b.seen.index(ended)  # told why, then unsubscribed

        again = await b.subscribe(pid)
        assert again["type"] == "error" and again["code"] == "forbidden", again
        denied = await b.op(pid, create_op("sneaky"), "sneaky")
        assert denied["type"] == "error" and denied["code"] == "forbidden", denied
    assert "sneaky" not in await task_titles(client, alice, pid)


async def test_a_demoted_member_gets_forbidden_on_the_next_op(server, client):
    alice, bob = await new_user(client), await new_user(client)
    pid = await new_project(client, alice, (bob, "member"))
    async with open_ws(server.base_url, bob.token) as b:
        await b.subscribe(pid)
        before = await b.op(pid, create_op("as a member"), "as-member")
        assert before["type"] == "ack", before
        demoted = await client.put(
            f"/api/v1/projects/{pid}/members/{bob.id}", headers=alice.auth, json={"role": "viewer"},
        )
        assert demoted.status_code == 200, demoted.text
        change = await b.expect(lambda f: f["type"] == "event" and f["kind"].startswith("member."))
        assert change["kind"] == "member.updated" and bob.id in str(change["data"])
        after = await b.op(pid, create_op("as a viewer"), "as-viewer")
        assert after["type"] == "error" and after["code"] == "forbidden", after
        assert after["retryable"] is False
        # A viewer still reads the project live.
        task = await rest_task(client, alice, pid, "still visible")
        event = await b.expect("event", project_id=pid, seq=task["version"])
        assert event["kind"] == "task.created" and event["data"]["task"]["id"] == task["id"]
    assert sorted(await task_titles(client, alice, pid)) == ["as a member", "still visible"]


# --- presence ------------------------------------------------------------------------------------------------

async def test_presence_joined_updated_and_left_reach_the_other_subscribers(server, client):
    alice, bob, carol = await new_user(client), await new_user(client), await new_user(client)
    pid = await new_project(client, alice, (bob, "member"), (carol, "viewer"))
    task = await rest_task(client, alice, pid, "looked at")
    async with open_ws(server.base_url, bob.token) as b:
        await b.subscribe(pid)
        async with open_ws(server.base_url, alice.token) as a:
            alice_conn_id = a.seen[0]["session_id"]
            await a.subscribe(pid)
            await a.send({"type": "presence", "project_id": pid, "state": {"viewing": task["id"]}})
            joined = await b.expect("presence", project_id=pid)
            assert joined["joined"] == {
                "user_id": alice.id, "username": alice.username, "connection_id": alice_conn_id,
                "state": {"viewing": task["id"], "editing": None},
            }
            await a.send(
                {"type": "presence", "project_id": pid, "state": {"viewing": task["id"], "editing": task["id"]}}
            )
            updated = await b.expect("presence", project_id=pid)
            assert updated["updated"]["connection_id"] == alice_conn_id
            assert updated["updated"]["state"] == {"viewing": task["id"], "editing": task["id"]}

            async with open_ws(server.base_url, carol.token) as c:
                sub = await c.subscribe(pid)
                assert [p["connection_id"] for p in sub["presence"]] == [alice_conn_id]
                assert sub["presence"][0]["state"]["editing"] == task["id"]
        # Alice's socket closed: the others are told.
        left = await b.expect("presence", project_id=pid)
        assert left["left"]["connection_id"] == alice_conn_id and left["left"]["user_id"] == alice.id
        async with open_ws(server.base_url, carol.token) as c:
            assert (await c.subscribe(pid))["presence"] == []


async def test_presence_requires_a_subscription(server, client):
    alice = await new_user(client)
    pid = await new_project(client, alice)
    async with open_ws(server.base_url, alice.token) as conn:
        await conn.send({"type": "presence", "project_id": pid, "state": {}})
        error = await conn.expect("error")
        assert error["code"] == "not_found"
        await conn.ping()


# --- logout ---------------------------------------------------------------------------------------------------

async def test_logout_closes_the_sockets_of_that_login_with_4501(server, client):
    alice = await new_user(client)
    other_login = (await login(client, alice.email))["access_token"]
    async with open_ws(server.base_url, alice.token, how="header") as s1, \
            open_ws(server.base_url, alice.token, how="frame") as s2, \
            open_ws(server.base_url, other_login, how="query") as s3:
        out = await client.post("/api/v1/auth/logout", headers=alice.auth)
        assert out.status_code == 204, out.text
        assert await s1.closed() == CloseCode.UNAUTHENTICATED
        assert await s2.closed() == CloseCode.UNAUTHENTICATED
        assert (await s3.ping())["type"] == "pong"  # another login of the same user stays
    # The ended login cannot open a socket again.
    assert await upgrade_refused(ws_url(server.base_url), [(b"Authorization", f"Bearer {alice.token}".encode())]) == 403
    assert (await client.get("/api/v1/users/me", headers=bearer(other_login))).status_code == 200
