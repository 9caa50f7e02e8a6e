"""Request bodies and query strings of the project and task API (pydantic v2).

Bodies forbid unknown fields, so ids, owners, creators, versions and seqs
can never be set by a client (mass assignment -> 422). Every string and list
is bounded; the same bounds are enforced again by the domain rules.
"""

from __future__ import annotations

import base64
import uuid
from typing import Annotated, Literal

import orjson
import pydantic

from collab.http.inputs import Body
from collab.protocol.types import Day, Instant
from collab.storage.queries import TASK_SORTS

Title = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=200)]
TaskDescription = Annotated[str, pydantic.StringConstraints(max_length=20_000)]
ProjectName = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=200)]
ProjectDescription = Annotated[str, pydantic.StringConstraints(max_length=10_000)]
Tag = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=50)]
Tags = Annotated[list[Tag], pydantic.Field(max_length=20)]
Hours = Annotated[int, pydantic.Field(ge=0, le=100_000)]
TaskStatus = Literal["todo", "in_progress", "in_review", "done", "cancelled"]
Priority = Literal["low", "medium", "high", "urgent"]
ProjectStatus = Literal["active", "on_hold", "completed", "archived"]
ProjectRole = Literal["owner", "manager", "member", "viewer"]
MAX_PAGE_SIZE = 100


class TaskFields(Body):
    title: Title | None = None
    description: TaskDescription | None = None
    status: TaskStatus | None = None
    priority: Priority | None = None
    assignee_id: uuid.UUID | None = None
    due_date: Instant | None = None
    estimated_hours: Hours | None = None
    actual_hours: Hours | None = None
    tags: Tags | None = None

    def changes(self) -> dict[str, object]:
        """Only the fields the client sent (explicit nulls included)."""
        return {k: getattr(self, k) for k in self.model_fields_set}


class TaskCreateBody(TaskFields):
    project_id: uuid.UUID
    title: Title  # required here

    def changes(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.model_fields_set if k != "project_id"}


class TaskStatusBody(Body):
    status: TaskStatus


class TaskAssignBody(Body):
    assignee_id: uuid.UUID | None


class TaskMoveBody(Body):
    status: TaskStatus | None = None
    before: uuid.UUID | None = None
    after: uuid.UUID | None = None


class ProjectFields(Body):
    name: ProjectName | None = None
    description: ProjectDescription | None = None
    status: ProjectStatus | None = None
    priority: Priority | None = None
    start_date: Day | None = None
    due_date: Day | None = None

    def changes(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.model_fields_set}


class ProjectCreateBody(ProjectFields):
    name: ProjectName
    status: ProjectStatus = "active"
    priority: Priority = "medium"

    @pydantic.model_validator(mode="after")
    def _dates_in_order(self) -> "ProjectCreateBody":
        if self.start_date and self.due_date and self.due_date < self.start_date:
            raise ValueError("due_date is before start_date")
        return self


class MemberAddBody(Body):
    user_id: uuid.UUID
    role: ProjectRole = "member"


class MemberRoleBody(Body):
    role: ProjectRole


class Paging(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    page: Annotated[int, pydantic.Field(ge=1, le=100_000)] = 1
    limit: Annotated[int, pydantic.Field(ge=1, le=MAX_PAGE_SIZE)] = 20
    cursor: Annotated[str, pydantic.StringConstraints(max_length=200)] | None = None

    @property
    def offset(self) -> int:
        if self.cursor is not None:
            return decode_cursor(self.cursor)
        return (self.page - 1) * self.limit

    @property
    def effective_page(self) -> int:
        return self.offset // self.limit + 1

    def next_cursor(self, total: int) -> str | None:
        following = self.offset + self.limit
        return encode_cursor(following) if following < total else None


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"o": offset})).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        offset = data["o"]
        if not isinstance(offset, int) or not 0 <= offset <= 10_000_000:
            raise ValueError
        return offset
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        from collab.errors import ValidationFailed

        raise ValidationFailed.single("cursor", "Not a cursor this server issued", "cursor") from None


_SORTS = tuple(TASK_SORTS) + tuple("-" + s for s in TASK_SORTS) + ("relevance",)
TaskSort = Literal[_SORTS]  # type: ignore[valid-type]


class TaskQuery(Paging):
    project_id: uuid.UUID | None = None
    assignee_id: uuid.UUID | None = None
    created_by: uuid.UUID | None = None
    status: Annotated[list[TaskStatus], pydantic.Field(max_length=5)] = []
    priority: Annotated[list[Priority], pydantic.Field(max_length=4)] = []
    tags: Annotated[list[Tag], pydantic.Field(max_length=20)] = []
    due_date_from: Instant | None = None
    due_date_to: Instant | None = None
    search: Annotated[
        str, pydantic.StringConstraints(min_length=1, max_length=200, strip_whitespace=True)
    ] | None = None
    sort: TaskSort = "-created_at"


class ProjectQuery(Paging):
    status: Annotated[list[ProjectStatus], pydantic.Field(max_length=4)] = []
    priority: Annotated[list[Priority], pydantic.Field(max_length=4)] = []


class ChangesQuery(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    since: Annotated[int, pydantic.Field(ge=0, le=2**63 - 1)] = 0
    limit: Annotated[int, pydantic.Field(ge=1, le=1000)] = 100


CommentContent = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=10_000)]


class CommentBody(Body):
    """A comment's Markdown source (stored as text, never rendered to HTML by the server)."""

    content: CommentContent


class ActivityQuery(pydantic.BaseModel):
    """Newest first; ``before`` is the seq to continue below (the previous page's ``next_before``)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    before: Annotated[int, pydantic.Field(ge=1, le=2**63 - 1)] | None = None
    limit: Annotated[int, pydantic.Field(ge=1, le=MAX_PAGE_SIZE)] = 50


class NotificationQuery(Paging):
    is_read: bool | None = None
