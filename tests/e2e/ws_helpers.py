"""A tiny WebSocket test client for the /ws protocol, on trio_websocket directly.

Deliberately independent of ``collab.client`` (the SDK): these tests check the
wire protocol itself. A :class:`Conn` reads messages, flattens JSON arrays (the
server may pack several frames in one message) and keeps every frame it ever
received in arrival order (``seen``), so ordering tests lose nothing.

Every wait has a deadline (STACK.md trap 7: a trio-websocket client once hung
on exit, so the whole client lives under ``trio.fail_after`` too).
"""

from __future__ import annotations

import itertools
from collections import deque
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable
from urllib.parse import urlencode, urlsplit

import httpx
import orjson
import trio
from trio_websocket import (
    ConnectionClosed, ConnectionRejected, WebSocketConnection, connect_websocket_url, open_websocket_url,
    wrap_client_stream,
)

from tests.helpers import bearer, signup

FRAME_TIMEOUT_S = 10          # one expected frame
CLIENT_DEADLINE_S = 45        # a whole client's life
QUEUE = 4096                  # messages trio_websocket may buffer before it stops reading the socket
MAX_MESSAGE = 64 * 1024 * 1024  # a catch-up `subscribed` can carry many events in one message
_ids = itertools.count(1)

Frame = dict[str, Any]


def ws_url(base_url: str, **query: str) -> str:
    parts = urlsplit(base_url)
    url = f"ws://{parts.netloc}/ws"
    return f"{url}?{urlencode(query)}" if query else url


def flatten(message: str | bytes) -> list[Frame]:
    """One WebSocket message -> its frames (a JSON object, or an array of them)."""
    decoded = orjson.loads(message)
    frames = decoded if isinstance(decoded, list) else [decoded]
    for frame in frames:
        assert isinstance(frame, dict) and "type" in frame, f"not a frame: {message!r}"
    return frames


def next_id(prefix: str = "r") -> str:
    return f"{prefix}-{next(_ids)}"


class Closed(Exception):
    """The socket closed while a frame was awaited."""

    def __init__(self, code: int | None, reason: str | None, frames: list[Frame]) -> None:
        super().__init__(f"closed with {code} ({reason}) after {frames[-5:]!r}")
        self.code = code
        self.reason = reason


