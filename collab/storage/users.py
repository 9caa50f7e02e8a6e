"""Units of work on users and their global roles.

Each function is an asyncio coroutine ``unit(conn, ...)`` run through
:meth:`collab.storage.database.Database.run`. They convert unique-key
violations into :class:`Conflict` and never return password hashes except
from :func:`credentials_by_email`.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from collab.domain.users import User
from collab.errors import Conflict, NotFound

_USER_COLUMNS = """
    u.id, u.email, u.username, u.first_name, u.last_name, u.avatar_url,
    u.is_active, u.email_verified, u.created_at, u.updated_at,
    COALESCE((SELECT array_agg(r.name ORDER BY r.name) FROM user_roles ur
              JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = u.id), '{}') AS roles
"""

#: Profile fields a user may change about themself.
PROFILE_FIELDS = ("first_name", "last_name", "avatar_url")


def _user(row: asyncpg.Record) -> User:
    return User(
        id=row["id"], email=row["email"], username=row["username"],
        first_name=row["first_name"], last_name=row["last_name"], avatar_url=row["avatar_url"],
        is_active=row["is_active"], email_verified=row["email_verified"],
        roles=tuple(row["roles"]), created_at=row["created_at"], updated_at=row["updated_at"],
    )


async def insert_user(
    conn: asyncpg.Connection, *, email: str, username: str, password_hash: str,
    first_name: str | None, last_name: str | None, roles: tuple[str, ...],
) -> User:
    try:
        user_id = await conn.fetchval(
            """INSERT INTO users (email, username, password_hash, first_name, last_name)
               VALUES ($1, $2, $3, $4, $5) RETURNING id""",
            email, username, password_hash, first_name, last_name,
        )
    except asyncpg.exceptions.UniqueViolationError as exc:
        if "username" in (exc.constraint_name or ""):
            raise Conflict("That username is taken") from None
        raise Conflict("An account with that email already exists") from None
    await _grant_roles(conn, user_id, roles)
    return await _get(conn, user_id)


async def _grant_roles(conn: asyncpg.Connection, user_id: uuid.UUID, roles: tuple[str, ...]) -> None:
    await conn.execute(
        """INSERT INTO user_roles (user_id, role_id)
           SELECT $1, r.id FROM roles r WHERE r.name = ANY($2::text[])
           ON CONFLICT DO NOTHING""",
        user_id, list(roles),
    )


async def set_roles(conn: asyncpg.Connection, user_id: uuid.UUID, roles: tuple[str, ...]) -> User:
    await _require(conn, user_id)
    await conn.execute("DELETE FROM user_roles WHERE user_id = $1", user_id)
    await _grant_roles(conn, user_id, roles)
    return await _get(conn, user_id)


async def _get(conn: asyncpg.Connection, user_id: uuid.UUID) -> User:
    # Only constants (column lists, whitelisted field names) and $n placeholders are
    # interpolated into SQL in this module; values are bind parameters.
    row = await conn.fetchrow(f"SELECT {_USER_COLUMNS} FROM users u WHERE u.id = $1", user_id)  # nosec B608
    if row is None:
        raise NotFound("No such user")
    return _user(row)


async def _require(conn: asyncpg.Connection, user_id: uuid.UUID) -> None:
    if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)", user_id):
        raise NotFound("No such user")


async def get_user(conn: asyncpg.Connection, user_id: uuid.UUID) -> User:
    """The user with that id; :class:`NotFound` otherwise."""
    return await _get(conn, user_id)


async def credentials_by_email(conn: asyncpg.Connection, email: str) -> tuple[User, str] | None:
    """The user with that (lowercased) email and their password hash, if any."""
    row = await conn.fetchrow(
        f"SELECT {_USER_COLUMNS}, u.password_hash FROM users u WHERE u.email = $1", email  # nosec B608
    )
    return None if row is None else (_user(row), row["password_hash"])


async def password_hash(conn: asyncpg.Connection, user_id: uuid.UUID) -> str:
    value: str | None = await conn.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id)
    if value is None:
        raise NotFound("No such user")
    return value


async def set_password_hash(
    conn: asyncpg.Connection, user_id: uuid.UUID, new_hash: str, *, changed: bool
) -> None:
    """Store a new hash; ``changed`` marks a real password change (not a rehash)."""
    if changed:
        await conn.execute(
            "UPDATE users SET password_hash = $2, password_changed_at = now(), updated_at = now() WHERE id = $1",
            user_id, new_hash,
        )
    else:
        await conn.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, new_hash)


async def update_profile(conn: asyncpg.Connection, user_id: uuid.UUID, changes: dict[str, Any]) -> User:
    fields = [f for f in PROFILE_FIELDS if f in changes]
    if fields:
        assignments = ", ".join(f"{f} = ${i + 2}" for i, f in enumerate(fields))  # names from PROFILE_FIELDS
        await conn.execute(
            f"UPDATE users SET {assignments}, updated_at = now() WHERE id = $1",  # nosec B608
            user_id, *(changes[f] for f in fields),
        )
    return await _get(conn, user_id)


async def set_active(conn: asyncpg.Connection, user_id: uuid.UUID, active: bool) -> User:
    await _require(conn, user_id)
    await conn.execute("UPDATE users SET is_active = $2, updated_at = now() WHERE id = $1", user_id, active)
    return await _get(conn, user_id)


async def search_users(
    conn: asyncpg.Connection, *, query: str | None, match_email_prefix: bool,
    include_inactive: bool, limit: int, offset: int,
) -> tuple[list[User], int]:
    """Users whose username or name starts with ``query`` (case-insensitive).

    Email matches by prefix only when ``match_email_prefix`` (admins);
    otherwise only an exact email matches, so nobody can enumerate addresses.
    """
    conditions = [] if include_inactive else ["u.is_active"]
    args: list[Any] = []
    if query:
        args.append(_escape_like(query.lower()) + "%")
        args.append(query.lower())
        email = "(u.email LIKE $1 OR u.email = $2)" if match_email_prefix else "u.email = $2"
        conditions.append(
            f"""(lower(u.username) LIKE $1 OR lower(coalesce(u.first_name, '')) LIKE $1
                 OR lower(coalesce(u.last_name, '')) LIKE $1
                 OR lower(concat_ws(' ', u.first_name, u.last_name)) LIKE $1 OR {email})"""
        )
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    total = await conn.fetchval(f"SELECT count(*) FROM users u {where}", *args)  # nosec B608
    rows = await conn.fetch(
        f"SELECT {_USER_COLUMNS} FROM users u {where} ORDER BY lower(u.username) "
        f"LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}",  # nosec B608
        *args, limit, offset,
    )
    return [_user(r) for r in rows], total


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
