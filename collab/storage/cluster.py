"""Units of work for cluster membership and project ownership (PostgreSQL is the arbiter).

- A node is alive while its ``nodes.expires_at`` is in the future; it renews
  it every few seconds (:func:`heartbeat`) and deletes it on a clean exit
  (:func:`leave`, which also hands back its projects).
- A project is owned by ``projects.owner_node`` at ``owner_epoch``.
  :func:`acquire` takes it when nobody alive owns it (or, with ``steal``, in
  any case) and bumps the epoch; commits are fenced on that epoch
  (:mod:`collab.storage.projects`), so two nodes never both commit, whatever
  their clocks or pauses.
"""

from __future__ import annotations

import uuid

import asyncpg


async def heartbeat(conn: asyncpg.Connection, node_id: str, ttl_s: float) -> None:
    await conn.execute(
        """INSERT INTO nodes (node_id, expires_at) VALUES ($1, now() + make_interval(secs => $2))
           ON CONFLICT (node_id) DO UPDATE SET expires_at = EXCLUDED.expires_at""",
        node_id, ttl_s,
    )


async def leave(conn: asyncpg.Connection, node_id: str) -> None:
    """A clean exit: release every project this node owns and forget the node."""
    await conn.execute("UPDATE projects SET owner_node = NULL WHERE owner_node = $1", node_id)
    await conn.execute("DELETE FROM nodes WHERE node_id = $1", node_id)


async def forget_dead_nodes(conn: asyncpg.Connection, older_than_s: float = 3600.0) -> None:
    await conn.execute(
        "DELETE FROM nodes WHERE expires_at < now() - make_interval(secs => $1)", older_than_s,
    )


async def live_nodes(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT node_id FROM nodes WHERE expires_at > now()")
    return {r["node_id"] for r in rows}


async def acquire(conn: asyncpg.Connection, project_id: uuid.UUID, node_id: str, *, steal: bool) -> int | None:
    """Become the project's owner; the new epoch, or None if a live node owns
    it (or the project does not exist)."""
    epoch: int | None = await conn.fetchval(
        """UPDATE projects p SET owner_node = $2, owner_epoch = p.owner_epoch + 1
           WHERE p.id = $1 AND ($3 OR p.owner_node IS NULL OR p.owner_node = $2 OR NOT EXISTS (
               SELECT 1 FROM nodes n WHERE n.node_id = p.owner_node AND n.expires_at > now()))
           RETURNING p.owner_epoch""",
        project_id, node_id, steal,
    )
    return epoch


async def release(conn: asyncpg.Connection, project_id: uuid.UUID, node_id: str, epoch: int) -> None:
    """Hand the project back (passivation), if this node still owns it at that epoch."""
    await conn.execute(
        "UPDATE projects SET owner_node = NULL WHERE id = $1 AND owner_node = $2 AND owner_epoch = $3",
        project_id, node_id, epoch,
    )


async def owner_of(conn: asyncpg.Connection, project_id: uuid.UUID) -> tuple[bool, str | None]:
    """(project exists, the live owner node or None)."""
    row = await conn.fetchrow(
        """SELECT p.owner_node, EXISTS (SELECT 1 FROM nodes n WHERE n.node_id = p.owner_node
                                         AND n.expires_at > now()) AS alive
           FROM projects p WHERE p.id = $1""",
        project_id,
    )
    if row is None:
        return False, None
    return True, row["owner_node"] if row["alive"] else None
