"""Schema migrations: numbered SQL files applied in order, recorded, serialized.

The files live in the repository's ``migrations/`` folder (shipped as the
``collab.migrations`` package): ``NNNN_what_it_does.sql``. Each pending file
runs in its own transaction and is recorded in ``schema_migrations`` with a
checksum. A session-level advisory lock serializes migrators across processes
and machines, so several nodes starting at once apply each file exactly once.

The runner refuses to go on (:class:`SchemaError`) when the database holds a
migration this code does not know (a newer release migrated it), or when an
applied file was edited afterwards.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from collab.storage.database import Database

log = logging.getLogger(__name__)

#: Arbitrary constant: the advisory lock key all Collab migrators agree on.
MIGRATION_LOCK_KEY = 0x636F6C6C6162  # "collab"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class SchemaError(Exception):
    """The database schema does not match what this code can run against."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class MigrationReport:
    applied: tuple[int, ...]
    current: int
    latest: int


def load_migrations() -> tuple[Migration, ...]:
    """The migrations shipped with this code, in version order."""
    found = []
    for entry in resources.files("collab.migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions) or versions != list(range(1, len(versions) + 1)):
        raise SchemaError(f"migration files must be numbered 0001, 0002, ... without gaps; found {versions}")
    return tuple(found)


_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    checksum   TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


async def migrate(db: Database, migrations: tuple[Migration, ...] | None = None) -> MigrationReport:
    """Apply every pending migration; return what was applied."""
    migrations = load_migrations() if migrations is None else migrations
    return await db.run(_migrate_unit, migrations, transaction=False)


async def check_schema(db: Database, migrations: tuple[Migration, ...] | None = None) -> MigrationReport:
    """Check, without changing anything, that the schema is exactly this code's."""
    migrations = load_migrations() if migrations is None else migrations
    applied = await db.run(_applied_unit, transaction=False)
    _verify_known(applied, migrations)
    latest = migrations[-1].version if migrations else 0
    current = max(applied, default=0)
    if current < latest:
        raise SchemaError(
            f"the database schema is at version {current} but this code needs {latest}; run `collab migrate`"
        )
    return MigrationReport(applied=(), current=current, latest=latest)


async def _applied_unit(conn: asyncpg.Connection) -> dict[int, str]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    return {r["version"]: r["checksum"] for r in rows}


def _verify_known(applied: dict[int, str], migrations: tuple[Migration, ...]) -> None:
    known = {m.version: m for m in migrations}
    unknown = sorted(v for v in applied if v not in known)
    if unknown:
        raise SchemaError(
            f"the database has schema version {max(unknown)}, newer than this code knows "
            f"({max(known, default=0)}); upgrade Collab before starting it on this database"
        )
    for version, checksum in applied.items():
        if known[version].checksum != checksum:
            raise SchemaError(
                f"migration {version:04d}_{known[version].name}.sql was changed after it was applied"
            )


async def _migrate_unit(conn: asyncpg.Connection, migrations: tuple[Migration, ...]) -> MigrationReport:
    await conn.execute("SET statement_timeout = 0")
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        applied = await _applied_unit(conn)
        _verify_known(applied, migrations)
        done = []
        for migration in migrations:
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version, migration.name, migration.checksum,
                )
            log.info("applied migration %04d_%s", migration.version, migration.name)
            done.append(migration.version)
        latest = migrations[-1].version if migrations else 0
        return MigrationReport(applied=tuple(done), current=latest, latest=latest)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        await conn.execute("RESET statement_timeout")
