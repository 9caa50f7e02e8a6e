"""The activity log: reading the change log as a feed, and the audit trail.

Every project change is already in ``project_events`` (who, what, when, the
fields that changed), written in the commit that makes it; the project feed
and the project part of the admin log are read from there, so nothing is
written twice on the hot path. ``activity_log`` holds what is not a project
event: administrative and account actions (role changes, (de)activation) and
the deletion of a project, whose own events go with it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Sequence

import asyncpg


async def record(
    conn: asyncpg.Connection, *, user_id: uuid.UUID | None, action: str, entity_type: str, entity_id: uuid.UUID,
    project_id: uuid.UUID | None = None, details: dict[str, Any] | None = None,
) -> None:
    """One audit entry, in the caller's transaction."""
    await conn.execute(
        """INSERT INTO activity_log (user_id, project_id, action, entity_type, entity_id, details)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        user_id, project_id, action, entity_type, entity_id, details,
    )


async def project_events(
    conn: asyncpg.Connection, project_id: uuid.UUID, *, before: int | None, limit: int,
) -> tuple[list[asyncpg.Record], dict[uuid.UUID, str]]:
    """A project's events newest first (below seq ``before``), the current
    title of each task they name, and the usernames they mention."""
    rows = await conn.fetch(
        """SELECT e.seq, e.kind, e.task_id, e.actor_id, e.payload, e.created_at, t.title AS task_title
           FROM project_events e LEFT JOIN tasks t ON t.id = e.task_id
           WHERE e.project_id = $1 AND ($2::bigint IS NULL OR e.seq < $2)
           ORDER BY e.seq DESC LIMIT $3""",
        project_id, before, limit,
    )
    return rows, await usernames(conn, rows)


async def global_log(
    conn: asyncpg.Connection, *, before: tuple[datetime, str] | None, limit: int,
    project_id: uuid.UUID | None = None, user_id: uuid.UUID | None = None,
) -> tuple[list[asyncpg.Record], dict[uuid.UUID, str]]:
    """Project events of every project and audit entries, newest first.

    Keyset-paginated on ``(created_at, key)`` where ``key`` is unique per
    entry, so pages neither skip nor repeat entries with equal timestamps.
    """
    rows = await conn.fetch(
        """SELECT * FROM (
               SELECT e.created_at, 'e:' || e.project_id || ':' || lpad(e.seq::text, 20, '0') AS key,
                      e.project_id, p.name AS project_name, e.seq, e.kind, e.task_id, e.actor_id, e.payload,
                      t.title AS task_title
               FROM project_events e JOIN projects p ON p.id = e.project_id
               LEFT JOIN tasks t ON t.id = e.task_id
               WHERE ($3::uuid IS NULL OR e.project_id = $3) AND ($4::uuid IS NULL OR e.actor_id = $4)
                 AND ($1::timestamptz IS NULL
                      OR (e.created_at, 'e:' || e.project_id || ':' || lpad(e.seq::text, 20, '0')) < ($1, $2))
               UNION ALL
               SELECT a.created_at, 'a:' || a.id AS key, a.project_id, a.details ->> 'name' AS project_name,
                      a.seq, a.action AS kind, CASE WHEN a.entity_type = 'task' THEN a.entity_id END AS task_id,
                      a.user_id AS actor_id, coalesce(a.details, '{}'::jsonb) || jsonb_build_object(
                          'entity_type', a.entity_type, 'entity_id', a.entity_id) AS payload,
                      NULL AS task_title
               FROM activity_log a
               WHERE ($3::uuid IS NULL OR a.project_id = $3) AND ($4::uuid IS NULL OR a.user_id = $4)
                 AND ($1::timestamptz IS NULL OR (a.created_at, 'a:' || a.id) < ($1, $2))
           ) entries ORDER BY created_at DESC, key DESC LIMIT $5""",
        before[0] if before else None, before[1] if before else "", project_id, user_id, limit,
    )
    return rows, await usernames(conn, rows)


async def usernames(conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> dict[uuid.UUID, str]:
    """Usernames of the users the entries name: who acted, who was assigned or added."""
    ids: set[uuid.UUID] = set()
    for r in rows:
        if r["actor_id"]:
            ids.add(r["actor_id"])
        ids.update(_named_users(r["payload"] or {}))
    if not ids:
        return {}
    found = await conn.fetch("SELECT id, username FROM users WHERE id = ANY($1::uuid[])", list(ids))
    return {r["id"]: r["username"] for r in found}


def _named_users(payload: dict[str, Any]) -> list[uuid.UUID]:
    candidates = [
        (payload.get("changes") or {}).get("assignee_id"), (payload.get("task") or {}).get("assignee_id"),
        (payload.get("member") or {}).get("user_id"), payload.get("user_id"),
    ]
    if payload.get("entity_type") == "user":
        candidates.append(payload.get("entity_id"))
    out = []
    for value in candidates:
        try:
            out.append(uuid.UUID(value)) if isinstance(value, str) else None
        except ValueError:
            continue
    return out
