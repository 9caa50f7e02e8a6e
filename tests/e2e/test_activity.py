"""The activity feed (from the change log) and the admin's global log (change log + audit trail)."""

from __future__ import annotations

import httpx

from tests.e2e.ws_helpers import new_project, new_user, rest_task
from tests.helpers import assert_problem, make_admin


async def test_project_feed_reads_like_a_story(client: httpx.AsyncClient) -> None:
    alice, bob, outsider = [await new_user(client) for _ in range(3)]
    project_id = await new_project(client, alice, (bob, "member"), name="Storybook")
    task = await rest_task(client, alice, project_id, "Write chapter")
    await client.put(f"/api/v1/tasks/{task['id']}/assign", headers=alice.auth, json={"assignee_id": bob.id})
    await client.put(f"/api/v1/tasks/{task['id']}/status", headers=bob.auth, json={"status": "in_review"})
    await client.put(f"/api/v1/tasks/{task['id']}", headers=bob.auth, json={"priority": "high", "estimated_hours": 3})
    await client.post(f"/api/v1/tasks/{task['id']}/comments", headers=bob.auth, json={"content": "ready"})
    doomed = await rest_task(client, bob, project_id, "Scrap")
    await client.delete(f"/api/v1/tasks/{doomed['id']}", headers=bob.auth)

    feed = await client.get(f"/api/v1/projects/{project_id}/activity", headers=bob.auth)
    assert feed.status_code == 200, feed.text
    summaries = [e["summary"] for e in feed.json()["data"]]
    assert summaries == [
        f"{bob.username} deleted 'Scrap'",
        f"{bob.username} created 'Scrap'",
        f"{bob.username} commented on 'Write chapter'",
        f"{bob.username} changed the estimate, priority of 'Write chapter'",
        f"{bob.username} moved 'Write chapter' to In review",
        f"{alice.username} assigned 'Write chapter' to {bob.username}",
        f"{alice.username} created 'Write chapter'",
        f"{alice.username} added {bob.username} as member",
        f"{alice.username} created the project Storybook",
    ]
    newest = feed.json()["data"][3]
    assert newest["changes"] == {"priority": "high", "estimated_hours": 3}
    assert newest["actor"] == {"id": bob.id, "username": bob.username} and newest["task_id"] == task["id"]

    page = (await client.get(f"/api/v1/projects/{project_id}/activity", headers=bob.auth, params={"limit": 4})).json()
    assert len(page["data"]) == 4 and page["next_before"] == page["data"][-1]["seq"]
    rest = (await client.get(f"/api/v1/projects/{project_id}/activity", headers=bob.auth,
                             params={"limit": 50, "before": page["next_before"]})).json()
    assert [e["summary"] for e in page["data"] + rest["data"]] == summaries and rest["next_before"] is None

    assert_problem(await client.get(f"/api/v1/projects/{project_id}/activity", headers=outsider.auth), 403, "forbidden")
    assert_problem(await client.get(f"/api/v1/projects/{project_id}/activity", headers=bob.auth,
                                    params={"limit": 1000}), 422, "invalid")


async def test_admin_log_has_every_project_and_the_audit_trail(client: httpx.AsyncClient, database_url: str) -> None:
    admin, alice, bob = [await new_user(client) for _ in range(3)]
    await make_admin(database_url, admin.id)
    first = await new_project(client, alice, name="First")
    second = await new_project(client, bob, name="Second")
    await rest_task(client, bob, second, "Bob's task")
    assert (await client.put(f"/api/v1/admin/users/{bob.id}/roles", headers=admin.auth,
                             json={"roles": ["developer"]})).status_code == 200
    assert (await client.put(f"/api/v1/admin/users/{bob.id}/active", headers=admin.auth,
                             json={"is_active": False})).status_code == 200
    assert (await client.delete(f"/api/v1/projects/{first}", headers=alice.auth)).status_code == 204

    assert_problem(await client.get("/api/v1/admin/logs", headers=alice.auth), 403, "forbidden")
    log = await client.get("/api/v1/admin/logs", headers=admin.auth, params={"limit": 3})
    assert log.status_code == 200, log.text
    body = log.json()
    assert [e["summary"] for e in body["data"]] == [
        f"{alice.username} deleted the project First",
        f"{admin.username} deactivated {bob.username}",
        f"{admin.username} set the roles of {bob.username} to developer",
    ]
    assert body["data"][0]["project_name"] == "First"
    rest = (await client.get("/api/v1/admin/logs", headers=admin.auth,
                             params={"limit": 100, "cursor": body["next_cursor"]})).json()
    summaries = [e["summary"] for e in rest["data"]]
    assert f"{bob.username} created 'Bob's task'" in summaries
    assert f"{bob.username} created the project Second" in summaries
    assert not any("First" in s for s in summaries)  # a deleted project's events went with it; its audit entry stays
    only_second = (await client.get("/api/v1/admin/logs", headers=admin.auth, params={"project_id": second})).json()
    assert {e["project_name"] for e in only_second["data"]} == {"Second"}
    bogus = await client.get("/api/v1/admin/logs", headers=admin.auth, params={"cursor": "bogus"})
    assert_problem(bogus, 422, "invalid")
