"""/api/v1/tasks/{id}/comments: a task's discussion.

Lists read the project actor's committed state (oldest first, paginated);
writes are ops through the actor (``comment.add|edit|delete``), committed
with their notifications and broadcast to subscribers like any other change.
Content is Markdown kept as text: the server never renders it to HTML.
Editing is for the author; deleting for the author, the project owner or an
admin.
"""

from __future__ import annotations

import uuid

from quart import Blueprint, Response

from collab.domain import ops
from collab.domain.views import comment_payload
from collab.http.context import services
from collab.http.inputs import path_uuid, read_body, read_query
from collab.http.openapi import api
from collab.http.responses import paginated
from collab.http.schemas import CommentBody, Paging
from collab.http.schemas_out import Comment, Page
from collab.http.task_access import readable_task
from collab.http.writes import write

blueprint = Blueprint("comments", __name__, url_prefix="/api/v1/tasks")

_WRITE_ERRORS = (403, 404, 409, 503)


@blueprint.get("/<task_id>/comments")
@api(tag="comments", ok=Page[Comment], query=Paging, errors=(403, 404))
async def list_(task_id: str) -> Response:
    found = await readable_task(task_id)
    q = read_query(Paging)
    comments = sorted(
        (c for c in found.state.comments.values() if c.task_id == found.task.id), key=lambda c: (c.created_at, c.id)
    )
    page = comments[q.offset: q.offset + q.limit]
    items = [comment_payload(c) | {"username": found.name_of(c.user_id)} for c in page]
    return paginated(items, page=q.effective_page, limit=q.limit, total=len(comments),
                     next_cursor=q.next_cursor(len(comments)))


async def _project_of(task_id: str) -> tuple[uuid.UUID, uuid.UUID]:
    tid = path_uuid(task_id, "task")
    return tid, await services().registry.project_of_task(tid)


@blueprint.post("/<task_id>/comments")
@api(tag="comments", ok=Comment, status=201, body=CommentBody, errors=_WRITE_ERRORS)
async def create(task_id: str) -> Response:
    body = await read_body(CommentBody)
    tid, project_id = await _project_of(task_id)
    comment_id = uuid.uuid4()
    return await write(
        project_id, lambda p: ops.CommentAdd(tid, comment_id, body.content), success_status=201,
        location=lambda r: f"/api/v1/tasks/{tid}/comments/{comment_id}",
    )


@blueprint.put("/<task_id>/comments/<comment_id>")
@api(tag="comments", ok=Comment, body=CommentBody, errors=_WRITE_ERRORS)
async def edit(task_id: str, comment_id: str) -> Response:
    body = await read_body(CommentBody)
    tid, project_id = await _project_of(task_id)
    cid = path_uuid(comment_id, "comment")
    return await write(project_id, lambda p: ops.CommentEdit(tid, cid, body.content))


@blueprint.delete("/<task_id>/comments/<comment_id>")
@api(tag="comments", status=204, errors=_WRITE_ERRORS)
async def delete(task_id: str, comment_id: str) -> Response:
    tid, project_id = await _project_of(task_id)
    cid = path_uuid(comment_id, "comment")
    return await write(project_id, lambda p: ops.CommentDelete(tid, cid), success_status=204)
