"""Rate limiting with GCRA: in-process, or shared by every node through Redis.

GCRA (the generic cell rate algorithm) keeps one number per key, the
"theoretical arrival time" (TAT). A policy of ``limit`` requests per
``period_s`` with a ``burst`` admits a request at ``now`` when
``TAT - now <= (burst - 1) * interval``; admitting it moves the TAT one
``interval`` (= period / limit) on. It is exact, O(1) and needs no timers.

:class:`RedisLimiter` runs the same arithmetic as ONE Lua script (read and
write are one atomic step, so two nodes can never both pass the last slot),
with Redis' own clock. If Redis fails, :class:`Limiter` switches to the
in-process limiter, logs it once, and tries Redis again after
``retry_redis_s``: login throttling is never switched off.

Used for login and registration (checked before any password hashing), for
every REST request (per user, or per client address when anonymous: see
:mod:`collab.http.middleware`) and for WebSocket messages (per user).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import trio

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Policy:
    name: str
    limit: int          # requests ...
    period_s: float     # ... per this many seconds
    burst: int          # requests allowed at once after being idle

    @property
    def interval_s(self) -> float:
        return self.period_s / self.limit

    def header(self) -> str:
        """``RateLimit-Policy`` (IETF draft): quota and window."""
        return f'"{self.name}";q={self.limit};w={int(self.period_s)}'


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: int
    retry_after_s: float  # 0 when allowed
    reset_s: float        # until the bucket is full again

    def headers(self, policy: Policy) -> dict[str, str]:
        values = {
            "RateLimit-Policy": policy.header(),
            "RateLimit": f'"{policy.name}";r={self.remaining};t={math.ceil(self.reset_s)}',
        }
        if not self.allowed:
            values["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return values


def gcra(tat: float | None, now: float, policy: Policy) -> tuple[Decision, float | None]:
    """One GCRA step: the decision and the new TAT (None: unchanged)."""
    interval = policy.interval_s
    tolerance = (policy.burst - 1) * interval
    tat = now if tat is None or tat < now else tat
    if tat - now > tolerance:
        retry = tat - now - tolerance
        return Decision(False, 0, retry, tat - now), None
    new_tat = tat + interval
    remaining = math.floor((tolerance - (new_tat - now)) / interval) + 1  # floor, as in the Lua script
    return Decision(True, max(0, remaining), 0.0, new_tat - now), new_tat


class MemoryLimiter:
    """GCRA in this process; at most ``max_keys`` keys (least recently used dropped)."""

    def __init__(self, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._tats: OrderedDict[str, float] = OrderedDict()
        self._max_keys = max_keys
        self._clock = clock

    async def hit(self, key: str, policy: Policy) -> Decision:
        now = self._clock()
        decision, new_tat = gcra(self._tats.get(key), now, policy)
        if new_tat is not None:
            self._tats[key] = new_tat
            self._tats.move_to_end(key)
            while len(self._tats) > self._max_keys:
                self._tats.popitem(last=False)
        return decision


# Arguments: interval_ms, tolerance_ms. Returns {allowed, remaining, retry_ms, reset_ms}.
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
if tat - now > tolerance then
  return {0, 0, tat - now - tolerance, tat - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.max(1, new_tat - now))
local remaining = math.floor((tolerance - (new_tat - now)) / interval) + 1
if remaining < 0 then remaining = 0 end
return {1, remaining, 0, new_tat - now}
"""


class RedisLimiter:
    """GCRA as one Lua script in Redis, shared by every node."""

    def __init__(self, link: Any, prefix: str = "collab:rl:") -> None:
        self._link = link
        self._prefix = prefix

    async def hit(self, key: str, policy: Policy) -> Decision:
        interval_ms = max(1, int(policy.interval_s * 1000))
        tolerance_ms = (policy.burst - 1) * interval_ms
        # The quota is part of the key: a TAT is only meaningful at the rate that produced it,
        # so changing a policy starts fresh buckets instead of inheriting a far-future TAT.
        bucket = f"{self._prefix}{key}:{policy.limit}/{int(policy.period_s)}"
        allowed, remaining, retry_ms, reset_ms = await self._link.eval_script(
            GCRA_LUA, [bucket], [interval_ms, tolerance_ms]
        )
        return Decision(bool(allowed), int(remaining), retry_ms / 1000, reset_ms / 1000)


class Limiter:
    """Redis when configured and reachable, in-process otherwise (and meanwhile).

    Never fails open: any Redis error (or no answer within ``redis_timeout_s``)
    decides that request in process. While Redis is down, one request at a
    time probes it again every ``retry_redis_s``; the others go straight to
    the in-process limiter, so an outage costs at most one slow request per
    probe. Counts every decision per (policy, allowed) for metrics.
    """

    def __init__(self, redis: RedisLimiter | None, *, retry_redis_s: float = 10.0, redis_timeout_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._redis = redis
        self._memory = MemoryLimiter(clock=clock)
        self._retry_redis_s = retry_redis_s
        self._redis_timeout_s = redis_timeout_s
        self._clock = clock
        self._redis_down_since: float | None = None
        self._probing = False
        self.decisions: dict[tuple[str, bool], int] = {}
        self.fallbacks = 0  # times Redis was found down after being up (or at the first use)

    @property
    def backend(self) -> str:
        if self._redis is None:
            return "memory"
        return "memory (redis unreachable)" if self._redis_down_since is not None else "redis"

    @property
    def state(self) -> str:
        """For health: "memory" (no Redis configured), "redis", or "fallback" (Redis down)."""
        if self._redis is None:
            return "memory"
        return "fallback" if self._redis_down_since is not None else "redis"

    def redis_failed(self, reason: str) -> None:
        """Someone else (the health check) saw Redis fail: limit in process from now on."""
        if self._redis is not None and self._redis_down_since is None:
            self.fallbacks += 1
            log.warning("rate limiter: Redis failed (%s); limiting in this process until it is back", reason)
            self._redis_down_since = self._clock()

    def redis_answered(self) -> None:
        """Someone else (the health check) reached Redis: let the next request probe it at once."""
        if self._redis is not None and self._redis_down_since is not None and not self._probing:
            self._redis_down_since = self._clock() - self._retry_redis_s

    def _redis_due(self) -> bool:
        if self._redis is None:
            return False
        if self._redis_down_since is None:
            return True
        return not self._probing and self._clock() - self._redis_down_since >= self._retry_redis_s

    async def hit(self, key: str, policy: Policy) -> Decision:
        decision = await self._decide(key, policy)
        slot = (policy.name, decision.allowed)
        self.decisions[slot] = self.decisions.get(slot, 0) + 1
        return decision

    async def _decide(self, key: str, policy: Policy) -> Decision:
        if self._redis is not None and self._redis_due():
            probing = self._redis_down_since is not None
            self._probing = probing
            try:
                with trio.fail_after(self._redis_timeout_s):
                    decision = await self._redis.hit(key, policy)
            except Exception as exc:  # noqa: BLE001 - any Redis failure: fall back, never fail open
                self.redis_failed(type(exc).__name__)
                self._redis_down_since = self._clock()
            else:
                if self._redis_down_since is not None:
                    log.info("rate limiter: Redis is back; limits are shared again")
                    self._redis_down_since = None
                return decision
            finally:
                if probing:
                    self._probing = False
        return await self._memory.hit(key, policy)
