"""Tests for collab.storage.database on real PostgreSQL: units of work, errors, cancellation.

The cancellation tests are the proof for STACK.md trap 1: a trio cancellation
that lands while a unit is inside a transaction, waiting on a query, must roll
the transaction back, cancel the query on the server, give the connection back
to the pool, and leave ``pool.close()`` able to finish.
"""

from __future__ import annotations

import uuid
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, AsyncIterator

import asyncio
import asyncpg
import pytest
import trio
import trio_asyncio

from collab.errors import Conflict, Unavailable
from collab.storage.database import Database, PoolOptions, open_database
from tests.conftest import with_database

MAX_SIZE = 2
CANCEL_AFTER_S = 0.3
QUIET_DEADLINE_S = 5.0
CLOSE_DEADLINE_S = 10.0
MARK = "cancel-test"


def pool_options(**changes: Any) -> PoolOptions:
    """A small pool whose backends are recognisable by their application_name."""
    values: dict[str, Any] = {
        "min_size": 1, "max_size": MAX_SIZE, "application_name": f"collab-test-{uuid.uuid4().hex[:8]}",
    }
    values.update(changes)
    return PoolOptions(**values)


@asynccontextmanager
async def opened(url: str, options: PoolOptions | None = None) -> AsyncIterator[Database]:
    async with trio_asyncio.open_loop():
        async with open_database(url, options or pool_options(), label="t") as db:
            yield db


# --- units (asyncio coroutines run by Database.run) ---------------------------------

async def _fetch(conn: asyncpg.Connection, sql: str, *args: Any) -> list[asyncpg.Record]:
    return await conn.fetch(sql, *args)


async def _fetchval(conn: asyncpg.Connection, sql: str, *args: Any) -> Any:
    return await conn.fetchval(sql, *args)


async def _insert_role(conn: asyncpg.Connection, name: str) -> None:
    await conn.execute("INSERT INTO roles (name, description) VALUES ($1, $2)", name, MARK)


async def _insert_role_then_sleep(conn: asyncpg.Connection, name: str, reached: list[str]) -> None:
    await _insert_role(conn, name)
    reached.append(name)  # the cancellation must land in the pg_sleep below, not before it
    await conn.execute("SELECT pg_sleep(30)")


async def _insert_role_then_raise(conn: asyncpg.Connection, name: str, error: Exception) -> None:
    await _insert_role(conn, name)
    raise error


async def _in_transaction(conn: asyncpg.Connection) -> bool:
    return conn.is_in_transaction()


async def _meet(conn: asyncpg.Connection, barrier: asyncio.Barrier) -> int:
    """Hold this connection until ``barrier.parties`` units hold one each."""
    await asyncio.wait_for(barrier.wait(), 5)
    return await conn.fetchval("SELECT pg_backend_pid()")


def role_name() -> str:
    return f"t_{uuid.uuid4().hex[:16]}"


async def role_exists(db: Database, name: str) -> bool:
    return await db.run(_fetchval, "SELECT EXISTS (SELECT 1 FROM roles WHERE name = $1)", name)


# --- checks on the server side --------------------------------------------------------

_ACTIVITY = """
SELECT pid, state, query, application_name FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
"""


def leftovers(rows: list[asyncpg.Record]) -> list[dict[str, Any]]:
    """Backends still in a transaction or still running the cancelled pg_sleep."""
    return [
        dict(r) for r in rows
        if (r["state"] or "").startswith("idle in transaction")
        or (r["state"] == "active" and "pg_sleep" in (r["query"] or ""))
    ]


async def wait_until_quiet(db: Database) -> list[dict[str, Any]]:
    """Poll pg_stat_activity until the cancelled query is gone (bounded); return what is left."""
    bad: list[dict[str, Any]] = []
    with trio.move_on_after(QUIET_DEADLINE_S):
        while True:
            bad = leftovers(await db.run(_fetch, _ACTIVITY, transaction=False))
            if not bad:
                break
            await trio.sleep(0.05)
    return bad


async def cancel_mid_transaction(db: Database) -> str:
    """Start a unit that inserts a role and then sleeps in SQL; cancel it from trio."""
    name = role_name()
    reached: list[str] = []
    with trio.move_on_after(CANCEL_AFTER_S) as scope:
        await db.run(_insert_role_then_sleep, name, reached)
    assert scope.cancelled_caught, "the unit should have been cancelled, not finished"
    assert reached == [name], "the cancellation should land while pg_sleep runs"
    return name


