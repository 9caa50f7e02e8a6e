"""/health, /api/v1/health and /api/v1/ping against a real server.

The health document says honestly what this node can reach: the database
(always configured) and the cache (Redis: "disabled" when not configured,
"up" or "down" otherwise; a down cache degrades but does not fail the node),
and where rate limits are kept ("memory", "redis", or "fallback" while a
configured Redis is down).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest

from collab import __version__
from collab.config import Settings
from tests.conftest import RunningServer, start_server

HEALTH_PATHS = ("/health", "/api/v1/health")
CLOSED_PORT_REDIS_URL = "redis://127.0.0.1:1/0"


def assert_health(response: httpx.Response, *, status: str, database: str, cache: str,
                  rate_limiter: str = "memory") -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    doc = response.json()
    assert set(doc) == {"status", "version", "timestamp", "services"}
    assert doc["status"] == status
    assert doc["version"] == __version__
    assert doc["services"] == {"database": database, "cache": cache, "rate_limiter": rate_limiter}
    stamp = datetime.fromisoformat(doc["timestamp"])
    assert stamp.utcoffset() == timedelta(0), doc["timestamp"]


async def get_all(base_url: str, paths: tuple[str, ...]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base_url, timeout=15) as http:
        return [await http.get(path) for path in paths]


@pytest.mark.parametrize("path", HEALTH_PATHS)
async def test_health_without_redis_is_ok_with_cache_disabled(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert_health(response, status="ok", database="up", cache="disabled")
    assert response.headers["cache-control"] == "no-store"


async def test_health_needs_no_auth_and_ignores_a_bad_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/health", headers={"Authorization": "Bearer not-a-token"})
    assert_health(response, status="ok", database="up", cache="disabled")


async def test_health_with_redis_reports_cache_up(settings: Settings, redis_url: str) -> None:
    async with start_server(settings.replace(redis_url=redis_url)) as running:
        for response in await get_all(running.base_url, HEALTH_PATHS):
            assert_health(response, status="ok", database="up", cache="up", rate_limiter="redis")


async def test_health_with_unreachable_redis_is_degraded_but_200(settings: Settings) -> None:
    async with start_server(settings.replace(redis_url=CLOSED_PORT_REDIS_URL)) as running:
        for response in await get_all(running.base_url, HEALTH_PATHS):
            assert_health(response, status="degraded", database="up", cache="down", rate_limiter="fallback")
        # Degraded, not dead: routes that need no cache still answer.
        (ping,) = await get_all(running.base_url, ("/api/v1/ping",))
        assert ping.status_code == 200


async def test_ping_without_auth(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/ping")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"pong": True}


async def test_ping_is_get_only(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/ping", json={})
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


async def test_health_is_served_by_the_running_server(server: RunningServer) -> None:
    # The fixture's URL is the real bound port (port 0 was asked for).
    assert not server.base_url.endswith(":0")
    (response,) = await get_all(server.base_url, ("/health",))
    assert_health(response, status="ok", database="up", cache="disabled")
