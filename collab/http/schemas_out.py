"""Response shapes, for the OpenAPI document (and schemathesis' conformance check).

The handlers build their JSON from the domain views; these models describe
exactly that JSON. ``tests/e2e/test_openapi.py`` validates real responses
against them, so a drift between the two fails a test.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Generic, Literal, TypeVar

import pydantic

from collab.http.schemas import Priority, ProjectRole, ProjectStatus, TaskStatus

T = TypeVar("T")


class Out(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class FieldProblem(Out):
    loc: list[str | int]
    message: str
    type: str


class Problem(Out):
    """RFC 9457 problem details with Collab's stable ``code``."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    retryable: bool
    request_id: str | None = None
    errors: list[FieldProblem] | None = None


class Pagination(Out):
    page: int
    limit: int
    total: int
    pages: int
    next_cursor: str | None


class Page(Out, Generic[T]):
    data: list[T]
    pagination: Pagination


class UserPublic(Out):
    id: uuid.UUID
    username: str
    first_name: str | None
    last_name: str | None
    display_name: str
    avatar_url: str | None


class UserPrivate(UserPublic):
    email: str
    roles: list[str]
    is_active: bool
    email_verified: bool
    created_at: datetime
    updated_at: datetime


class UserAny(UserPublic):
    """A user: the private fields appear for yourself and for admins."""

    email: str | None = None
    roles: list[str] | None = None
    is_active: bool | None = None
    email_verified: bool | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Tokens(Out):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    session_id: uuid.UUID
    user: UserPrivate | None = None


class Session(Out):
    id: uuid.UUID
    current: bool
    user_agent: str | None
    ip_address: str | None
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime


class SessionList(Out):
    data: list[Session]


class PasswordChanged(Out):
    changed: bool
    other_sessions_ended: int


class HealthServices(Out):
    database: Literal["up", "down"]
    cache: Literal["up", "down", "disabled"]
    rate_limiter: Literal["memory", "redis", "fallback"]  # fallback: Redis is configured but unreachable


class Health(Out):
    status: Literal["ok", "degraded", "unavailable"]
    timestamp: datetime
    version: str
    services: HealthServices


class Ready(Out):
    status: Literal["ready", "draining"]


class MetricsText(Out):
    """Marker: the Prometheus text exposition (documented as text/plain, see openapi.py)."""


class Pong(Out):
    pong: bool


class Task(Out):
    id: uuid.UUID
    project_id: uuid.UUID
    project_name: str
    title: str
    description: str | None
    status: TaskStatus
    priority: Priority
    assignee_id: uuid.UUID | None
    assignee_name: str | None
    created_by: uuid.UUID
    created_by_name: str | None
    due_date: datetime | None
    completed_at: datetime | None
    estimated_hours: int | None
    actual_hours: int | None
    tags: list[str]
    position: str
    version: int
    created_at: datetime
    updated_at: datetime


class Project(Out):
    id: uuid.UUID
    name: str
    description: str | None
    owner_id: uuid.UUID
    status: ProjectStatus
    priority: Priority
    start_date: date | None
    due_date: date | None
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    seq: int
    my_role: ProjectRole | None = None
    member_count: int | None = None
    task_count: int | None = None


class Member(Out):
    user_id: uuid.UUID
    role: ProjectRole
    username: str
    display_name: str
    joined_at: datetime


class MemberList(Out):
    data: list[Member]


class ChangeEvent(Out):
    seq: int
    kind: str
    task_id: uuid.UUID | None
    actor_id: uuid.UUID | None
    client_op_id: str | None
    data: dict[str, Any]
    created_at: datetime


class Changes(Out):
    data: list[ChangeEvent]
    seq: int
    next_since: int
    has_more: bool


class LoopStats(Out):
    worst_stall_ms: float
    worst_stall_since_reset_ms: float
    stalls_over_50ms: int
    samples: int


class AdminMetrics(Out):
    uptime_s: float
    event_loop: LoopStats
    database_pool: dict[str, int]
    actors: dict[str, Any]
    websockets: dict[str, int]


class Comment(Out):
    id: uuid.UUID
    task_id: uuid.UUID
    user_id: uuid.UUID
    username: str | None
    content: str
    created_at: datetime
    updated_at: datetime


class ActivityActor(Out):
    id: uuid.UUID
    username: str | None


class ActivityEntry(Out):
    seq: int | None
    kind: str
    created_at: datetime
    actor: ActivityActor | None
    task_id: uuid.UUID | None
    task_title: str | None
    summary: str
    changes: dict[str, Any]


class ActivityPage(Out):
    data: list[ActivityEntry]
    next_before: int | None


class AdminLogEntry(ActivityEntry):
    project_id: uuid.UUID | None
    project_name: str | None


class AdminLogPage(Out):
    data: list[AdminLogEntry]
    next_cursor: str | None


class Reset(Out):
    reset: bool


class Empty(Out):
    """No body (204)."""


class Notification(Out):
    id: uuid.UUID
    type: Literal["task_assigned", "task_completed", "commented", "mentioned", "added_to_project"]
    title: str
    message: str
    project_id: uuid.UUID | None
    entity_type: str | None
    entity_id: uuid.UUID | None
    is_read: bool
    created_at: datetime


class NotificationPage(Out):
    data: list[Notification]
    pagination: Pagination
    unread_count: int


class UnreadCount(Out):
    unread_count: int


class MarkedRead(Out):
    marked_read: int
