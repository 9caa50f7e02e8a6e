"""/api/v1/tasks: task CRUD, status, assignment, moves, lists and search.

A single task is read from its project actor's committed state (no query
once the project is loaded); lists and search run in PostgreSQL. Every write
is an op through the actor and answers after commit, with the task's new
version as ``ETag``.
"""

from __future__ import annotations

import uuid

from quart import Blueprint, Response

from collab.domain import ops
from collab.domain.model import TaskStatus
from collab.domain.views import task_view
from collab.http.context import current_principal, services
from collab.http.inputs import path_uuid, read_body, read_query
from collab.http.responses import json_response, paginated
from collab.http.schemas import TaskAssignBody, TaskCreateBody, TaskFields, TaskMoveBody, TaskQuery, TaskStatusBody
from collab.http.task_access import readable_task
from collab.http.writes import etag, if_match_version, not_modified, write
from collab.storage.queries import TaskFilter, list_tasks
from collab.http.openapi import api
from collab.http.schemas_out import Page, Task

blueprint = Blueprint("tasks", __name__, url_prefix="/api/v1/tasks")


async def _search() -> Response:
    principal = await current_principal()
    q = read_query(TaskQuery)
    filters = TaskFilter(
        project_id=q.project_id, assignee_id=q.assignee_id, created_by=q.created_by, statuses=tuple(q.status),
        priorities=tuple(q.priority), tags=tuple(q.tags), due_date_from=q.due_date_from,
        due_date_to=q.due_date_to, search=q.search, sort=q.sort,
    )
    items, total = await services().db.run(
        list_tasks, viewer_id=principal.user_id, see_all=principal.is_admin, filters=filters,
        limit=q.limit, offset=q.offset, transaction=False,
    )
    return paginated(items, page=q.effective_page, limit=q.limit, total=total, next_cursor=q.next_cursor(total))


@blueprint.get("")
@api(tag="tasks", ok=Page[Task], query=TaskQuery)
async def list_() -> Response:
    return await _search()


@blueprint.get("/search")
@api(tag="tasks", ok=Page[Task], query=TaskQuery)
async def search() -> Response:
    return await _search()


@blueprint.post("")
@api(tag="tasks", ok=Task, status=201, body=TaskCreateBody, errors=(403, 404, 409, 412, 503))
async def create() -> Response:
    body = await read_body(TaskCreateBody)
    task_id = uuid.uuid4()
    return await write(
        body.project_id, lambda p: ops.TaskCreate(task_id, body.changes()),
        success_status=201, location=lambda r: f"/api/v1/tasks/{task_id}",
    )


@blueprint.get("/<task_id>")
@api(tag="tasks", ok=Task, errors=(403, 404))
async def get(task_id: str) -> Response:
    found = await readable_task(task_id)
    task = found.task
    if not_modified(task.version):
        return Response(b"", status=304, headers={"ETag": etag(task.version)})
    return json_response(task_view(task, found.state.project.name, found.name_of), headers={"ETag": etag(task.version)})


async def _task_write(task_id: str, make_op, *, success_status: int = 200) -> Response:  # type: ignore[no-untyped-def]
    tid = path_uuid(task_id, "task")
    version = if_match_version()
    project_id = await services().registry.project_of_task(tid)
    return await write(project_id, lambda p: make_op(tid, version), success_status=success_status)


@blueprint.put("/<task_id>")
@api(tag="tasks", ok=Task, body=TaskFields, errors=(403, 404, 409, 412, 503))
async def update(task_id: str) -> Response:
    """Update the fields sent (partial, as in the seed)."""
    body = await read_body(TaskFields)
    return await _task_write(task_id, lambda tid, v: ops.TaskUpdate(tid, body.changes(), if_version=v))


@blueprint.patch("/<task_id>")
@api(tag="tasks", ok=Task, body=TaskFields, errors=(403, 404, 409, 412, 503))
async def patch(task_id: str) -> Response:
    return await update(task_id)


@blueprint.put("/<task_id>/status")
@api(tag="tasks", ok=Task, body=TaskStatusBody, errors=(403, 404, 409, 412, 503))
async def set_status(task_id: str) -> Response:
    body = await read_body(TaskStatusBody)
    return await _task_write(task_id, lambda tid, v: ops.TaskUpdate(tid, {"status": body.status}, if_version=v))


@blueprint.put("/<task_id>/assign")
@api(tag="tasks", ok=Task, body=TaskAssignBody, errors=(403, 404, 409, 412, 503))
async def assign(task_id: str) -> Response:
    body = await read_body(TaskAssignBody)
    return await _task_write(task_id, lambda tid, v: ops.TaskAssign(tid, body.assignee_id, if_version=v))


@blueprint.post("/<task_id>/move")
@api(tag="tasks", ok=Task, body=TaskMoveBody, errors=(403, 404, 409, 412, 503))
async def move(task_id: str) -> Response:
    """Place the task in a column (``status``) between neighbours (``after`` / ``before``)."""
    body = await read_body(TaskMoveBody)
    status = TaskStatus(body.status) if body.status else None
    return await _task_write(
        task_id, lambda tid, v: ops.TaskMove(tid, status=status, before=body.before, after=body.after, if_version=v)
    )


@blueprint.delete("/<task_id>")
@api(tag="tasks", status=204, errors=(403, 404, 409, 412, 503))
async def delete(task_id: str) -> Response:
    return await _task_write(task_id, lambda tid, v: ops.TaskDelete(tid, if_version=v), success_status=204)
