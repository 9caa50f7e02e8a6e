"""Projects, members and tasks as the actor holds them: pure, frozen records.

:class:`ProjectState` is the committed state of one project (what PostgreSQL
holds). :class:`Draft` layers a batch's uncommitted changes over it: the
domain rules read through the draft, so a later command in a batch sees the
effects of earlier ones, and only a successful commit folds the draft into
the state (:meth:`Draft.commit`). A failed commit simply drops the draft.
"""

from __future__ import annotations

import dataclasses
import enum
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Final, Generic, Iterable, Iterator, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TaskStatus(str, enum.Enum):
    TODO = "todo"
    IN_PROGRESS = "in_progress"
    IN_REVIEW = "in_review"
    DONE = "done"
    CANCELLED = "cancelled"


class Priority(str, enum.Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    URGENT = "urgent"


class ProjectStatus(str, enum.Enum):
    ACTIVE = "active"
    ON_HOLD = "on_hold"
    COMPLETED = "completed"
    ARCHIVED = "archived"


class ProjectRole(str, enum.Enum):
    OWNER = "owner"
    MANAGER = "manager"
    MEMBER = "member"
    VIEWER = "viewer"


@dataclass(frozen=True, slots=True)
class Member:
    user_id: uuid.UUID
    role: ProjectRole
    username: str
    display_name: str
    joined_at: datetime

    def view(self) -> dict[str, Any]:
        return {
            "user_id": str(self.user_id),
            "role": self.role.value,
            "username": self.username,
            "display_name": self.display_name,
            "joined_at": self.joined_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Project:
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

    def with_changes(self, **changes: Any) -> "Project":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Task:
    id: uuid.UUID
    project_id: uuid.UUID
    title: str
    description: str | None
    status: TaskStatus
    priority: Priority
    assignee_id: uuid.UUID | None
    created_by: uuid.UUID
    due_date: datetime | None
    completed_at: datetime | None
    estimated_hours: int | None
    actual_hours: int | None
    tags: tuple[str, ...]
    position: str
    version: int
    created_at: datetime
    updated_at: datetime

    def with_changes(self, **changes: Any) -> "Task":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Comment:
    """A comment on a task. ``content`` is Markdown kept as text (never rendered here)."""

    id: uuid.UUID
    task_id: uuid.UUID
    user_id: uuid.UUID
    content: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file attached to a task: metadata only; the bytes live in a blob store under ``storage_key``."""

    id: uuid.UUID
    task_id: uuid.UUID
    filename: str
    file_size: int
    mime_type: str
    content_hash: str
    storage_key: str
    uploaded_by: uuid.UUID
    uploaded_at: datetime


#: Task fields a client may set directly (task.create / task.update).
TASK_EDITABLE = (
    "title", "description", "priority", "due_date", "estimated_hours", "actual_hours", "tags", "status", "assignee_id",
)
#: Project fields a client may set (project.update).
PROJECT_EDITABLE = ("name", "description", "status", "priority", "start_date", "due_date")

class _Deleted(enum.Enum):
    """The marker of a key dropped in a draft (an enum member, so mypy narrows ``is _DELETED``)."""

    DELETED = 0


_DELETED: Final = _Deleted.DELETED


@dataclass
class ProjectState:
    """The committed state of one project. Owned by its actor alone."""

    project: Project
    seq: int
    members: dict[uuid.UUID, Member] = field(default_factory=dict)
    tasks: dict[uuid.UUID, Task] = field(default_factory=dict)
    comments: dict[uuid.UUID, Comment] = field(default_factory=dict)
    attachments: dict[uuid.UUID, Attachment] = field(default_factory=dict)
    deleted: bool = False

    def drop_task_notes(self, task_id: uuid.UUID) -> None:
        """Forget a deleted task's comments and attachments (PostgreSQL cascades the rows)."""
        for notes in (self.comments, self.attachments):
            for note_id in [k for k, v in notes.items() if v.task_id == task_id]:
                del notes[note_id]


class Layer(Generic[K, V]):
    """Uncommitted puts and drops over a committed dict (a draft's view of one collection)."""

    def __init__(self, committed: dict[K, V]) -> None:
        self._committed = committed
        self._changes: dict[K, V | _Deleted] = {}

    def get(self, key: K) -> V | None:
        found = self._changes.get(key, None)
        if found is _DELETED:
            return None
        return found if found is not None else self._committed.get(key)

    def values(self) -> Iterator[V]:
        changes = self._changes
        for key, value in self._committed.items():
            if key not in changes:
                yield value
        for changed in changes.values():
            if changed is not _DELETED:
                yield changed

    def put(self, key: K, value: V) -> None:
        self._changes[key] = value

    def drop(self, key: K) -> None:
        self._changes[key] = _DELETED

    def fold(self) -> None:
        """Apply the changes to the committed dict and forget them."""
        for key, value in self._changes.items():
            if value is _DELETED:
                self._committed.pop(key, None)
            else:
                self._committed[key] = value
        self._changes.clear()


class Draft:
    """A batch's view: the committed state plus uncommitted changes on top."""

    def __init__(self, state: ProjectState) -> None:
        self._state = state
        self.project = state.project
        self.seq = state.seq
        self.deleted = state.deleted
        self._members: dict[uuid.UUID, Member | _Deleted] = {}
        self._tasks: dict[uuid.UUID, Task | _Deleted] = {}
        self.comments: Layer[uuid.UUID, Comment] = Layer(state.comments)
        self.attachments: Layer[uuid.UUID, Attachment] = Layer(state.attachments)

    @property
    def project_id(self) -> uuid.UUID:
        return self._state.project.id

    def member(self, user_id: uuid.UUID) -> Member | None:
        found = self._members.get(user_id, None)
        if found is _DELETED:
            return None
        return found if found is not None else self._state.members.get(user_id)

    def members(self) -> Iterator[Member]:
        overlay = self._members
        for user_id, m in self._state.members.items():
            if user_id not in overlay:
                yield m
        for changed in overlay.values():
            if changed is not _DELETED:
                yield changed

    def task(self, task_id: uuid.UUID) -> Task | None:
        found = self._tasks.get(task_id, None)
        if found is _DELETED:
            return None
        return found if found is not None else self._state.tasks.get(task_id)

    def tasks(self) -> Iterable[Task]:
        overlay = self._tasks
        for task_id, t in self._state.tasks.items():
            if task_id not in overlay:
                yield t
        for changed in overlay.values():
            if changed is not _DELETED:
                yield changed

    def comments_of(self, task_id: uuid.UUID) -> Iterator[Comment]:
        return (c for c in self.comments.values() if c.task_id == task_id)

    def attachments_of(self, task_id: uuid.UUID) -> Iterator[Attachment]:
        return (a for a in self.attachments.values() if a.task_id == task_id)

    def last_position(self, status: TaskStatus, exclude: uuid.UUID | None = None) -> str | None:
        """The largest position in a column (one pass, no sort)."""
        return max((t.position for t in self.tasks() if t.status == status and t.id != exclude), default=None)

    def column(self, status: TaskStatus) -> list[Task]:
        """Tasks of one status, in board order."""
        return sorted((t for t in self.tasks() if t.status == status), key=lambda t: (t.position, str(t.id)))

    def checkpoint(self) -> dict[uuid.UUID, Task | _Deleted]:
        """A marker of the draft's tasks now, for :meth:`task_at` (tasks are immutable)."""
        return dict(self._tasks)

    def task_at(self, checkpoint: dict[uuid.UUID, Task | _Deleted], task_id: uuid.UUID) -> Task | None:
        """A task as it was at ``checkpoint``."""
        found = checkpoint.get(task_id)
        if found is _DELETED:
            return None
        return found if found is not None else self._state.tasks.get(task_id)

    # --- changes (called by the evolve step only) ---

    def put_member(self, member: Member) -> None:
        self._members[member.user_id] = member

    def drop_member(self, user_id: uuid.UUID) -> None:
        self._members[user_id] = _DELETED

    def put_task(self, task: Task) -> None:
        self._tasks[task.id] = task

    def drop_task(self, task_id: uuid.UUID) -> None:
        self._tasks[task_id] = _DELETED

    def commit(self) -> None:
        """Fold the changes into the committed state (after a successful commit)."""
        state = self._state
        state.project = self.project
        state.seq = self.seq
        state.deleted = self.deleted
        for user_id, m in self._members.items():
            if m is _DELETED:
                state.members.pop(user_id, None)
            else:
                state.members[user_id] = m
        self.comments.fold()
        self.attachments.fold()
        for task_id, t in self._tasks.items():
            if t is _DELETED:
                state.tasks.pop(task_id, None)
                state.drop_task_notes(task_id)
            else:
                state.tasks[task_id] = t
        self._members.clear()
        self._tasks.clear()
