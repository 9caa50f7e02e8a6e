"""A database pool on its own thread and asyncio loop, for the shared committers.

Why: under trio-asyncio every step of a query (the write, the wait for the
answer, the asyncio callbacks, the hand-back to trio) is a hop through
trio's scheduler, and each hop waits for a whole scheduler pass. With a
thousand busy WebSockets a pass takes tens of milliseconds, so a commit that
PostgreSQL answers in a few milliseconds took hundreds (W3: 614 ms on
average). On a thread of its own the asyncio loop runs the query at once,
whatever the trio thread is doing; the result comes back to trio in one
step (``run_sync_soon``). The GIL is shared; the thread holds it only while
asyncpg encodes the statement and decodes the answer.

:class:`ThreadedDatabase` has the same ``run(unit, *args, transaction=...)``
contract and error mapping as :class:`collab.storage.database.Database`
(units are asyncio coroutine functions ``unit(conn, *args)``); cancelling
the trio caller cancels the asyncio task, which rolls back and releases its
connection. Open it with :func:`open_threaded_database`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, TypeVar

import asyncpg
import trio

from collab.errors import Unavailable
from collab.storage.database import PoolOptions, Unit, create_pool, map_errors, run_unit

T = TypeVar("T")


class ThreadedDatabase:
    def __init__(self, loop: asyncio.AbstractEventLoop, pool: asyncpg.Pool, *, label: str) -> None:
        self._loop = loop
        self._pool = pool
        self.label = label

    async def run(self, unit: Unit[T], *args: Any, transaction: bool = True, **kwargs: Any) -> T:
        """Run ``unit(conn, *args, **kwargs)`` on the thread's pool; wait for it from trio."""
        future = asyncio.run_coroutine_threadsafe(run_unit(self._pool, unit, args, kwargs, transaction), self._loop)
        done = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def wake(_: concurrent.futures.Future[T]) -> None:
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass

        future.add_done_callback(wake)
        try:
            await done.wait()
        except BaseException:
            future.cancel()  # cancels the asyncio task: asyncpg rolls back and releases the connection
            raise
        with map_errors():
            return future.result()


def _serve_loop(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    # No asyncio.set_event_loop: trio-asyncio's policy owns that; asyncpg only needs the running loop.
    loop.call_soon(ready.set)
    loop.run_forever()


@asynccontextmanager
async def open_threaded_database(dsn: str, options: PoolOptions, *, label: str) -> AsyncIterator[ThreadedDatabase]:
    """Start the thread and its pool; close both on exit (bounded by the connect timeout)."""
    loop: asyncio.AbstractEventLoop = asyncio.SelectorEventLoop()  # not new_event_loop(): trio-asyncio forbids it here
    ready = threading.Event()
    thread = threading.Thread(target=_serve_loop, args=(loop, ready), name=f"db-{label}", daemon=True)
    thread.start()
    await trio.to_thread.run_sync(ready.wait)
    try:
        try:
            pool = await _in_loop(loop, create_pool(dsn, options))
        except Exception as exc:  # noqa: BLE001 - reported as the database being unreachable
            raise Unavailable(f"cannot connect to the database ({type(exc).__name__}: {exc})") from exc
        try:
            yield ThreadedDatabase(loop, pool, label=label)
        finally:
            with trio.move_on_after(options.connect_timeout_s) as scope:
                scope.shield = True
                await _in_loop(loop, pool.close())
            if scope.cancelled_caught:
                pool.terminate()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        await trio.to_thread.run_sync(thread.join, 5.0)
        if not thread.is_alive():
            loop.close()


async def _in_loop(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    return await trio.to_thread.run_sync(future.result)
