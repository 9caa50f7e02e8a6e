"""The connection to Redis, reached from trio through trio-asyncio.

For now it answers health checks; the cluster bus and the shared rate
limiter build on it. The URL is never logged with its password.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import redis.asyncio as aioredis
import trio
import trio_asyncio

from collab.config import redact_url


class RedisLink:
    def __init__(self, client: aioredis.Redis, label: str) -> None:
        self._client = client
        self.label = label

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
