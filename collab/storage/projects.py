"""Units of work for the project write path: create, load, commit a batch.

:func:`commit_batch` is the one place project changes reach PostgreSQL. In
one transaction it advances ``projects.seq`` with a fence
(``WHERE seq = expected AND owner_epoch = ours``, see storage/cluster.py), inserts the batch's events into
``project_events``, writes the rows the events describe (the final version of
each touched task and member), and records REST idempotency keys. If the
fence touches no row, another writer got there first: :class:`FenceLost` is
raised and the transaction rolls back, so two writers never interleave, and
a node that lost the project's ownership never commits again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

import asyncpg

from collab.domain.model import (
    Attachment, Comment, Member, Priority, Project, ProjectRole, ProjectState, ProjectStatus, Task, TaskStatus,
)
from collab.domain.notifications import Notification
from collab.storage import activity
from collab.domain.ops import Event
from collab.domain.views import member_payload, project_payload
from collab.errors import Conflict, InternalError, Unavailable


class FenceLost(Unavailable):
    """The project's seq moved under us: another writer committed. Retry."""

    code = "busy"
    title = "The project changed under this batch; retry"


@dataclass(frozen=True, slots=True)
class EventRecord:
    """An event with who caused it, as it is written to the change log."""

    event: Event
    actor_id: uuid.UUID | None
    client_op_id: str | None


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    user_id: uuid.UUID
    key: str
    request_hash: str
    status: int
    response: Any
    headers: dict[str, str]


# --- reading ----------------------------------------------------------------------

def _project(row: asyncpg.Record) -> Project:
    return Project(
        id=row["id"], name=row["name"], description=row["description"], owner_id=row["owner_id"],
        status=ProjectStatus(row["status"]), priority=Priority(row["priority"]),
        start_date=row["start_date"], due_date=row["due_date"], completed_at=row["completed_at"],
        created_at=row["created_at"], updated_at=row["updated_at"],
    )


def task_from_row(row: asyncpg.Record) -> Task:
    return Task(
        id=row["id"], project_id=row["project_id"], title=row["title"], description=row["description"],
        status=TaskStatus(row["status"]), priority=Priority(row["priority"]), assignee_id=row["assignee_id"],
        created_by=row["created_by"], due_date=row["due_date"], completed_at=row["completed_at"],
        estimated_hours=row["estimated_hours"], actual_hours=row["actual_hours"], tags=tuple(row["tags"] or ()),
        position=row["position"], version=row["version"], created_at=row["created_at"], updated_at=row["updated_at"],
    )


_PROJECT_COLUMNS = (
    "id, name, description, owner_id, status, priority, start_date, due_date, completed_at, created_at, updated_at"
)
TASK_COLUMNS = (
    "t.id, t.project_id, t.title, t.description, t.status, t.priority, t.assignee_id, t.created_by, t.due_date,"
    " t.completed_at, t.estimated_hours, t.actual_hours, t.tags, t.position, t.version, t.created_at, t.updated_at"
)


