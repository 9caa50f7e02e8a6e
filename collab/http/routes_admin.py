"""/api/v1/admin: user administration for the global admin role."""

from __future__ import annotations

import base64
import time
import uuid
from datetime import datetime
from typing import Literal

import orjson
import pydantic
from quart import Blueprint, Response

from collab.domain.users import Principal
from collab.domain import activity
from collab.errors import Forbidden, ValidationFailed
from collab.http.context import current_principal, services
from collab.http.inputs import Body, path_uuid, read_body, read_query
from collab.http.responses import json_response, paginated
from collab.http.routes_users import UserSearch
from collab.http.openapi import api
from collab.http.schemas import MAX_PAGE_SIZE
from collab.http.schemas_out import AdminLogPage, AdminMetrics, Page, Reset, UserPrivate
from collab.storage import activity as activity_store

blueprint = Blueprint("admin", __name__, url_prefix="/api/v1/admin")


class ActiveBody(Body):
    is_active: bool


class RolesBody(Body):
    roles: list[Literal["admin", "manager", "developer", "viewer"]] = pydantic.Field(min_length=1, max_length=4)


async def require_admin() -> Principal:
    principal = await current_principal()
    if not principal.is_admin:
        raise Forbidden("This needs the admin role")
    return principal


@blueprint.get("/users")
@api(tag="admin", ok=Page[UserPrivate], query=UserSearch, errors=(403,))
async def list_users() -> Response:
    principal = await require_admin()
    query = read_query(UserSearch)
    users, total = await services().auth.search_users(principal, query=query.q, limit=query.limit, offset=query.offset)
    return paginated([u.private_view() for u in users], page=query.effective_page, limit=query.limit, total=total,
                     next_cursor=query.next_cursor(total))


@blueprint.put("/users/<user_id>/active")
@api(tag="admin", ok=UserPrivate, body=ActiveBody, errors=(403, 404))
async def set_active(user_id: str) -> Response:
    principal = await require_admin()
    body = await read_body(ActiveBody)
    target = path_uuid(user_id, "user")
    if target == principal.user_id and not body.is_active:
        raise Forbidden("Admins cannot deactivate themselves")
    user = await services().auth.set_active(target, body.is_active, by=principal.user_id)
    return json_response(user.private_view())


@blueprint.put("/users/<user_id>/roles")
@api(tag="admin", ok=UserPrivate, body=RolesBody, errors=(403, 404))
async def set_roles(user_id: str) -> Response:
    principal = await require_admin()
    body = await read_body(RolesBody)
    target = path_uuid(user_id, "user")
    if target == principal.user_id and "admin" not in body.roles:
        raise Forbidden("Admins cannot remove their own admin role")
    user = await services().auth.set_roles(target, tuple(sorted(set(body.roles))), by=principal.user_id)
    return json_response(user.private_view())


class LogQuery(pydantic.BaseModel):
    """Newest first; ``cursor`` continues from the previous page's ``next_cursor``."""

    model_config = pydantic.ConfigDict(extra="forbid")
    limit: int = pydantic.Field(default=50, ge=1, le=MAX_PAGE_SIZE)
    cursor: str | None = pydantic.Field(default=None, max_length=200)
    project_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None


def _log_cursor(raw: str) -> tuple[datetime, str]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        at, key = datetime.fromisoformat(data["t"]), data["k"]
        if at.tzinfo is None or not isinstance(key, str) or len(key) > 100:
            raise ValueError
        return at, key
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        raise ValidationFailed.single("cursor", "Not a cursor this server issued", "cursor") from None


@blueprint.get("/logs")
@api(tag="admin", ok=AdminLogPage, query=LogQuery, errors=(403,))
async def logs() -> Response:
    """The global activity log: every project's changes and the audit trail, newest first."""
    await require_admin()
    q = read_query(LogQuery)
    rows, names = await services().db.run(
        activity_store.global_log, before=_log_cursor(q.cursor) if q.cursor else None, limit=q.limit + 1,
        project_id=q.project_id, user_id=q.user_id, transaction=False,
    )
    page = rows[: q.limit]
    data = [
        activity.entry(r, names) | {"project_id": str(r["project_id"]) if r["project_id"] else None,
                                    "project_name": r["project_name"]}
        for r in page
    ]
    next_cursor = None
    if len(rows) > q.limit:
        last = page[-1]
        next_cursor = base64.urlsafe_b64encode(
            orjson.dumps({"t": last["created_at"].isoformat(), "k": last["key"]})
        ).decode().rstrip("=")
    return json_response({"data": data, "next_cursor": next_cursor})


@blueprint.get("/metrics")
@api(tag="admin", ok=AdminMetrics, errors=(403,))
async def metrics() -> Response:
    """System figures as JSON: uptime, event-loop stalls, database pool, project actors, WebSockets, GC."""
    await require_admin()
    svc = services()
    return json_response({
        "uptime_s": round(time.time() - svc.started_at, 3),
        "event_loop": svc.loop_monitor.snapshot(),
        "database_pool": svc.db.pool_stats(),
        "actors": svc.registry.figures(),
        "websockets": svc.hub.figures(),
        "garbage_collector": svc.gc_sweeper.figures(),
    })


@blueprint.post("/metrics/reset")
@api(tag="admin", ok=Reset, errors=(403,))
async def reset_metrics() -> Response:
    """Start a new window for the "since reset" figures (used by the benchmarks)."""
    await require_admin()
    services().loop_monitor.reset()
    return json_response({"reset": True})
