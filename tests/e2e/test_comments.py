"""Comments: project events through the actor, listed oldest first, author rules, notifications."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import RunningServer
from tests.e2e.ws_helpers import User, new_project, new_user, open_ws, rest_task
from tests.helpers import assert_problem, make_admin


async def _inbox(http: httpx.AsyncClient, user: User) -> list[dict[str, Any]]:
    response = await http.get("/api/v1/notifications", headers=user.auth, params={"limit": 100})
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def _comment(http: httpx.AsyncClient, user: User, task_id: str, content: str) -> httpx.Response:
    return await http.post(f"/api/v1/tasks/{task_id}/comments", headers=user.auth, json={"content": content})


async def test_create_list_edit_delete(client: httpx.AsyncClient) -> None:
    alice, bob = await new_user(client), await new_user(client)
    project_id = await new_project(client, alice, (bob, "member"))
    task = await rest_task(client, alice, project_id, "Discuss")
    first = await _comment(client, alice, task["id"], "# Plan\n<script>alert(1)</script> stays text")
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["content"] == "# Plan\n<script>alert(1)</script> stays text"  # stored as sent, never rendered
    assert body["username"] == alice.username and body["task_id"] == task["id"]
    assert first.headers["Location"] == f"/api/v1/tasks/{task['id']}/comments/{body['id']}"
    for i in range(3):
        assert (await _comment(client, bob, task["id"], f"reply {i}")).status_code == 201
    page = (await client.get(f"/api/v1/tasks/{task['id']}/comments", headers=bob.auth, params={"limit": 2})).json()
    assert [c["content"] for c in page["data"]] == [body["content"], "reply 0"]  # oldest first
    assert page["pagination"]["total"] == 4 and page["pagination"]["next_cursor"]
    rest = (await client.get(f"/api/v1/tasks/{task['id']}/comments", headers=bob.auth,
                             params={"limit": 2, "cursor": page["pagination"]["next_cursor"]})).json()
    assert [c["content"] for c in rest["data"]] == ["reply 1", "reply 2"]

    url = f"/api/v1/tasks/{task['id']}/comments/{body['id']}"
    assert_problem(await client.put(url, headers=bob.auth, json={"content": "hijack"}), 403, "forbidden")
    edited = await client.put(url, headers=alice.auth, json={"content": "edited"})
    assert edited.status_code == 200 and edited.json()["content"] == "edited"
    assert edited.json()["updated_at"] > edited.json()["created_at"]
    assert_problem(await client.delete(url, headers=bob.auth), 403, "forbidden")
    assert (await client.delete(url, headers=alice.auth)).status_code == 204
    assert_problem(await client.delete(url, headers=alice.auth), 404, "not_found")
    listed = (await client.get(f"/api/v1/tasks/{task['id']}/comments", headers=alice.auth)).json()
    assert [c["content"] for c in listed["data"]] == ["reply 0", "reply 1", "reply 2"]


async def test_who_may_comment_and_moderate(client: httpx.AsyncClient, database_url: str) -> None:
    owner, member, viewer, outsider, admin = [await new_user(client) for _ in range(5)]
    await make_admin(database_url, admin.id)
    project_id = await new_project(client, owner, (member, "member"), (viewer, "viewer"))
    task = await rest_task(client, owner, project_id, "Moderated")
    assert_problem(await _comment(client, viewer, task["id"], "hi"), 403, "forbidden")
    assert_problem(await _comment(client, outsider, task["id"], "hi"), 403, "forbidden")
    assert_problem(await client.get(f"/api/v1/tasks/{task['id']}/comments", headers=outsider.auth), 403, "forbidden")
    assert (await client.get(f"/api/v1/tasks/{task['id']}/comments", headers=viewer.auth)).status_code == 200
    by_member = [(await _comment(client, member, task["id"], f"m{i}")).json()["id"] for i in range(2)]
    # The project owner and a global admin may delete someone else's comment; neither may edit it.
    base = f"/api/v1/tasks/{task['id']}/comments"
    edited = await client.put(f"{base}/{by_member[0]}", headers=owner.auth, json={"content": "x"})
    assert_problem(edited, 403, "forbidden")
    assert (await client.delete(f"{base}/{by_member[0]}", headers=owner.auth)).status_code == 204
    assert (await client.delete(f"{base}/{by_member[1]}", headers=admin.auth)).status_code == 204


async def test_bad_input(client: httpx.AsyncClient) -> None:
    alice = await new_user(client)
    project_id = await new_project(client, alice)
    task = await rest_task(client, alice, project_id, "Inputs")
    assert_problem(await _comment(client, alice, task["id"], ""), 422, "invalid")
    assert_problem(await _comment(client, alice, task["id"], "   "), 422, "invalid")
    assert_problem(await _comment(client, alice, task["id"], "x" * 10_001), 422, "invalid")
    assert (await _comment(client, alice, task["id"], "x" * 10_000)).status_code == 201
    assert_problem(await client.post(f"/api/v1/tasks/{task['id']}/comments", headers=alice.auth,
                                     json={"content": "a", "user_id": alice.id}), 422, "invalid")
    assert_problem(await _comment(client, alice, "00000000-0000-0000-0000-000000000000", "a"), 404, "not_found")
    assert_problem(await client.put(f"/api/v1/tasks/{task['id']}/comments/not-a-uuid", headers=alice.auth,
                                    json={"content": "a"}), 404, "not_found")


async def test_notifications_for_comments_and_mentions(client: httpx.AsyncClient) -> None:
    creator, assignee, commenter, mentioned, outsider = [await new_user(client) for _ in range(5)]
    project_id = await new_project(client, creator, (assignee, "member"), (commenter, "member"), (mentioned, "viewer"))
    task = await rest_task(client, creator, project_id, "Noisy", assignee_id=assignee.id)
    before = {u.id: len(await _inbox(client, u)) for u in (creator, assignee, commenter, mentioned)}
    assert before[mentioned.id] == 1  # added_to_project
    text = f"cc @{mentioned.username} @{outsider.username} @{commenter.username}"
    created = await _comment(client, commenter, task["id"], text)
    assert created.status_code == 201

    async def new_kinds(user: User) -> list[str]:
        inbox = await _inbox(client, user)
        return [n["type"] for n in inbox[: len(inbox) - before[user.id]]]

    assert await new_kinds(creator) == ["commented"]
    assert await new_kinds(assignee) == ["commented"]
    assert await new_kinds(mentioned) == ["mentioned"]
    assert await new_kinds(commenter) == []  # never for your own action
    assert await _inbox(client, outsider) == []  # a non-member learns nothing
    # Editing keeps old mentions quiet and notifies new ones only (the creator: mention wins over nothing new).
    url = f"/api/v1/tasks/{task['id']}/comments/{created.json()['id']}"
    edited = await client.put(url, headers=commenter.auth, json={"content": text + f" @{creator.username}"})
    assert edited.status_code == 200
    assert await new_kinds(mentioned) == ["mentioned"]
    assert await new_kinds(creator) == ["mentioned", "commented"]


async def test_comment_events_reach_subscribers_and_the_change_log(
    server: RunningServer, client: httpx.AsyncClient,
) -> None:
    alice, bob = await new_user(client), await new_user(client)
    project_id = await new_project(client, alice, (bob, "member"))
    task = await rest_task(client, alice, project_id, "Live")
    async with open_ws(server.base_url, bob.token) as conn:
        subscribed = await conn.subscribe(project_id)
        assert subscribed["type"] == "subscribed"
        created = (await _comment(client, alice, task["id"], "over REST")).json()
        added = await conn.expect("event", project_id=project_id, kind="comment.added")
        assert added["data"]["comment"]["id"] == created["id"]
        # Over the socket: an op with a client-chosen id; a resend is acknowledged once, applied once.
        op = {"kind": "comment.add", "task_id": task["id"], "comment_id": "6f1c3a52-7d0e-4b8a-9a51-2f6f3c1d9e10",
              "content": "over WS"}
        ack = await conn.op(project_id, op, "op-c1")
        assert ack["type"] == "ack", ack
        again = await conn.op(project_id, op, "op-c1")
        assert again["type"] == "ack" and again["seq"] == ack["seq"]
        refused = await conn.op(project_id, {"kind": "comment.delete", "task_id": task["id"],
                                             "comment_id": created["id"]})
        assert refused["type"] == "error" and refused["code"] == "forbidden"  # alice's comment
        deleted = await conn.op(project_id, {"kind": "comment.delete", "task_id": task["id"],
                                             "comment_id": op["comment_id"]})
        assert deleted["type"] == "ack", deleted
        await conn.expect("event", project_id=project_id, kind="comment.deleted")
    log = (await client.get(f"/api/v1/projects/{project_id}/changes", headers=alice.auth)).json()
    kinds = [e["kind"] for e in log["data"] if e["kind"].startswith("comment.")]
    assert kinds == ["comment.added", "comment.added", "comment.deleted"]
    listed = (await client.get(f"/api/v1/tasks/{task['id']}/comments", headers=alice.auth)).json()["data"]
    assert [c["content"] for c in listed] == ["over REST"]


async def test_deleting_a_task_removes_its_comments(client: httpx.AsyncClient, database_url: str) -> None:
    from tests.helpers import fetch_value

    alice = await new_user(client)
    project_id = await new_project(client, alice)
    task = await rest_task(client, alice, project_id, "Doomed")
    assert (await _comment(client, alice, task["id"], "soon gone")).status_code == 201
    assert (await client.delete(f"/api/v1/tasks/{task['id']}", headers=alice.auth)).status_code == 204
    assert await fetch_value(database_url, "SELECT count(*) FROM task_comments") == 0
    assert_problem(await client.get(f"/api/v1/tasks/{task['id']}/comments", headers=alice.auth), 404, "not_found")
