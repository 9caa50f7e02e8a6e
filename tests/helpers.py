"""Helpers for end-to-end tests: sign-ups, logins, headers, direct SQL."""

from __future__ import annotations

import itertools
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

from tests.conftest import admin_sql

STRONG_PASSWORD = "correct horse battery staple"
_counter = itertools.count(1)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(client: httpx.AsyncClient, *, password: str = STRONG_PASSWORD, **fields: Any) -> dict[str, Any]:
    n = next(_counter)
    tag = uuid.uuid4().hex[:6]
    body = {"email": f"user{n}-{tag}@example.com", "username": f"user{n}_{tag}", "password": password, **fields}
    response = await client.post("/api/v1/auth/register", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def login(client: httpx.AsyncClient, email: str, password: str = STRONG_PASSWORD) -> dict[str, Any]:
    response = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return response.json()


async def signup(client: httpx.AsyncClient, **fields: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Register and log in a new user: (user, token response)."""
    user = await register(client, **fields)
    tokens = await login(client, user["email"], fields.get("password", STRONG_PASSWORD))
    return user, tokens


async def run_sql(database_url: str, *statements: str) -> None:
    """Run SQL on the test's database from a worker thread (the loop stays free)."""
    server_url = database_url
    database = urlsplit(database_url).path.lstrip("/")
    await trio.to_thread.run_sync(lambda: admin_sql(server_url, *statements, database=database))


async def make_admin(database_url: str, user_id: str) -> None:
    await run_sql(
        database_url,
        f"INSERT INTO user_roles (user_id, role_id) SELECT '{uuid.UUID(user_id)}', id FROM roles WHERE name = 'admin'",
    )


async def fetch_value(database_url: str, query: str, *args: Any) -> Any:
    """The first column of the first row of ``query`` on the test's database (from a worker thread)."""
    import asyncio

    import asyncpg

    async def run() -> Any:
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    return await trio.to_thread.run_sync(lambda: asyncio.run(run()))


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """``response`` is a problem+json document with that status and stable code; return it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    doc = response.json()
    assert doc["status"] == status and doc["code"] == code, doc
    return doc
