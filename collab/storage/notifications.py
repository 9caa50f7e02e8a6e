"""Units of work on a user's notifications (created by the project actors' commits)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from collab.errors import NotFound

_COLUMNS = "id, type, title, message, project_id, entity_type, entity_id, is_read, created_at"


def _view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]), "type": row["type"], "title": row["title"], "message": row["message"],
        "project_id": str(row["project_id"]) if row["project_id"] else None, "entity_type": row["entity_type"],
        "entity_id": str(row["entity_id"]) if row["entity_id"] else None, "is_read": row["is_read"],
        "created_at": row["created_at"].isoformat(),
    }


async def list_for(
    conn: asyncpg.Connection, user_id: uuid.UUID, *, is_read: bool | None, limit: int, offset: int,
) -> tuple[list[dict[str, Any]], int, int]:
    """(page newest first, total matching, unread total)."""
    # The SQL is put together from constants and $n placeholders only; values are bind parameters.
    filter_sql = "" if is_read is None else "AND is_read = $2"
    args: list[Any] = [user_id] + ([] if is_read is None else [is_read])
    total = await conn.fetchval(
        f"SELECT count(*) FROM notifications WHERE user_id = $1 {filter_sql}", *args,  # nosec B608
    )
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM notifications WHERE user_id = $1 {filter_sql}
            ORDER BY created_at DESC, id LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}""",  # nosec B608
        *args, limit, offset,
    )
    unread = await unread_count(conn, user_id)
    return [_view(r) for r in rows], total, unread


async def unread_count(conn: asyncpg.Connection, user_id: uuid.UUID) -> int:
    count: int = await conn.fetchval("SELECT count(*) FROM notifications WHERE user_id = $1 AND NOT is_read", user_id)
    return count


async def mark_read(conn: asyncpg.Connection, user_id: uuid.UUID, notification_id: uuid.UUID) -> dict[str, Any]:
    """Mark one of the user's notifications read (404 for anyone else's)."""
    row = await conn.fetchrow(
        f"UPDATE notifications SET is_read = true WHERE id = $1 AND user_id = $2 RETURNING {_COLUMNS}",  # nosec B608
        notification_id, user_id,
    )
    if row is None:
        raise NotFound("No such notification")
    return _view(row)


async def mark_all_read(conn: asyncpg.Connection, user_id: uuid.UUID) -> int:
    status = await conn.execute("UPDATE notifications SET is_read = true WHERE user_id = $1 AND NOT is_read", user_id)
    return int(status.split()[-1])