async def assert_serves_max_size_concurrently(db: Database) -> None:
    barrier = asyncio.Barrier(MAX_SIZE)
    pids: list[int] = []

    async def one() -> None:
        pids.append(await db.run(_meet, barrier))

    async with trio.open_nursery() as nursery:
        for _ in range(MAX_SIZE):
            nursery.start_soon(one)
    assert len(set(pids)) == MAX_SIZE
    assert db.pool_stats()["in_use"] == 0


async def backends_named(url: str, application_name: str) -> int:
    conn = await trio_asyncio.aio_as_trio(asyncpg.connect)(url)
    try:
        return await trio_asyncio.aio_as_trio(conn.fetchval)(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", application_name
        )
    finally:
        await trio_asyncio.aio_as_trio(conn.close)()


async def wait_for_no_backends(url: str, application_name: str) -> int:
    left = -1
    with trio.move_on_after(QUIET_DEADLINE_S):
        while (left := await backends_named(url, application_name)) != 0:
            await trio.sleep(0.05)
    return left


# --- cancellation (STACK.md trap 1) ------------------------------------------------------

async def test_cancelled_unit_rolls_back_releases_and_pool_still_closes(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    options = pool_options()
    async with trio_asyncio.open_loop():
        async with AsyncExitStack() as stack:
            db = await stack.enter_async_context(open_database(database_url, options, label="t"))

            name = await cancel_mid_transaction(db)

            assert db.pool_stats()["in_use"] == 0
            assert await wait_until_quiet(db) == []
            assert not await role_exists(db, name), "the cancelled transaction must roll back"
            await assert_serves_max_size_concurrently(db)
            assert await db.ping() is True

            with trio.fail_after(CLOSE_DEADLINE_S):
                await stack.aclose()

        assert await wait_for_no_backends(database_url, options.application_name) == 0
    assert not [r for r in caplog.records if "did not close in time" in r.getMessage()]


async def test_repeated_cancellations_leave_nothing_behind(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    options = pool_options()
    names = []
    async with trio_asyncio.open_loop():
        async with AsyncExitStack() as stack:
            db = await stack.enter_async_context(open_database(database_url, options, label="t"))

            for attempt in range(20):
                names.append(await cancel_mid_transaction(db))
                stats = db.pool_stats()
                assert stats["in_use"] == 0, (attempt, stats)
                assert stats["size"] <= MAX_SIZE, (attempt, stats)
                assert await wait_until_quiet(db) == [], attempt

            assert await db.run(_fetchval, "SELECT count(*) FROM roles WHERE description = $1", MARK) == 0
            assert await db.run(
                _fetchval, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", options.application_name
            ) <= MAX_SIZE
            await assert_serves_max_size_concurrently(db)

            with trio.fail_after(CLOSE_DEADLINE_S):
                await stack.aclose()

        assert await wait_for_no_backends(database_url, options.application_name) == 0
    assert len(set(names)) == 20
    assert not [r for r in caplog.records if "did not close in time" in r.getMessage()]


async def test_cancelled_while_waiting_for_a_connection_leaks_nothing(database_url: str) -> None:
    """A unit cancelled while queued for a busy pool never runs and takes no connection."""
    async with opened(database_url) as db:
        release = asyncio.Event()
        name = role_name()
        reached: list[str] = []
        async with trio.open_nursery() as nursery:
            for _ in range(MAX_SIZE):
                nursery.start_soon(db.run, _hold, release)
            with trio.move_on_after(QUIET_DEADLINE_S):
                while db.pool_stats()["in_use"] < MAX_SIZE:
                    await trio.sleep(0.01)
            assert db.pool_stats()["in_use"] == MAX_SIZE

            with trio.move_on_after(CANCEL_AFTER_S) as scope:
                await db.run(_insert_role_then_sleep, name, reached)
            assert scope.cancelled_caught
            assert reached == []
            await trio_asyncio.aio_as_trio(_set)(release)

        assert db.pool_stats()["in_use"] == 0
        assert not await role_exists(db, name)
        await assert_serves_max_size_concurrently(db)


async def _hold(conn: asyncpg.Connection, release: asyncio.Event) -> None:
    await asyncio.wait_for(release.wait(), 10)


async def _set(event: asyncio.Event) -> None:
    event.set()


# --- errors --------------------------------------------------------------------------------

async def test_collab_error_rolls_back_and_propagates_unchanged(database_url: str) -> None:
    async with opened(database_url) as db:
        name = role_name()
        error = Conflict("that name is taken")
        with pytest.raises(Conflict) as caught:
            await db.run(_insert_role_then_raise, name, error)
        assert caught.value is error
        assert caught.value.detail == "that name is taken"
        assert not await role_exists(db, name)
        assert db.pool_stats()["in_use"] == 0


async def test_database_error_rolls_back_and_propagates(database_url: str) -> None:
    async with opened(database_url) as db:
        name = role_name()

        async def insert_twice(conn: asyncpg.Connection) -> None:
            await _insert_role(conn, name)
            await _insert_role(conn, name)

        with pytest.raises(asyncpg.UniqueViolationError):
            await db.run(insert_twice)
        assert not await role_exists(db, name)


async def test_statement_timeout_becomes_unavailable(database_url: str) -> None:
    async with opened(database_url, pool_options(statement_timeout_s=0.2)) as db:
        with pytest.raises(Unavailable) as caught:
            await db.run(_fetchval, "SELECT pg_sleep(5)")
        assert isinstance(caught.value.__cause__, asyncpg.QueryCanceledError)
        assert caught.value.retryable is True
        assert await db.ping() is True


async def test_missing_database_is_unavailable(pg_server_url: str) -> None:
    url = with_database(pg_server_url, f"collab_missing_{uuid.uuid4().hex[:8]}")
    async with trio_asyncio.open_loop():
        with pytest.raises(Unavailable, match="cannot connect to the database") as caught:
            async with open_database(url, pool_options(connect_timeout_s=5), label="t"):
                pytest.fail("open_database must not yield without a database")
    assert isinstance(caught.value.__cause__, asyncpg.InvalidCatalogNameError)
    assert caught.value.retryable is True


async def test_unreachable_server_is_unavailable() -> None:
    url = "postgresql://postgres@127.0.0.1:1/postgres"  # nothing listens on port 1
    async with trio_asyncio.open_loop():
        with pytest.raises(Unavailable):
            async with open_database(url, pool_options(connect_timeout_s=2), label="t"):
                pytest.fail("open_database must not yield without a server")


# --- the ordinary paths ---------------------------------------------------------------------

async def test_run_commits_a_transaction(database_url: str) -> None:
    async with opened(database_url) as db:
        name = role_name()
        assert await db.run(_in_transaction) is True
        await db.run(_insert_role, name)
        assert await role_exists(db, name)


async def test_run_without_transaction_autocommits(database_url: str) -> None:
    async with opened(database_url) as db:
        assert await db.run(_in_transaction, transaction=False) is False
        name = role_name()
        with pytest.raises(Conflict):
            await db.run(_insert_role_then_raise, name, Conflict(), transaction=False)
        assert await role_exists(db, name), "without a transaction the insert is already committed"


async def test_json_round_trips_as_python_objects(database_url: str) -> None:
    async with opened(database_url) as db:
        value = {"a": [1, 2.5, None, True], "b": {"c": "é"}}
        assert await db.run(_fetchval, "SELECT $1::jsonb", value) == value


async def test_ping_and_pool_stats(database_url: str) -> None:
    async with opened(database_url) as db:
        assert await db.ping() is True
        stats = db.pool_stats()
        assert stats["max"] == MAX_SIZE
        assert stats["in_use"] == 0
        assert 1 <= stats["size"] <= MAX_SIZE
        assert stats["idle"] == stats["size"]
        assert db.label == "t"


async def test_pool_connections_carry_the_server_settings(database_url: str) -> None:
    options = pool_options(statement_timeout_s=7)
    async with opened(database_url, options) as db:
        assert await db.run(_fetchval, "SHOW statement_timeout") == "7s"
        assert await db.run(_fetchval, "SHOW idle_in_transaction_session_timeout") == "14s"
        assert await db.run(_fetchval, "SHOW application_name") == options.application_name
