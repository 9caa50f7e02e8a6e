"""The hot write path: task batches of one or many projects as ONE statement.

Most batches hold task events only (create, update, move, delete). For them
:func:`commit_task_batches` writes any number of projects' batches in one
data-modifying statement, atomic without BEGIN/COMMIT: a fence ``UPDATE`` of
every project's seq (``WHERE seq = expected AND owner_epoch = ours``, as in
:func:`collab.storage.projects.commit_batch`), then the events, task upserts
and deletes of exactly the projects whose fence held. One round trip for many
projects is what lets a few shared committers (collab/actors/committer.py)
keep up with hundreds of busy projects (STACK.md, "Shared committers").

Guarantees: a project whose fence did not hold writes nothing (its id is
missing from the result, and the caller raises :class:`FenceLost`); data
PostgreSQL refuses fails the whole statement with :class:`CommitRejected`,
so the caller can retry each project alone to find the offending one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Sequence

import asyncpg
import orjson

from collab.domain.model import Task
from collab.storage.projects import TASK_CONFLICT_UPDATE, EventRecord, FenceLost, refused


@dataclass(frozen=True, slots=True)
class TaskBatch:
    """One project's committed-to-be batch of task events."""

    project_id: uuid.UUID
    expected_seq: int   # the project's seq before the batch (the fence)
    epoch: int          # the ownership epoch the writer holds
    records: Sequence[EventRecord]


def fits_one_statement(
    records: Sequence[EventRecord], idempotency: Sequence[Any], notifications: Sequence[Any],
) -> bool:
    """True for the common batch (task events only) that this module writes."""
    return bool(records) and not idempotency and not notifications and all(
        r.event.kind.startswith("task.") for r in records
    )


_TASK_BATCHES_HEAD = """
WITH fence AS (
    UPDATE projects p SET seq = f.new_seq
    FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[]) AS f(id, expected, new_seq, epoch)
    WHERE p.id = f.id AND p.seq = f.expected AND p.owner_epoch = f.epoch
    RETURNING p.id
), events AS (
    INSERT INTO project_events (project_id, seq, kind, task_id, actor_id, client_op_id, payload)
    SELECT e.project_id, e.seq, e.kind, e.task_id, e.actor_id, e.client_op_id, e.payload::jsonb
    FROM unnest($5::uuid[], $6::bigint[], $7::text[], $8::uuid[], $9::uuid[], $10::text[], $11::text[])
         AS e(project_id, seq, kind, task_id, actor_id, client_op_id, payload)
    WHERE e.project_id IN (SELECT id FROM fence)
    RETURNING 1
), upserted AS (
    INSERT INTO tasks (id, project_id, title, description, status, priority, assignee_id, created_by, due_date,
                       completed_at, estimated_hours, actual_hours, tags, position, version, created_at, updated_at)
    SELECT t.id, t.project_id, t.title, t.description, t.status, t.priority, t.assignee_id, t.created_by, t.due_date,
           t.completed_at, t.estimated_hours, t.actual_hours,
           ARRAY(SELECT jsonb_array_elements_text(t.tags::jsonb)), t.position, t.version, t.created_at, t.updated_at
    FROM unnest($12::uuid[], $13::uuid[], $14::text[], $15::text[], $16::text[], $17::text[], $18::uuid[],
                $19::uuid[], $20::timestamptz[], $21::timestamptz[], $22::int[], $23::int[], $24::text[],
                $25::text[], $26::bigint[], $27::timestamptz[], $28::timestamptz[])
         AS t(id, project_id, title, description, status, priority, assignee_id, created_by, due_date,
              completed_at, estimated_hours, actual_hours, tags, position, version, created_at, updated_at)
    WHERE t.project_id IN (SELECT id FROM fence)
"""
_TASK_BATCHES_TAIL = """
    RETURNING 1
), deleted AS (
    DELETE FROM tasks d
    USING unnest($29::uuid[], $30::uuid[]) AS g(project_id, id)
    WHERE d.id = g.id AND d.project_id = g.project_id AND g.project_id IN (SELECT id FROM fence)
    RETURNING 1
)
SELECT coalesce(array_agg(id), '{}') FROM fence
"""
# Constants only (the shared ON CONFLICT clause); every value is a bind parameter.
_TASK_BATCHES_STATEMENT = _TASK_BATCHES_HEAD + TASK_CONFLICT_UPDATE + _TASK_BATCHES_TAIL  # nosec B608


async def commit_task_batches(conn: asyncpg.Connection, batches: Sequence[TaskBatch]) -> set[uuid.UUID]:
    """Write the batches in one statement; the ids of the projects whose fence held.

    Each project appears at most once (its actor has one commit in flight).
    Raises :class:`CommitRejected` if PostgreSQL refuses any of the data.
    """
    fence: tuple[list[Any], ...] = ([], [], [], [])
    events: tuple[list[Any], ...] = ([], [], [], [], [], [], [])
    puts: list[tuple[uuid.UUID, Task]] = []
    gone: tuple[list[uuid.UUID], list[uuid.UUID]] = ([], [])
    for batch in sorted(batches, key=lambda b: b.project_id):  # one lock order across statements
        pid = batch.project_id
        new_seq = batch.records[-1].event.seq
        for column, value in zip(fence, (pid, batch.expected_seq, new_seq, batch.epoch), strict=True):
            column.append(value)
        final: dict[uuid.UUID, Task | None] = {}
        for r in batch.records:
            e = r.event
            for column, value in zip(events, (
                pid, e.seq, e.kind, e.task_id, r.actor_id, r.client_op_id, orjson.dumps(e.payload).decode(),
            ), strict=True):
                column.append(value)
            final[e.task_id] = e.after if isinstance(e.after, Task) else None  # type: ignore[index]
        for task_id, task in final.items():
            if task is None:
                gone[0].append(pid)
                gone[1].append(task_id)
            else:
                puts.append((pid, task))
    try:
        fenced: list[uuid.UUID] = await conn.fetchval(
            _TASK_BATCHES_STATEMENT, *fence, *events,
            [t.id for _, t in puts], [pid for pid, _ in puts], [t.title for _, t in puts],
            [t.description for _, t in puts], [t.status.value for _, t in puts], [t.priority.value for _, t in puts],
            [t.assignee_id for _, t in puts], [t.created_by for _, t in puts], [t.due_date for _, t in puts],
            [t.completed_at for _, t in puts], [t.estimated_hours for _, t in puts],
            [t.actual_hours for _, t in puts], [orjson.dumps(list(t.tags)).decode() for _, t in puts],
            [t.position for _, t in puts], [t.version for _, t in puts], [t.created_at for _, t in puts],
            [t.updated_at for _, t in puts], *gone,
        )
    except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as exc:
        raise refused(exc) from exc
    return set(fenced)


async def commit_task_batch(conn: asyncpg.Connection, batch: TaskBatch) -> None:
    """One project's batch; :class:`FenceLost` if its fence did not hold."""
    if batch.project_id not in await commit_task_batches(conn, [batch]):
        raise FenceLost()
