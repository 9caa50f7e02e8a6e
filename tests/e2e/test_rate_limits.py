"""The general rate limits, end to end: REST per user and per address, WebSocket messages per user.

Each test starts a server with the limit under test turned down (the shared
test settings lift them). The server trusts 127.0.0.1 as a proxy here, so an
``X-Forwarded-For`` header picks the client address a request counts against.
"""

from __future__ import annotations

import httpx
import trio

from collab.config import Settings
from tests.conftest import start_server
from tests.e2e.ws_helpers import open_ws
from tests.helpers import assert_problem, bearer, signup


def _from(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def test_a_burst_is_allowed_then_429_with_retry_after(settings: Settings) -> None:
    # 6 a minute = one every 10 s, 3 at once.
    limits = settings.replace(rest_per_ip_per_minute=6, rest_ip_burst=3, trusted_proxies=("127.0.0.1/32",))
    async with start_server(limits) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
            burst = [await http.get("/api/v1/ping", headers=_from("198.51.100.1")) for _ in range(3)]
            assert [r.status_code for r in burst] == [200, 200, 200]
            assert {r.headers["RateLimit-Policy"] for r in burst} == {'"rest-ip";q=6;w=60'}
            assert [r.headers["RateLimit"].split(";")[1] for r in burst] == ["r=2", "r=1", "r=0"]
            assert "Retry-After" not in burst[0].headers

            limited = await http.get("/api/v1/ping", headers=_from("198.51.100.1"))
            doc = assert_problem(limited, 429, "rate_limited")
            assert doc["retryable"] is True
            # The next slot opens one interval (10 s) after the burst began, less the time this test took.
            assert 7 <= int(limited.headers["Retry-After"]) <= 10, limited.headers
            assert limited.headers["RateLimit-Policy"] == '"rest-ip";q=6;w=60'
            assert limited.headers["RateLimit"].startswith('"rest-ip";r=0;t=')

            # Another address has its own budget; probes are never limited.
            assert (await http.get("/api/v1/ping", headers=_from("198.51.100.2"))).status_code == 200
            for path in ("/api/v1/health", "/health", "/ready"):
                probe = await http.get(path, headers=_from("198.51.100.1"))
                assert probe.status_code == 200 and "RateLimit" not in probe.headers, path
            # Without the trusted proxy, the header would be ignored: the peer is the key.
            assert (await http.get("/api/v1/ping")).status_code == 200


async def test_authenticated_requests_count_per_user(settings: Settings) -> None:
    limits = settings.replace(rest_per_user_per_minute=4, rest_user_burst=4, trusted_proxies=("127.0.0.1/32",))
    async with start_server(limits) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
            _, alice = await signup(http)
            _, bob = await signup(http)
            statuses = [(await http.get("/api/v1/users/me", headers=bearer(alice["access_token"]))).status_code
                        for _ in range(5)]
            assert statuses == [200, 200, 200, 200, 429]
            # Moving to another address does not reset a user's budget ...
            moved = await http.get("/api/v1/projects", headers=bearer(alice["access_token"]) | _from("203.0.113.9"))
            assert moved.status_code == 429 and moved.headers["RateLimit-Policy"] == '"rest-user";q=4;w=60'
            # ... and another user from the same address has a budget of their own.
            other = await http.get("/api/v1/users/me", headers=bearer(bob["access_token"]))
            assert other.status_code == 200
            assert other.headers["RateLimit-Policy"] == '"rest-user";q=4;w=60'


async def test_a_flood_of_bad_tokens_is_limited_per_address(settings: Settings) -> None:
    limits = settings.replace(rest_per_ip_per_minute=3, rest_ip_burst=3, trusted_proxies=("127.0.0.1/32",))
    async with start_server(limits) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
            bad = bearer("not.a.token") | _from("192.0.2.77")
            answers = [await http.get("/api/v1/projects", headers=bad) for _ in range(4)]
            assert [a.status_code for a in answers] == [401, 401, 401, 429]
            assert answers[0].headers["RateLimit-Policy"] == '"rest-ip";q=3;w=60'
            assert answers[3].json()["code"] == "rate_limited"


async def test_websocket_messages_share_one_budget_per_user(settings: Settings) -> None:
    """Two sockets of one user draw on the same budget: 3 messages at once, then about one in 10 s."""
    async with start_server(settings.replace(ws_messages_per_s=0.1, ws_message_burst=3)) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
            _, tokens = await signup(http)
            _, other_tokens = await signup(http)
        token = tokens["access_token"]
        async with open_ws(running.base_url, token, how="header") as first, \
                open_ws(running.base_url, token, how="header") as second:
            assert (await first.ping("a1"))["type"] == "pong"
            assert (await first.ping("a2"))["type"] == "pong"
            assert (await second.ping("b1"))["type"] == "pong"
            await second.send({"type": "ping", "id": "b2"})
            refused = await second.recv()
            assert refused["type"] == "error" and refused["code"] == "rate_limited" and refused["retryable"], refused
            await first.send({"type": "ping", "id": "a3"})
            assert (await first.recv())["code"] == "rate_limited"
            # Another user is not affected.
            async with open_ws(running.base_url, other_tokens["access_token"], how="header") as third:
                assert (await third.ping("c1"))["type"] == "pong"
            assert first.close_code is None and second.close_code is None


async def test_login_throttling_keeps_its_own_headers(settings: Settings) -> None:
    """Login has a tighter policy of its own; its headers are the ones a client sees."""
    limits = settings.replace(login_per_ip_per_minute=2, rest_per_ip_per_minute=600, rest_ip_burst=100)
    async with start_server(limits) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
            body = {"email": "nobody@example.com", "password": "not the password"}
            first = await http.post("/api/v1/auth/login", json=body)
            assert first.status_code == 401
            second = await http.post("/api/v1/auth/login", json=body)
            assert second.status_code == 429
            assert second.headers["RateLimit-Policy"] == '"login-ip";q=2;w=60'
            with trio.fail_after(5):
                ping = await http.get("/api/v1/ping")
            assert ping.headers["RateLimit-Policy"] == '"rest-ip";q=600;w=60'
