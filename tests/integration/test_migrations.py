"""Tests for collab.storage.migrations (and open_storage's schema gate) on real PostgreSQL.

Every test gets its own database: ``empty_database_url`` (no schema at all) or
``database_url`` (a clone of the migrated template).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import asyncpg
import pytest
import trio
import trio_asyncio

from collab.server import open_storage
from collab.storage.database import Database, PoolOptions, open_database
from collab.storage.migrations import (
    MIGRATION_LOCK_KEY,
    SchemaError,
    check_schema,
    load_migrations,
    migrate,
)
from tests.conftest import test_settings

MIGRATIONS = load_migrations()
ALL_VERSIONS = tuple(m.version for m in MIGRATIONS)
LATEST = ALL_VERSIONS[-1]

#: DESIGN.md §4: the seed tables plus project_events and idempotency_keys.
DESIGN_TABLES = {
    "users", "user_sessions", "roles", "permissions", "role_permissions", "user_roles",
    "projects", "project_members", "project_events", "tasks", "task_comments",
    "task_attachments", "notifications", "activity_log", "idempotency_keys",
}


@asynccontextmanager
async def opened(url: str, max_size: int = 2) -> AsyncIterator[Database]:
    """A trio-asyncio loop and a small pool on ``url`` for the block."""
    async with trio_asyncio.open_loop():
        async with open_database(url, PoolOptions(min_size=1, max_size=max_size), label="migrations-test") as db:
            yield db


# --- units (asyncio coroutines run by Database.run) ---------------------------------

async def _fetch(conn: asyncpg.Connection, sql: str, *args: Any) -> list[asyncpg.Record]:
    return await conn.fetch(sql, *args)


async def _fetchval(conn: asyncpg.Connection, sql: str, *args: Any) -> Any:
    return await conn.fetchval(sql, *args)


async def _execute(conn: asyncpg.Connection, sql: str, *args: Any) -> str:
    return await conn.execute(sql, *args)


async def recorded(db: Database) -> list[asyncpg.Record]:
    return await db.run(_fetch, "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version")


async def has_table(db: Database, name: str) -> bool:
    return await db.run(_fetchval, "SELECT to_regclass($1) IS NOT NULL", name)


# --- migrate ---------------------------------------------------------------------------

def test_shipped_migrations_are_numbered_without_gaps() -> None:
    assert ALL_VERSIONS == tuple(range(1, len(MIGRATIONS) + 1))
    assert len(ALL_VERSIONS) >= 3
    assert len({m.checksum for m in MIGRATIONS}) == len(MIGRATIONS)


async def test_migrate_empty_database_applies_every_file_and_records_checksums(empty_database_url: str) -> None:
    async with opened(empty_database_url) as db:
        report = await migrate(db)
        assert report.applied == ALL_VERSIONS
        assert (report.current, report.latest) == (LATEST, LATEST)

        rows = await recorded(db)
        assert [(r["version"], r["name"], r["checksum"]) for r in rows] == [
            (m.version, m.name, m.checksum) for m in MIGRATIONS
        ]
        assert all(len(r["checksum"]) == 64 for r in rows)


async def test_migrated_schema_has_the_design_tables_and_columns(empty_database_url: str) -> None:
    async with opened(empty_database_url) as db:
        await migrate(db)
        tables = {
            r["table_name"]
            for r in await db.run(
                _fetch,
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
            )
        }
        assert DESIGN_TABLES <= tables, sorted(DESIGN_TABLES - tables)
        assert tables - DESIGN_TABLES == {"schema_migrations", "nodes"}  # nodes: cluster leases (0005)

        columns = {
            (r["table_name"], r["column_name"]): r
            for r in await db.run(
                _fetch,
                "SELECT table_name, column_name, data_type, is_generated, collation_name "
                "FROM information_schema.columns WHERE table_schema = 'public'",
            )
        }
        assert columns[("projects", "seq")]["data_type"] == "bigint"
        assert columns[("tasks", "version")]["data_type"] == "bigint"
        assert columns[("tasks", "position")]["data_type"] == "text"
        assert columns[("tasks", "position")]["collation_name"] == "C"
        assert columns[("tasks", "search")]["data_type"] == "tsvector"
        assert columns[("tasks", "search")]["is_generated"] == "ALWAYS"
        for name in ("project_id", "seq", "kind", "task_id", "actor_id", "client_op_id", "payload", "created_at"):
            assert ("project_events", name) in columns, name
        for name in ("user_id", "key", "request_hash", "status", "response", "created_at"):
            assert ("idempotency_keys", name) in columns, name

        pk = await db.run(
            _fetchval,
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'project_events'::regclass AND contype = 'p'",
        )
        assert pk == "PRIMARY KEY (project_id, seq)"
        unique = await db.run(
            _fetchval,
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'project_events'::regclass AND contype = 'u'",
        )
        assert unique == "UNIQUE (project_id, actor_id, client_op_id)"


async def test_seed_has_four_roles_and_ten_permissions(empty_database_url: str) -> None:
    async with opened(empty_database_url) as db:
        await migrate(db)
        roles = {r["name"] for r in await db.run(_fetch, "SELECT name FROM roles")}
        assert roles == {"admin", "manager", "developer", "viewer"}
        assert await db.run(_fetchval, "SELECT count(*) FROM permissions") == 10
        grants = {
            r["name"]: r["n"]
            for r in await db.run(
                _fetch,
                "SELECT r.name, count(*) AS n FROM role_permissions rp JOIN roles r ON r.id = rp.role_id "
                "GROUP BY r.name",
            )
        }
        assert grants == {"admin": 10, "manager": 6, "developer": 3, "viewer": 3}


async def test_migrate_again_applies_nothing(empty_database_url: str) -> None:
    async with opened(empty_database_url) as db:
        await migrate(db)
        before = await recorded(db)
        again = await migrate(db)
        assert again.applied == ()
        assert (again.current, again.latest) == (LATEST, LATEST)
        assert await recorded(db) == before
        assert await db.run(_fetchval, "SELECT count(*) FROM roles") == 4


async def test_migrate_continues_from_a_partial_schema(empty_database_url: str) -> None:
    async with opened(empty_database_url) as db:
        first = await migrate(db, MIGRATIONS[:1])
        assert first.applied == (1,)
        assert await has_table(db, "users")
        assert not await has_table(db, "projects")
        rest = await migrate(db)
        assert rest.applied == ALL_VERSIONS[1:]
        assert [r["version"] for r in await recorded(db)] == list(ALL_VERSIONS)


async def test_concurrent_migrators_apply_each_file_exactly_once(empty_database_url: str) -> None:
    """Two nodes start at once: both wait on the advisory lock, each file runs once."""
    key_hi, key_lo = MIGRATION_LOCK_KEY >> 32, MIGRATION_LOCK_KEY & 0xFFFFFFFF
    waiting_sql = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND classid = $1 AND objid = $2 "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    reports = []
    async with trio_asyncio.open_loop():
        # Hold the migrators' lock so that both are provably inside migrate() at once.
        holder = await trio_asyncio.aio_as_trio(asyncpg.connect)(empty_database_url)
        try:
            await trio_asyncio.aio_as_trio(holder.execute)("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
            options = PoolOptions(min_size=1, max_size=2)
            async with open_database(empty_database_url, options, label="a") as db_a, \
                    open_database(empty_database_url, options, label="b") as db_b:

                async def run(db: Database) -> None:
                    reports.append(await migrate(db))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(run, db_a)
                    nursery.start_soon(run, db_b)
                    waiting = 0
                    with trio.move_on_after(10):
                        while waiting < 2:
                            waiting = await trio_asyncio.aio_as_trio(holder.fetchval)(waiting_sql, key_hi, key_lo)
                            if waiting < 2:
                                await trio.sleep(0.02)
                    assert waiting == 2, "both migrators should be waiting on the migration lock"
                    await trio_asyncio.aio_as_trio(holder.execute)("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)

                assert len(reports) == 2
                applied = sorted(v for report in reports for v in report.applied)
                assert applied == list(ALL_VERSIONS)
                assert all(report.current == LATEST for report in reports)
                rows = await recorded(db_a)
                assert [r["version"] for r in rows] == list(ALL_VERSIONS)
                assert await db_b.run(_fetchval, "SELECT count(*) FROM roles") == 4
                assert (await check_schema(db_b)).current == LATEST
        finally:
            await trio_asyncio.aio_as_trio(holder.close)()


# --- check_schema and refusals -----------------------------------------------------------

async def test_check_schema_on_empty_database_says_run_collab_migrate(empty_database_url: str) -> None:
    async with opened(empty_database_url) as db:
        with pytest.raises(SchemaError, match="collab migrate") as caught:
            await check_schema(db)
        assert f"needs {LATEST}" in str(caught.value)
        # checking changes nothing
        assert not await has_table(db, "schema_migrations")


async def test_check_schema_accepts_the_migrated_template(database_url: str) -> None:
    async with opened(database_url) as db:
        report = await check_schema(db)
        assert (report.applied, report.current, report.latest) == ((), LATEST, LATEST)


async def test_check_schema_on_partial_schema_names_both_versions(empty_database_url: str) -> None:
    async with opened(empty_database_url) as db:
        await migrate(db, MIGRATIONS[:1])
        with pytest.raises(SchemaError, match="collab migrate") as caught:
            await check_schema(db)
        assert f"version 1 but this code needs {LATEST}" in str(caught.value)


async def test_newer_schema_is_refused_by_migrate_and_check(database_url: str) -> None:
    async with opened(database_url) as db:
        await db.run(_execute, "INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')")
        with pytest.raises(SchemaError, match="newer") as by_migrate:
            await migrate(db)
        assert "9999" in str(by_migrate.value)
        with pytest.raises(SchemaError, match="newer") as by_check:
            await check_schema(db)
        assert "9999" in str(by_check.value)
        assert [r["version"] for r in await recorded(db)] == [*ALL_VERSIONS, 9999]


async def test_newer_schema_is_refused_before_anything_is_applied(empty_database_url: str) -> None:
    async with opened(empty_database_url) as db:
        await migrate(db, MIGRATIONS[:1])
        await db.run(_execute, "INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')")
        with pytest.raises(SchemaError, match="newer"):
            await migrate(db)
        assert not await has_table(db, "projects")
        assert [r["version"] for r in await recorded(db)] == [1, 9999]


async def test_tampered_checksum_is_refused_by_migrate_and_check(database_url: str) -> None:
    async with opened(database_url) as db:
        await db.run(_execute, "UPDATE schema_migrations SET checksum = repeat('0', 64) WHERE version = 2")
        name = f"0002_{MIGRATIONS[1].name}.sql"
        with pytest.raises(SchemaError, match="changed after it was applied") as by_migrate:
            await migrate(db)
        assert name in str(by_migrate.value)
        with pytest.raises(SchemaError, match="changed after it was applied") as by_check:
            await check_schema(db)
        assert name in str(by_check.value)


async def test_migrate_releases_its_lock_after_refusing(database_url: str) -> None:
    """A refused migrate must not leave the advisory lock held on a pooled connection."""
    async with opened(database_url, max_size=1) as db:
        await db.run(_execute, "UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
        with pytest.raises(SchemaError):
            await migrate(db)
        held = await db.run(
            _fetchval,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        assert held == 0
        assert await db.run(_fetchval, "SHOW statement_timeout") != "0"


# --- open_storage -------------------------------------------------------------------------

async def test_open_storage_without_migrate_on_start_refuses_pending_schema(
    empty_database_url: str, tmp_path: Path
) -> None:
    settings = test_settings(empty_database_url, tmp_path).replace(migrate_on_start=False)
    async with trio_asyncio.open_loop():
        with pytest.raises(SchemaError, match="collab migrate"):
            async with open_storage(settings):
                pytest.fail("open_storage must not yield on a pending schema")
    async with opened(empty_database_url) as db:
        assert not await has_table(db, "schema_migrations")
        assert not await has_table(db, "users")


async def test_open_storage_without_migrate_on_start_refuses_partial_schema(
    empty_database_url: str, tmp_path: Path
) -> None:
    async with opened(empty_database_url) as db:
        await migrate(db, MIGRATIONS[:2])
    settings = test_settings(empty_database_url, tmp_path, migrate_on_start=False)
    async with trio_asyncio.open_loop():
        with pytest.raises(SchemaError, match=f"version 2 but this code needs {LATEST}"):
            async with open_storage(settings):
                pytest.fail("open_storage must not yield on a pending schema")
    async with opened(empty_database_url) as db:
        assert [r["version"] for r in await recorded(db)] == [1, 2]


async def test_open_storage_migrates_on_start_by_default(empty_database_url: str, tmp_path: Path) -> None:
    settings = test_settings(empty_database_url, tmp_path)
    assert settings.migrate_on_start is True
    async with trio_asyncio.open_loop():
        async with open_storage(settings) as db:
            assert (await check_schema(db)).current == LATEST
            assert await db.ping() is True


async def test_open_storage_without_migrate_on_start_accepts_current_schema(database_url: str, tmp_path: Path) -> None:
    settings = test_settings(database_url, tmp_path, migrate_on_start=False)
    async with trio_asyncio.open_loop():
        async with open_storage(settings) as db:
            assert await db.run(_fetchval, "SELECT max(version) FROM schema_migrations") == LATEST
