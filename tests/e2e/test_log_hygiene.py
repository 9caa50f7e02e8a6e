"""End-to-end: no log record ever carries a token, a password, a hash or the JWT secret.

The server runs in this process, so its records reach a handler on the root
logger. ``collab.logs.configure_logging`` is not active under test, so the test
attaches its own handler (and DEBUG level) around a full auth flow and then
scans every record: the formatted line and every attribute value.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import argon2

from tests.conftest import TEST_JWT_SECRET
from tests.helpers import STRONG_PASSWORD, bearer, login, register, run_sql

# The test's own HTTP client logs full request URLs (query string included):
# that is client-side logging, not the server's.
CLIENT_LOGGERS = ("httpx", "httpcore")
NEW_PASSWORD = "second passphrase for logs 7"
WRONG_PASSWORD = "wrong passphrase for logs 9"
SHORT_PASSWORD = "Zx9!qW3"  # refused by the policy (too short)


class CaptureAll(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.formatter_ = logging.Formatter("%(name)s %(levelname)s %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        # Format now: the args may be mutable objects that change later.
        record.captured_line = self.formatter_.format(record)
        self.records.append(record)


@contextmanager
def capture_logs() -> Iterator[CaptureAll]:
    root = logging.getLogger()
    handler = CaptureAll()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)


def texts_of(record: logging.LogRecord) -> list[str]:
    """Everything a formatter or a JSON log shipper could print from this record."""
    out = [record.captured_line, str(record.msg)]  # type: ignore[attr-defined]
    for key, value in record.__dict__.items():
        out.append(f"{key}={value!s}")
        out.append(f"{key}={value!r}")
    return out


async def test_no_secret_reaches_any_log_record(client, server):
    secrets: dict[str, str] = {
        "password": STRONG_PASSWORD, "new password": NEW_PASSWORD, "wrong password": WRONG_PASSWORD,
        "short password": SHORT_PASSWORD,
        "argon2 hash": "$argon2", "jwt secret": TEST_JWT_SECRET.decode(),
    }

    def keep(label: str, tokens: dict[str, Any]) -> None:
        for kind in ("access_token", "refresh_token"):
            secrets[f"{label} {kind}"] = tokens[kind]
            secrets[f"{label} {kind} signature"] = tokens[kind].rsplit(".", 1)[1]

    with capture_logs() as captured:
        user = await register(client)
        uid = uuid.UUID(user["id"])
        # An outdated hash, so that login also rehashes (and may log about it).
        old_hash = argon2.PasswordHasher(time_cost=1, memory_cost=16, parallelism=1).hash(STRONG_PASSWORD)
        secrets["old hash"] = old_hash
        await run_sql(server.settings.database_url, f"UPDATE users SET password_hash = '{old_hash}' WHERE id = '{uid}'")

        first = await login(client, user["email"])
        keep("first", first)
        assert (await client.get("/api/v1/users/me", headers=bearer(first["access_token"]))).status_code == 200

        rotated = await client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert rotated.status_code == 200
        keep("rotated", rotated.json())
        reuse = await client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert reuse.status_code == 401

        second = await login(client, user["email"])
        keep("second", second)
        third = await login(client, user["email"])
        keep("third", third)
        changed = await client.put("/api/v1/users/me/password", headers=bearer(second["access_token"]), json={
            "current_password": STRONG_PASSWORD, "new_password": NEW_PASSWORD,
        })
        assert changed.status_code == 200 and changed.json()["other_sessions_ended"] == 1
        assert (await client.get("/api/v1/users/me", headers=bearer(third["access_token"]))).status_code == 401

        in_query = await client.get(
            "/api/v1/users/me", params={"token": second["access_token"]}, headers=bearer(second["access_token"]),
        )
        assert in_query.status_code == 200
        only_query = await client.get("/api/v1/users/me", params={"token": second["access_token"]})
        assert only_query.status_code == 401

        assert (await client.post("/api/v1/auth/logout", headers=bearer(second["access_token"]))).status_code == 204
        wrong = await client.post("/api/v1/auth/login", json={"email": user["email"], "password": WRONG_PASSWORD})
        assert wrong.status_code == 401
        unknown = await client.post(
            "/api/v1/auth/login", json={"email": "nobody-" + user["email"], "password": WRONG_PASSWORD},
        )
        assert unknown.status_code == 401
        weak = await client.post("/api/v1/auth/register", json={
            "email": "weak-" + user["email"], "username": "weak_" + user["username"][:20], "password": SHORT_PASSWORD,
        })
        assert weak.status_code == 422

    records = [r for r in captured.records if not r.name.startswith(CLIENT_LOGGERS)]

    # Not vacuous: the server's records did reach the handler.
    access = [r for r in records if r.name == "collab.access"]
    me_lines = [r for r in access if getattr(r, "route", None) == "/api/v1/users/me"]
    assert me_lines, [r.captured_line for r in access]  # type: ignore[attr-defined]
    assert any(getattr(r, "user_id", None) == user["id"] for r in me_lines), [r.__dict__ for r in me_lines]
    assert any(r.levelno >= logging.WARNING and "reuse" in r.getMessage() for r in records)
    assert len(access) >= 14, [r.captured_line for r in access]  # type: ignore[attr-defined]

    leaks = [
        (label, record.name, record.captured_line)  # type: ignore[attr-defined]
        for record in records
        for text in texts_of(record)
        for label, secret in secrets.items()
        if secret in text
    ]
    assert not leaks, leaks


METRICS_TOKEN = "metrics-scrape-token-" + "m" * 20


async def test_no_token_reaches_the_logs_from_sockets_metrics_or_limits(settings) -> None:
    """Tokens in a WebSocket query string, the scrape token, rate-limited and refused requests."""
    from tests.conftest import start_server
    from tests.e2e.ws_helpers import open_ws, upgrade_refused, ws_url

    limits = settings.replace(metrics_token=METRICS_TOKEN, rest_per_ip_per_minute=2, rest_ip_burst=2,
                              trusted_proxies=("127.0.0.1/32",))
    secrets: dict[str, str] = {"scrape token": METRICS_TOKEN, "password": STRONG_PASSWORD}
    async with start_server(limits) as running:
        import httpx

        async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as client:
            with capture_logs() as captured:
                user = await _register_from(client, "198.51.100.10")
                tokens = await _login_from(client, user["email"], "198.51.100.11")
                secrets["access token"] = tokens["access_token"]
                secrets["refresh token"] = tokens["refresh_token"]
                async with open_ws(running.base_url, tokens["access_token"], how="query") as conn:
                    assert (await conn.ping("p"))["type"] == "pong"
                bad = tokens["access_token"][:-4] + "AAAA"
                secrets["tampered token"] = bad
                assert await upgrade_refused(ws_url(running.base_url, token=bad)) == 403
                assert (await client.get("/metrics", headers=bearer(METRICS_TOKEN))).status_code == 200
                for _ in range(3):  # the third is over the per-address limit
                    last = await client.get("/api/v1/projects", headers=bearer(bad) | {"X-Forwarded-For": "192.0.2.5"})
                assert last.status_code == 429
    # The test's WebSocket client logs the URL it connects to (with ?token=): client side too.
    records = [r for r in captured.records if not r.name.startswith(CLIENT_LOGGERS + ("trio-websocket",))]
    assert any(r.name == "collab.ws" and "open" in r.getMessage() for r in records)
    assert any(getattr(r, "route", None) == "/metrics" for r in records)
    assert any(getattr(r, "status", None) == 429 for r in records)
    leaks = [
        (label, record.name, record.captured_line)  # type: ignore[attr-defined]
        for record in records
        for text in texts_of(record)
        for label, secret in secrets.items()
        if secret in text
    ]
    assert not leaks, leaks


async def _register_from(client, address: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    tag = uuid.uuid4().hex[:8]
    response = await client.post("/api/v1/auth/register", headers={"X-Forwarded-For": address}, json={
        "email": f"logs-{tag}@example.com", "username": f"logs_{tag}", "password": STRONG_PASSWORD,
    })
    assert response.status_code == 201, response.text
    return response.json()


async def _login_from(client, email: str, address: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    response = await client.post("/api/v1/auth/login", headers={"X-Forwarded-For": address},
                                 json={"email": email, "password": STRONG_PASSWORD})
    assert response.status_code == 200, response.text
    return response.json()
