"""GET /ws: the WebSocket endpoint, as a raw ASGI handler in front of Quart.

The handshake: a browser's ``Origin`` must be the server's own or in
``COLLAB_WS_ALLOWED_ORIGINS`` (else HTTP 403); a bearer token may come in the
``Authorization`` header or ``?token=`` (an invalid one is refused with 403;
the query string is never logged); without one, the first frame must be
``auth {token}`` within ``COLLAB_WS_AUTH_TIMEOUT_S`` (else close 4501). Then
``welcome``, and the connection's reader (this task) and writer run until
either side closes.

Limits: messages over ``COLLAB_WS_MAX_MESSAGE_BYTES`` close with 1009
(hypercorn); more than ``COLLAB_WS_MESSAGES_PER_S`` per user (with a burst of
``COLLAB_WS_MESSAGE_BURST``; counted by the shared rate limiter, so across
every socket of the user on every node when Redis is configured) get
``rate_limited`` errors and, after :data:`MAX_RATE_STRIKES` in a row, close
4003; nothing received
for ``COLLAB_WS_IDLE_TIMEOUT_S`` closes 4002; more than
``COLLAB_WS_MAX_SOCKETS_PER_USER`` sockets close 4503. Invalid frames get
``error`` frames; many in a row close 4500.

Why raw ASGI: the per-frame path is the hot path of fan-out, and Quart's
websocket wrapper costs measurable throughput on it (STACK.md).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable
from urllib.parse import parse_qs, urlsplit

import orjson
import trio

from collab.actors.hub import Hub
from collab.actors.ws_dispatch import FrameDispatcher
from collab.actors.ws_session import SessionLimits, WsSession
from collab.domain.users import Principal
from collab.errors import CollabError
from collab.protocol import frames as wire
from collab.protocol import server_frames as frames
from collab.protocol.server_frames import CloseCode
from collab.ratelimit import Limiter, Policy

if TYPE_CHECKING:
    from collab.config import Settings
    from collab.http.context import AppServices

log = logging.getLogger("collab.ws")

WS_PATH = "/ws"
MAX_BAD_FRAMES_IN_A_ROW = 20
MAX_RATE_STRIKES = 50

ASGIApp = Callable[[dict[str, Any], Callable[..., Any], Callable[..., Any]], Awaitable[None]]


def message_policy(settings: Settings) -> Policy:
    """The per-user WebSocket message policy: ``ws_messages_per_s`` with a burst of ``ws_message_burst``."""
    per_minute = max(1, round(settings.ws_messages_per_s * 60))
    return Policy("ws-messages", per_minute, 60, max(1, min(settings.ws_message_burst, per_minute)))


def route_websockets(http_app: ASGIApp, services: AppServices) -> ASGIApp:
    """ASGI app: /ws to the WebSocket handler, everything else to ``http_app``."""

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "websocket" and scope.get("path") == WS_PATH:
            await serve_websocket(scope, receive, send, services)
        else:
            await http_app(scope, receive, send)

    return app


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers", ())
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def origin_allowed(scope: dict[str, Any], allowed: tuple[str, ...]) -> bool:
    """Non-browser clients send no Origin; browsers must be same-origin or allow-listed."""
    origin = _header(scope, b"origin")
    if origin is None:
        return True
    origin = origin.rstrip("/")
    if origin in allowed:
        return True
    host = _header(scope, b"host")
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()


def _token_from_upgrade(scope: dict[str, Any]) -> str | None:
    header = _header(scope, b"authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = query.get("token")
    return values[-1] if values else None


async def serve_websocket(
    scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any], services: AppServices,
) -> None:
    settings = services.settings
    hub = services.hub
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if hub.closing or services.draining.is_set():
        await _refuse_handshake(send, 503, "unavailable", "The server is shutting down; retry", {"retry-after": "2"})
        return
    if not origin_allowed(scope, settings.ws_allowed_origins):
        await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
        return
    principal: Principal | None = None
    token = _token_from_upgrade(scope)
    if token is not None:
        try:
            principal = await services.auth.authenticate(token)
        except CollabError:
            await send({"type": "websocket.close", "code": 1008})
            return
    await send({"type": "websocket.accept"})
    if principal is None:
        principal = await _first_frame_auth(receive, send, services)
        if principal is None:
            return
    user = await services.auth.get_user(principal.user_id)
    # No await from these checks to hub.register(): concurrent sockets cannot all pass.
    if hub.closing:
        await _close(hub, send, CloseCode.GOING_AWAY, "server shutting down")
        return
    if hub.sockets_of(principal.user_id) >= settings.ws_max_sockets_per_user:
        await _close(hub, send, CloseCode.TOO_MANY_SOCKETS, "too many sockets for this user")
        return
    session = WsSession(
        principal, hub, send, SessionLimits(max_queued_events=settings.ws_max_queued_events), clock=hub.clock,
    )
    hub.register(session)
    try:
        session.send_control(frames.welcome(user.public_view(), session.id, {
            "max_message_bytes": settings.ws_max_message_bytes,
            "messages_per_s": settings.ws_messages_per_s,
            "message_burst": settings.ws_message_burst,
            "idle_timeout_s": settings.ws_idle_timeout_s,
            "max_inflight_ops": settings.ws_max_inflight_ops,
            "max_queued_events": settings.ws_max_queued_events,
            "max_catchup_events": settings.ws_max_catchup_events,
        }))
        log.info("websocket open", extra={"user_id": str(principal.user_id), "connection_id": str(session.id)})
        disconnected = False  # stays False if the writer's cancel cuts _read short
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_writer, session, nursery.cancel_scope)
            dispatcher = FrameDispatcher(
                session, hub, services.registry, services.db, nursery,
                max_catchup_events=settings.ws_max_catchup_events, max_inflight_ops=settings.ws_max_inflight_ops,
                ask_timeout_s=settings.actor_ask_timeout_s,
            )
            disconnected = await _read(session, dispatcher, receive, settings, services.limiter)
            nursery.cancel_scope.cancel()
        if not disconnected:
            await _drain(receive)
    finally:
        hub.unregister(session)
        log.info("websocket closed", extra={
            "user_id": str(principal.user_id), "connection_id": str(session.id), "close_code": session.close_code,
        })


async def _writer(session: WsSession, scope: trio.CancelScope) -> None:
    try:
        await session.run_writer()
    except (trio.TooSlowError, OSError, Exception) as exc:  # noqa: BLE001 - the peer is gone or stuck
        log.debug("websocket writer ended: %s", type(exc).__name__)
    scope.cancel()


async def _read(
    session: WsSession, dispatcher: FrameDispatcher, receive: Callable[..., Any], settings: Settings, limiter: Limiter,
) -> bool:
    policy = message_policy(settings)
    key = f"ws:user:{session.principal.user_id}"
    hub = session.hub
    bad_in_a_row = rate_strikes = 0
    while session.close_code is None:
        with trio.move_on_after(settings.ws_idle_timeout_s) as idle:
            message = await receive()
        if idle.cancelled_caught:
            session.close(CloseCode.IDLE_TIMEOUT, "idle")
            break
        if message["type"] == "websocket.disconnect":
            return True
        if message["type"] != "websocket.receive":
            continue
        hub.frames_received += 1
        if not (await limiter.hit(key, policy)).allowed:
            rate_strikes += 1
            session.send_control(frames.error(
                _request_id(message), "rate_limited", "Too many messages; slow down and resend", True,
            ))
            if rate_strikes >= MAX_RATE_STRIKES:
                session.close(CloseCode.RATE_LIMITED, "rate limited")
            continue
        rate_strikes = 0
        text = message.get("text")
        if text is None:
            text = (message.get("bytes") or b"").decode("utf-8", errors="replace")
        try:
            frame = wire.parse_client_frame(text)
        except wire.ProtocolError as exc:
            bad_in_a_row += 1
            session.send_control(frames.error(exc.request_id, "invalid", exc.message, False, exc.errors))
            if bad_in_a_row >= MAX_BAD_FRAMES_IN_A_ROW:
                session.close(CloseCode.BAD_PROTOCOL, "too many invalid frames")
            continue
        bad_in_a_row = 0
        await dispatcher.handle(frame)
    # Closing: let the writer send the close frame (the caller then drains).
    with trio.move_on_after(5):
        await session.closed.wait()
    return False


async def _drain(receive: Callable[..., Any]) -> None:
    """Read and drop until the peer's disconnect (bounded). hypercorn's app queue is
    bounded (max_app_queue_size): a handler that returns while it is full leaves
    hypercorn's reader blocked for good, the close handshake unfinished and the TCP
    connection open until the server stops."""
    with trio.move_on_after(5):
        while (await receive())["type"] != "websocket.disconnect":
            pass


async def _refuse_handshake(
    send: Callable[..., Any], status: int, code: str, detail: str, headers: dict[str, str],
) -> None:
    """Answer the upgrade request with a plain HTTP problem response."""
    body = orjson.dumps({"type": f"https://collab.dev/problems/{code}", "title": detail, "status": status,
                         "detail": detail, "code": code, "retryable": True})
    raw_headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "websocket.http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "websocket.http.response.body", "body": body})


def _request_id(message: dict[str, Any]) -> str | None:
    """The ``id`` of a message we are not going to process (to name it in an error)."""
    try:
        raw = orjson.loads(message.get("text") or message.get("bytes") or b"")
    except orjson.JSONDecodeError:
        return None
    value = raw.get("id") if isinstance(raw, dict) else None
    return value if isinstance(value, str) and len(value) <= 64 else None


async def _first_frame_auth(
    receive: Callable[..., Any], send: Callable[..., Any], services: AppServices,
) -> Principal | None:
    hub = services.hub
    with trio.move_on_after(services.settings.ws_auth_timeout_s):
        message = None
        async with trio.open_nursery() as race:  # the first message, or shutdown, whichever comes first
            async def first_message() -> None:
                nonlocal message
                message = await receive()
                race.cancel_scope.cancel()
            race.start_soon(first_message)
            await hub.closing_event.wait()
            race.cancel_scope.cancel()
        if message is None:  # shutdown began
            await _close(hub, send, CloseCode.GOING_AWAY, "server shutting down")
            return None
        if message["type"] != "websocket.receive":
            return None
        try:
            frame = wire.parse_client_frame(message.get("text") or message.get("bytes") or b"")
        except wire.ProtocolError:
            frame = None
        if not isinstance(frame, wire.AuthFrame):
            await _close(hub, send, CloseCode.UNAUTHENTICATED, "send auth {token} first")
            return None
        try:
            return await services.auth.authenticate(frame.token)
        except CollabError:
            await _close(hub, send, CloseCode.UNAUTHENTICATED, "invalid or expired token")
            return None
    await _close(hub, send, CloseCode.UNAUTHENTICATED, "no auth frame in time")
    return None


async def _close(hub: Hub, send: Callable[..., Any], code: int, reason: str) -> None:
    """Close a socket that has no session (yet): counted like a session's close."""
    hub.record_close(int(code))
    with trio.move_on_after(5):
        await send({"type": "websocket.close", "code": int(code), "reason": reason})
