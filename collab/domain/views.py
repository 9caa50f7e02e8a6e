"""JSON shapes of domain records, shared by events, REST and WebSocket.

``*_payload`` is the record alone (what an event carries); ``task_view`` adds
the names a client shows (project, assignee, creator), as API.md's task
response requires.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Callable

from collab.domain.model import Attachment, Comment, Member, Project, Task


def _iso(value: date | datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _id(value: uuid.UUID | None) -> str | None:
    return str(value) if value is not None else None


def task_payload(task: Task) -> dict[str, Any]:
    return {
        "id": str(task.id),
        "project_id": str(task.project_id),
        "title": task.title,
        "description": task.description,
        "status": task.status.value,
        "priority": task.priority.value,
        "assignee_id": _id(task.assignee_id),
        "created_by": str(task.created_by),
        "due_date": _iso(task.due_date),
        "completed_at": _iso(task.completed_at),
        "estimated_hours": task.estimated_hours,
        "actual_hours": task.actual_hours,
        "tags": list(task.tags),
        "position": task.position,
        "version": task.version,
        "created_at": _iso(task.created_at),
        "updated_at": _iso(task.updated_at),
    }


def task_view(task: Task, project_name: str, name_of: Callable[[uuid.UUID], str | None]) -> dict[str, Any]:
    view = task_payload(task)
    view["project_name"] = project_name
    view["assignee_name"] = name_of(task.assignee_id) if task.assignee_id else None
    view["created_by_name"] = name_of(task.created_by)
    return view


def project_payload(project: Project) -> dict[str, Any]:
    return {
        "id": str(project.id),
        "name": project.name,
        "description": project.description,
        "owner_id": str(project.owner_id),
        "status": project.status.value,
        "priority": project.priority.value,
        "start_date": _iso(project.start_date),
        "due_date": _iso(project.due_date),
        "completed_at": _iso(project.completed_at),
        "created_at": _iso(project.created_at),
        "updated_at": _iso(project.updated_at),
    }


def member_payload(member: Member) -> dict[str, Any]:
    return member.view()


def comment_payload(comment: Comment) -> dict[str, Any]:
    return {
        "id": str(comment.id),
        "task_id": str(comment.task_id),
        "user_id": str(comment.user_id),
        "content": comment.content,
        "created_at": _iso(comment.created_at),
        "updated_at": _iso(comment.updated_at),
    }


def attachment_payload(attachment: Attachment) -> dict[str, Any]:
    return {
        "id": str(attachment.id),
        "task_id": str(attachment.task_id),
        "filename": attachment.filename,
        "file_size": attachment.file_size,
        "mime_type": attachment.mime_type,
        "content_hash": attachment.content_hash,
        "uploaded_by": str(attachment.uploaded_by),
        "uploaded_at": _iso(attachment.uploaded_at),
    }
