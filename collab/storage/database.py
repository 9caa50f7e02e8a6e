"""The asyncpg pool, reached from trio through trio-asyncio.

:class:`Database` owns one asyncpg pool. Every unit of database work is an
asyncio coroutine function ``unit(conn, *args)`` (the query modules beside
this one hold them) that :meth:`Database.run` executes as ONE asyncio task
through ``aio_as_trio``: acquire, transaction, work, commit, release.

Why one coroutine: a trio cancellation that lands between separate bridged
awaits (acquire, then transaction, then query) leaves a connection "idle in
transaction" and makes ``pool.close()`` hang (STACK.md trap 1). Cancelling a
single bridged coroutine cancels the asyncio task instead, and asyncio's own
``async with`` blocks roll back and release the connection. So a cancelled
request never leaks a connection; ``tests/integration/test_database.py``
shows it.

Errors: connection failures and timeouts become :class:`Unavailable`
(retryable); errors a unit raises on purpose (``CollabError``) pass through.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, Protocol, TypeVar

import asyncpg
import orjson
import trio
import trio_asyncio

from collab.errors import CollabError, FieldError, Unavailable, ValidationFailed

log = logging.getLogger(__name__)

T = TypeVar("T")
Unit = Callable[..., Awaitable[T]]

#: Exceptions that mean "the database is not reachable right now".
_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
)


@dataclass(frozen=True)
class PoolOptions:
    min_size: int = 2
    max_size: int = 10
    connect_timeout_s: float = 10.0
    statement_timeout_s: float = 15.0
    application_name: str = "collab"


async def _init_connection(conn: asyncpg.Connection) -> None:
    """Per-connection setup: JSON and JSONB travel as Python objects via orjson."""
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


class UnitRunner(Protocol):
    """Anything that runs units of work: :class:`Database`, or a pool on its own thread (db_thread.py)."""

    async def run(self, unit: Unit[T], *args: Any, transaction: bool = True, **kwargs: Any) -> T: ...


class Database:
    """Owns the pool; runs units of work on it. Create with :func:`open_database`."""

    def __init__(self, pool: asyncpg.Pool, *, label: str, dsn: str = "") -> None:
        self._pool = pool
        self.label = label
        self.dsn = dsn  # to open another pool on the same database (may hold a password: never log it)

    async def run(self, unit: Unit[T], *args: Any, transaction: bool = True, **kwargs: Any) -> T:
        """Run ``unit(conn, *args, **kwargs)`` on one pooled connection as one asyncio task.

        With ``transaction`` (the default) the unit runs inside a transaction
        that commits when it returns and rolls back when it raises or is
        cancelled. Cancellation from trio is safe at any point.
        """
        with map_errors():
            result: T = await trio_asyncio.aio_as_trio(run_unit)(self._pool, unit, args, kwargs, transaction)
        return result

    async def ping(self, timeout_s: float = 2.0) -> bool:
        """True when a trivial query answers within ``timeout_s``."""
        with trio.move_on_after(timeout_s):
            try:
                return await self.run(_select_one, transaction=False) == 1
            except Unavailable:
                return False
        return False

    def pool_stats(self) -> dict[str, int]:
        """Connections open, idle and in use: for health and metrics."""
        size = self._pool.get_size()
        idle = self._pool.get_idle_size()
        return {"size": size, "idle": idle, "in_use": size - idle, "max": self._pool.get_max_size()}


async def run_unit(
    pool: asyncpg.Pool, unit: Unit[T], args: tuple[Any, ...], kwargs: dict[str, Any], transaction: bool,
) -> T:
    """One unit of work on one pooled connection (an asyncio coroutine: the whole unit is one task)."""
    async with pool.acquire() as conn:
        if not transaction:
            return await unit(conn, *args, **kwargs)
        async with conn.transaction():
            return await unit(conn, *args, **kwargs)


@contextmanager
def map_errors() -> Iterator[None]:
    """Connection failures and timeouts become :class:`Unavailable`; unstorable text a validation error."""
    try:
        yield
    except CollabError:
        raise
    except _UNAVAILABLE as exc:
        raise Unavailable("The database is unavailable") from exc
    except (asyncpg.exceptions.CharacterNotInRepertoireError,
            asyncpg.exceptions.UntranslatableCharacterError) as exc:
        raise ValidationFailed(
            [FieldError((), "The text contains characters that cannot be stored", "unstorable")]
        ) from exc


async def _no_reset(conn: asyncpg.Connection) -> None:
    return None


async def _select_one(conn: asyncpg.Connection) -> int:
    one: int = await conn.fetchval("SELECT 1")
    return one


@asynccontextmanager
async def open_database(dsn: str, options: PoolOptions, *, label: str) -> AsyncIterator[Database]:
    """Open a pool (inside the running trio-asyncio loop) and close it on exit.

    Raises :class:`Unavailable` when the database cannot be reached within
    ``options.connect_timeout_s``. Closing is shielded with a deadline so a
    cancelled server still closes its connections.
    """
    try:
        pool = await trio_asyncio.aio_as_trio(create_pool)(dsn, options)
    except (*_UNAVAILABLE, asyncpg.exceptions.InvalidCatalogNameError,
            asyncpg.exceptions.InvalidAuthorizationSpecificationError,
            asyncpg.exceptions.InvalidPasswordError) as exc:
        raise Unavailable(f"cannot connect to the database ({type(exc).__name__}: {exc})") from exc
    try:
        yield Database(pool, label=label, dsn=dsn)
    finally:
        with trio.move_on_after(options.connect_timeout_s) as scope:
            scope.shield = True
            await trio_asyncio.aio_as_trio(_close_pool)(pool)
        if scope.cancelled_caught:
            log.warning("database pool did not close in time; terminating its connections")
            pool.terminate()


async def create_pool(dsn: str, options: PoolOptions) -> asyncpg.Pool:
    """An asyncpg pool with Collab's settings (an asyncio coroutine: run it on the loop that will use the pool)."""
    return await asyncio.wait_for(
        asyncpg.create_pool(
            dsn,
            min_size=options.min_size,
            max_size=options.max_size,
            timeout=options.connect_timeout_s,
            # No client-side per-query or idle timers: under trio-asyncio a
            # cancelled asyncio timer stays in the loop until its deadline, so
            # one per query (command_timeout) or per release (the pool's idle
            # lifetime) piles up garbage and GC pauses. PostgreSQL enforces
            # statement_timeout itself, and callers hold trio deadlines.
            max_inactive_connection_lifetime=0,
            # Units leave no session state behind (the migrator resets what it
            # sets), so the per-release RESET ALL / UNLISTEN / unlock round trip
            # is skipped; asyncpg still rolls back an open transaction.
            reset=_no_reset,
            init=_init_connection,
            server_settings={
                "application_name": options.application_name,
                "statement_timeout": str(int(options.statement_timeout_s * 1000)),
                "idle_in_transaction_session_timeout": str(int(options.statement_timeout_s * 2000)),
            },
        ),
        timeout=options.connect_timeout_s * 2,
    )


async def _close_pool(pool: asyncpg.Pool) -> None:
    await pool.close()