async def load_state(
    conn: asyncpg.Connection, project_id: uuid.UUID,
) -> tuple[ProjectState, dict[uuid.UUID, str]] | None:
    """The committed state of a project and the names of every user it mentions."""
    # Only the constant column lists are interpolated into SQL in this module.
    row = await conn.fetchrow(f"SELECT {_PROJECT_COLUMNS}, seq FROM projects WHERE id = $1", project_id)  # nosec B608
    if row is None:
        return None
    member_rows = await conn.fetch(
        """SELECT m.user_id, m.role, m.joined_at, u.username, u.first_name, u.last_name
           FROM project_members m JOIN users u ON u.id = m.user_id WHERE m.project_id = $1""",
        project_id,
    )
    task_rows = await conn.fetch(f"SELECT {TASK_COLUMNS} FROM tasks t WHERE t.project_id = $1", project_id)  # nosec B608
    comment_rows = await conn.fetch(
        """SELECT c.id, c.task_id, c.user_id, c.content, c.created_at, c.updated_at
           FROM task_comments c JOIN tasks t ON t.id = c.task_id WHERE t.project_id = $1""",
        project_id,
    )
    attachment_rows = await conn.fetch(
        """SELECT a.id, a.task_id, a.filename, a.file_size, a.mime_type, a.content_hash, a.storage_key,
                  a.uploaded_by, a.uploaded_at
           FROM task_attachments a JOIN tasks t ON t.id = a.task_id WHERE t.project_id = $1""",
        project_id,
    )
    members = {r["user_id"]: _member(r) for r in member_rows}
    tasks = {r["id"]: task_from_row(r) for r in task_rows}
    comments = {r["id"]: Comment(**dict(r)) for r in comment_rows}
    attachments = {
        r["id"]: Attachment(**(dict(r) | {"mime_type": r["mime_type"] or "application/octet-stream"}))
        for r in attachment_rows
    }
    mentioned = (
        {t.created_by for t in tasks.values()} | {c.user_id for c in comments.values()}
        | {a.uploaded_by for a in attachments.values()}
    ) - members.keys()
    names = {m.user_id: m.username for m in members.values()}
    if mentioned:
        for r in await conn.fetch("SELECT id, username FROM users WHERE id = ANY($1::uuid[])", list(mentioned)):
            names[r["id"]] = r["username"]
    state = ProjectState(
        project=_project(row), seq=row["seq"], members=members, tasks=tasks, comments=comments, attachments=attachments,
    )
    return state, names


def _member(row: asyncpg.Record) -> Member:
    display = " ".join(p for p in (row["first_name"], row["last_name"]) if p) or row["username"]
    return Member(row["user_id"], ProjectRole(row["role"]), row["username"], display, row["joined_at"])


async def project_of_task(conn: asyncpg.Connection, task_id: uuid.UUID) -> uuid.UUID | None:
    project_id: uuid.UUID | None = await conn.fetchval("SELECT project_id FROM tasks WHERE id = $1", task_id)
    return project_id


async def member_candidate(conn: asyncpg.Connection, user_id: uuid.UUID) -> tuple[str, str] | None:
    """(username, display name) of an active user who could be added to a project."""
    row = await conn.fetchrow(
        "SELECT username, first_name, last_name FROM users WHERE id = $1 AND is_active", user_id
    )
    if row is None:
        return None
    return row["username"], " ".join(p for p in (row["first_name"], row["last_name"]) if p) or row["username"]


# --- creating ---------------------------------------------------------------------

