"""CollabREST: an async client for the REST API (httpx), keeping its tokens fresh.

Owns: one ``httpx.AsyncClient`` (unless one is passed in, which the caller
then owns), the access and refresh tokens of the last login, and a lock that
serializes refreshes.

Guarantees:
- Every error response raises :class:`CollabAPIError` parsed from the
  problem+json body (status, code, detail, retryable, errors, request_id); a
  request that got no answer raises :class:`TransportError`. Bodies are
  JSON; 204 returns None.
- A 401 ``unauthenticated`` refreshes the tokens ONCE and repeats the request
  (safe: a 401 is answered before anything is done). Concurrent 401s share one
  refresh, because a refresh token rotates on use and presenting a rotated one
  ends the session.
- Every request has a deadline (``timeout_s``); writes may carry an
  ``idempotency_key`` so a retry after a transport error cannot apply twice.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import trio

from collab.client.errors import CollabAPIError, TransportError

API = "/api/v1"
ID = uuid.UUID | str


class CollabREST:
    def __init__(self, base_url: str, *, timeout_s: float = 10.0, client: httpx.AsyncClient | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = client or httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s)
        self._owns_http = client is None
        self.access_token: str | None = None
        self.refresh_token: str | None = None
        self.session_id: str | None = None
        self.user: dict[str, Any] | None = None
        self._expires_at = 0.0  # trio clock
        self._refresh_lock = trio.Lock()

    async def __aenter__(self) -> "CollabREST":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    @property
    def ws_url(self) -> str:
        """The WebSocket endpoint of the same server."""
        scheme, _, rest = self.base_url.partition("://")
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws"

    # --- auth ----------------------------------------------------------------------------

    async def register(self, email: str, username: str, password: str, **profile: Any) -> dict[str, Any]:
        body = {"email": email, "username": username, "password": password, **profile}
        return await self.request("POST", "/auth/register", json=body, auth=False)  # type: ignore[no-any-return]

    async def login(self, email: str, password: str) -> dict[str, Any]:
        """Log in and keep the tokens; returns the login document (with ``user``)."""
        doc = await self.request("POST", "/auth/login", json={"email": email, "password": password}, auth=False)
        self._keep(doc)
        self.user = doc.get("user")
        return doc  # type: ignore[no-any-return]

    async def refresh(self) -> None:
        """Rotate the tokens now (the old refresh token is retired)."""
        if self.refresh_token is None:
            raise CollabAPIError(401, "unauthenticated", "Not logged in", False)
        self._keep(await self.request("POST", "/auth/refresh", json={"refresh_token": self.refresh_token}, auth=False))

    async def fresh_access_token(self, min_ttl_s: float = 60.0) -> str:
        """An access token valid for at least ``min_ttl_s`` (refreshing if needed).

        Pass this method as the realtime client's token source.
        """
        if self.access_token is None:
            raise CollabAPIError(401, "unauthenticated", "Not logged in", False)
        if trio.current_time() + min_ttl_s >= self._expires_at:
            await self._refresh_after(self.access_token)
        assert self.access_token is not None
        return self.access_token

    async def logout(self) -> None:
        await self.request("POST", "/auth/logout")
        self.access_token = self.refresh_token = None

    def _keep(self, doc: dict[str, Any]) -> None:
        self.access_token = doc["access_token"]
        self.refresh_token = doc["refresh_token"]
        self.session_id = doc.get("session_id", self.session_id)
        self._expires_at = trio.current_time() + float(doc.get("expires_in", 0))

    async def _refresh_after(self, stale_token: str | None) -> None:
        async with self._refresh_lock:
            if self.access_token != stale_token:
                return  # another task refreshed meanwhile
            await self.refresh()

    # --- resources -------------------------------------------------------------------------

    async def me(self) -> dict[str, Any]:
        return await self.request("GET", "/users/me")  # type: ignore[no-any-return]

    async def create_project(self, name: str, *, idempotency_key: str | None = None, **fields: Any) -> dict[str, Any]:
        return await self.request(  # type: ignore[no-any-return]
            "POST", "/projects", json={"name": name, **fields}, idempotency_key=idempotency_key)

    async def get_project(self, project_id: ID) -> dict[str, Any]:
        return await self.request("GET", f"/projects/{project_id}")  # type: ignore[no-any-return]

    async def add_member(self, project_id: ID, user_id: ID, role: str = "member") -> dict[str, Any]:
        return await self.request(  # type: ignore[no-any-return]
            "POST", f"/projects/{project_id}/members", json={"user_id": str(user_id), "role": role})

    async def remove_member(self, project_id: ID, user_id: ID) -> None:
        await self.request("DELETE", f"/projects/{project_id}/members/{user_id}")

    async def create_task(self, project_id: ID, title: str, *, idempotency_key: str | None = None,
                          **fields: Any) -> dict[str, Any]:
        body = {"project_id": str(project_id), "title": title, **fields}
        return await self.request("POST", "/tasks", json=body, idempotency_key=idempotency_key)  # type: ignore[no-any-return]

    async def update_task(self, task_id: ID, *, if_match: int | None = None, idempotency_key: str | None = None,
                          **fields: Any) -> dict[str, Any]:
        """Change the fields given; ``if_match`` (a version) makes it fail with 412 if the task changed."""
        headers = {"If-Match": f'"{if_match}"'} if if_match is not None else None
        return await self.request(  # type: ignore[no-any-return]
            "PATCH", f"/tasks/{task_id}", json=fields, headers=headers, idempotency_key=idempotency_key)

    async def get_task(self, task_id: ID) -> dict[str, Any]:
        return await self.request("GET", f"/tasks/{task_id}")  # type: ignore[no-any-return]

    async def delete_task(self, task_id: ID) -> None:
        await self.request("DELETE", f"/tasks/{task_id}")

    async def list_tasks(self, **filters: Any) -> dict[str, Any]:
        """``{data, pagination}``; filters as in docs/api.md (lists repeat: status=["todo", "done"])."""
        return await self.request("GET", "/tasks", params=_params(filters))  # type: ignore[no-any-return]

    async def changes(self, project_id: ID, since: int = 0, limit: int | None = None) -> dict[str, Any]:
        """The change log after ``since``: ``{data, seq, next_since, has_more}``."""
        params: dict[str, Any] = {"since": since}
        if limit is not None:
            params["limit"] = limit
        return await self.request("GET", f"/projects/{project_id}/changes", params=params)  # type: ignore[no-any-return]

    # --- the one request path ------------------------------------------------------------------

    async def request(
        self, method: str, path: str, *, json: Any = None, params: Any = None, headers: dict[str, str] | None = None,
        idempotency_key: str | None = None, auth: bool = True,
    ) -> Any:
        """``path`` is under /api/v1. Returns the decoded JSON body (None for 204)."""
        headers = dict(headers or {})
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        for attempt in (1, 2):
            token = self.access_token if auth else None
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            try:
                response = await self._http.request(method, API + path, json=json, params=params, headers=headers)
            except httpx.TransportError as exc:
                raise TransportError(f"{method} {path}: {type(exc).__name__} {exc}".strip()) from exc
            if response.status_code == 401 and token is not None and attempt == 1 and self.refresh_token:
                if _problem(response).code == "unauthenticated":
                    await self._refresh_after(token)
                    continue
            if response.status_code >= 400:
                raise _problem(response)
            if response.status_code == 204 or not response.content:
                return None
            return response.json()
        raise AssertionError("unreachable")


def _problem(response: httpx.Response) -> CollabAPIError:
    try:
        doc = response.json()
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        return CollabAPIError(response.status_code, f"http_{response.status_code}", response.text[:200],
                              response.status_code in (429, 502, 503, 504))
    return CollabAPIError(
        response.status_code, str(doc.get("code") or f"http_{response.status_code}"),
        str(doc.get("detail") or doc.get("title") or ""), bool(doc.get("retryable")),
        errors=doc.get("errors"), request_id=doc.get("request_id"),
    )


def _params(filters: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in filters.items():
        if value is None:
            continue
        for item in value if isinstance(value, (list, tuple, set)) else [value]:
            out.append((key, str(item).lower() if isinstance(item, bool) else str(item)))
    return out
