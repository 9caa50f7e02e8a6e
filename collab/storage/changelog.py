"""Reading the change log: events after a seq, and the client op ids it holds.

Both read ``project_events``, the durable ordered log the project actors
write (collab/storage/projects.py): the events drive WebSocket catch-up and
``GET /projects/{id}/changes``; the op ids make WebSocket ops exactly-once
across reconnects and restarts.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg


# --- client op ids (WebSocket exactly-once) ---------------------------------------

@dataclass(frozen=True, slots=True)
class AppliedOp:
    actor_id: uuid.UUID
    client_op_id: str
    seq: int
    task_id: uuid.UUID | None


async def recent_op_ids(conn: asyncpg.Connection, project_id: uuid.UUID, limit: int) -> tuple[list[AppliedOp], bool]:
    """The op ids of the project's latest ``limit`` events that have one, and
    whether that is all of them."""
    rows = await conn.fetch(
        """SELECT actor_id, client_op_id, seq, task_id FROM project_events
           WHERE project_id = $1 AND client_op_id IS NOT NULL AND actor_id IS NOT NULL
           ORDER BY seq DESC LIMIT $2""",
        project_id, limit + 1,
    )
    complete = len(rows) <= limit
    ops = [AppliedOp(r["actor_id"], r["client_op_id"], r["seq"], r["task_id"]) for r in rows[:limit]]
    ops.reverse()
    return ops, complete


async def find_op_ids(
    conn: asyncpg.Connection, project_id: uuid.UUID, keys: list[tuple[uuid.UUID, str]],
) -> list[AppliedOp]:
    rows = await conn.fetch(
        """SELECT e.actor_id, e.client_op_id, e.seq, e.task_id
           FROM project_events e
           JOIN unnest($2::uuid[], $3::text[]) AS k(actor_id, client_op_id)
             ON e.actor_id = k.actor_id AND e.client_op_id = k.client_op_id
           WHERE e.project_id = $1""",
        project_id, [k[0] for k in keys], [k[1] for k in keys],
    )
    return [AppliedOp(r["actor_id"], r["client_op_id"], r["seq"], r["task_id"]) for r in rows]


# --- the change log ---------------------------------------------------------------

async def events_since(conn: asyncpg.Connection, project_id: uuid.UUID, since: int, limit: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT e.seq, e.kind, e.task_id, e.actor_id, e.client_op_id, e.payload, e.created_at
           FROM project_events e WHERE e.project_id = $1 AND e.seq > $2 ORDER BY e.seq LIMIT $3""",
        project_id, since, limit,
    )
    return [
        {
            "seq": r["seq"], "kind": r["kind"], "task_id": str(r["task_id"]) if r["task_id"] else None,
            "actor_id": str(r["actor_id"]) if r["actor_id"] else None, "client_op_id": r["client_op_id"],
            "data": r["payload"], "created_at": r["created_at"].isoformat(),
        }
        for r in rows
    ]
