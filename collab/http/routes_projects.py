"""/api/v1/projects: projects, members and the change log (API.md "Projects").

Reads of one project come from its actor's committed state; lists come from
PostgreSQL. Writes go through the actor (except creation, which makes the
project the actor will load). A non-member gets 403 for a project that
exists, 404 for one that does not.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from quart import Blueprint, Response

from collab.actors.project import ProjectActor
from collab.domain import activity, ops
from collab.domain.model import ProjectRole
from collab.domain.permissions import Action, may_create_projects, require
from collab.domain.users import Principal
from collab.errors import Forbidden, NotFound
from collab.http.context import current_principal, services
from collab.http.inputs import path_uuid, read_body, read_query
from collab.http.responses import created, json_response, paginated
from collab.http.schemas import (
    ActivityQuery, ChangesQuery, MemberAddBody, MemberRoleBody, ProjectCreateBody, ProjectFields, ProjectQuery,
)
from collab.http.writes import etag, idempotency_for, if_match_version, not_modified, write
from collab.domain.views import project_payload
from collab.storage import activity as activity_store
from collab.storage import changelog
from collab.storage import projects as store
from collab.storage.queries import list_projects
from collab.http.openapi import api
from collab.http.schemas_out import ActivityPage, Changes, Member, MemberList, Page, Project

blueprint = Blueprint("projects", __name__, url_prefix="/api/v1/projects")


async def readable_project(project_id: uuid.UUID, principal: Principal) -> ProjectActor:
    """The project's actor, if the caller may read it (403 / 404 otherwise)."""
    actor = await services().registry.read(project_id)
    state = actor.state
    if state is None or state.deleted:
        raise NotFound("No such project")
    require(principal, state.members.get(principal.user_id), Action.READ)
    return actor


def project_view(actor: ProjectActor, principal: Principal) -> dict[str, Any]:
    state = actor.state
    assert state is not None
    member = state.members.get(principal.user_id)
    return project_payload(state.project) | {
        "seq": state.seq,
        "my_role": member.role.value if member else None,
        "member_count": len(state.members),
        "task_count": len(state.tasks),
    }


@blueprint.get("")
@api(tag="projects", ok=Page[Project], query=ProjectQuery)
async def list_() -> Response:
    principal = await current_principal()
    query = read_query(ProjectQuery)
    items, total = await services().db.run(
        list_projects, viewer_id=principal.user_id, see_all=principal.is_admin, statuses=tuple(query.status),
        priorities=tuple(query.priority), limit=query.limit, offset=query.offset, transaction=False,
    )
    return paginated(
        items, page=query.effective_page, limit=query.limit, total=total, next_cursor=query.next_cursor(total),
    )


@blueprint.post("")
@api(tag="projects", ok=Project, status=201, body=ProjectCreateBody, errors=(403,))
async def create() -> Response:
    principal = await current_principal()
    if not may_create_projects(principal):
        raise Forbidden("Your global role cannot create projects")
    body = await read_body(ProjectCreateBody)
    idempotency = await idempotency_for(principal, 201)
    if isinstance(idempotency, Response):
        return idempotency
    fields = body.model_dump()
    try:
        view = await services().db.run(
            store.create_project, project_id=uuid.uuid4(), owner_id=principal.user_id, fields=fields,
            now=datetime.now(timezone.utc),
            idempotency=(idempotency.key, idempotency.request_hash) if idempotency else None,
        )
    except store.IdempotencyKeyTaken:
        # A concurrent request with the same key committed first: answer as its retry.
        replay = await idempotency_for(principal, 201)
        if isinstance(replay, Response):
            return replay
        raise
    response = created(view, f"/api/v1/projects/{view['id']}")
    response.headers["ETag"] = etag(1)
    return response


@blueprint.get("/<project_id>")
@api(tag="projects", ok=Project, errors=(403, 404))
async def get(project_id: str) -> Response:
    principal = await current_principal()
    actor = await readable_project(path_uuid(project_id, "project"), principal)
    seq = actor.state.seq  # type: ignore[union-attr]
    if not_modified(seq):
        return Response(b"", status=304, headers={"ETag": etag(seq)})
    return json_response(project_view(actor, principal), headers={"ETag": etag(seq)})


async def _update(project_id: str) -> Response:
    body = await read_body(ProjectFields)
    pid = path_uuid(project_id, "project")
    version = if_match_version()
    return await write(pid, lambda p: ops.ProjectUpdate(body.changes(), if_version=version))


