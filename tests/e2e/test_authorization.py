"""End-to-end: every route against the authorization matrix in docs/authorization.md.

The matrix file has two tables with fixed headers: the rules (global role x
project role -> yes/no) and the routes (method, route template -> rule). These
tests check that the file covers exactly the app's routes, that its grid is
what ``collab/domain/permissions.py`` computes, and that a real server answers
every route as the grid says for every global role x project role.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx
import pytest

from collab.domain.model import Member, ProjectRole
from collab.domain.permissions import Action, allowed, may_create_projects, may_delete_task
from collab.domain.users import Principal
from tests.helpers import STRONG_PASSWORD, bearer, login, register, run_sql, signup

MATRIX = Path(__file__).resolve().parents[2] / "docs" / "authorization.md"
GLOBAL_ROLES = ("admin", "manager", "developer", "viewer")
PROJECT_ROLES = ("owner", "manager", "member", "viewer", "none")
RULES_HEADER = ["rule", "global role", *PROJECT_ROLES]
ROUTES_HEADER = ["method", "route", "rule"]
#: Rules about one project; for the others the project role must not matter.
PROJECT_RULES = {
    "project_read": Action.READ,
    "project_update": Action.UPDATE_PROJECT,
    "project_delete": Action.DELETE_PROJECT,
    "manage_members": Action.MANAGE_MEMBERS,
    "write_tasks": Action.WRITE_TASKS,
    "delete_task": Action.DELETE_TASK,
}
GLOBAL_RULES = {"public", "signed_in", "admin", "create_project"}
#: Framework pages that carry no data and need no row (and nothing else is skipped).
SKIPPED = {"openapi": "/openapi.json", "swagger_ui": "/docs"}

Grid = dict[str, dict[str, dict[str, bool]]]  # rule -> global role -> project role -> allowed
Routes = dict[tuple[str, str], str]  # (METHOD, route template) -> rule


# --- the matrix file ----------------------------------------------------------------

def _table(lines: list[str], header: list[str]) -> list[list[str]]:
    """The body rows of the one markdown table whose header is ``header``."""

    def cells(line: str) -> list[str]:
        return [c.strip().strip("`").strip() for c in line.strip().strip("|").split("|")]

    starts = [i for i, line in enumerate(lines) if line.lstrip().startswith("|") and cells(line) == header]
    assert len(starts) == 1, f"{MATRIX.name}: expected one table with header {header}, found {len(starts)}"
    rows = []
    for line in lines[starts[0] + 2:]:
        if not line.lstrip().startswith("|"):
            break
        row = cells(line)
        assert len(row) == len(header), f"{MATRIX.name}: malformed row {line!r}"
        rows.append(row)
    assert rows, f"{MATRIX.name}: the table {header} is empty"
    return rows


def load_matrix() -> tuple[Grid, Routes]:
    lines = MATRIX.read_text(encoding="utf-8").splitlines()
    grid: Grid = {}
    for rule, global_role, *answers in _table(lines, RULES_HEADER):
        assert global_role in GLOBAL_ROLES, f"unknown global role {global_role!r} in rule {rule}"
        assert global_role not in grid.get(rule, {}), f"rule {rule} has two rows for {global_role}"
        assert set(answers) <= {"yes", "no"}, f"rule {rule}/{global_role}: cells must be yes or no, not {answers}"
        grid.setdefault(rule, {})[global_role] = {p: a == "yes" for p, a in zip(PROJECT_ROLES, answers, strict=True)}
    for rule, by_role in grid.items():
        assert set(by_role) == set(GLOBAL_ROLES), f"rule {rule} lacks rows for {set(GLOBAL_ROLES) - set(by_role)}"
    assert set(grid) == GLOBAL_RULES | set(PROJECT_RULES), f"rules in {MATRIX.name}: {sorted(grid)}"
    routes: Routes = {}
    for method, route, rule in _table(lines, ROUTES_HEADER):
        key = (method, route)
        assert key not in routes, f"{MATRIX.name}: two rows for {method} {route}"
        assert rule in grid, f"{MATRIX.name}: {method} {route} names an unknown rule {rule!r}"
        routes[key] = rule
    return grid, routes


def test_the_grid_is_what_the_permissions_module_computes() -> None:
    grid, _ = load_matrix()
    other = uuid.uuid4()  # the creator of the task in question: never the caller
    for rule, global_role, project_role in itertools.product(grid, GLOBAL_ROLES, PROJECT_ROLES):
        caller = Principal(uuid.uuid4(), uuid.uuid4(), "someone", (global_role,))
        member = None if project_role == "none" else Member(
            caller.user_id, ProjectRole(project_role), "someone", "someone", datetime.now(timezone.utc),
        )
        if rule == "delete_task":
            expected = may_delete_task(caller, member, other)
        elif rule in PROJECT_RULES:
            expected = allowed(caller, member, PROJECT_RULES[rule])
        elif rule == "create_project":
            expected = may_create_projects(caller)
        elif rule == "admin":
            expected = caller.is_admin
        else:
            expected = True
        assert grid[rule][global_role][project_role] is expected, (
            f"{MATRIX.name}: rule {rule}, global {global_role}, project {project_role} says "
            f"{grid[rule][global_role][project_role]}, collab.domain.permissions says {expected}"
        )


def test_every_route_has_a_row(settings) -> None:
    from collab.http.app import create_app
    from collab.http.context import AppServices

    app = create_app(AppServices(settings=settings, db=None, auth=None, registry=None, hub=None))  # type: ignore[arg-type]
    _, routes = load_matrix()
    served: set[tuple[str, str]] = set()
    skipped: dict[str, str] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint in SKIPPED:
            skipped[rule.endpoint] = rule.rule
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            served.add((method, rule.rule))
    assert skipped == SKIPPED, f"skipped {skipped}, expected exactly {SKIPPED}"
    missing = sorted(served - set(routes))
    stale = sorted(set(routes) - served)
    assert not missing, f"routes with no row in {MATRIX.name}: {missing}"
    assert not stale, f"rows in {MATRIX.name} that match no route: {stale}"


# --- calling every route as every role ------------------------------------------------

@dataclass
class Caller:
    global_role: str
    project_role: str
    user_id: str = ""
    email: str = ""
    password: str = STRONG_PASSWORD
    token: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token) if self.token else {}

    @property
    def label(self) -> str:
        return f"global={self.global_role} project={self.project_role}"


@dataclass
class World:
    client: httpx.AsyncClient
    owner: Caller
    project_id: str
    task_id: str
    spare_id: str          # never a member between calls: the add/remove member target
    target_member_id: str  # a `member` whose role PUT .../members/<user_id> changes
    admin_target_id: str   # the user the admin routes act on
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))

    def n(self) -> int:
        return next(self.counter)

    async def as_owner(self, method: str, url: str, expect: int, **kwargs: Any) -> dict[str, Any]:
        response = await self.client.request(method, url, headers=self.owner.headers, **kwargs)
        assert response.status_code == expect, f"setup: {method} {url} as the owner: {response.text}"
        return response.json() if response.content else {}

    async def project_with(self, who: Caller) -> str:
        """A throwaway project of the owner in which ``who`` has its project role."""
        project = await self.as_owner("POST", "/api/v1/projects", 201, json={"name": f"Throwaway {self.n()}"})
        if who.project_role != "none" and who.token:
            await self.as_owner("POST", f"/api/v1/projects/{project['id']}/members", 201,
                                json={"user_id": who.user_id, "role": who.project_role})
        return project["id"]

    async def owners_task(self) -> str:
        task = await self.as_owner("POST", "/api/v1/tasks", 201,
                                   json={"project_id": self.project_id, "title": f"Throwaway {self.n()}"})
        return task["id"]

    async def fresh_session(self, who: Caller) -> dict[str, Any]:
        return await login(self.client, who.email, who.password)


Call = Callable[[World, Caller], Awaitable[httpx.Response]]


def _get(url: str) -> Call:
    async def call(w: World, who: Caller) -> httpx.Response:
        return await w.client.get(url.format(w=w), headers=who.headers)
    return call


def _send(method: str, url: str, body: Callable[[World, Caller], Any] | None = None) -> Call:
    async def call(w: World, who: Caller) -> httpx.Response:
        kwargs = {"json": body(w, who)} if body is not None else {}
        return await w.client.request(method, url.format(w=w), headers=who.headers, **kwargs)
    return call


async def _register(w: World, who: Caller) -> httpx.Response:
    tag = uuid.uuid4().hex[:8]
    body = {"email": f"new-{tag}@example.com", "username": f"new_{tag}", "password": STRONG_PASSWORD}
    return await w.client.post("/api/v1/auth/register", headers=who.headers, json=body)


async def _login(w: World, who: Caller) -> httpx.Response:
    return await w.client.post("/api/v1/auth/login", headers=who.headers,
                               json={"email": who.email or w.owner.email, "password": who.password})


async def _refresh(w: World, who: Caller) -> httpx.Response:
    fresh = await w.fresh_session(who if who.token else w.owner)
    return await w.client.post("/api/v1/auth/refresh", headers=who.headers,
                               json={"refresh_token": fresh["refresh_token"]})


async def _logout(w: World, who: Caller) -> httpx.Response:
    # A session of its own, so that the caller's main token stays valid.
    headers = bearer((await w.fresh_session(who))["access_token"]) if who.token else {}
    return await w.client.post("/api/v1/auth/logout", headers=headers)


async def _revoke_session(w: World, who: Caller) -> httpx.Response:
    session_id = (await w.fresh_session(who if who.token else w.owner))["session_id"]
    return await w.client.delete(f"/api/v1/auth/sessions/{session_id}", headers=who.headers)


async def _change_password(w: World, who: Caller) -> httpx.Response:
    new = f"{STRONG_PASSWORD} {w.n()}"
    response = await w.client.put("/api/v1/users/me/password", headers=who.headers,
                                  json={"current_password": who.password, "new_password": new})
    if response.status_code == 200:
        who.password = new
    return response


async def _delete_project(w: World, who: Caller) -> httpx.Response:
    project_id = await w.project_with(who)
    return await w.client.delete(f"/api/v1/projects/{project_id}", headers=who.headers)


async def _add_member(w: World, who: Caller) -> httpx.Response:
    response = await w.client.post(f"/api/v1/projects/{w.project_id}/members", headers=who.headers,
                                   json={"user_id": w.spare_id, "role": "member"})
    if response.status_code == 201:  # put the spare back outside the project
        await w.as_owner("DELETE", f"/api/v1/projects/{w.project_id}/members/{w.spare_id}", 204)
    return response


async def _remove_member(w: World, who: Caller) -> httpx.Response:
    await w.as_owner("POST", f"/api/v1/projects/{w.project_id}/members", 201,
                     json={"user_id": w.spare_id, "role": "member"})
    response = await w.client.delete(f"/api/v1/projects/{w.project_id}/members/{w.spare_id}", headers=who.headers)
    if response.status_code != 204:
        await w.as_owner("DELETE", f"/api/v1/projects/{w.project_id}/members/{w.spare_id}", 204)
    return response


async def _delete_task(w: World, who: Caller) -> httpx.Response:
    task_id = await w.owners_task()
    return await w.client.delete(f"/api/v1/tasks/{task_id}", headers=who.headers)


async def _mark_notification_read(w: World, who: Caller) -> httpx.Response:
    """Give the caller a notification of its own (added to a fresh project), then mark it read."""
    notification_id = uuid.uuid4()
    if who.user_id:
        project = await w.as_owner("POST", "/api/v1/projects", 201, json={"name": f"Notify {w.n()}"})
        await w.as_owner("POST", f"/api/v1/projects/{project['id']}/members", 201,
                         json={"user_id": who.user_id, "role": "viewer"})
        listed = await w.client.get("/api/v1/notifications?is_read=false", headers=who.headers)
        notification_id = listed.json()["data"][0]["id"]
    return await w.client.put(f"/api/v1/notifications/{notification_id}/read", headers=who.headers)


async def _edit_own_comment(w: World, who: Caller) -> httpx.Response:
    """Edit a comment of one's own (the author rule); a caller who may not comment edits the owner's."""
    url = f"/api/v1/tasks/{w.task_id}/comments"
    mine = await w.client.post(url, headers=who.headers, json={"content": f"by {who.label}"})
    if mine.status_code != 201:
        mine = await w.client.post(url, headers=w.owner.headers, json={"content": "by the owner"})
    return await w.client.put(f"{url}/{mine.json()['id']}", headers=who.headers, json={"content": "edited"})


async def _delete_owners_comment(w: World, who: Caller) -> httpx.Response:
    """Delete a comment someone else (the world's owner) wrote: the delete_task rule."""
    comment = await w.as_owner("POST", f"/api/v1/tasks/{w.task_id}/comments", 201, json={"content": "delete me"})
    return await w.client.delete(f"/api/v1/tasks/{w.task_id}/comments/{comment['id']}", headers=who.headers)


async def _upload_attachment(w: World, who: Caller) -> httpx.Response:
    return await w.client.post(f"/api/v1/tasks/{w.task_id}/attachments", headers=who.headers,
                               files={"file": (f"authz-{w.n()}.txt", b"authz", "text/plain")})


async def _owners_attachment(w: World) -> str:
    response = await w.client.post(f"/api/v1/tasks/{w.task_id}/attachments", headers=w.owner.headers,
                                   files={"file": ("owners.txt", b"the owner's file", "text/plain")})
    assert response.status_code == 201, f"setup: an attachment of the owner: {response.text}"
    return response.json()["id"]


_SHARED_ATTACHMENT: dict[str, str] = {}  # task id -> an attachment of the owner, made once per world


async def _download_attachment(w: World, who: Caller) -> httpx.Response:
    if w.task_id not in _SHARED_ATTACHMENT:
        _SHARED_ATTACHMENT[w.task_id] = await _owners_attachment(w)
    return await w.client.get(f"/api/v1/tasks/{w.task_id}/attachments/{_SHARED_ATTACHMENT[w.task_id]}",
                              headers=who.headers)


async def _delete_owners_attachment(w: World, who: Caller) -> httpx.Response:
    """Delete an attachment someone else (the world's owner) uploaded: the delete_task rule."""
    attachment_id = await _owners_attachment(w)
    return await w.client.delete(f"/api/v1/tasks/{w.task_id}/attachments/{attachment_id}", headers=who.headers)


PROJECT = "/api/v1/projects/{w.project_id}"
TASK = "/api/v1/tasks/{w.task_id}"

#: A sensible request for every row of the matrix.
CALLS: dict[tuple[str, str], Call] = {
    ("GET", "/health"): _get("/health"),
    ("GET", "/api/v1/health"): _get("/api/v1/health"),
    ("GET", "/api/v1/ping"): _get("/api/v1/ping"),
    ("GET", "/"): _get("/"),
    ("GET", "/static/<path:filename>"): _get("/static/app.js"),
    ("GET", "/ready"): _get("/ready"),
    ("GET", "/metrics"): _get("/metrics"),
    ("POST", "/api/v1/auth/register"): _register,
    ("POST", "/api/v1/auth/login"): _login,
    ("POST", "/api/v1/auth/refresh"): _refresh,
    ("POST", "/api/v1/auth/logout"): _logout,
    ("GET", "/api/v1/auth/sessions"): _get("/api/v1/auth/sessions"),
    ("DELETE", "/api/v1/auth/sessions/<session_id>"): _revoke_session,
    ("GET", "/api/v1/users/me"): _get("/api/v1/users/me"),
    ("PATCH", "/api/v1/users/me"): _send("PATCH", "/api/v1/users/me", lambda w, who: {"first_name": "Ada"}),
    ("PUT", "/api/v1/users/me/password"): _change_password,
    ("GET", "/api/v1/users"): _get("/api/v1/users?q=user"),
    ("GET", "/api/v1/users/<user_id>"): _get("/api/v1/users/{w.owner.user_id}"),
    ("GET", "/api/v1/admin/users"): _get("/api/v1/admin/users"),
    ("PUT", "/api/v1/admin/users/<user_id>/active"): _send(
        "PUT", "/api/v1/admin/users/{w.admin_target_id}/active", lambda w, who: {"is_active": True}),
    ("PUT", "/api/v1/admin/users/<user_id>/roles"): _send(
        "PUT", "/api/v1/admin/users/{w.admin_target_id}/roles", lambda w, who: {"roles": ["developer"]}),
    ("GET", "/api/v1/admin/metrics"): _get("/api/v1/admin/metrics"),
    ("POST", "/api/v1/admin/metrics/reset"): _send("POST", "/api/v1/admin/metrics/reset"),
    ("GET", "/api/v1/notifications"): _get("/api/v1/notifications"),
    ("GET", "/api/v1/notifications/unread-count"): _get("/api/v1/notifications/unread-count"),
    ("PUT", "/api/v1/notifications/<notification_id>/read"): _mark_notification_read,
    ("PUT", "/api/v1/notifications/read-all"): _send("PUT", "/api/v1/notifications/read-all"),
    ("GET", "/api/v1/projects"): _get("/api/v1/projects"),
    ("POST", "/api/v1/projects"): _send("POST", "/api/v1/projects", lambda w, who: {"name": f"Made {w.n()}"}),
    ("GET", "/api/v1/projects/<project_id>"): _get(PROJECT),
    ("PUT", "/api/v1/projects/<project_id>"): _send(
        "PUT", PROJECT, lambda w, who: {"description": f"Edited {w.n()}"}),
    ("PATCH", "/api/v1/projects/<project_id>"): _send(
        "PATCH", PROJECT, lambda w, who: {"name": f"Authz {w.n()}"}),
    ("DELETE", "/api/v1/projects/<project_id>"): _delete_project,
    ("GET", "/api/v1/projects/<project_id>/members"): _get(PROJECT + "/members"),
    ("POST", "/api/v1/projects/<project_id>/members"): _add_member,
    ("PUT", "/api/v1/projects/<project_id>/members/<user_id>"): _send(
        "PUT", PROJECT + "/members/{w.target_member_id}", lambda w, who: {"role": "viewer"}),
    ("DELETE", "/api/v1/projects/<project_id>/members/<user_id>"): _remove_member,
    ("GET", "/api/v1/projects/<project_id>/changes"): _get(PROJECT + "/changes"),
    ("GET", "/api/v1/tasks"): _get("/api/v1/tasks"),
    ("GET", "/api/v1/tasks/search"): _get("/api/v1/tasks/search?search=task"),
    ("POST", "/api/v1/tasks"): _send(
        "POST", "/api/v1/tasks", lambda w, who: {"project_id": w.project_id, "title": f"Made {w.n()}"}),
    ("GET", "/api/v1/tasks/<task_id>"): _get(TASK),
    ("PUT", "/api/v1/tasks/<task_id>"): _send("PUT", TASK, lambda w, who: {"title": f"Edited {w.n()}"}),
    ("PATCH", "/api/v1/tasks/<task_id>"): _send("PATCH", TASK, lambda w, who: {"priority": "high"}),
    ("PUT", "/api/v1/tasks/<task_id>/status"): _send("PUT", TASK + "/status", lambda w, who: {"status": "in_review"}),
    ("PUT", "/api/v1/tasks/<task_id>/assign"): _send(
        "PUT", TASK + "/assign", lambda w, who: {"assignee_id": w.owner.user_id}),
    ("POST", "/api/v1/tasks/<task_id>/move"): _send("POST", TASK + "/move", lambda w, who: {"status": "todo"}),
    ("DELETE", "/api/v1/tasks/<task_id>"): _delete_task,
    ("GET", "/api/v1/tasks/<task_id>/comments"): _get(TASK + "/comments"),
    ("POST", "/api/v1/tasks/<task_id>/comments"): _send("POST", TASK + "/comments", lambda w, who: {"content": "hi"}),
    ("PUT", "/api/v1/tasks/<task_id>/comments/<comment_id>"): _edit_own_comment,
    ("DELETE", "/api/v1/tasks/<task_id>/comments/<comment_id>"): _delete_owners_comment,
    ("GET", "/api/v1/projects/<project_id>/activity"): _get(PROJECT + "/activity"),
    ("GET", "/api/v1/admin/logs"): _get("/api/v1/admin/logs"),
    ("GET", "/api/v1/tasks/<task_id>/attachments"): _get(TASK + "/attachments"),
    ("POST", "/api/v1/tasks/<task_id>/attachments"): _upload_attachment,
    ("GET", "/api/v1/tasks/<task_id>/attachments/<attachment_id>"): _download_attachment,
    ("DELETE", "/api/v1/tasks/<task_id>/attachments/<attachment_id>"): _delete_owners_attachment,
}


def _body(response: httpx.Response) -> str:
    return response.text[:400] or "<empty>"


def _code(response: httpx.Response) -> str | None:
    try:
        return response.json().get("code")
    except ValueError:
        return None


async def _world(client: httpx.AsyncClient, database_url: str) -> tuple[World, list[Caller]]:
    owner_user, owner_tokens = await signup(client)
    assert owner_user["roles"] == ["manager"], f"a self-registered user should be a global manager: {owner_user}"
    owner = Caller("manager", "owner", owner_user["id"], owner_user["email"], token=owner_tokens["access_token"])
    headers = owner.headers
    response = await client.post("/api/v1/projects", headers=headers, json={"name": "Authz"})
    assert response.status_code == 201, response.text
    project_id = response.json()["id"]
    response = await client.post("/api/v1/tasks", headers=headers, json={"project_id": project_id, "title": "Shared"})
    assert response.status_code == 201, response.text
    task_id = response.json()["id"]

    spare, target_member, admin_target = [await register(client) for _ in range(3)]
    callers = [Caller(g, p) for g, p in itertools.product(GLOBAL_ROLES, PROJECT_ROLES)]
    statements = []
    for who in callers:
        user = await register(client)
        who.user_id, who.email = user["id"], user["email"]
        uid = uuid.UUID(who.user_id)
        statements += [
            f"DELETE FROM user_roles WHERE user_id = '{uid}'",
            f"INSERT INTO user_roles (user_id, role_id) SELECT '{uid}', id FROM roles WHERE name = '{who.global_role}'",
        ]
    await run_sql(database_url, *statements)
    for who in callers:  # log in only now, so that the session sees the new role
        tokens = await login(client, who.email)
        assert tokens["user"]["roles"] == [who.global_role], f"{who.label}: roles are {tokens['user']['roles']}"
        who.token = tokens["access_token"]
    world = World(client, owner, project_id, task_id, spare["id"], target_member["id"], admin_target["id"])
    for who in callers:
        if who.project_role != "none":
            await world.as_owner("POST", f"/api/v1/projects/{project_id}/members", 201,
                                 json={"user_id": who.user_id, "role": who.project_role})
    await world.as_owner("POST", f"/api/v1/projects/{project_id}/members", 201,
                         json={"user_id": target_member["id"], "role": "member"})
    return world, callers


@pytest.mark.deadline(180)  # every route x 21 callers: ~50 s on a quiet 2-core machine
async def test_routes_agree_with_the_matrix(server, client) -> None:
    grid, routes = load_matrix()
    assert set(CALLS) == set(routes), (
        f"requests to write for {sorted(set(routes) - set(CALLS))}; no row for {sorted(set(CALLS) - set(routes))}"
    )
    world, callers = await _world(client, server.settings.database_url)
    failures: list[str] = []
    for who in callers:
        for (method, route), rule in routes.items():
            response = await CALLS[(method, route)](world, who)
            where = f"{method} {route} (rule {rule}) as {who.label}"
            if grid[rule][who.global_role][who.project_role]:
                if not 200 <= response.status_code < 300:
                    failures.append(f"{where}: expected allowed (2xx), got {response.status_code} {_body(response)}")
            elif response.status_code != 403 or _code(response) != "forbidden":
                failures.append(f"{where}: expected 403 forbidden, got {response.status_code} {_body(response)}")
    # Without a token, every route but the public ones is 401, even on ids that exist.
    anonymous = Caller("anonymous", "none")
    for (method, route), rule in routes.items():
        if rule == "public":
            continue
        response = await CALLS[(method, route)](world, anonymous)
        if response.status_code != 401 or _code(response) != "unauthenticated":
            failures.append(f"{method} {route} (rule {rule}) without a token: expected 401 unauthenticated, "
                            f"got {response.status_code} {_body(response)}")
    assert not failures, f"{len(failures)} disagreement(s) with {MATRIX.name}:\n" + "\n".join(failures)


async def test_the_notes_of_the_matrix(client) -> None:
    """The creator may delete their task; a project manager cannot touch owners or managers; leaving is free."""
    owner_user, owner_tokens = await signup(client)
    owner = bearer(owner_tokens["access_token"])
    response = await client.post("/api/v1/projects", headers=owner, json={"name": "Notes"})
    assert response.status_code == 201, response.text
    project = f"/api/v1/projects/{response.json()['id']}"
    (manager_user, manager_tokens), (member_user, member_tokens), (other_user, _) = [
        await signup(client) for _ in range(3)
    ]
    for user, role in ((manager_user, "manager"), (member_user, "member")):
        response = await client.post(f"{project}/members", headers=owner, json={"user_id": user["id"], "role": role})
        assert response.status_code == 201, response.text
    manager, member = bearer(manager_tokens["access_token"]), bearer(member_tokens["access_token"])

    # A project member may delete the task they created, though delete_task says no for a member.
    response = await client.post("/api/v1/tasks", headers=member,
                                 json={"project_id": project.rsplit("/", 1)[1], "title": "Mine"})
    assert response.status_code == 201, response.text
    response = await client.delete(f"/api/v1/tasks/{response.json()['id']}", headers=member)
    assert response.status_code == 204, f"the creator (project member) deleting their task: {response.text}"

    # A project manager manages members below them only.
    refused = [
        ("POST", f"{project}/members", {"user_id": other_user["id"], "role": "manager"}),
        ("POST", f"{project}/members", {"user_id": other_user["id"], "role": "owner"}),
        ("PUT", f"{project}/members/{member_user['id']}", {"role": "manager"}),
        ("PUT", f"{project}/members/{owner_user['id']}", {"role": "member"}),
        ("DELETE", f"{project}/members/{owner_user['id']}", None),
    ]
    for method, url, body in refused:
        response = await client.request(method, url, headers=manager, **({"json": body} if body else {}))
        assert response.status_code == 403 and response.json()["code"] == "forbidden", (
            f"{method} {url} {body} as project manager: {response.status_code} {response.text}"
        )
    response = await client.put(f"{project}/members/{member_user['id']}", headers=manager, json={"role": "viewer"})
    assert response.status_code == 200, f"a project manager demoting a member: {response.text}"

    # Leaving needs no permission: the (now) viewer removes themself.
    response = await client.delete(f"{project}/members/{member_user['id']}", headers=member)
    assert response.status_code == 204, f"a project viewer leaving the project: {response.text}"