class Conn:
    """One client socket: send frames, await frames matching a predicate."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.messages: list[str] = []    # raw messages as received
        self.seen: list[Frame] = []      # every frame, in arrival order
        self._pending: deque[Frame] = deque()
        self.close_code: int | None = None
        self.close_reason: str | None = None

    # --- sending ---

    async def send(self, frame: Frame | str) -> None:
        await self.ws.send_message(frame if isinstance(frame, str) else orjson.dumps(frame).decode())

    async def auth(self, token: str) -> Frame:
        await self.send({"type": "auth", "token": token})
        return await self.expect("welcome")

    async def ping(self, request_id: str | None = None) -> Frame:
        """A ping and its pong: also a barrier (everything queued before it arrives first)."""
        request_id = request_id or next_id("ping")
        await self.send({"type": "ping", "id": request_id})
        return await self.expect("pong", id=request_id)

    async def subscribe(self, project_id: str, since: int | None = None) -> Frame:
        request_id = next_id("sub")
        frame: Frame = {"type": "subscribe", "id": request_id, "project_id": project_id}
        if since is not None:
            frame["since"] = since
        await self.send(frame)
        return await self.expect(lambda f: f.get("id") == request_id and f["type"] in ("subscribed", "error"))

    async def op(self, project_id: str, op: Frame, op_id: str | None = None) -> Frame:
        """Send an op and return its ack (or error) frame."""
        op_id = op_id or next_id("op")
        await self.send_op(project_id, op, op_id)
        return await self.expect(lambda f: f.get("id") == op_id and f["type"] in ("ack", "error"))

    async def send_op(self, project_id: str, op: Frame, op_id: str) -> None:
        await self.send({"type": "op", "id": op_id, "project_id": project_id, "op": op})

    # --- receiving ---

    async def _read(self) -> None:
        """Read one message into ``seen`` and the unconsumed queue; :class:`Closed` if closed."""
        try:
            message = await self.ws.get_message()
        except ConnectionClosed as exc:
            self.close_code = exc.reason.code if exc.reason else None
            self.close_reason = exc.reason.reason if exc.reason else None
            raise Closed(self.close_code, self.close_reason, self.seen) from None
        text = message.decode() if isinstance(message, bytes) else message
        self.messages.append(text)
        frames = flatten(text)
        self.seen.extend(frames)
        self._pending.extend(frames)

    async def recv(self, timeout: float = FRAME_TIMEOUT_S) -> Frame:
        """The oldest frame not consumed yet; :class:`Closed` if the socket closed first."""
        with trio.fail_after(timeout):
            while not self._pending:
                await self._read()
            return self._pending.popleft()

    async def expect(
        self, match: str | Callable[[Frame], bool], timeout: float = FRAME_TIMEOUT_S, **fields: Any,
    ) -> Frame:
        """Consume the oldest unconsumed frame of that type / matching that predicate and
        fields, reading as needed; frames it passes over stay for later ``expect``/``recv``."""
        def ok(frame: Frame) -> bool:
            if isinstance(match, str) and frame["type"] != match:
                return False
            if callable(match) and not match(frame):
                return False
            return all(frame.get(k) == v for k, v in fields.items())

        with trio.fail_after(timeout):
            checked = 0
            while True:
                for i in range(checked, len(self._pending)):
                    if ok(self._pending[i]):
                        frame = self._pending[i]
                        del self._pending[i]
                        return frame
                checked = len(self._pending)
                await self._read()

    async def closed(self, timeout: float = FRAME_TIMEOUT_S) -> int | None:
        """Read (keeping every frame in ``seen``) until the socket closes; the close code."""
        with trio.fail_after(timeout):
            while True:
                try:
                    await self.recv(timeout)
                except Closed as closed:
                    return closed.code

    async def events_until(self, project_id: str, seq: int, timeout: float = FRAME_TIMEOUT_S) -> list[Frame]:
        """Read until the event ``seq`` of the project arrived; the project's events in ``seen``."""
        await self.expect("event", timeout, project_id=project_id, seq=seq)
        return self.events(project_id)

    def events(self, project_id: str | None = None) -> list[Frame]:
        return [f for f in self.seen if f["type"] == "event" and (project_id is None or f["project_id"] == project_id)]


@asynccontextmanager
async def open_ws(
    base_url: str, token: str | None = None, *, how: str = "frame", headers: list[tuple[bytes, bytes]] | None = None,
    queue: int = QUEUE,
) -> AsyncIterator[Conn]:
    """A connected (and, with a token, authenticated: welcome read) socket.

    ``how``: "frame" (auth frame first), "header" (Authorization) or "query" (?token=).
    """
    extra = list(headers or [])
    url = ws_url(base_url)
    if token is not None and how == "header":
        extra.append((b"Authorization", f"Bearer {token}".encode()))
    elif token is not None and how == "query":
        url = ws_url(base_url, token=token)
    with trio.fail_after(CLIENT_DEADLINE_S):
        try:
            async with open_websocket_url(url, extra_headers=extra, message_queue_size=queue,
                                          max_message_size=MAX_MESSAGE,
                                          connect_timeout=FRAME_TIMEOUT_S, disconnect_timeout=5) as ws:
                conn = Conn(ws)
                if token is not None:
                    if how == "frame":
                        await conn.auth(token)
                    else:
                        await conn.expect("welcome")
                yield conn
        finally:
            if "conn" in locals():
                await _close_tcp(conn.ws)


async def _close_tcp(ws: WebSocketConnection) -> None:
    """trio_websocket 0.12 never closes its TCP stream when the SERVER closed the
    WebSocket first (``aclose`` returns early once a close reason is set), which
    leaks the socket (a ResourceWarning, an error under -W error)."""
    await ws._stream.aclose()  # noqa: SLF001 - see above