@blueprint.put("/<project_id>")
@api(tag="projects", ok=Project, body=ProjectFields, errors=(403, 404, 409, 412, 503))
async def replace(project_id: str) -> Response:
    """Update the fields sent (as the seed's clients expect of PUT)."""
    return await _update(project_id)


@blueprint.patch("/<project_id>")
@api(tag="projects", ok=Project, body=ProjectFields, errors=(403, 404, 409, 412, 503))
async def patch(project_id: str) -> Response:
    return await _update(project_id)


@blueprint.delete("/<project_id>")
@api(tag="projects", status=204, errors=(403, 404, 409, 412, 503))
async def delete(project_id: str) -> Response:
    pid = path_uuid(project_id, "project")
    version = if_match_version()
    return await write(pid, lambda p: ops.ProjectDelete(if_version=version), success_status=204)


# --- members ---------------------------------------------------------------------

@blueprint.get("/<project_id>/members")
@api(tag="projects", ok=MemberList, errors=(403, 404))
async def members(project_id: str) -> Response:
    principal = await current_principal()
    actor = await readable_project(path_uuid(project_id, "project"), principal)
    state = actor.state
    assert state is not None
    rank = {ProjectRole.OWNER: 0, ProjectRole.MANAGER: 1, ProjectRole.MEMBER: 2, ProjectRole.VIEWER: 3}
    ordered = sorted(state.members.values(), key=lambda m: (rank[m.role], m.username.lower()))
    return json_response({"data": [m.view() for m in ordered]})


@blueprint.post("/<project_id>/members")
@api(tag="projects", ok=Member, status=201, body=MemberAddBody, errors=(403, 404, 409, 412, 503))
async def add_member(project_id: str) -> Response:
    pid = path_uuid(project_id, "project")
    body = await read_body(MemberAddBody)
    principal = await current_principal()
    await readable_project(pid, principal)  # 403/404 before revealing whether the user exists
    candidate = await services().db.run(store.member_candidate, body.user_id, transaction=False)
    if candidate is None:
        raise NotFound("No such user")
    username, display = candidate
    return await write(
        pid, lambda p: ops.MemberAdd(body.user_id, ProjectRole(body.role), username, display),
        success_status=201, location=lambda r: f"/api/v1/projects/{pid}/members/{body.user_id}",
    )


@blueprint.put("/<project_id>/members/<user_id>")
@api(tag="projects", ok=Member, body=MemberRoleBody, errors=(403, 404, 409, 412, 503))
async def update_member(project_id: str, user_id: str) -> Response:
    pid, uid = path_uuid(project_id, "project"), path_uuid(user_id, "member")
    body = await read_body(MemberRoleBody)
    return await write(pid, lambda p: ops.MemberUpdate(uid, ProjectRole(body.role)))


@blueprint.delete("/<project_id>/members/<user_id>")
@api(tag="projects", status=204, errors=(403, 404, 409, 412, 503))
async def remove_member(project_id: str, user_id: str) -> Response:
    pid, uid = path_uuid(project_id, "project"), path_uuid(user_id, "member")
    return await write(pid, lambda p: ops.MemberRemove(uid), success_status=204)


# --- change log ------------------------------------------------------------------

@blueprint.get("/<project_id>/changes")
@api(tag="projects", ok=Changes, query=ChangesQuery, errors=(403, 404))
async def changes(project_id: str) -> Response:
    """Committed events after ``since``, in seq order (the WebSocket's events)."""
    principal = await current_principal()
    pid = path_uuid(project_id, "project")
    actor = await readable_project(pid, principal)
    query = read_query(ChangesQuery)
    events = await services().db.run(changelog.events_since, pid, query.since, query.limit, transaction=False)
    last = events[-1]["seq"] if events else query.since
    seq = actor.state.seq  # type: ignore[union-attr]
    return json_response({"data": events, "seq": seq, "next_since": last, "has_more": last < seq})


@blueprint.get("/<project_id>/activity")
@api(tag="projects", ok=ActivityPage, query=ActivityQuery, errors=(403, 404))
async def activity_feed(project_id: str) -> Response:
    """A human-readable feed built from the change log, newest first."""
    principal = await current_principal()
    pid = path_uuid(project_id, "project")
    await readable_project(pid, principal)
    query = read_query(ActivityQuery)
    rows, names = await services().db.run(
        activity_store.project_events, pid, before=query.before, limit=query.limit, transaction=False,
    )
    entries = [activity.entry(r, names) for r in rows]
    next_before = rows[-1]["seq"] if len(rows) == query.limit and rows[-1]["seq"] > 1 else None
    return json_response({"data": entries, "next_before": next_before})
