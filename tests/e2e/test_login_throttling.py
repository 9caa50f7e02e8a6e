"""Login and registration are throttled per account and per address, before any hashing."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import start_server, test_settings
from tests.helpers import STRONG_PASSWORD


async def test_login_attempts_per_account_get_429_with_retry_after(database_url: str, tmp_path: Path) -> None:
    settings = test_settings(database_url, tmp_path, login_per_account_per_minute=4)  # burst 2
    async with start_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=15) as client:
            body = {"email": "throttled@example.com", "username": "throttled", "password": STRONG_PASSWORD}
            assert (await client.post("/api/v1/auth/register", json=body)).status_code == 201
            wrong = {"email": "throttled@example.com", "password": "not the password at all"}
            first = await client.post("/api/v1/auth/login", json=wrong)
            second = await client.post("/api/v1/auth/login", json=wrong)
            assert [first.status_code, second.status_code] == [401, 401]
            third = await client.post("/api/v1/auth/login", json={**wrong, "password": STRONG_PASSWORD})
            assert third.status_code == 429, third.text
            assert third.json()["code"] == "rate_limited" and third.json()["retryable"] is True
            assert int(third.headers["Retry-After"]) >= 1
            assert third.headers["RateLimit-Policy"] == '"login-account";q=4;w=60'
            # The email is normalized: case does not buy more attempts.
            upper = await client.post("/api/v1/auth/login", json={**wrong, "email": "THROTTLED@example.com"})
            assert upper.status_code == 429
            # Another account from the same address is not affected by this one's limit.
            other = {"email": "other@example.com", "username": "other_user", "password": STRONG_PASSWORD}
            assert (await client.post("/api/v1/auth/register", json=other)).status_code == 201
            ok = await client.post(
                "/api/v1/auth/login", json={"email": "other@example.com", "password": STRONG_PASSWORD},
            )
            assert ok.status_code == 200
            assert ok.headers["RateLimit"].startswith('"login-account";r=')


async def test_registrations_per_address_get_429(database_url: str, tmp_path: Path) -> None:
    settings = test_settings(database_url, tmp_path, register_per_ip_per_hour=3)  # burst 1
    async with start_server(settings) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=15) as client:
            first = await client.post("/api/v1/auth/register", json={
                "email": "r1@example.com", "username": "reg_one", "password": STRONG_PASSWORD})
            second = await client.post("/api/v1/auth/register", json={
                "email": "r2@example.com", "username": "reg_two", "password": STRONG_PASSWORD})
            assert first.status_code == 201
            assert second.status_code == 429 and "Retry-After" in second.headers