async def create_project(
    conn: asyncpg.Connection, *, project_id: uuid.UUID, owner_id: uuid.UUID, fields: dict[str, Any],
    now: datetime, idempotency: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Insert a project with its owner as first member; its first event is seq 1.

    Returns the project's view for its creator. With ``idempotency`` (key,
    request hash) the key is claimed first (a concurrent request with the same
    key waits on the row and then gets :class:`IdempotencyKeyTaken`), and the
    view is stored as the response to replay, in the same transaction.
    """
    if idempotency is not None:
        claimed = await conn.fetchval(
            """INSERT INTO idempotency_keys (user_id, key, request_hash) VALUES ($1, $2, $3)
               ON CONFLICT (user_id, key) DO UPDATE SET
                   request_hash = EXCLUDED.request_hash, status = NULL, response = NULL,
                   response_headers = NULL, created_at = now()
               WHERE idempotency_keys.created_at < now() - make_interval(secs => $4)
               RETURNING true""",
            owner_id, idempotency[0], idempotency[1], IDEMPOTENCY_TTL_S,
        )
        if not claimed:
            raise IdempotencyKeyTaken()
    row = await conn.fetchrow(
        f"""INSERT INTO projects (id, name, description, owner_id, status, priority, start_date, due_date,
                                  completed_at, seq, created_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                    CASE WHEN $5::text = 'completed' THEN $9::timestamptz END, 1, $9, $9)
            RETURNING {_PROJECT_COLUMNS}""",  # nosec B608
        project_id, fields["name"], fields.get("description"), owner_id, fields.get("status", "active"),
        fields.get("priority", "medium"), fields.get("start_date"), fields.get("due_date"), now,
    )
    assert row is not None  # INSERT ... RETURNING: one row
    project = _project(row)
    await conn.execute(
        "INSERT INTO project_members (project_id, user_id, role, joined_at) VALUES ($1, $2, 'owner', $3)",
        project_id, owner_id, now,
    )
    owner = await conn.fetchrow(
        """SELECT id AS user_id, username, first_name, last_name, $2::timestamptz AS joined_at, 'owner' AS role
           FROM users WHERE id = $1""",
        owner_id, now,
    )
    assert owner is not None  # the member row just inserted references this user
    payload = {"project": project_payload(project), "member": member_payload(_member(owner))}
    await conn.execute(
        """INSERT INTO project_events (project_id, seq, kind, actor_id, payload, created_at)
           VALUES ($1, 1, 'project.created', $2, $3, $4)""",
        project_id, owner_id, payload, now,
    )
    view = project_payload(project) | {"seq": 1, "my_role": "owner"}
    if idempotency is not None:
        await conn.execute(
            """UPDATE idempotency_keys SET status = 201, response = $3, response_headers = '{}'
               WHERE user_id = $1 AND key = $2""",
            owner_id, idempotency[0], view,
        )
    return view


# --- committing a batch -----------------------------------------------------------

#: How a written task replaces the stored row (here and in storage/task_commits.py).
TASK_CONFLICT_UPDATE = """
ON CONFLICT (id) DO UPDATE SET
    title = EXCLUDED.title, description = EXCLUDED.description, status = EXCLUDED.status,
    priority = EXCLUDED.priority, assignee_id = EXCLUDED.assignee_id, due_date = EXCLUDED.due_date,
    completed_at = EXCLUDED.completed_at, estimated_hours = EXCLUDED.estimated_hours,
    actual_hours = EXCLUDED.actual_hours, tags = EXCLUDED.tags, position = EXCLUDED.position,
    version = EXCLUDED.version, updated_at = EXCLUDED.updated_at