async def upgrade_refused(url: str, headers: list[tuple[bytes, bytes]] | None = None) -> int:
    """The HTTP status with which the upgrade was refused (AssertionError if it was accepted).

    Opens the TCP stream itself: trio_websocket 0.12 leaves its socket unclosed
    when the handshake is rejected (a ResourceWarning, an error under -W error).
    """
    parts = urlsplit(url)
    resource = parts.path + (f"?{parts.query}" if parts.query else "")
    status: int | None = None
    with trio.fail_after(CLIENT_DEADLINE_S):
        stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 80)
        try:
            try:
                async with trio.open_nursery() as nursery:
                    ws = await wrap_client_stream(nursery, stream, parts.netloc, resource, extra_headers=headers or [])
                    await ws.aclose()
            except* ConnectionRejected as group:
                status = group.exceptions[0].status_code  # type: ignore[attr-defined]
        finally:
            await stream.aclose()
    assert status is not None, f"the upgrade of {url} was accepted"
    return status


async def connect_ws(nursery: trio.Nursery, base_url: str, token: str | None, *, queue: int = QUEUE) -> Conn:
    """A socket whose background tasks live in ``nursery`` (it may outlive a server).

    With a token (Authorization header) the welcome is read; without one the
    socket is left waiting to authenticate. Close it with :func:`close_ws`.
    """
    headers = [(b"Authorization", f"Bearer {token}".encode())] if token is not None else []
    ws = await connect_websocket_url(nursery, ws_url(base_url), extra_headers=headers,
                                     message_queue_size=queue, max_message_size=MAX_MESSAGE)
    conn = Conn(ws)
    if token is not None:
        await conn.expect("welcome")
    return conn


async def close_ws(conn: Conn) -> None:
    """Close a socket made by :func:`connect_ws` (and its TCP stream)."""
    with trio.move_on_after(5):
        await conn.ws.aclose()
    await _close_tcp(conn.ws)


# --- REST shortcuts ----------------------------------------------------------------

class User:
    """A signed-up user with a token."""

    def __init__(self, user: dict[str, Any], tokens: dict[str, Any]) -> None:
        self.id: str = user["id"]
        self.email: str = user["email"]
        self.username: str = user["username"]
        self.token: str = tokens["access_token"]

    @property
    def auth(self) -> dict[str, str]:
        return bearer(self.token)


async def new_user(http: httpx.AsyncClient) -> User:
    return User(*await signup(http))


async def new_project(http: httpx.AsyncClient, owner: User, *members: tuple[User, str], name: str = "WS") -> str:
    created = await http.post("/api/v1/projects", headers=owner.auth, json={"name": name})
    assert created.status_code == 201, created.text
    pid: str = created.json()["id"]
    for user, role in members:
        added = await http.post(
            f"/api/v1/projects/{pid}/members", headers=owner.auth, json={"user_id": user.id, "role": role},
        )
        assert added.status_code == 201, added.text
    return pid


async def rest_task(http: httpx.AsyncClient, user: User, project_id: str, title: str, **fields: Any) -> dict[str, Any]:
    created = await http.post(
        "/api/v1/tasks", headers=user.auth, json={"title": title, "project_id": project_id, **fields},
    )
    assert created.status_code == 201, created.text
    return created.json()  # type: ignore[no-any-return]


async def project_seq(http: httpx.AsyncClient, user: User, project_id: str) -> int:
    got = await http.get(f"/api/v1/projects/{project_id}", headers=user.auth)
    assert got.status_code == 200, got.text
    return int(got.json()["seq"])


async def changes(http: httpx.AsyncClient, user: User, project_id: str, since: int = 0) -> list[dict[str, Any]]:
    """The whole change log after ``since`` (paged)."""
    out: list[dict[str, Any]] = []
    while True:
        got = await http.get(
            f"/api/v1/projects/{project_id}/changes", headers=user.auth, params={"since": since, "limit": 1000},
        )
        assert got.status_code == 200, got.text
        body = got.json()
        out.extend(body["data"])
        if not body["has_more"]:
            return out
        since = body["next_since"]


async def task_titles(http: httpx.AsyncClient, user: User, project_id: str) -> list[str]:
    got = await http.get("/api/v1/tasks", headers=user.auth, params={"project_id": project_id, "limit": 100})
    assert got.status_code == 200, got.text
    return [t["title"] for t in got.json()["data"]]


def create_op(title: str, **fields: Any) -> Frame:
    return {"kind": "task.create", "fields": {"title": title, **fields}}
