"""/api/v1/notifications: the caller's notifications, newest first (API.md)."""

from __future__ import annotations

from quart import Blueprint, Response

from collab.http.context import current_principal, services
from collab.http.inputs import path_uuid, read_query
from collab.http.openapi import api
from collab.http.responses import json_response
from collab.http.schemas import NotificationQuery
from collab.http.schemas_out import MarkedRead, Notification, NotificationPage, UnreadCount
from collab.storage import notifications as store

blueprint = Blueprint("notifications", __name__, url_prefix="/api/v1/notifications")


@blueprint.get("")
@api(tag="notifications", ok=NotificationPage, query=NotificationQuery)
async def list_() -> Response:
    principal = await current_principal()
    q = read_query(NotificationQuery)
    items, total, unread = await services().db.run(
        store.list_for, principal.user_id, is_read=q.is_read, limit=q.limit, offset=q.offset, transaction=False,
    )
    pages = -(-total // q.limit)
    return json_response({
        "data": items,
        "pagination": {"page": q.effective_page, "limit": q.limit, "total": total, "pages": pages,
                       "next_cursor": q.next_cursor(total)},
        "unread_count": unread,
    })


@blueprint.get("/unread-count")
@api(tag="notifications", ok=UnreadCount)
async def unread() -> Response:
    principal = await current_principal()
    count = await services().db.run(store.unread_count, principal.user_id, transaction=False)
    return json_response({"unread_count": count})


@blueprint.put("/<notification_id>/read")
@api(tag="notifications", ok=Notification, errors=(404,))
async def mark_read(notification_id: str) -> Response:
    principal = await current_principal()
    view = await services().db.run(store.mark_read, principal.user_id, path_uuid(notification_id, "notification"))
    return json_response(view)


@blueprint.put("/read-all")
@api(tag="notifications", ok=MarkedRead)
async def mark_all_read() -> Response:
    principal = await current_principal()
    marked = await services().db.run(store.mark_all_read, principal.user_id)
    return json_response({"marked_read": marked})
