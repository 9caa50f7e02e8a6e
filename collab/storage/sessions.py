"""Units of work on login sessions (one row = one refresh-token family).

A session holds the sha256 of its current refresh token's jti and a
generation counter. Rotation is a compare-and-set on both, so two concurrent
refreshes with the same token cannot both win. Presenting an older token
revokes the session (reuse detection); the revocation is committed even
though the caller is refused, which is why :func:`rotate_refresh` returns an
outcome instead of raising.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from collab.domain.users import Principal


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    user_agent: str | None
    ip_address: str | None


class RotateOutcome(enum.Enum):
    ROTATED = "rotated"
    REUSED = "reused"        # an older token of the family: the session is now revoked
    INVALID = "invalid"      # unknown, revoked, expired, or the user is inactive


async def create_session(
    conn: asyncpg.Connection, *, session_id: uuid.UUID, user_id: uuid.UUID, token_hash: str,
    expires_at: datetime, user_agent: str | None, ip_address: str | None,
) -> None:
    await conn.execute(
        """INSERT INTO user_sessions (id, user_id, token_hash, expires_at, user_agent, ip_address)
           VALUES ($1, $2, $3, $4, $5, $6::inet)""",
        session_id, user_id, token_hash, expires_at, user_agent, ip_address,
    )


async def principal_for_session(
    conn: asyncpg.Connection, session_id: uuid.UUID, user_id: uuid.UUID,
) -> Principal | None:
    """The caller behind a live session of an active user, or None."""
    row = await conn.fetchrow(
        """SELECT u.id, u.username,
                  COALESCE((SELECT array_agg(r.name ORDER BY r.name) FROM user_roles ur
                            JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = u.id), '{}') AS roles
           FROM user_sessions s JOIN users u ON u.id = s.user_id
           WHERE s.id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL
             AND s.expires_at > now() AND u.is_active""",
        session_id, user_id,
    )
    if row is None:
        return None
    return Principal(user_id=row["id"], session_id=session_id, username=row["username"], roles=tuple(row["roles"]))


async def rotate_refresh(
    conn: asyncpg.Connection, *, session_id: uuid.UUID, user_id: uuid.UUID, presented_hash: str,
    presented_generation: int, new_hash: str, user_agent: str | None, ip_address: str | None,
) -> RotateOutcome:
    row = await conn.fetchrow(
        """SELECT s.token_hash, s.refresh_generation, s.revoked_at IS NULL AS live,
                  s.expires_at > now() AS fresh, u.is_active
           FROM user_sessions s JOIN users u ON u.id = s.user_id
           WHERE s.id = $1 AND s.user_id = $2 FOR UPDATE OF s""",
        session_id, user_id,
    )
    if row is None or not row["live"] or not row["fresh"] or not row["is_active"]:
        return RotateOutcome.INVALID
    if row["token_hash"] != presented_hash or row["refresh_generation"] != presented_generation:
        await revoke(conn, session_id, "reuse_detected")
        return RotateOutcome.REUSED
    await conn.execute(
        """UPDATE user_sessions
           SET token_hash = $2, refresh_generation = refresh_generation + 1, last_used_at = now(),
               user_agent = COALESCE($3, user_agent), ip_address = COALESCE($4::inet, ip_address)
           WHERE id = $1""",
        session_id, new_hash, user_agent, ip_address,
    )
    return RotateOutcome.ROTATED


async def revoke(
    conn: asyncpg.Connection, session_id: uuid.UUID, reason: str, user_id: uuid.UUID | None = None,
) -> bool:
    """Revoke one session (of ``user_id`` when given); True when it was live."""
    status = await conn.execute(
        """UPDATE user_sessions SET revoked_at = now(), revoked_reason = $2
           WHERE id = $1 AND revoked_at IS NULL AND ($3::uuid IS NULL OR user_id = $3)""",
        session_id, reason, user_id,
    )
    return status.endswith(" 1")


async def revoke_all(
    conn: asyncpg.Connection, user_id: uuid.UUID, reason: str, *, keep: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """Revoke every live session of a user except ``keep``; return their ids."""
    rows = await conn.fetch(
        """UPDATE user_sessions SET revoked_at = now(), revoked_reason = $2
           WHERE user_id = $1 AND revoked_at IS NULL AND ($3::uuid IS NULL OR id <> $3)
           RETURNING id""",
        user_id, reason, keep,
    )
    return [r["id"] for r in rows]


async def list_live(conn: asyncpg.Connection, user_id: uuid.UUID) -> list[SessionInfo]:
    rows = await conn.fetch(
        """SELECT id, created_at, last_used_at, expires_at, user_agent, host(ip_address) AS ip
           FROM user_sessions
           WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()
           ORDER BY last_used_at DESC LIMIT 100""",
        user_id,
    )
    return [
        SessionInfo(r["id"], r["created_at"], r["last_used_at"], r["expires_at"], r["user_agent"], r["ip"])
        for r in rows
    ]
