"""The committers' pool on its own thread (collab/storage/db_thread.py): the same
contract as Database.run, cancellation from trio included."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import asyncpg
import pytest
import trio
import trio_asyncio

from collab.errors import Conflict, Unavailable
from collab.storage.database import PoolOptions
from collab.storage.db_thread import ThreadedDatabase, open_threaded_database
from tests.integration.test_database import (
    CLOSE_DEADLINE_S, _fetchval, _insert_role_then_raise, cancel_mid_transaction, pool_options, role_exists,
    role_name, wait_for_no_backends, wait_until_quiet,
)


@asynccontextmanager
async def threaded(url: str, options: PoolOptions) -> AsyncIterator[ThreadedDatabase]:
    async with trio_asyncio.open_loop():  # as in the server: the trio thread also runs trio-asyncio
        async with open_threaded_database(url, options, label="t") as db:
            yield db


async def test_runs_units_and_a_cancelled_one_rolls_back_and_leaves_nothing(database_url: str) -> None:
    options = pool_options()
    async with trio_asyncio.open_loop():
        with trio.fail_after(CLOSE_DEADLINE_S * 3):
            async with open_threaded_database(database_url, options, label="t") as db:
                assert await db.run(_fetchval, "SELECT 41 + 1", transaction=False) == 42
                for _ in range(3):
                    name = await cancel_mid_transaction(db)  # type: ignore[arg-type]
                    assert await wait_until_quiet(db) == []  # type: ignore[arg-type]
                    assert not await role_exists(db, name)  # type: ignore[arg-type]
                assert await db.run(_fetchval, "SELECT 1", transaction=False) == 1
        assert await wait_for_no_backends(database_url, options.application_name) == 0, "closed on exit"


async def test_errors_map_as_in_the_trio_asyncio_pool(database_url: str) -> None:
    async with threaded(database_url, pool_options(statement_timeout_s=0.2)) as db:
        error = Conflict("taken")
        name = role_name()
        with pytest.raises(Conflict) as caught:
            await db.run(_insert_role_then_raise, name, error)
        assert caught.value is error and not await role_exists(db, name)  # type: ignore[arg-type]
        with pytest.raises(Unavailable) as timed_out:
            await db.run(_fetchval, "SELECT pg_sleep(5)")
        assert isinstance(timed_out.value.__cause__, asyncpg.QueryCanceledError)


async def test_unreachable_server_is_unavailable() -> None:
    url = "postgresql://postgres@127.0.0.1:1/postgres"  # nothing listens on port 1
    async with trio_asyncio.open_loop():
        with pytest.raises(Unavailable, match="cannot connect"):
            async with open_threaded_database(url, pool_options(connect_timeout_s=2), label="t"):
                pytest.fail("must not yield without a database")
