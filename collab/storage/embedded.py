"""The embedded PostgreSQL used when no database URL is configured.

:func:`open_embedded_postgres` starts a private PostgreSQL 16 (from the
``pgserver`` package) whose data lives in ``<data dir>/postgres``, creates the
``collab`` database in it on first use, and yields its DSN. The server listens
on a Unix socket only. A second start reuses the data (and a server already
running for that directory); the last process using it stops it on exit.

pgserver's API is blocking, so it runs in a worker thread. Running as root,
pgserver runs PostgreSQL as an OS user ``pgserver`` and makes the parent
folders of the data dir traversable for it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import trio

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "collab"
_STOP_TIMEOUT_S = 30.0


class EmbeddedDatabaseError(Exception):
    """The embedded PostgreSQL could not be started."""


def _import_pgserver() -> Any:
    # platformdirs (inside pgserver) warns at import time when XDG_RUNTIME_DIR
    # is unset or not private (0700), which breaks warnings-as-errors.
    if "XDG_RUNTIME_DIR" not in os.environ:
        runtime = Path(tempfile.gettempdir()) / f"collab-runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    import pgserver

    return pgserver


def _start(pgdata: Path) -> tuple[Any, str]:
    pgserver = _import_pgserver()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    admin_uri = server.get_uri()
    # EMBEDDED_DATABASE is a constant name (psql takes no bind parameters).
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DATABASE}';")  # nosec B608
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {EMBEDDED_DATABASE};")
    return server, _with_database(admin_uri, EMBEDDED_DATABASE)


def _with_database(uri: str, database: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(path="/" + database))


@asynccontextmanager
async def open_embedded_postgres(data_dir: Path) -> AsyncIterator[str]:
    """Run the embedded PostgreSQL for the duration of the block; yield its DSN."""
    pgdata = (data_dir / "postgres").resolve()
    try:
        server, dsn = await trio.to_thread.run_sync(_start, pgdata)
    except Exception as exc:  # pgserver raises CalledProcessError, AssertionError, OSError...
        raise EmbeddedDatabaseError(
            f"could not start the embedded PostgreSQL in {pgdata} ({type(exc).__name__}: {exc}); "
            f"see {pgdata / 'log'}"
        ) from exc
    try:
        yield dsn
    finally:
        with trio.move_on_after(_STOP_TIMEOUT_S) as scope:
            scope.shield = True
            await trio.to_thread.run_sync(server.cleanup)
        if scope.cancelled_caught:
            log.warning("embedded PostgreSQL did not stop within %.0f s", _STOP_TIMEOUT_S)
