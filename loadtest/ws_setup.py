"""Users and projects for ``loadtest ws``, made through the REST API before any socket opens.

- an **editor** user owns every project and sends all the ops;
- :data:`SUBSCRIBER_USERS` subscriber users are added to every project as
  ``member``; subscriber socket k of a project belongs to user ``k % 5``, so
  500 sockets are 100 per user (the server runs with a raised
  ``COLLAB_WS_MAX_SOCKETS_PER_USER`` for that);
- each project gets :data:`TASKS_PER_PROJECT` tasks, which its editor's
  ``task.update`` ops rotate over.

Registration and login reuse :mod:`loadtest.foundation`; projects, members
and tasks go through :func:`loadtest.tasks_seed.parallel` (20 requests in
flight), each committed by its project actor like any client's write.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import httpx

from loadtest.foundation import bearer, login, register
from loadtest.serverproc import ServerFailed
from loadtest.tasks_data import _require, writer_projects
from loadtest.tasks_seed import parallel

SUBSCRIBER_USERS = 5
TASKS_PER_PROJECT = 4
SETUP_CONCURRENCY = 20
SETUP_DEADLINE_S = 300.0


@dataclass
class Users:
    editor_email: str
    editor_token: str
    subscriber_ids: list[str]
    subscriber_tokens: list[str]
    subscriber_emails: list[str] = field(default_factory=list)

    def tokens(self) -> dict[str, Any]:
        return {"editor": self.editor_token, "subscribers": self.subscriber_tokens}


@dataclass
class Project:
    project_id: str
    task_ids: list[str] = field(default_factory=list)


def make_users(api: httpx.Client) -> Users:
    tag = secrets.token_hex(4)
    editor = f"lt-ws-editor-{tag}@example.com"
    register(api, editor, f"lt_ws_editor_{tag}")
    ids, tokens, emails = [], [], []
    for k in range(SUBSCRIBER_USERS):
        email = f"lt-ws-sub{k}-{tag}@example.com"
        emails.append(email)
        register(api, email, f"lt_ws_sub{k}_{tag}")
        token = login(api, email)
        me = api.get("/api/v1/users/me", headers=bearer(token))
        if me.status_code != 200:
            raise ServerFailed(f"users/me: {me.status_code} {me.text[:200]}")
        ids.append(me.json()["id"])
        tokens.append(token)
    return Users(editor, login(api, editor), ids, tokens, emails)


def make_projects(api: httpx.Client, users: Users, n: int, name: str) -> list[Project]:
    """``n`` projects of the editor, each with every subscriber user as a member and a few tasks."""
    base = str(api.base_url)
    ids = writer_projects(api, users.editor_token, n, name)
    members = [("POST", f"/api/v1/projects/{p}/members", {"user_id": u, "role": "member"})
               for p in ids for u in users.subscriber_ids]
    _require(parallel(base, users.editor_token, members, concurrency=SETUP_CONCURRENCY,
                      deadline_s=SETUP_DEADLINE_S), 201, f"adding {len(members)} members")
    tasks = [("POST", "/api/v1/tasks", {"project_id": p, "title": f"load task {k}", "status": "todo"})
             for p in ids for k in range(TASKS_PER_PROJECT)]
    done = parallel(base, users.editor_token, tasks, concurrency=SETUP_CONCURRENCY, deadline_s=SETUP_DEADLINE_S)
    _require(done, 201, f"creating {len(tasks)} tasks")
    projects = {p: Project(p) for p in ids}
    for body in done["bodies"]:
        projects[body["project_id"]].task_ids.append(body["id"])
    return [projects[p] for p in ids]
