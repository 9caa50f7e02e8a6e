"""GCRA arithmetic and the in-process limiter, with a fake clock."""

from __future__ import annotations

import pytest

from collab.ratelimit import Limiter, MemoryLimiter, Policy, gcra


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


POLICY = Policy("login", limit=6, period_s=60, burst=3)  # one every 10 s, 3 at once


async def test_burst_then_steady_rate() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock=clock)
    decisions = [await limiter.hit("k", POLICY) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    assert decisions[3].retry_after_s == pytest.approx(10.0)
    clock.now += 9.9
    assert not (await limiter.hit("k", POLICY)).allowed
    clock.now += 0.2
    assert (await limiter.hit("k", POLICY)).allowed
    assert not (await limiter.hit("k", POLICY)).allowed


async def test_keys_are_independent_and_refill_after_idle() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock=clock)
    for _ in range(3):
        assert (await limiter.hit("a", POLICY)).allowed
    assert not (await limiter.hit("a", POLICY)).allowed
    assert (await limiter.hit("b", POLICY)).allowed
    clock.now += 30  # the full burst is back
    assert [(await limiter.hit("a", POLICY)).allowed for _ in range(4)] == [True, True, True, False]


def test_a_denied_request_does_not_move_the_clock() -> None:
    decision, tat = gcra(2000.0, 1000.0, POLICY)
    assert not decision.allowed and tat is None
    assert decision.retry_after_s == pytest.approx(2000.0 - 1000.0 - 20.0)


def test_headers_follow_the_ietf_draft() -> None:
    decision, _ = gcra(None, 0.0, POLICY)
    headers = decision.headers(POLICY)
    assert headers["RateLimit-Policy"] == '"login";q=6;w=60'
    assert headers["RateLimit"].startswith('"login";r=2;t=')
    denied, _ = gcra(100.0, 0.0, POLICY)
    assert int(denied.headers(POLICY)["Retry-After"]) >= 1


class Broken:
    calls = 0

    async def hit(self, key: str, policy: Policy):  # type: ignore[no-untyped-def]
        Broken.calls += 1
        raise ConnectionError("redis is down")


async def test_falls_back_to_memory_when_redis_fails_and_keeps_limiting() -> None:
    clock = Clock()
    limiter = Limiter(Broken(), retry_redis_s=10, clock=clock)  # type: ignore[arg-type]
    assert [(await limiter.hit("k", POLICY)).allowed for _ in range(4)] == [True, True, True, False]
    assert limiter.backend == "memory (redis unreachable)"
    assert Broken.calls == 1  # not retried before retry_redis_s
    clock.now += 11
    await limiter.hit("k", POLICY)
    assert Broken.calls == 2


def test_remaining_rounds_down_like_the_lua_script() -> None:
    """A burst's last slot leaves 0 remaining even when time moved on a little (floor, not truncation)."""
    tat = None
    for now in (0.0, 0.05, 0.1):
        decision, tat = gcra(tat, now, POLICY)
    assert decision.allowed and decision.remaining == 0


async def test_only_one_request_probes_a_down_redis_and_health_hints_steer_it() -> None:
    clock = Clock()

    class Slow:
        calls = 0
        fail = True

        async def hit(self, key: str, policy: Policy):  # type: ignore[no-untyped-def]
            Slow.calls += 1
            if Slow.fail:
                raise ConnectionError("down")
            return (await MemoryLimiter(clock=clock).hit(key, policy))

    limiter = Limiter(Slow(), retry_redis_s=10, clock=clock)  # type: ignore[arg-type]
    limiter.redis_failed("health check")
    assert limiter.state == "fallback" and limiter.fallbacks == 1
    await limiter.hit("k", POLICY)
    assert Slow.calls == 0  # not due yet: decided in process
    limiter.redis_answered()  # the health check reached Redis again
    Slow.fail = False
    await limiter.hit("k", POLICY)
    assert Slow.calls == 1 and limiter.state == "redis"
    assert limiter.decisions == {("login", True): 2}
