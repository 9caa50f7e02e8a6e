"""Folding committed events into a project state: how a follower node mirrors an owner.

Events crossing nodes carry the record as it is after the event (``after``),
exactly what storage writes; :func:`fold` puts or drops that record, so a
follower's state equals the owner's committed state at the same seq. Pure.
"""

from __future__ import annotations

from collab.domain.model import Attachment, Comment, Member, Project, ProjectState, Task
from collab.domain.ops import Event


def fold(state: ProjectState, event: Event, names: dict) -> None:  # type: ignore[type-arg]
    """Apply one committed event (the next seq) to ``state``; ``names`` learns new members."""
    kind, after, subject = event.kind, event.after, event.subject_id
    if kind.startswith("task.") and event.task_id is not None:
        if isinstance(after, Task):
            state.tasks[after.id] = after
        else:
            state.tasks.pop(event.task_id, None)
            state.drop_task_notes(event.task_id)
    elif kind.startswith("member.") and subject is not None:
        if isinstance(after, Member):
            state.members[subject] = after
            names[subject] = after.username
        else:
            state.members.pop(subject, None)
    elif kind.startswith("comment.") and subject is not None:
        if isinstance(after, Comment):
            state.comments[subject] = after
        else:
            state.comments.pop(subject, None)
    elif kind.startswith("attachment.") and subject is not None:
        if isinstance(after, Attachment):
            state.attachments[subject] = after
        else:
            state.attachments.pop(subject, None)
    elif kind == "project.updated" and isinstance(after, Project):
        state.project = after
    elif kind == "project.deleted":
        state.deleted = True
    state.seq = event.seq
