"""Intent operations (what a client asks for) and events (what happened).

Ops are intents, not whole records: ``task.update`` names only the fields it
changes, ``task.move`` names neighbours instead of an index, tags are added
and removed as sets. Every op may carry ``if_version``: the version the client
last saw (a task's version, or the project's seq for project ops); if the
target changed since, the op fails with ``conflict`` instead of overwriting.

Events are the committed facts, numbered by the project's ``seq``. Each holds
a JSON-ready ``payload`` (what subscribers and the change log see) and the
record as it is after the event (``after``; None when removed), from which
storage writes the rows.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

from collab.domain.model import Attachment, Comment, Member, Project, ProjectRole, Task, TaskStatus


@dataclass(frozen=True, slots=True)
class ProjectUpdate:
    fields: Mapping[str, Any]
    if_version: int | None = None
    kind = "project.update"


@dataclass(frozen=True, slots=True)
class ProjectDelete:
    if_version: int | None = None
    kind = "project.delete"


@dataclass(frozen=True, slots=True)
class MemberAdd:
    user_id: uuid.UUID
    role: ProjectRole
    username: str
    display_name: str
    kind = "member.add"


@dataclass(frozen=True, slots=True)
class MemberUpdate:
    user_id: uuid.UUID
    role: ProjectRole
    kind = "member.update"


@dataclass(frozen=True, slots=True)
class MemberRemove:
    user_id: uuid.UUID
    kind = "member.remove"


@dataclass(frozen=True, slots=True)
class TaskCreate:
    task_id: uuid.UUID
    fields: Mapping[str, Any]
    kind = "task.create"


@dataclass(frozen=True, slots=True)
class TaskUpdate:
    task_id: uuid.UUID
    fields: Mapping[str, Any]
    if_version: int | None = None
    kind = "task.update"


@dataclass(frozen=True, slots=True)
class TaskMove:
    task_id: uuid.UUID
    status: TaskStatus | None = None
    before: uuid.UUID | None = None  # the task this one goes before
    after: uuid.UUID | None = None   # the task this one goes after
    if_version: int | None = None
    kind = "task.move"


@dataclass(frozen=True, slots=True)
class TaskAddTags:
    task_id: uuid.UUID
    tags: tuple[str, ...]
    if_version: int | None = None
    kind = "task.add_tags"


@dataclass(frozen=True, slots=True)
class TaskRemoveTags:
    task_id: uuid.UUID
    tags: tuple[str, ...]
    if_version: int | None = None
    kind = "task.remove_tags"


@dataclass(frozen=True, slots=True)
class TaskAssign:
    task_id: uuid.UUID
    assignee_id: uuid.UUID | None
    if_version: int | None = None
    kind = "task.assign"


@dataclass(frozen=True, slots=True)
class TaskDelete:
    task_id: uuid.UUID
    if_version: int | None = None
    kind = "task.delete"


@dataclass(frozen=True, slots=True)
class CommentAdd:
    task_id: uuid.UUID
    comment_id: uuid.UUID
    content: str
    kind = "comment.add"


@dataclass(frozen=True, slots=True)
class CommentEdit:
    task_id: uuid.UUID
    comment_id: uuid.UUID
    content: str
    kind = "comment.edit"


@dataclass(frozen=True, slots=True)
class CommentDelete:
    task_id: uuid.UUID
    comment_id: uuid.UUID
    kind = "comment.delete"


@dataclass(frozen=True, slots=True)
class AttachmentAdd:
    """Record an uploaded file (already in the blob store) on a task."""

    attachment: Attachment
    kind = "attachment.add"

    @property
    def task_id(self) -> uuid.UUID:
        return self.attachment.task_id


@dataclass(frozen=True, slots=True)
class AttachmentRemove:
    task_id: uuid.UUID
    attachment_id: uuid.UUID
    kind = "attachment.remove"


Op = Union[
    ProjectUpdate, ProjectDelete, MemberAdd, MemberUpdate, MemberRemove,
    TaskCreate, TaskUpdate, TaskMove, TaskAddTags, TaskRemoveTags, TaskAssign, TaskDelete,
    CommentAdd, CommentEdit, CommentDelete, AttachmentAdd, AttachmentRemove,
]


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    kind: str                      # past tense: task.created, member.removed, ...
    task_id: uuid.UUID | None
    payload: dict[str, Any]
    after: Task | Member | Project | Comment | Attachment | None = None
    # the member's user id for member events; the comment's or attachment's id for theirs
    subject_id: uuid.UUID | None = field(default=None)
