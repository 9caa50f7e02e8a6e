"""The connection to Redis, reached from trio through trio-asyncio.

It answers health checks, runs the shared rate limiter's Lua script, and
carries pub/sub messages (session revocations, :mod:`collab.bus.revocations`).
``up`` is the outcome of the last operation (for metrics). The URL is never
logged with its password.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

import redis.asyncio as aioredis
import trio
import trio_asyncio

from collab.config import redact_url

T = TypeVar("T")


class RedisLink:
    def __init__(self, client: aioredis.Redis, label: str) -> None:
        self._client = client
        self.label = label
        self._scripts: dict[str, Any] = {}
        self.up = True  # the last operation succeeded

    async def _tracked(self, call: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        try:
            result: T = await trio_asyncio.aio_as_trio(call)(*args, **kwargs)
        except BaseException:
            self.up = False
            raise
        self.up = True
        return result

    async def eval_script(self, source: str, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script atomically (EVALSHA, loading it on first use)."""
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self._client.register_script(source)
        return await self._tracked(script, keys=keys, args=args)

    async def publish(self, channel: str, message: bytes) -> int:
        """PUBLISH; returns how many subscribers got it. Raises on Redis errors."""
        return await self._tracked(self._client.publish, channel, message)

    @asynccontextmanager
    async def open_subscription(self, *channels: str) -> AsyncIterator["Subscription"]:
        """SUBSCRIBE to the channels on a connection of its own; unsubscribed and closed (shielded) on exit."""
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await self._tracked(pubsub.subscribe, *channels)
            yield Subscription(self, pubsub)
        finally:
            with trio.move_on_after(2) as scope:
                scope.shield = True
                try:
                    await trio_asyncio.aio_as_trio(pubsub.aclose)()
                except (aioredis.RedisError, OSError):
                    pass

    async def ping(self, timeout_s: float = 2.0) -> bool:
        with trio.move_on_after(timeout_s):
            try:
                return bool(await self._tracked(self._client.ping))
            except (aioredis.RedisError, OSError):
                return False
        self.up = False
        return False


class Subscription:
    """Messages of one subscribed channel."""

    def __init__(self, link: RedisLink, pubsub: Any) -> None:
        self._link = link
        self._pubsub = pubsub

    async def next_message(self, timeout_s: float) -> bytes | None:
        """The next message's data, or None when none came within ``timeout_s``. Raises on Redis errors."""
        message = await self._link._tracked(self._pubsub.get_message, timeout=timeout_s)
        if message is None or message.get("type") != "message":
            return None
        data = message["data"]
        return data if isinstance(data, bytes) else str(data).encode()


@asynccontextmanager
async def open_redis(url: str) -> AsyncIterator[RedisLink]:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        yield RedisLink(client, redact_url(url))
    finally:
        with trio.move_on_after(5) as scope:
            scope.shield = True
            await trio_asyncio.aio_as_trio(client.aclose)()