"""

# A constant joined to a constant: no value is interpolated (values are bind parameters).
_INSERT_TASK = """
INSERT INTO tasks (id, project_id, title, description, status, priority, assignee_id, created_by, due_date,
                   completed_at, estimated_hours, actual_hours, tags, position, version, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
"""
_UPSERT_TASK = _INSERT_TASK + TASK_CONFLICT_UPDATE  # nosec B608

_UPSERT_MEMBER = """
INSERT INTO project_members (project_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (project_id, user_id) DO UPDATE SET role = EXCLUDED.role
"""


def _task_args(t: Task) -> tuple[Any, ...]:
    return (
        t.id, t.project_id, t.title, t.description, t.status.value, t.priority.value, t.assignee_id, t.created_by,
        t.due_date, t.completed_at, t.estimated_hours, t.actual_hours, list(t.tags), t.position, t.version,
        t.created_at, t.updated_at,
    )


class IdempotencyKeyTaken(Conflict):
    """The Idempotency-Key is already used (or being used) by another request."""


class CommitRejected(InternalError):
    """PostgreSQL refused the batch (a constraint the domain did not foresee)."""


class DuplicateOpId(CommitRejected):
    """A client op id of the batch is already in the change log: a resend of an op
    older than the actor's in-memory window (the caller looks it up and answers it)."""


def refused(exc: Exception) -> CommitRejected:
    """The error for data PostgreSQL refused: :class:`DuplicateOpId` for the op-id constraint."""
    if getattr(exc, "constraint_name", None) == "project_events_op_unique":
        return DuplicateOpId("an op id of the batch was already applied")
    return CommitRejected(f"the database refused the batch ({type(exc).__name__})")


async def commit_batch(
    conn: asyncpg.Connection, *, project_id: uuid.UUID, expected_seq: int, records: Sequence[EventRecord],
    idempotency: Sequence[IdempotencyRecord] = (), notifications: Sequence[Notification] = (), epoch: int,
) -> None:
    """Write one batch atomically; :class:`FenceLost` if the seq moved or the
    ownership ``epoch`` is no longer current, :class:`CommitRejected` if
    PostgreSQL refuses the data."""
    try:
        if records:
            new_seq = records[-1].event.seq
            fenced = await conn.execute(
                "UPDATE projects SET seq = $3 WHERE id = $1 AND seq = $2 AND owner_epoch = $4",
                project_id, expected_seq, new_seq, epoch,
            )
            if fenced != "UPDATE 1":
                raise FenceLost()
            await conn.executemany(
                """INSERT INTO project_events (project_id, seq, kind, task_id, actor_id, client_op_id, payload)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)""",
                [(project_id, r.event.seq, r.event.kind, r.event.task_id, r.actor_id, r.client_op_id, r.event.payload)
                 for r in records],
            )
            await _write_rows(conn, project_id, [r.event for r in records])
            for r in records:
                if r.event.kind == "project.deleted":  # its events go with it: keep an audit entry
                    await activity.record(
                        conn, user_id=r.actor_id, action="project.deleted", entity_type="project",
                        entity_id=project_id, project_id=project_id, details=r.event.payload,
                    )
        if notifications:
            await conn.executemany(
                """INSERT INTO notifications (id, user_id, project_id, title, message, type, entity_type, entity_id,
                                              created_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
                [(n.id, n.user_id, n.project_id, n.title, n.message, n.type, n.entity_type, n.entity_id, n.created_at)
                 for n in notifications],
            )
        await _record_idempotency(conn, idempotency)
    except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as exc:
        raise refused(exc) from exc


async def _write_rows(conn: asyncpg.Connection, project_id: uuid.UUID, events: Sequence[Event]) -> None:
    tasks: dict[uuid.UUID, Task | None] = {}
    members: dict[uuid.UUID, Member | None] = {}
    comments: dict[uuid.UUID, Comment | None] = {}
    attachments: dict[uuid.UUID, Attachment | None] = {}
    project: Project | None = None
    deleted = False
    for e in events:
        if e.kind.startswith("task."):
            tasks[e.task_id] = e.after if isinstance(e.after, Task) else None  # type: ignore[index]
        elif e.kind.startswith("member."):
            members[e.subject_id] = e.after if isinstance(e.after, Member) else None  # type: ignore[index]
        elif e.kind.startswith("comment."):
            comments[e.subject_id] = e.after if isinstance(e.after, Comment) else None  # type: ignore[index]
        elif e.kind.startswith("attachment."):
            attachments[e.subject_id] = e.after if isinstance(e.after, Attachment) else None  # type: ignore[index]
        elif e.kind == "project.updated":
            project = e.after  # type: ignore[assignment]
        elif e.kind == "project.deleted":
            deleted = True
    if deleted:
        await conn.execute("DELETE FROM projects WHERE id = $1", project_id)
        return
    if project is not None:
        await conn.execute(
            """UPDATE projects SET name = $2, description = $3, status = $4, priority = $5, start_date = $6,
                   due_date = $7, completed_at = $8, updated_at = $9 WHERE id = $1""",
            project_id, project.name, project.description, project.status.value, project.priority.value,
            project.start_date, project.due_date, project.completed_at, project.updated_at,
        )
    put_members = [(project_id, m.user_id, m.role.value, m.joined_at) for m in members.values() if m is not None]
    gone_members = [uid for uid, m in members.items() if m is None]
    if put_members:
        await conn.executemany(_UPSERT_MEMBER, put_members)
    if gone_members:
        await conn.execute(
            "DELETE FROM project_members WHERE project_id = $1 AND user_id = ANY($2::uuid[])", project_id, gone_members
        )
    put_tasks = [_task_args(t) for t in tasks.values() if t is not None]
    gone_tasks = [tid for tid, t in tasks.items() if t is None]
    if put_tasks:
        await conn.executemany(_UPSERT_TASK, put_tasks)
    await _write_notes(conn, comments, attachments)
    if gone_tasks:
        await conn.execute("DELETE FROM tasks WHERE project_id = $1 AND id = ANY($2::uuid[])", project_id, gone_tasks)


_UPSERT_COMMENT = """
INSERT INTO task_comments (id, task_id, user_id, content, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (id) DO UPDATE SET content = EXCLUDED.content, updated_at = EXCLUDED.updated_at
"""

_INSERT_ATTACHMENT = """
INSERT INTO task_attachments (id, task_id, filename, file_size, mime_type, content_hash, storage_key, uploaded_by,
                              uploaded_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""


async def _write_notes(conn: asyncpg.Connection, comments: dict[uuid.UUID, Comment | None],
                       attachments: dict[uuid.UUID, Attachment | None]) -> None:
    """Comment and attachment rows (after their tasks exist, before deleted tasks go)."""
    put_comments = [(c.id, c.task_id, c.user_id, c.content, c.created_at, c.updated_at)
                    for c in comments.values() if c is not None]
    if put_comments:
        await conn.executemany(_UPSERT_COMMENT, put_comments)
    gone_comments = [cid for cid, c in comments.items() if c is None]
    if gone_comments:
        await conn.execute("DELETE FROM task_comments WHERE id = ANY($1::uuid[])", gone_comments)
    put_attachments = [(a.id, a.task_id, a.filename, a.file_size, a.mime_type, a.content_hash, a.storage_key,
                        a.uploaded_by, a.uploaded_at) for a in attachments.values() if a is not None]
    if put_attachments:
        await conn.executemany(_INSERT_ATTACHMENT, put_attachments)
    gone_attachments = [aid for aid, a in attachments.items() if a is None]
    if gone_attachments:
        await conn.execute("DELETE FROM task_attachments WHERE id = ANY($1::uuid[])", gone_attachments)


# --- idempotency keys -------------------------------------------------------------

#: How long a stored response is replayed for its key (seconds).
IDEMPOTENCY_TTL_S = 24 * 60 * 60


async def _record_idempotency(conn: asyncpg.Connection, records: Sequence[IdempotencyRecord]) -> None:
    if not records:
        return
    await conn.executemany(
        """INSERT INTO idempotency_keys (user_id, key, request_hash, status, response, response_headers)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (user_id, key) DO UPDATE SET
               request_hash = EXCLUDED.request_hash, status = EXCLUDED.status, response = EXCLUDED.response,
               response_headers = EXCLUDED.response_headers, created_at = now()
           WHERE idempotency_keys.created_at < now() - make_interval(secs => $7)""",
        [(r.user_id, r.key, r.request_hash, r.status, r.response, r.headers, IDEMPOTENCY_TTL_S) for r in records],
    )


async def find_idempotency(conn: asyncpg.Connection, user_id: uuid.UUID, key: str) -> IdempotencyRecord | None:
    """A stored response for this key, if it is younger than 24 hours."""
    row = await conn.fetchrow(
        """SELECT request_hash, status, response, response_headers FROM idempotency_keys
           WHERE user_id = $1 AND key = $2 AND created_at > now() - make_interval(secs => $3)""",
        user_id, key, IDEMPOTENCY_TTL_S,
    )
    if row is None:
        return None
    return IdempotencyRecord(
        user_id, key, row["request_hash"], row["status"], row["response"], row["response_headers"] or {},
    )
