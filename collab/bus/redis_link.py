"""The connection to Redis, reached from trio through trio-asyncio.

For now it answers health checks; the cluster bus and the shared rate
limiter build on it. The URL is never logged with its password.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import redis.asyncio as aioredis
import trio
import trio_asyncio

from collab.config import redact_url


class RedisLink:
    def __init__(self, client: aioredis.Redis, label: str) -> None:
        self._client = client
        self.label = label
        self._scripts: dict[str, Any] = {}

    async def eval_script(self, source: str, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script atomically (EVALSHA, loading it on first use)."""
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self._client.register_script(source)
        return await trio_asyncio.aio_as_trio(script)(keys=keys, args=args)

    async def ping(self, timeout_s: float = 2.0) -> bool:
        with trio.move_on_after(timeout_s):
            try:
                return bool(await trio_asyncio.aio_as_trio(self._client.ping)())
            except (aioredis.RedisError, OSError):
                return False
        return False


@asynccontextmanager
async def open_redis(url: str) -> AsyncIterator[RedisLink]:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        yield RedisLink(client, redact_url(url))
    finally:
        with trio.move_on_after(5) as scope:
            scope.shield = True
            await trio_asyncio.aio_as_trio(client.aclose)()
