"""Redis stops in the middle of a run, then comes back (a private redis-server, never the shared one).

While it is down: no 5xx and no crash; rate limits (login included) keep
working in process; the fallback is logged once and shown in /health and the
metrics. When it is back: limits are kept in Redis again.
"""

from __future__ import annotations

import logging

import httpx
import trio

from collab.config import Settings
from tests.conftest import start_server
from tests.e2e.test_log_hygiene import capture_logs
from tests.e2e.test_metrics import samples, value
from tests.e2e.ws_helpers import open_ws
from tests.helpers import bearer, signup
from tests.redis_server import private_redis

SCRAPE = bearer("outage-scrape-token-" + "o" * 16)


def _from(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def _health(http: httpx.AsyncClient) -> dict:
    response = await http.get("/health")
    assert response.status_code == 200, response.text
    return response.json()


async def test_redis_outage_falls_back_in_process_then_recovers(settings: Settings) -> None:
    async with private_redis() as redis:
        limits = settings.replace(
            redis_url=redis.url, trusted_proxies=("127.0.0.1/32",), metrics_token=SCRAPE["Authorization"][7:],
            rest_per_ip_per_minute=3, rest_ip_burst=3, login_per_ip_per_minute=2,
        )
        with capture_logs() as captured:
            async with start_server(limits) as running, \
                    httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
                _, tokens = await signup(http)  # from 127.0.0.1: 2 of its 3
                auth = bearer(tokens["access_token"])
                assert (await _health(http))["services"]["rate_limiter"] == "redis"
                shared = [(await http.get("/api/v1/ping", headers=_from("198.51.100.1"))).status_code for _ in range(4)]
                assert shared == [200, 200, 200, 429]

                await redis.stop()
                statuses: list[int] = []
                for i in range(30):
                    pinged = await http.get("/api/v1/ping", headers=_from(f"198.51.100.{2 + i % 3}"))
                    statuses.append(pinged.status_code)
                    statuses.append((await http.get("/api/v1/users/me", headers=auth)).status_code)
                assert all(s < 500 for s in statuses), statuses
                assert statuses.count(429) > 0 and statuses.count(200) > 0  # limited, in process
                assert statuses[1::2] == [200] * 30  # the signed-in user's budget is untouched
                # Login throttling is not switched off: 2 a minute = one at once, per address.
                body = {"email": "nobody@example.com", "password": "wrong password here"}
                logins = [(await http.post("/api/v1/auth/login", json=body, headers=_from("203.0.113.50"))).status_code
                          for _ in range(2)]
                assert logins == [401, 429]
                async with open_ws(running.base_url, tokens["access_token"], how="header") as conn:
                    assert (await conn.ping("during-outage"))["type"] == "pong"
                health = await _health(http)
                assert health["status"] == "degraded"
                assert health["services"] == {"database": "up", "cache": "down", "rate_limiter": "fallback"}
                during = samples((await http.get("/metrics", headers=SCRAPE)).text)
                assert value(during, "collab_ratelimit_backend", backend="fallback") == 1
                assert value(during, "collab_redis_up") == 0
                assert value(during, "collab_ratelimit_fallbacks_total") == 1
                assert value(during, "collab_ratelimit_decisions_total", policy="rest-ip", decision="limited") >= 2

                await redis.start()  # same port, empty: the budgets start afresh
                with trio.fail_after(20):
                    while (await _health(http))["services"]["cache"] != "up":
                        await trio.sleep(0.1)
                assert (await http.get("/api/v1/ping", headers=_from("198.51.100.9"))).status_code == 200
                assert (await _health(http))["services"]["rate_limiter"] == "redis"
                after = samples((await http.get("/metrics", headers=SCRAPE)).text)
                assert value(after, "collab_ratelimit_backend", backend="redis") == 1
                assert value(after, "collab_redis_up") == 1

    limiter_warnings = [r for r in captured.records
                        if r.name == "collab.ratelimit" and r.levelno == logging.WARNING]
    assert len(limiter_warnings) == 1, [r.getMessage() for r in limiter_warnings]  # logged once, not per request
    assert any(r.name == "collab.ratelimit" and "back" in r.getMessage() for r in captured.records)
    assert not any(r.levelno >= logging.ERROR and r.name.startswith("collab") for r in captured.records), [
        (r.name, r.getMessage()) for r in captured.records if r.levelno >= logging.ERROR
    ]
