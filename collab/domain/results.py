"""What a command answers with: the affected record as the client sees it."""

from __future__ import annotations

import uuid
from typing import Any

from collab.domain.model import Draft
from collab.domain.ops import (
    AttachmentAdd, AttachmentRemove, CommentAdd, CommentDelete, CommentEdit, MemberAdd, MemberUpdate, Op, ProjectUpdate,
)
from collab.domain.views import attachment_payload, comment_payload, project_payload, task_view


def result_view(draft: Draft, op: Op, names: dict[uuid.UUID, str]) -> Any:
    """The record ``op`` touched, after it (None for removals)."""
    if isinstance(op, ProjectUpdate):
        return project_payload(draft.project) | {"seq": draft.seq}
    if isinstance(op, (MemberAdd, MemberUpdate)):
        member = draft.member(op.user_id)
        return member.view() if member else None
    if isinstance(op, (CommentAdd, CommentEdit)):
        comment = draft.comments.get(op.comment_id)
        if comment is None:
            return None
        author = draft.member(comment.user_id)
        return comment_payload(comment) | {"username": author.username if author else names.get(comment.user_id)}
    if isinstance(op, AttachmentAdd):
        attachment = draft.attachments.get(op.attachment.id)
        if attachment is None:
            return None
        uploader = draft.member(attachment.uploaded_by)
        return attachment_payload(attachment) | {
            "uploaded_by_name": uploader.username if uploader else names.get(attachment.uploaded_by),
        }
    if isinstance(op, (CommentDelete, AttachmentRemove)):
        return None
    task_id = getattr(op, "task_id", None)
    if task_id is not None:
        task = draft.task(task_id)
        if task is None:
            return None

        def name_of(user_id: uuid.UUID) -> str | None:
            member = draft.member(user_id)
            return member.username if member else names.get(user_id)

        return task_view(task, draft.project.name, name_of)
    return None
