"""The connection to Redis, reached from trio through trio-asyncio.

It answers health checks, runs the shared rate limiter's Lua script, and
carries pub/sub messages (session revocations, :mod:`collab.bus.revocations`;
the cluster bus, :mod:`collab.bus.cluster`), kept up by :func:`stay_subscribed`.
``up`` is the outcome of the last operation (for metrics). The URL is never
logged with its password.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence, TypeVar

import redis.asyncio as aioredis
import trio
import trio_asyncio

from collab.config import redact_url

log = logging.getLogger(__name__)

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


async def stay_subscribed(
    link: RedisLink, channels: Sequence[str], handle: Callable[[bytes], None], *, name: str,
    set_subscribed: Callable[[bool], None], on_resubscribed: Callable[[], None], resubscribed_note: str,
    poll_s: float, first_backoff_s: float, max_backoff_s: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Stay subscribed to ``channels`` until cancelled, handing each message's data to ``handle``.

    Reports itself started after the first attempt, whether it worked or not
    (a node serves without Redis). A Redis failure is logged once, reported
    with ``set_subscribed(False)`` and retried with an exponential backoff;
    the first success after a failure logs ``resubscribed_note`` and calls
    ``on_resubscribed`` (pub/sub does not replay what was missed meanwhile).
    """
    backoff, failed_before, started = first_backoff_s, False, False
    while True:
        try:
            async with link.open_subscription(*channels) as subscription:
                set_subscribed(True)
                if failed_before:
                    log.info("%s: subscribed again; %s", name, resubscribed_note)
                    failed_before = False
                    on_resubscribed()
                backoff = first_backoff_s
                if not started:
                    started = True
                    task_status.started()
                while True:
                    data = await subscription.next_message(poll_s)
                    if data is not None:
                        handle(data)
        except Exception as exc:  # noqa: BLE001 - any Redis failure: resubscribe with a backoff
            set_subscribed(False)
            if not failed_before:
                log.warning("%s: Redis subscription lost (%s); reconnecting", name, type(exc).__name__)
            failed_before = True
            if not started:
                started = True
                task_status.started()
        await trio.sleep(backoff)
        backoff = min(max_backoff_s, backoff * 2)


@asynccontextmanager
async def open_redis(url: str) -> AsyncIterator[RedisLink]:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        yield RedisLink(client, redact_url(url))
    finally:
        with trio.move_on_after(5) as scope:
            scope.shield = True
            await trio_asyncio.aio_as_trio(client.aclose)()
