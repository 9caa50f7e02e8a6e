"""Human-readable activity entries from change-log events: pure, no I/O.

:func:`entry` turns one committed event (or audit entry) into what a person
reads in a feed: who did what to which thing, when, with the fields that
changed and their new values. Titles are the task's current title (events
carry only what changed); a deleted task is named by the title its deletion
event recorded, or "a task" for older events.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable, Mapping, Protocol

_STATUS = {"todo": "To do", "in_progress": "In progress", "in_review": "In review", "done": "Done",
           "cancelled": "Cancelled"}
_FIELD_NAMES = {"due_date": "due date", "estimated_hours": "estimate", "actual_hours": "time spent",
                "assignee_id": "assignee", "start_date": "start date"}
_QUIET_FIELDS = {"version", "updated_at", "completed_at"}


class Row(Protocol):
    """A change-log row by column name (a database record or a plain dict)."""

    def __getitem__(self, column: str, /) -> Any: ...


def entry(row: Row, names: Mapping[uuid.UUID, str]) -> dict[str, Any]:
    """The feed entry for one change-log row (seq, kind, task_id, actor_id, payload, created_at, task_title)."""
    payload: dict[str, Any] = row["payload"] or {}
    actor_id = row["actor_id"]
    who = names.get(actor_id, "someone") if actor_id else "Collab"

    def name(user_id: Any) -> str:
        try:
            return names.get(uuid.UUID(str(user_id)), "someone")
        except ValueError:
            return "someone"

    title = row["task_title"] or (payload.get("task") or {}).get("title") or payload.get("title")
    task = f"'{title}'" if title else "a task"
    kind: str = row["kind"]
    changes = {k: v for k, v in (payload.get("changes") or {}).items() if k not in _QUIET_FIELDS}
    summary = _SUMMARIES.get(kind, _generic)(who, task, payload, changes, name)
    out = {
        "seq": row["seq"], "kind": kind, "created_at": row["created_at"].isoformat(),
        "actor": {"id": str(actor_id), "username": names.get(actor_id)} if actor_id else None,
        "task_id": str(row["task_id"]) if row["task_id"] else None, "task_title": title,
        "summary": summary, "changes": changes,
    }
    return out


Describe = Callable[[str, str, dict[str, Any], dict[str, Any], Callable[[Any], str]], str]


def _task_updated(
    who: str, task: str, payload: dict[str, Any], changes: dict[str, Any], name: Callable[[Any], str],
) -> str:
    fields = set(changes)
    if "status" in fields:
        return f"{who} moved {task} to {_STATUS.get(changes['status'], changes['status'])}"
    if fields == {"assignee_id"}:
        assignee = changes["assignee_id"]
        return f"{who} assigned {task} to {name(assignee)}" if assignee else f"{who} unassigned {task}"
    if fields == {"position"}:
        return f"{who} reordered {task}"
    if "title" in fields:
        return f"{who} renamed a task to '{changes['title']}'"
    listed = ", ".join(_FIELD_NAMES.get(f, f) for f in sorted(fields - {"position"}))
    return f"{who} changed the {listed} of {task}" if listed else f"{who} updated {task}"


def _member(verb: str) -> Describe:
    def describe(
        who: str, task: str, payload: dict[str, Any], changes: dict[str, Any], name: Callable[[Any], str],
    ) -> str:
        member = payload.get("member") or {}
        target = member.get("username") or name(member.get("user_id") or payload.get("user_id"))
        role = member.get("role")
        return verb.format(who=who, target=target, role=role)
    return describe


def _generic(who: str, task: str, payload: dict[str, Any], changes: dict[str, Any], name: Callable[[Any], str]) -> str:
    return f"{who} made a change"


def _fixed(template: str) -> Describe:
    def describe(
        who: str, task: str, payload: dict[str, Any], changes: dict[str, Any], name: Callable[[Any], str],
    ) -> str:
        return template.format(
            who=who, task=task, filename=(payload.get("attachment") or {}).get("filename", "a file"),
            project=payload.get("name") or (payload.get("project") or {}).get("name") or "the project",
            target=name(payload.get("entity_id")), roles=", ".join(payload.get("roles") or []),
        )
    return describe


_SUMMARIES: dict[str, Describe] = {
    "task.created": _fixed("{who} created {task}"),
    "task.updated": _task_updated,
    "task.deleted": _fixed("{who} deleted {task}"),
    "comment.added": _fixed("{who} commented on {task}"),
    "comment.updated": _fixed("{who} edited a comment on {task}"),
    "comment.deleted": _fixed("{who} deleted a comment on {task}"),
    "attachment.added": _fixed("{who} attached '{filename}' to {task}"),
    "attachment.removed": _fixed("{who} removed an attachment from {task}"),
    "member.added": _member("{who} added {target} as {role}"),
    "member.updated": _member("{who} made {target} {role}"),
    "member.removed": _member("{who} removed {target} from the project"),
    "project.created": _fixed("{who} created the project {project}"),
    "project.updated": _fixed("{who} updated the project"),
    "project.deleted": _fixed("{who} deleted the project {project}"),
    "user.roles_changed": _fixed("{who} set the roles of {target} to {roles}"),
    "user.deactivated": _fixed("{who} deactivated {target}"),
    "user.reactivated": _fixed("{who} reactivated {target}"),
}
