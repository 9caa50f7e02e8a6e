"""WebSocket protocol v1: the frames a client may send, validated, and the ops inside.

Pure: no trio, no I/O. :func:`parse_client_frame` turns one text message
into a typed frame or raises :class:`ProtocolError` (an ``error`` frame with
code ``invalid``; the socket stays open). :func:`to_domain_op` turns a wire
op into a domain op. Server frames are plain dicts built by
:mod:`collab.protocol.server_frames`; docs/protocol.md describes both.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal, Union

import orjson
import pydantic

from collab.domain import ops
from collab.domain.model import ProjectRole, TaskStatus
from collab.protocol.types import Instant

PROTOCOL_VERSION = 1

ClientOpId = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
RequestId = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=64)]
Title = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=200)]
Tag = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=50)]
Tags = Annotated[list[Tag], pydantic.Field(min_length=1, max_length=20)]
Hours = Annotated[int, pydantic.Field(ge=0, le=100_000)]
Version = Annotated[int, pydantic.Field(ge=0)]


class ProtocolError(Exception):
    """A frame that is not valid protocol; answered with an ``error`` frame."""

    def __init__(self, message: str, request_id: str | None = None, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id
        self.errors = errors or []


class _Frame(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


# --- ops (inside an `op` frame) ------------------------------------------------------

class TaskFieldsIn(_Frame):
    title: Title | None = None
    description: Annotated[str, pydantic.StringConstraints(max_length=20_000)] | None = None
    status: Literal["todo", "in_progress", "in_review", "done", "cancelled"] | None = None
    priority: Literal["low", "medium", "high", "urgent"] | None = None
    assignee_id: uuid.UUID | None = None
    due_date: Instant | None = None
    estimated_hours: Hours | None = None
    actual_hours: Hours | None = None
    tags: Annotated[list[Tag], pydantic.Field(max_length=20)] | None = None

    def changes(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.model_fields_set}


class TaskCreateOp(_Frame):
    kind: Literal["task.create"]
    task_id: uuid.UUID | None = None  # clients may choose the id (so a resend names the same task)
    fields: TaskFieldsIn


class TaskUpdateOp(_Frame):
    kind: Literal["task.update"]
    task_id: uuid.UUID
    fields: TaskFieldsIn
    if_version: Version | None = None


class TaskMoveOp(_Frame):
    kind: Literal["task.move"]
    task_id: uuid.UUID
    status: Literal["todo", "in_progress", "in_review", "done", "cancelled"] | None = None
    before: uuid.UUID | None = None
    after: uuid.UUID | None = None
    if_version: Version | None = None


class TaskTagsOp(_Frame):
    kind: Literal["task.add_tags", "task.remove_tags"]
    task_id: uuid.UUID
    tags: Tags
    if_version: Version | None = None


class TaskAssignOp(_Frame):
    kind: Literal["task.assign"]
    task_id: uuid.UUID
    assignee_id: uuid.UUID | None
    if_version: Version | None = None


class TaskDeleteOp(_Frame):
    kind: Literal["task.delete"]
    task_id: uuid.UUID
    if_version: Version | None = None


class ProjectUpdateOp(_Frame):
    kind: Literal["project.update"]
    fields: dict[Literal["name", "description", "status", "priority"], Any]
    if_version: Version | None = None


class MemberUpdateOp(_Frame):
    kind: Literal["member.update"]
    user_id: uuid.UUID
    role: Literal["owner", "manager", "member", "viewer"]


class MemberRemoveOp(_Frame):
    kind: Literal["member.remove"]
    user_id: uuid.UUID


CommentContent = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=10_000)]


class CommentAddOp(_Frame):
    kind: Literal["comment.add"]
    task_id: uuid.UUID
    comment_id: uuid.UUID | None = None  # clients may choose the id (so a resend names the same comment)
    content: CommentContent


class CommentEditOp(_Frame):
    kind: Literal["comment.edit"]
    task_id: uuid.UUID
    comment_id: uuid.UUID
    content: CommentContent


class CommentDeleteOp(_Frame):
    kind: Literal["comment.delete"]
    task_id: uuid.UUID
    comment_id: uuid.UUID


WireOp = Annotated[
    Union[TaskCreateOp, TaskUpdateOp, TaskMoveOp, TaskTagsOp, TaskAssignOp, TaskDeleteOp,
          ProjectUpdateOp, MemberUpdateOp, MemberRemoveOp, CommentAddOp, CommentEditOp, CommentDeleteOp],
    pydantic.Field(discriminator="kind"),
]


def to_domain_op(op: Any) -> ops.Op:
    """The domain op for a validated wire op."""
    if isinstance(op, TaskCreateOp):
        return ops.TaskCreate(op.task_id or uuid.uuid4(), op.fields.changes())
    if isinstance(op, TaskUpdateOp):
        return ops.TaskUpdate(op.task_id, op.fields.changes(), if_version=op.if_version)
    if isinstance(op, TaskMoveOp):
        status = TaskStatus(op.status) if op.status else None
        return ops.TaskMove(op.task_id, status=status, before=op.before, after=op.after, if_version=op.if_version)
    if isinstance(op, TaskTagsOp):
        cls = ops.TaskAddTags if op.kind == "task.add_tags" else ops.TaskRemoveTags
        return cls(op.task_id, tuple(op.tags), if_version=op.if_version)
    if isinstance(op, TaskAssignOp):
        return ops.TaskAssign(op.task_id, op.assignee_id, if_version=op.if_version)
    if isinstance(op, TaskDeleteOp):
        return ops.TaskDelete(op.task_id, if_version=op.if_version)
    if isinstance(op, ProjectUpdateOp):
        return ops.ProjectUpdate(dict(op.fields.items()), if_version=op.if_version)
    if isinstance(op, MemberUpdateOp):
        return ops.MemberUpdate(op.user_id, ProjectRole(op.role))
    if isinstance(op, MemberRemoveOp):
        return ops.MemberRemove(op.user_id)
    if isinstance(op, CommentAddOp):
        return ops.CommentAdd(op.task_id, op.comment_id or uuid.uuid4(), op.content)
    if isinstance(op, CommentEditOp):
        return ops.CommentEdit(op.task_id, op.comment_id, op.content)
    if isinstance(op, CommentDeleteOp):
        return ops.CommentDelete(op.task_id, op.comment_id)
    raise TypeError(f"not a wire op: {op!r}")


# --- client frames -------------------------------------------------------------------

class AuthFrame(_Frame):
    type: Literal["auth"]
    token: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=4096)]


class SubscribeFrame(_Frame):
    type: Literal["subscribe"]
    id: RequestId
    project_id: uuid.UUID
    since: Annotated[int, pydantic.Field(ge=0, le=2**63 - 1)] | None = None


class UnsubscribeFrame(_Frame):
    type: Literal["unsubscribe"]
    id: RequestId
    project_id: uuid.UUID


class OpFrame(_Frame):
    type: Literal["op"]
    id: ClientOpId
    project_id: uuid.UUID
    op: WireOp


class PresenceState(_Frame):
    viewing: uuid.UUID | None = None  # the task the user has open
    editing: uuid.UUID | None = None  # the task the user is editing


class PresenceFrame(_Frame):
    type: Literal["presence"]
    id: RequestId | None = None  # echoed in an error, if any
    project_id: uuid.UUID
    state: PresenceState


class PingFrame(_Frame):
    type: Literal["ping"]
    id: RequestId | None = None


ClientFrame = Annotated[
    Union[AuthFrame, SubscribeFrame, UnsubscribeFrame, OpFrame, PresenceFrame, PingFrame],
    pydantic.Field(discriminator="type"),
]
_CLIENT_FRAME: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ClientFrame)
FRAME_TYPES = ("auth", "subscribe", "unsubscribe", "op", "presence", "ping")


def parse_client_frame(text: str | bytes) -> Any:
    """One message -> a typed client frame; :class:`ProtocolError` otherwise."""
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ProtocolError("The message is not valid JSON (or is nested too deeply)") from None
    if not isinstance(raw, dict):
        raise ProtocolError("A frame is a JSON object with a 'type'")
    request_id = raw.get("id") if isinstance(raw.get("id"), str) else None
    frame_type = raw.get("type")
    if frame_type not in FRAME_TYPES:
        raise ProtocolError(f"Unknown frame type; expected one of {', '.join(FRAME_TYPES)}", request_id)
    try:
        return _CLIENT_FRAME.validate_python(raw)
    except pydantic.ValidationError as exc:
        errors = [
            {"loc": list(e["loc"]), "message": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_input=False, include_context=False)[:10]
        ]
        raise ProtocolError("The frame is not valid", request_id, errors) from None
