"""The GCRA Lua script in a real Redis: atomic, shared by every limiter (node)."""

from __future__ import annotations

import uuid

import trio
import trio_asyncio

from collab.bus.redis_link import open_redis
from collab.ratelimit import Limiter, Policy, RedisLimiter

POLICY = Policy("login", limit=60, period_s=60, burst=5)


async def test_two_nodes_share_one_budget(redis_url: str) -> None:
    key = f"test:{uuid.uuid4().hex}"
    async with trio_asyncio.open_loop():
        async with open_redis(redis_url) as first, open_redis(redis_url) as second:
            a, b = RedisLimiter(first), RedisLimiter(second)
            results: list[bool] = []

            async def hit(limiter: RedisLimiter) -> None:
                results.append((await limiter.hit(key, POLICY)).allowed)

            async with trio.open_nursery() as nursery:
                for i in range(12):
                    nursery.start_soon(hit, a if i % 2 else b)
            assert results.count(True) == POLICY.burst  # never one more, even concurrently
            denied = await a.hit(key, POLICY)
            assert not denied.allowed and 0 < denied.retry_after_s <= 1.0
            assert Limiter(a).backend == "redis"
