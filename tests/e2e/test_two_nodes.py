"""Two `collab serve` processes (one worker each) on one database and one (private) Redis.

- The rate limit is one budget for the whole cluster: a burst spread over
  both nodes gets exactly the policy, never a node's worth more.
- A revocation on one node reaches the other at once, although each caches
  sessions for an hour here: the other node refuses the token and closes the
  sockets opened with it.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from tests.e2e.test_durability import open_collab_server
from tests.e2e.ws_helpers import open_ws
from tests.helpers import bearer, signup
from tests.redis_server import private_redis

REFRESH_DEADLINE_S = 10


@pytest.mark.slow
async def test_two_nodes_share_one_rate_limit_budget(database_url: str, tmp_path: Path) -> None:
    async with private_redis() as redis:
        env = {
            "COLLAB_REDIS_URL": redis.url, "COLLAB_WORKERS": "1", "COLLAB_TRUSTED_PROXIES": "127.0.0.1/32",
            # 10 a minute, all 10 at once: nothing refills during the test (one slot per 6 s).
            "COLLAB_REST_PER_IP_PER_MINUTE": "10", "COLLAB_REST_IP_BURST": "10",
        }
        async with open_collab_server(database_url, tmp_path / "a", env) as a, \
                open_collab_server(database_url, tmp_path / "b", env) as b:
            statuses: list[int] = []
            async with httpx.AsyncClient(timeout=15) as http:
                async def hit(base_url: str) -> None:
                    response = await http.get(f"{base_url}/api/v1/ping", headers={"X-Forwarded-For": "198.51.100.77"})
                    statuses.append(response.status_code)

                async with trio.open_nursery() as nursery:
                    for i in range(30):
                        nursery.start_soon(hit, a.base_url if i % 2 else b.base_url)
                # Each node on its own would have allowed 10.
                assert sorted(statuses) == [200] * 10 + [429] * 20, statuses
                other = await http.get(f"{a.base_url}/api/v1/ping", headers={"X-Forwarded-For": "198.51.100.78"})
                assert other.status_code == 200


@pytest.mark.slow
async def test_a_logout_on_one_node_ends_the_session_on_the_other(database_url: str, tmp_path: Path) -> None:
    async with private_redis() as redis:
        env = {"COLLAB_REDIS_URL": redis.url, "COLLAB_WORKERS": "1", "COLLAB_AUTH_CACHE_TTL_S": "3600"}
        async with open_collab_server(database_url, tmp_path / "a", env) as a, \
                open_collab_server(database_url, tmp_path / "b", env) as b, \
                httpx.AsyncClient(base_url=a.base_url, timeout=15) as on_a, \
                httpx.AsyncClient(base_url=b.base_url, timeout=15) as on_b:
            _, tokens = await signup(on_a)
            auth = bearer(tokens["access_token"])
            assert (await on_b.get("/api/v1/users/me", headers=auth)).status_code == 200  # now cached on b
            async with open_ws(b.base_url, tokens["access_token"], how="header") as conn:
                assert (await on_a.post("/api/v1/auth/logout", headers=auth)).status_code == 204
                assert await conn.closed() == 4501  # b closed the socket opened with that session
            with trio.fail_after(REFRESH_DEADLINE_S):
                while (await on_b.get("/api/v1/users/me", headers=auth)).status_code != 401:
                    await trio.sleep(0.05)
