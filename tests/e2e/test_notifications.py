"""Notifications: created with the change that causes them, listed, marked read, pushed live."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

from tests.helpers import bearer, signup


async def _project_with_member(client: httpx.AsyncClient) -> tuple[dict, dict, dict, dict, str]:
    owner, owner_tokens = await signup(client)
    member, member_tokens = await signup(client)
    owner_auth = bearer(owner_tokens["access_token"])
    project = (await client.post("/api/v1/projects", json={"name": "Notify"}, headers=owner_auth)).json()
    added = await client.post(f"/api/v1/projects/{project['id']}/members",
                              json={"user_id": member["id"], "role": "member"},
                              headers=owner_auth)
    assert added.status_code == 201, added.text
    return owner, bearer(owner_tokens["access_token"]), member, bearer(member_tokens["access_token"]), project["id"]


async def _notifications(client: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = await client.get("/api/v1/notifications", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_seed_assignment_scenario(client: httpx.AsyncClient) -> None:
    """The seed's test_task_assignment_and_notifications, in Python."""
    owner, oh, member, mh, project_id = await _project_with_member(client)
    task = (await client.post(
        "/api/v1/tasks", json={"title": "Assignable Task", "project_id": project_id}, headers=oh,
    )).json()
    assigned = await client.put(f"/api/v1/tasks/{task['id']}/assign", json={"assignee_id": member["id"]}, headers=oh)
    assert assigned.status_code == 200 and assigned.json()["assignee_id"] == member["id"]
    inbox = await _notifications(client, mh)
    assert inbox["data"], "the assignee has notifications"
    assert "assigned" in inbox["data"][0]["title"]
    assert inbox["data"][0]["type"] == "task_assigned" and inbox["data"][0]["entity_id"] == task["id"]


async def test_kinds_and_never_for_your_own_actions(client: httpx.AsyncClient) -> None:
    owner, oh, member, mh, project_id = await _project_with_member(client)
    kinds = [n["type"] for n in (await _notifications(client, mh))["data"]]
    assert kinds == ["added_to_project"]
    # Assigning yourself: no notification for you.
    mine = (await client.post("/api/v1/tasks", json={"title": "Mine", "project_id": project_id,
                                                     "assignee_id": owner["id"]}, headers=oh)).json()
    assert (await _notifications(client, oh))["pagination"]["total"] == 0
    # Created already assigned to the member, then completed by the owner.
    task = (await client.post("/api/v1/tasks", json={"title": "Theirs", "project_id": project_id,
                                                     "assignee_id": member["id"]}, headers=oh)).json()
    done = await client.put(f"/api/v1/tasks/{task['id']}/status", json={"status": "done"}, headers=oh)
    assert done.status_code == 200
    # Mentions: a member is notified, a non-member and the author are not.
    outsider, _ = await signup(client)
    described = await client.put(
        f"/api/v1/tasks/{mine['id']}", headers=oh,
        json={"description": f"ping @{member['username']} and @{outsider['username']} and @{owner['username']}"},
    )
    assert described.status_code == 200
    kinds = [n["type"] for n in (await _notifications(client, mh))["data"]]
    assert kinds == ["mentioned", "task_completed", "task_assigned", "added_to_project"]  # newest first
    assert (await _notifications(client, oh))["pagination"]["total"] == 0
    outsider_tokens = (await client.post("/api/v1/auth/login", json={
        "email": outsider["email"], "password": "correct horse battery staple"})).json()
    assert (await _notifications(client, bearer(outsider_tokens["access_token"])))["pagination"]["total"] == 0
    # Mentioning again the same person in an edit does not notify twice.
    again = await client.put(f"/api/v1/tasks/{mine['id']}", headers=oh,
                             json={"description": f"still @{member['username']}, now edited"})
    assert again.status_code == 200
    assert (await _notifications(client, mh))["pagination"]["total"] == 4


async def test_read_filters_and_counts(client: httpx.AsyncClient) -> None:
    owner, oh, member, mh, project_id = await _project_with_member(client)
    for title in ("a", "b"):
        await client.post(
            "/api/v1/tasks", json={"title": title, "project_id": project_id, "assignee_id": member["id"]}, headers=oh,
        )
    inbox = await _notifications(client, mh)
    assert inbox["unread_count"] == 3 and inbox["pagination"]["total"] == 3
    first = inbox["data"][0]["id"]
    marked = await client.put(f"/api/v1/notifications/{first}/read", headers=mh)
    assert marked.status_code == 200 and marked.json()["is_read"] is True
    assert (await client.get("/api/v1/notifications/unread-count", headers=mh)).json() == {"unread_count": 2}
    assert [n["id"] for n in (await _notifications(client, mh, is_read="true"))["data"]] == [first]
    assert len((await _notifications(client, mh, is_read="false"))["data"]) == 2
    # Someone else's notification is not found for you.
    assert (await client.put(f"/api/v1/notifications/{first}/read", headers=oh)).status_code == 404
    assert (await client.put("/api/v1/notifications/not-a-uuid/read", headers=mh)).status_code == 404
    all_read = await client.put("/api/v1/notifications/read-all", headers=mh)
    assert all_read.json() == {"marked_read": 2}
    assert (await client.get("/api/v1/notifications/unread-count", headers=mh)).json() == {"unread_count": 0}


async def test_pushed_to_every_socket_of_the_recipient(client: httpx.AsyncClient, server: Any) -> None:
    owner, oh, member, mh, project_id = await _project_with_member(client)
    ws_url = server.base_url.replace("http://", "ws://") + "/ws"
    token = mh["Authorization"].split()[1]
    received: list[list[dict[str, Any]]] = [[], []]

    async def listen(index: int, ready: trio.Event, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with open_websocket_url(ws_url) as ws:
            await ws.send_message(json.dumps({"type": "auth", "token": token}))
            while True:
                message = json.loads(await ws.get_message())
                for frame in message if isinstance(message, list) else [message]:
                    if frame["type"] == "welcome":
                        task_status.started()
                    if frame["type"] == "notification":
                        received[index].append(frame["notification"])
                        ready.set()
                        return

    with trio.fail_after(15):
        events = [trio.Event(), trio.Event()]
        async with trio.open_nursery() as nursery:
            for i in range(2):
                await nursery.start(listen, i, events[i])
            task = await client.post("/api/v1/tasks", headers=oh,
                                     json={"title": "Live", "project_id": project_id, "assignee_id": member["id"]})
            assert task.status_code == 201
            for event in events:
                await event.wait()
    for inbox in received:
        assert [n["type"] for n in inbox] == ["task_assigned"]
        assert inbox[0]["entity_id"] == task.json()["id"] and inbox[0]["is_read"] is False
