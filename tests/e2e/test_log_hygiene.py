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
