"""Which committed events notify whom: pure rules, no I/O.

:func:`notifications_for` looks at the events one command produced and
returns the notifications they cause; the actor writes them in the same
transaction as the events and pushes them to the recipients' sockets after
commit. Nobody is notified of their own action, and only current members of
the project are notified (a non-member learns nothing, not even that they
were mentioned).

Kinds: ``task_assigned`` (a task is assigned to you), ``task_completed`` (a
task assigned to you is done), ``commented`` (a comment on a task you created
or are assigned to), ``mentioned`` (``@username`` newly appears in a task
description or a comment; a mention wins over ``commented`` for the same
comment), ``added_to_project`` (you became a member).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from collab.domain.model import Comment, Draft, Task
from collab.domain.ops import Event

MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9_.-]{3,32})")
MAX_TITLE_CHARS = 255


@dataclass(frozen=True, slots=True)
class Notification:
    id: uuid.UUID
    user_id: uuid.UUID
    project_id: uuid.UUID
    type: str
    title: str
    message: str
    entity_type: str
    entity_id: uuid.UUID
    created_at: datetime

    def view(self, *, is_read: bool = False) -> dict[str, Any]:
        return {
            "id": str(self.id), "type": self.type, "title": self.title, "message": self.message,
            "project_id": str(self.project_id), "entity_type": self.entity_type, "entity_id": str(self.entity_id),
            "is_read": is_read, "created_at": self.created_at.isoformat(),
        }


def mentioned_usernames(text: str | None) -> set[str]:
    return {m.lower().rstrip(".") for m in MENTION.findall(text or "")}


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TITLE_CHARS else text[: MAX_TITLE_CHARS - 1] + "…"


def notifications_for(
    draft: Draft, events: Sequence[Event], before: dict[uuid.UUID, Task | None], actor_id: uuid.UUID,
    actor_name: str, now: datetime, previous_comment: Comment | None = None,
) -> list[Notification]:
    """The notifications caused by one command's events.

    ``before`` maps each touched task id to the task as it was before the
    command (None when it was created by it); ``previous_comment`` is the
    comment as it was before an edit (so only new mentions notify).
    """
    out: list[Notification] = []
    project = draft.project

    def notify(user_id: uuid.UUID | None, kind: str, title: str, message: str, entity_type: str,
               entity_id: uuid.UUID) -> None:
        if user_id is None or user_id == actor_id or draft.member(user_id) is None:
            return
        if any(n.user_id == user_id and n.type == kind and n.entity_id == entity_id for n in out):
            return
        out.append(Notification(uuid.uuid4(), user_id, project.id, kind, _clip(title), message, entity_type,
                                entity_id, now))

    def mention(text: str | None, old_text: str | None, where: str, title: str, entity_id: uuid.UUID) -> None:
        new_mentions = mentioned_usernames(text) - mentioned_usernames(old_text)
        if not new_mentions:
            return
        by_name = {m.username.lower(): m.user_id for m in draft.members()}
        for name in sorted(new_mentions):
            notify(by_name.get(name), "mentioned", f"{actor_name} mentioned you in '{title}'",
                   f"{actor_name} mentioned you in {where} of '{title}' in {project.name}.", "task", entity_id)

    for event in events:
        if isinstance(event.after, Comment) and event.task_id is not None:
            comment, task = event.after, draft.task(event.task_id)
            if task is None:
                continue
            mention(comment.content, previous_comment.content if previous_comment else None, "a comment",
                    task.title, task.id)
            if event.kind == "comment.added":
                mentioned = {n.user_id for n in out if n.type == "mentioned"}
                for user_id in (task.created_by, task.assignee_id):
                    if user_id not in mentioned:
                        notify(user_id, "commented", f"{actor_name} commented on '{task.title}'",
                               f"{actor_name} commented on the task '{task.title}' in {project.name}.",
                               "task", task.id)
            continue
        if event.kind == "member.added" and event.subject_id is not None:
            notify(event.subject_id, "added_to_project", f"You were added to {project.name}",
                   f"{actor_name} added you to the project {project.name}.", "project", project.id)
            continue
        after = event.after if isinstance(event.after, Task) else None
        if after is None or event.task_id is None:
            continue
        old = before.get(event.task_id)
        if after.assignee_id is not None and (old is None or old.assignee_id != after.assignee_id):
            notify(after.assignee_id, "task_assigned", f"You were assigned to '{after.title}'",
                   f"{actor_name} assigned you the task '{after.title}' in {project.name}.", "task", after.id)
        if after.status.value == "done" and old is not None and old.status.value != "done":
            notify(after.assignee_id, "task_completed", f"'{after.title}' was completed",
                   f"{actor_name} completed the task '{after.title}' assigned to you in {project.name}.",
                   "task", after.id)
        mention(after.description, old.description if old else None, "the description", after.title, after.id)
    return out
