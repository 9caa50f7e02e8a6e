"""How each op applies to a project: validation, permissions, merge rules.

:func:`apply` is the whole write path's logic, pure: given a draft of the
project, an op, the caller and the time, it checks everything first, then
records the resulting events on the draft (so the next op of the batch sees
them) and returns them. It raises a :class:`collab.errors.CollabError`
(forbidden, not_found, conflict, invalid) and then leaves the draft untouched.

Merge rules: scalar fields are last-writer-wins in server order; tags have
set semantics (add/remove commute); positions are fractional keys, so a move
rewrites only the moved task; ``completed_at`` follows ``status`` (set on
entering done, cleared on leaving it).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Callable, Mapping

from collab.domain import positions
from collab.domain.model import (
    PROJECT_EDITABLE, TASK_EDITABLE, Comment, Draft, Member, Priority, ProjectRole, ProjectStatus, Task, TaskStatus,
)
from collab.domain.ops import (
    AttachmentAdd, AttachmentRemove, CommentAdd, CommentDelete, CommentEdit, Event, MemberAdd, MemberRemove,
    MemberUpdate, Op, ProjectDelete, ProjectUpdate, TaskAddTags, TaskAssign, TaskCreate, TaskDelete, TaskMove,
    TaskRemoveTags, TaskUpdate,
)
from collab.domain.permissions import ROLE_RANK, Action, may_delete_task, require
from collab.domain.users import Principal
from collab.domain.views import attachment_payload, comment_payload, member_payload, project_payload, task_payload
from collab.errors import Conflict, Forbidden, NotFound, StaleVersion, ValidationFailed

MAX_TAGS = 20
MAX_TAG_CHARS = 50
MAX_TITLE_CHARS = 200
MAX_TASK_DESCRIPTION_CHARS = 20_000
MAX_PROJECT_NAME_CHARS = 200
MAX_PROJECT_DESCRIPTION_CHARS = 10_000
MAX_HOURS = 100_000
MAX_COMMENT_CHARS = 10_000
MAX_COMMENTS_PER_TASK = 5_000
MAX_ATTACHMENTS_PER_TASK = 100
MAX_MEMBERS_PER_PROJECT = 1_000


def apply(draft: Draft, op: Op, caller: Principal, now: datetime) -> list[Event]:
    """Check and apply one op; return its events (already recorded on the draft)."""
    if draft.deleted:
        raise NotFound("No such project")
    handler = _HANDLERS[type(op)]
    try:
        return handler(draft, op, caller, now)
    except positions.PositionError as exc:
        # Checked before any change is recorded, so the draft is untouched.
        raise Conflict(f"Cannot place the task there: {exc}") from None


# --- helpers -------------------------------------------------------------------

def _next_event(draft: Draft, kind: str, task_id: uuid.UUID | None, payload: dict[str, Any], after: Any,
                subject_id: uuid.UUID | None = None) -> Event:
    draft.seq += 1
    return Event(draft.seq, kind, task_id, payload, after, subject_id)


def _check_version(current: int, expected: int | None) -> None:
    if expected is not None and expected != current:
        raise StaleVersion(f"It changed since version {expected}; it is now at version {current}")


def _task(draft: Draft, task_id: uuid.UUID) -> Task:
    task = draft.task(task_id)
    if task is None:
        raise NotFound("No such task")
    return task


def normalize_tags(tags: Any, field: str = "tags") -> tuple[str, ...]:
    """Strip, drop duplicates (keeping first spelling, case-insensitively), bound."""
    if not isinstance(tags, (list, tuple)):
        raise ValidationFailed.single(field, "Tags must be a list of strings", "list_type")
    seen: dict[str, str] = {}
    for raw in tags:
        if not isinstance(raw, str):
            raise ValidationFailed.single(field, "Tags must be strings", "string_type")
        tag = raw.strip()
        if not tag or len(tag) > MAX_TAG_CHARS:
            raise ValidationFailed.single(field, f"Each tag must be 1 to {MAX_TAG_CHARS} characters", "tag_length")
        seen.setdefault(tag.lower(), tag)
    if len(seen) > MAX_TAGS:
        raise ValidationFailed.single(field, f"A task has at most {MAX_TAGS} tags", "too_many_tags")
    return tuple(seen.values())


def _text(value: Any, field: str, max_chars: int, *, required: bool) -> str | None:
    if value is None:
        if required:
            raise ValidationFailed.single(field, "This field is required", "missing")
        return None
    if not isinstance(value, str):
        raise ValidationFailed.single(field, "Must be a string", "string_type")
    text = value.strip()
    if required and not text:
        raise ValidationFailed.single(field, "Must not be empty", "string_too_short")
    if len(text) > max_chars:
        raise ValidationFailed.single(field, f"At most {max_chars} characters", "string_too_long")
    return text if text or required else None


def _hours(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_HOURS:
        raise ValidationFailed.single(field, f"Must be a whole number from 0 to {MAX_HOURS}", "hours_range")
    return value


def _clean_task_fields(draft: Draft, fields: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    unknown = set(fields) - set(TASK_EDITABLE)
    if unknown:
        raise ValidationFailed.single(sorted(unknown)[0], "This field cannot be set", "extra_forbidden")
    clean: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "title":
            clean[name] = _text(value, name, MAX_TITLE_CHARS, required=True)
        elif name == "description":
            clean[name] = _text(value, name, MAX_TASK_DESCRIPTION_CHARS, required=False)
        elif name == "status":
            clean[name] = _enum(TaskStatus, value, name)
        elif name == "priority":
            clean[name] = _enum(Priority, value, name)
        elif name in ("estimated_hours", "actual_hours"):
            clean[name] = _hours(value, name)
        elif name == "tags":
            clean[name] = normalize_tags(value)
        elif name == "due_date":
            if value is not None and not isinstance(value, datetime):
                raise ValidationFailed.single(name, "Must be a date-time", "datetime_type")
            clean[name] = value
        elif name == "assignee_id":
            clean[name] = _assignee(draft, value)
    if creating and "title" not in clean:
        raise ValidationFailed.single("title", "This field is required", "missing")
    return clean


def _enum(cls: Any, value: Any, field: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        options = ", ".join(m.value for m in cls)
        raise ValidationFailed.single(field, f"Must be one of {options}", "enum") from None


def _assignee(draft: Draft, value: Any) -> uuid.UUID | None:
    if value is None:
        return None
    if not isinstance(value, uuid.UUID):
        raise ValidationFailed.single("assignee_id", "Must be a user id", "uuid_type")
    if draft.member(value) is None:
        raise ValidationFailed.single("assignee_id", "The assignee must be a member of the project", "not_a_member")
    return value


def _status_effects(task_status: TaskStatus, new_status: TaskStatus, completed_at: datetime | None,
                    now: datetime) -> datetime | None:
    if new_status == TaskStatus.DONE:
        return completed_at if task_status == TaskStatus.DONE and completed_at else now
    return None


def _task_changes(before: Task, after: Task) -> dict[str, Any]:
    """The fields that differ, as JSON."""
    old, new = task_payload(before), task_payload(after)
    return {k: v for k, v in new.items() if old.get(k) != v and k not in ("updated_at", "version")}


def _update_task(draft: Draft, before: Task, changes: dict[str, Any], now: datetime, kind: str) -> list[Event]:
    after = before.with_changes(**changes)
    if "status" in changes:
        after = after.with_changes(completed_at=_status_effects(before.status, after.status, before.completed_at, now))
        if after.status != before.status and "position" not in changes:
            after = after.with_changes(position=_end_of_column(draft, after.status, exclude=before.id))
    diff = _task_changes(before, after)
    if not diff:
        return []  # nothing changed: no event, no new version
    after = after.with_changes(updated_at=now, version=draft.seq + 1)
    diff["version"] = after.version
    diff["updated_at"] = after.updated_at.isoformat()
    event = _next_event(draft, kind, before.id, {"task_id": str(before.id), "changes": diff}, after)
    draft.put_task(after)
    return [event]


def _end_of_column(draft: Draft, status: TaskStatus, exclude: uuid.UUID | None = None) -> str:
    return positions.key_between(draft.last_position(status, exclude), None)


# --- project ops -------------------------------------------------------------------

def _project_update(draft: Draft, op: ProjectUpdate, caller: Principal, now: datetime) -> list[Event]:
    require(caller, draft.member(caller.user_id), Action.UPDATE_PROJECT)
    _check_version(draft.seq, op.if_version)
    unknown = set(op.fields) - set(PROJECT_EDITABLE)
    if unknown:
        raise ValidationFailed.single(sorted(unknown)[0], "This field cannot be set", "extra_forbidden")
    changes: dict[str, Any] = {}
    for name, value in op.fields.items():
        if name == "name":
            changes[name] = _text(value, name, MAX_PROJECT_NAME_CHARS, required=True)
        elif name == "description":
            changes[name] = _text(value, name, MAX_PROJECT_DESCRIPTION_CHARS, required=False)
        elif name == "status":
            changes[name] = _enum(ProjectStatus, value, name)
        elif name == "priority":
            changes[name] = _enum(Priority, value, name)
        else:
            changes[name] = value
    after = draft.project.with_changes(**changes)
    start, due = after.start_date, after.due_date
    if start is not None and due is not None and due < start:
        raise ValidationFailed.single("due_date", "The due date is before the start date", "date_order")
    if "status" in changes:
        after = after.with_changes(
            completed_at=(draft.project.completed_at or now) if after.status == ProjectStatus.COMPLETED else None
        )
    old, new = project_payload(draft.project), project_payload(after)
    diff = {k: v for k, v in new.items() if old.get(k) != v and k != "updated_at"}
    if not diff:
        return []
    after = after.with_changes(updated_at=now)
    diff["updated_at"] = now.isoformat()
    event = _next_event(draft, "project.updated", None, {"changes": diff}, after)
    draft.project = after
    return [event]


def _project_delete(draft: Draft, op: ProjectDelete, caller: Principal, now: datetime) -> list[Event]:
    require(caller, draft.member(caller.user_id), Action.DELETE_PROJECT)
    _check_version(draft.seq, op.if_version)
    payload = {"project_id": str(draft.project_id), "name": draft.project.name}
    event = _next_event(draft, "project.deleted", None, payload, None)
    draft.deleted = True
    return [event]


# --- members -----------------------------------------------------------------------

def _guard_member_change(
    draft: Draft, caller: Principal, target_role: ProjectRole | None, new_role: ProjectRole | None,
) -> None:
    """Managers manage members below them; only owners (or admins) touch owners."""
    me = draft.member(caller.user_id)
    require(caller, me, Action.MANAGE_MEMBERS)
    if caller.is_admin or (me is not None and me.role == ProjectRole.OWNER):
        return
    for role in (target_role, new_role):
        if role is not None and ROLE_RANK[role] >= ROLE_RANK[ProjectRole.MANAGER]:
            raise Forbidden("Only a project owner can grant, change or remove the owner and manager roles")


def _owners(draft: Draft) -> list[Member]:
    return [m for m in draft.members() if m.role == ProjectRole.OWNER]


def _member_add(draft: Draft, op: MemberAdd, caller: Principal, now: datetime) -> list[Event]:
    _guard_member_change(draft, caller, None, op.role)
    if draft.member(op.user_id) is not None:
        raise Conflict("That user is already a member of this project")
    if sum(1 for _ in draft.members()) >= MAX_MEMBERS_PER_PROJECT:
        raise Conflict(f"A project has at most {MAX_MEMBERS_PER_PROJECT} members")
    member = Member(op.user_id, op.role, op.username, op.display_name, now)
    event = _next_event(draft, "member.added", None, {"member": member_payload(member)}, member, op.user_id)
    draft.put_member(member)
    return [event]


def _member_update(draft: Draft, op: MemberUpdate, caller: Principal, now: datetime) -> list[Event]:
    current = draft.member(op.user_id)
    if current is None:
        raise NotFound("That user is not a member of this project")
    _guard_member_change(draft, caller, current.role, op.role)
    if current.role == op.role:
        return []
    if current.role == ProjectRole.OWNER and len(_owners(draft)) == 1:
        raise Conflict("A project needs at least one owner")
    member = Member(current.user_id, op.role, current.username, current.display_name, current.joined_at)
    event = _next_event(draft, "member.updated", None, {"member": member_payload(member)}, member, op.user_id)
    draft.put_member(member)
    return [event]


def _member_remove(draft: Draft, op: MemberRemove, caller: Principal, now: datetime) -> list[Event]:
    current = draft.member(op.user_id)
    if current is None:
        raise NotFound("That user is not a member of this project")
    if op.user_id != caller.user_id:  # leaving a project yourself needs no permission
        _guard_member_change(draft, caller, current.role, None)
    if current.role == ProjectRole.OWNER and len(_owners(draft)) == 1:
        raise Conflict("A project needs at least one owner")
    events = [_next_event(draft, "member.removed", None, {"user_id": str(op.user_id)}, None, op.user_id)]
    draft.drop_member(op.user_id)
    # Tasks assigned to someone who left are unassigned (the assignee must be a member).
    for task in list(draft.tasks()):
        if task.assignee_id == op.user_id:
            events += _update_task(draft, task, {"assignee_id": None}, now, "task.updated")
    return events


# --- tasks -------------------------------------------------------------------------

def _task_create(draft: Draft, op: TaskCreate, caller: Principal, now: datetime) -> list[Event]:
    require(caller, draft.member(caller.user_id), Action.WRITE_TASKS)
    if draft.task(op.task_id) is not None:
        raise Conflict("A task with that id exists")
    fields = _clean_task_fields(draft, op.fields, creating=True)
    status = fields.get("status", TaskStatus.TODO)
    seq = draft.seq + 1
    task = Task(
        id=op.task_id, project_id=draft.project_id, title=fields["title"], description=fields.get("description"),
        status=status, priority=fields.get("priority", Priority.MEDIUM), assignee_id=fields.get("assignee_id"),
        created_by=caller.user_id, due_date=fields.get("due_date"),
        completed_at=now if status == TaskStatus.DONE else None,
        estimated_hours=fields.get("estimated_hours"), actual_hours=fields.get("actual_hours"),
        tags=fields.get("tags", ()), position=_end_of_column(draft, status), version=seq,
        created_at=now, updated_at=now,
    )
    event = _next_event(draft, "task.created", task.id, {"task": task_payload(task)}, task)
    draft.put_task(task)
    return [event]


def _task_update(draft: Draft, op: TaskUpdate, caller: Principal, now: datetime) -> list[Event]:
    require(caller, draft.member(caller.user_id), Action.WRITE_TASKS)
    task = _task(draft, op.task_id)
    _check_version(task.version, op.if_version)
    return _update_task(draft, task, _clean_task_fields(draft, op.fields, creating=False), now, "task.updated")


def _task_move(draft: Draft, op: TaskMove, caller: Principal, now: datetime) -> list[Event]:
    require(caller, draft.member(caller.user_id), Action.WRITE_TASKS)
    task = _task(draft, op.task_id)
    _check_version(task.version, op.if_version)
    status = op.status or task.status
    column = [t for t in draft.column(status) if t.id != task.id]
    ids = [t.id for t in column]

    def neighbour(task_id: uuid.UUID, name: str) -> int:
        if task_id == task.id:
            raise ValidationFailed.single(name, "A task cannot be placed next to itself", "self_reference")
        if task_id not in ids:
            raise Conflict(f"The '{name}' task is not in the {status.value} column")
        return ids.index(task_id)

    if op.after is not None and op.before is not None:
        i, j = neighbour(op.after, "after"), neighbour(op.before, "before")
        if j != i + 1:
            raise Conflict("The 'after' and 'before' tasks are not adjacent")
    elif op.after is not None:
        i = neighbour(op.after, "after")
        j = i + 1
    elif op.before is not None:
        j = neighbour(op.before, "before")
        i = j - 1
    else:
        i, j = len(column) - 1, len(column)
    lower = column[i].position if 0 <= i < len(column) else None
    upper = column[j].position if 0 <= j < len(column) else None
    if lower is not None and upper is not None and not lower < upper:
        raise Conflict("The column's order is ambiguous here; move a neighbour first")
    changes: dict[str, Any] = {"position": positions.key_between(lower, upper)}
    if status != task.status:
        changes["status"] = status
    return _update_task(draft, task, changes, now, "task.updated")


def _task_add_tags(draft: Draft, op: TaskAddTags, caller: Principal, now: datetime) -> list[Event]:
    require(caller, draft.member(caller.user_id), Action.WRITE_TASKS)
    task = _task(draft, op.task_id)
    _check_version(task.version, op.if_version)
    tags = normalize_tags(list(task.tags) + list(normalize_tags(op.tags)))
    return _update_task(draft, task, {"tags": tags}, now, "task.updated")


def _task_remove_tags(draft: Draft, op: TaskRemoveTags, caller: Principal, now: datetime) -> list[Event]:
    require(caller, draft.member(caller.user_id), Action.WRITE_TASKS)
    task = _task(draft, op.task_id)
    _check_version(task.version, op.if_version)
    gone = {t.lower() for t in normalize_tags(op.tags)}
    kept = tuple(t for t in task.tags if t.lower() not in gone)
    return _update_task(draft, task, {"tags": kept}, now, "task.updated")


def _task_assign(draft: Draft, op: TaskAssign, caller: Principal, now: datetime) -> list[Event]:
    require(caller, draft.member(caller.user_id), Action.WRITE_TASKS)
    task = _task(draft, op.task_id)
    _check_version(task.version, op.if_version)
    return _update_task(draft, task, {"assignee_id": _assignee(draft, op.assignee_id)}, now, "task.updated")


def _task_delete(draft: Draft, op: TaskDelete, caller: Principal, now: datetime) -> list[Event]:
    member = draft.member(caller.user_id)
    require(caller, member, Action.READ)
    task = _task(draft, op.task_id)
    if not may_delete_task(caller, member, task.created_by):
        raise Forbidden("Only the task's creator, the project owner or an admin can delete it")
    _check_version(task.version, op.if_version)
    event = _next_event(draft, "task.deleted", task.id, {"task_id": str(task.id), "title": task.title}, None)
    draft.drop_task(task.id)
    return [event]


# --- comments and attachments --------------------------------------------------------

def _comment(draft: Draft, task_id: uuid.UUID, comment_id: uuid.UUID) -> Comment:
    _task(draft, task_id)
    comment = draft.comments.get(comment_id)
    if comment is None or comment.task_id != task_id:
        raise NotFound("No such comment")
    return comment


def _comment_add(draft: Draft, op: CommentAdd, caller: Principal, now: datetime) -> list[Event]:
    require(caller, draft.member(caller.user_id), Action.WRITE_TASKS)
    _task(draft, op.task_id)
    if draft.comments.get(op.comment_id) is not None:
        raise Conflict("A comment with that id exists")
    if sum(1 for _ in draft.comments_of(op.task_id)) >= MAX_COMMENTS_PER_TASK:
        raise Conflict(f"A task has at most {MAX_COMMENTS_PER_TASK} comments")
    content = _text(op.content, "content", MAX_COMMENT_CHARS, required=True)
    comment = Comment(op.comment_id, op.task_id, caller.user_id, content, now, now)  # type: ignore[arg-type]
    event = _next_event(draft, "comment.added", op.task_id, {"comment": comment_payload(comment)}, comment, comment.id)
    draft.comments.put(comment.id, comment)
    return [event]


def _comment_edit(draft: Draft, op: CommentEdit, caller: Principal, now: datetime) -> list[Event]:
    require(caller, draft.member(caller.user_id), Action.WRITE_TASKS)
    comment = _comment(draft, op.task_id, op.comment_id)
    if comment.user_id != caller.user_id:
        raise Forbidden("Only the author can edit a comment")
    content = _text(op.content, "content", MAX_COMMENT_CHARS, required=True)
    if content == comment.content:
        return []
    after = Comment(comment.id, comment.task_id, comment.user_id, content, comment.created_at, now)  # type: ignore[arg-type]
    event = _next_event(draft, "comment.updated", op.task_id, {"comment": comment_payload(after)}, after, after.id)
    draft.comments.put(after.id, after)
    return [event]


def _comment_delete(draft: Draft, op: CommentDelete, caller: Principal, now: datetime) -> list[Event]:
    member = draft.member(caller.user_id)
    require(caller, member, Action.READ)
    comment = _comment(draft, op.task_id, op.comment_id)
    if not may_delete_task(caller, member, comment.user_id):
        raise Forbidden("Only the comment's author, the project owner or an admin can delete it")
    payload = {"task_id": str(op.task_id), "comment_id": str(comment.id)}
    event = _next_event(draft, "comment.deleted", op.task_id, payload, None, comment.id)
    draft.comments.drop(comment.id)
    return [event]


def _attachment_add(draft: Draft, op: AttachmentAdd, caller: Principal, now: datetime) -> list[Event]:
    require(caller, draft.member(caller.user_id), Action.WRITE_TASKS)
    attachment = op.attachment
    _task(draft, attachment.task_id)
    if draft.attachments.get(attachment.id) is not None:
        raise Conflict("An attachment with that id exists")
    if sum(1 for _ in draft.attachments_of(attachment.task_id)) >= MAX_ATTACHMENTS_PER_TASK:
        raise Conflict(f"A task has at most {MAX_ATTACHMENTS_PER_TASK} attachments")
    payload = {"attachment": attachment_payload(attachment)}
    event = _next_event(draft, "attachment.added", attachment.task_id, payload, attachment, attachment.id)
    draft.attachments.put(attachment.id, attachment)
    return [event]


def _attachment_remove(draft: Draft, op: AttachmentRemove, caller: Principal, now: datetime) -> list[Event]:
    member = draft.member(caller.user_id)
    require(caller, member, Action.READ)
    _task(draft, op.task_id)
    attachment = draft.attachments.get(op.attachment_id)
    if attachment is None or attachment.task_id != op.task_id:
        raise NotFound("No such attachment")
    if not may_delete_task(caller, member, attachment.uploaded_by):
        raise Forbidden("Only the uploader, the project owner or an admin can delete an attachment")
    payload = {"task_id": str(op.task_id), "attachment_id": str(attachment.id), "content_hash": attachment.content_hash}
    event = _next_event(draft, "attachment.removed", op.task_id, payload, None, attachment.id)
    draft.attachments.drop(attachment.id)
    return [event]


_HANDLERS: dict[type, Callable[..., list[Event]]] = {
    ProjectUpdate: _project_update,
    ProjectDelete: _project_delete,
    MemberAdd: _member_add,
    MemberUpdate: _member_update,
    MemberRemove: _member_remove,
    TaskCreate: _task_create,
    TaskUpdate: _task_update,
    TaskMove: _task_move,
    TaskAddTags: _task_add_tags,
    TaskRemoveTags: _task_remove_tags,
    TaskAssign: _task_assign,
    TaskDelete: _task_delete,
    CommentAdd: _comment_add,
    CommentEdit: _comment_edit,
    CommentDelete: _comment_delete,
    AttachmentAdd: _attachment_add,
    AttachmentRemove: _attachment_remove,
}
