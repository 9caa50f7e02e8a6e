"""Which attachment contents are still referenced: the database side of blob garbage collection.

Rows of ``task_attachments`` are written by the project actor (storage/projects.py)
in the same transaction as their ``attachment.added`` / ``attachment.removed``
events, and removed by PostgreSQL's cascade when their task goes; the reads of
one task's attachments come from the actor's committed state. What the blob
store needs from PostgreSQL is only this: does any row still point at a
content hash. These units answer it for one hash (after a delete) and for a
batch (the periodic sweep).
"""

from __future__ import annotations

import asyncpg


async def is_referenced(conn: asyncpg.Connection, content_hash: str) -> bool:
    """True while some attachment row has this content hash."""
    return bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM task_attachments WHERE content_hash = $1)", content_hash,
    ))


async def referenced_hashes(conn: asyncpg.Connection, content_hashes: list[str]) -> set[str]:
    """The subset of ``content_hashes`` that some attachment row still has."""
    if not content_hashes:
        return set()
    rows = await conn.fetch(
        "SELECT DISTINCT content_hash FROM task_attachments WHERE content_hash = ANY($1::text[])", content_hashes,
    )
    return {r["content_hash"] for r in rows}
