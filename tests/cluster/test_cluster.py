"""Scale-out: several real nodes on this machine, one PostgreSQL, one Redis (issue 8).

Each test starts its nodes as separate `collab serve` processes with a short
node lease, so takeovers happen within seconds.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.cluster.harness import LEASE_TTL_S, PrivateRedis, open_nodes, pause, resume
from tests.e2e.ws_helpers import Conn, User, changes, create_op, new_project, new_user, open_ws, project_seq

pytestmark = [pytest.mark.slow, pytest.mark.deadline(180)]

TAKEOVER_BUDGET_S = LEASE_TTL_S + LEASE_TTL_S / 3 + 3  # lease expiry + one renewal period + a retry


def _clients(nodes: list[Any]) -> list[httpx.AsyncClient]:
    return [httpx.AsyncClient(base_url=n.base_url, timeout=20) for n in nodes]


async def _as(user: User, http: httpx.AsyncClient) -> User:
    """The same user with a token issued by another node (any node's token works everywhere)."""
    tokens = (await http.post("/api/v1/auth/login", json={"email": user.email,
                                                         "password": "correct horse battery staple"})).json()
    user.token = tokens["access_token"]
    return user


async def _wait_for_seq(conn: Conn, project_id: str, seq: int, timeout: float = 20) -> list[dict[str, Any]]:
    await conn.expect("event", timeout, project_id=project_id, seq=seq)
    return conn.events(project_id)


def _contiguous(events: list[dict[str, Any]], start: int, end: int) -> list[dict[str, Any]]:
    """The events from start to end, each once, in order (duplicates from a catch-up are allowed)."""
    seen: dict[int, dict[str, Any]] = {}
    last = start - 1
    for e in events:
        if e["seq"] <= last:
            continue
        assert e["seq"] == last + 1, f"gap: {last} -> {e['seq']}"
        seen[e["seq"]] = e
        last = e["seq"]
    assert last == end, f"stopped at {last}, expected {end}"
    return [seen[s] for s in range(start, end + 1)]


async def test_three_nodes_one_order_one_state(database_url: str, redis_url: str, tmp_path: Path) -> None:
    async with open_nodes(database_url, redis_url, tmp_path, 3) as nodes:
        http = _clients(nodes)
        try:
            alice = await new_user(http[0])
            bob = await new_user(http[1])
            project_id = await new_project(http[0], alice, (bob, "member"), name="Cluster")
            start = await project_seq(http[0], alice, project_id)
            async with open_ws(nodes[1].base_url, alice.token) as watch_a, \
                    open_ws(nodes[2].base_url, bob.token) as watch_b, \
                    open_ws(nodes[2].base_url, alice.token) as editor:
                for conn in (watch_a, watch_b, editor):
                    assert (await conn.subscribe(project_id, since=start))["type"] == "subscribed"
                per_editor = 12

                async def rest_editor(client: httpx.AsyncClient, user: User, name: str) -> None:
                    for i in range(per_editor):
                        made = await client.post("/api/v1/tasks", headers=user.auth,
                                                 json={"project_id": project_id, "title": f"{name} {i}"})
                        assert made.status_code == 201, made.text

                async def ws_editor() -> None:
                    for i in range(per_editor):
                        ack = await editor.op(project_id, create_op(f"ws {i}"), f"ws-op-{i}")
                        assert ack["type"] == "ack", ack

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(rest_editor, http[0], alice, "n0")
                    nursery.start_soon(rest_editor, http[1], bob, "n1")
                    nursery.start_soon(ws_editor)
                end = await project_seq(http[0], alice, project_id)
                assert end == start + 3 * per_editor
                streams = [_contiguous(await _wait_for_seq(c, project_id, end), start + 1, end)
                           for c in (watch_a, watch_b, editor)]
            log = await changes(http[2], alice, project_id, since=start)
            assert [e["seq"] for e in log] == list(range(start + 1, end + 1))
            for stream in streams:
                assert [(e["seq"], e["kind"], e["data"]) for e in stream] == \
                       [(e["seq"], e["kind"], e["data"]) for e in log]
            # Every node answers reads from the same state (owner or follower).
            views = []
            for client in http:
                listed = await client.get("/api/v1/tasks", headers=alice.auth,
                                          params={"project_id": project_id, "limit": 100})
                ids = sorted(t["id"] for t in listed.json()["data"])
                versions = []
                for task_id in ids:
                    got = await client.get(f"/api/v1/tasks/{task_id}", headers=alice.auth)
                    versions.append((task_id, got.json()["version"], got.json()["title"]))
                views.append(versions)
            assert len(views[0]) == 3 * per_editor and views[0] == views[1] == views[2]
        finally:
            for client in http:
                await client.aclose()


async def _owner_of(database_url: str, project_id: str) -> str | None:
    from tests.helpers import fetch_value

    return await fetch_value(database_url, "SELECT owner_node FROM projects WHERE id = $1", uuid.UUID(project_id))


async def test_kill_9_of_the_owner_loses_no_acknowledged_op(database_url: str, redis_url: str, tmp_path: Path) -> None:
    async with open_nodes(database_url, redis_url, tmp_path, 2) as (owner, survivor):
        http = _clients([owner, survivor])
        try:
            alice = await new_user(http[0])
            project_id = await new_project(http[0], alice, name="Takeover")
            acked: dict[str, int] = {}
            async with open_ws(owner.base_url, alice.token) as conn:
                await conn.subscribe(project_id)
                for i in range(10):
                    ack = await conn.op(project_id, create_op(f"before {i}"), f"op-{i}")
                    assert ack["type"] == "ack", ack
                    acked[f"op-{i}"] = ack["seq"]
                assert await _owner_of(database_url, project_id) is not None
                # One more op in flight when the owner dies: it may or may not have committed.
                await conn.send_op(project_id, create_op("in flight"), "op-10")
                owner.kill()
                killed_at = trio.current_time()
                last_seen = max(e["seq"] for e in conn.events(project_id))
            # The client reconnects to the other node, resumes, and resends what was not acknowledged.
            async with open_ws(survivor.base_url, alice.token) as conn:
                resumed = await conn.subscribe(project_id, since=last_seen)
                assert resumed["type"] == "subscribed", resumed
                ack = await conn.op(project_id, create_op("in flight"), "op-10")
                assert ack["type"] == "ack", ack
                takeover_s = trio.current_time() - killed_at
                acked["op-10"] = ack["seq"]
                for i in range(11, 16):
                    ack = await conn.op(project_id, create_op(f"after {i}"), f"op-{i}")
                    assert ack["type"] == "ack", ack
                    acked[f"op-{i}"] = ack["seq"]
            assert takeover_s < TAKEOVER_BUDGET_S, f"takeover took {takeover_s:.1f} s"
            log = await changes(http[1], alice, project_id)
            assert [e["seq"] for e in log] == list(range(1, len(log) + 1))  # contiguous, no gap
            by_op = {}
            for e in log:
                if e["client_op_id"]:
                    assert e["client_op_id"] not in by_op, f"{e['client_op_id']} applied twice"
                    by_op[e["client_op_id"]] = e["seq"]
            assert by_op == acked  # every acknowledged op is there, once, at the seq its ack named
            print(f"takeover after kill -9: {takeover_s:.2f} s (lease {LEASE_TTL_S} s)")
        finally:
            for client in http:
                await client.aclose()


async def test_a_paused_owner_cannot_commit_after_a_takeover(database_url: str, redis_url: str, tmp_path: Path) -> None:
    async with open_nodes(database_url, redis_url, tmp_path, 2) as (first, second):
        http = _clients([first, second])
        try:
            alice = await new_user(http[0])
            project_id = await new_project(http[0], alice, name="Fenced")
            made = await http[0].post(
                "/api/v1/tasks", headers=alice.auth, json={"project_id": project_id, "title": "x"},
            )
            task_id = made.json()["id"]
            owner_before = await _owner_of(database_url, project_id)
            pause(first)
            outcomes: dict[str, int] = {}
            try:
                async def write(name: str, client: httpx.AsyncClient) -> None:
                    response = await client.put(f"/api/v1/tasks/{task_id}", headers=alice.auth, json={"title": name})
                    outcomes[name] = response.status_code

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(write, "sent to the paused owner", http[0])
                    await trio.sleep(0.2)
                    started = trio.current_time()
                    await write("sent to the other node", http[1])
                    took_over_s = trio.current_time() - started
                    resume(first)
            finally:
                resume(first)
            assert outcomes["sent to the other node"] == 200, outcomes
            assert took_over_s < TAKEOVER_BUDGET_S
            assert await _owner_of(database_url, project_id) != owner_before
            # The paused node's write was either refused (retryable) or forwarded to the new owner;
            # it never committed on its own: the log holds exactly the successful writes, in order.
            assert outcomes["sent to the paused owner"] in (200, 503), outcomes
            log = await changes(http[1], alice, project_id)
            assert [e["seq"] for e in log] == list(range(1, len(log) + 1))
            updates = [e for e in log if e["kind"] == "task.updated"]
            assert len(updates) == sum(1 for status in outcomes.values() if status == 200)
            again = await http[0].put(f"/api/v1/tasks/{task_id}", headers=alice.auth, json={"title": "after"})
            assert again.status_code == 200, again.text  # the old owner now forwards
        finally:
            for client in http:
                await client.aclose()


async def test_redis_restart_nodes_converge(database_url: str, tmp_path: Path) -> None:
    redis = PrivateRedis(tmp_path)
    await redis.start()
    try:
        async with open_nodes(database_url, redis.url, tmp_path, 2) as (writer, reader):
            http = _clients([writer, reader])
            try:
                alice = await new_user(http[0])
                project_id = await new_project(http[0], alice, name="Outage")
                await http[0].put(f"/api/v1/projects/{project_id}", headers=alice.auth, json={"description": "owned"})

                async def edits(prefix: str, n: int) -> None:
                    for i in range(n):
                        made = await http[0].post("/api/v1/tasks", headers=alice.auth,
                                                  json={"project_id": project_id, "title": f"{prefix} {i}"})
                        assert made.status_code == 201, made.text

                start = await project_seq(http[0], alice, project_id)
                async with open_ws(reader.base_url, alice.token) as watcher:
                    await watcher.subscribe(project_id, since=start)
                    await edits("before", 5)
                    await _wait_for_seq(watcher, project_id, await project_seq(http[0], alice, project_id))
                    redis.stop()
                    await edits("during", 5)  # the owner commits without Redis; the bus drops them
                    # The other node cannot forward meanwhile: it says so at once, retryably.
                    refused = await http[1].post("/api/v1/tasks", headers=alice.auth,
                                                 json={"project_id": project_id, "title": "refused"})
                    assert refused.status_code == 503 and refused.json()["retryable"], refused.text
                    await redis.start()
                    await edits("after", 5)
                    with trio.fail_after(20):  # the other node forwards again once it resubscribed
                        while True:
                            forwarded = await http[1].post("/api/v1/tasks", headers=alice.auth,
                                                           json={"project_id": project_id, "title": "forwarded"})
                            if forwarded.status_code == 201:
                                break
                            assert forwarded.status_code == 503, forwarded.text
                            await trio.sleep(0.5)
                    end = await project_seq(http[0], alice, project_id)
                    events = await _wait_for_seq(watcher, project_id, end, timeout=30)
                    stream = _contiguous(events, start + 1, end)
                log = await changes(http[1], alice, project_id, since=start)
                assert [(e["seq"], e["kind"]) for e in stream] == [(e["seq"], e["kind"]) for e in log]
                titles = {t["title"] for t in (await http[1].get(
                    "/api/v1/tasks", headers=alice.auth, params={"project_id": project_id, "limit": 100},
                )).json()["data"]}
                assert len(titles) == 16 and "refused" not in titles
            finally:
                for client in http:
                    await client.aclose()
    finally:
        redis.stop()


async def test_membership_presence_and_notifications_cross_nodes(
    database_url: str, redis_url: str, tmp_path: Path,
) -> None:
    async with open_nodes(database_url, redis_url, tmp_path, 3) as nodes:
        http = _clients(nodes)
        try:
            alice, bob = await new_user(http[0]), await new_user(http[0])
            project_id = await new_project(http[0], alice, (bob, "member"), name="Everywhere")
            async with open_ws(nodes[1].base_url, bob.token) as bob_b, \
                    open_ws(nodes[2].base_url, bob.token) as bob_c, \
                    open_ws(nodes[0].base_url, alice.token) as alice_a:
                for conn in (bob_b, bob_c, alice_a):
                    assert (await conn.subscribe(project_id))["type"] == "subscribed"
                # Presence set on node A reaches bob on node B.
                await alice_a.send(
                    {"type": "presence", "project_id": project_id, "state": {"viewing": None, "editing": None}}
                )
                joined = await bob_b.expect(lambda f: f["type"] == "presence" and "joined" in f, project_id=project_id)
                assert joined["joined"]["user_id"] == alice.id
                # A notification caused on node A reaches bob's sockets on B and C.
                made = await http[0].post("/api/v1/tasks", headers=alice.auth,
                                          json={"project_id": project_id, "title": "For bob", "assignee_id": bob.id})
                assert made.status_code == 201
                for conn in (bob_b, bob_c):
                    note = await conn.expect("notification")
                    assert note["notification"]["type"] == "task_assigned"
                # Removing bob on node A cuts him off on B and C.
                removed = await http[0].delete(f"/api/v1/projects/{project_id}/members/{bob.id}", headers=alice.auth)
                assert removed.status_code == 204, removed.text
                for conn in (bob_b, bob_c):
                    ended = await conn.expect("unsubscribed", project_id=project_id)
                    assert ended["reason"] == "removed"
                after = await http[0].post("/api/v1/tasks", headers=alice.auth,
                                           json={"project_id": project_id, "title": "Not for bob"})
                seq = after.json()["version"]
                await alice_a.expect("event", project_id=project_id, seq=seq)
                for conn in (bob_b, bob_c):
                    await conn.ping()
                    assert all(e["seq"] < seq for e in conn.events(project_id))
            for client in http[1:]:
                denied = await client.get(f"/api/v1/projects/{project_id}", headers=bob.auth)
                assert denied.status_code == 403, denied.text
        finally:
            for client in http:
                await client.aclose()
