"""One socket's life, for :class:`~collab.client.realtime.RealtimeClient`: connect,
authenticate, resume, read, ping; and the one send path.

A connection: TCP + WebSocket handshake (``connect_timeout_s``), ``auth {token}``
as the first frame, ``welcome`` within ``auth_timeout_s``. Then, holding the
send lock, the socket becomes current (a new *generation*) and every op not
yet answered is written again with its id, in the order it was first sent;
then every wanted subscription is resubscribed (``since`` = the replica's seq).
The reader and the pinger run until the socket ends; the outcome
(:class:`Ended`) tells the run loop whether to reconnect.

Sending: every frame goes through ``_send_lock`` (trio's Lock is fair, so
frames leave in the order callers asked) and the pacer (the server's
``messages_per_s``). A write on a dead socket returns False instead of
raising: the op stays pending and the next connection resends it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, WebSocketConnection, open_websocket_url

from collab.client.backoff import should_reconnect
from collab.client.errors import CollabClientError, RealtimeClosed
from collab.client.frames import Sub
from collab.client.options import PendingOp, Pacer, RealtimeOptions, RealtimeStats, TokenSource, Waiter, resolve_token
from collab.client.updates import ConnectionChanged, MalformedMessage, Update, decode_message

log = logging.getLogger("collab.client.realtime")

_SOCKET_ERRORS = (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError)


class Ended:
    """How a connection attempt ended, and whether the rule allows another."""


    def __init__(self, code: int | None, reason: str, *, welcomed: bool = False, uptime_s: float = 0.0,
                 fatal: bool = False) -> None:
        self.code, self.reason, self.welcomed, self.uptime_s = code, reason, welcomed, uptime_s
        self.fatal = fatal or not should_reconnect(code)


class ConnectionLoop:
    # Provided by RealtimeClient.
    url: str
    options: RealtimeOptions
    stats: RealtimeStats
    welcome: dict[str, Any] | None
    _token: TokenSource
    _subs: dict[str, Sub]
    _requests: dict[str, Waiter]
    _ops: dict[str, PendingOp]
    _ws: WebSocketConnection | None
    _generation: int
    _send_lock: trio.Lock
    _pacer: Pacer
    _progress: trio.Event
    _conn_nursery: trio.Nursery | None
    _last_rx: float
    _abort_reason: str | None
    _ids: Any

    if TYPE_CHECKING:
        def _handle(self, frame: dict[str, Any]) -> None: ...
        def _emit(self, update: Update) -> None: ...
        async def _subscribe_task(self, project_id: str) -> None: ...
        def _request_id(self, kind: str) -> str: ...

    async def _connect_and_serve(self, task_status: trio.TaskStatus[None] | None) -> Ended:
        opts = self.options
        welcomed_at: float | None = None
        self._abort_reason = None
        try:
            token = await resolve_token(self._token)
        except CollabClientError as exc:
            return Ended(None, f"no token: {exc}", fatal=not getattr(exc, "retryable", False))
        try:
            async with open_websocket_url(
                self.url, max_message_size=opts.max_receive_bytes, connect_timeout=opts.connect_timeout_s,
                disconnect_timeout=opts.close_timeout_s,
            ) as ws:
                await ws.send_message(orjson.dumps({"type": "auth", "token": token}).decode())
                with trio.fail_after(opts.auth_timeout_s):
                    frames = decode_message(await ws.get_message())
                if frames[0].get("type") != "welcome":
                    return Ended(None, f"expected welcome, got {frames[0].get('type')!r}")
                welcomed_at = self._last_rx = trio.current_time()
                self.welcome = frames[0]
                self.stats.connections += 1
                limits = self.welcome.get("limits") or {}
                if limits.get("messages_per_s"):
                    self._pacer.configure(float(limits["messages_per_s"]), self.options.message_burst)
                async with trio.open_nursery() as nursery:
                    self._conn_nursery = nursery
                    nursery.start_soon(self._reader, ws, nursery.cancel_scope)
                    nursery.start_soon(self._pinger, nursery.cancel_scope)
                    await self._resume(ws, nursery)
                    self._emit(ConnectionChanged(True))
                    if task_status is not None:
                        task_status.started()
                closed = ws.closed
                code = closed.code if closed is not None and self._abort_reason is None else None
                reason = self._abort_reason or (
                    f"closed {closed.code} {closed.reason or ''}".strip() if closed else "closed"
                )
                return self._ended(code, reason, welcomed_at)
        except ConnectionClosed as exc:
            why = exc.reason
            text = f"closed {why.code} {why.reason or ''}".strip() if why is not None else "closed"
            return self._ended(why.code if why is not None else None, self._abort_reason or text, welcomed_at)
        except ConnectionRejected as exc:
            return self._ended(None, f"handshake refused with HTTP {exc.status_code}", welcomed_at)
        except (HandshakeError, OSError, trio.TooSlowError, trio.BrokenResourceError, MalformedMessage) as exc:
            detail = str(exc) or repr(exc.__cause__ or "")
            return self._ended(None, f"connection failed: {type(exc).__name__} {detail}".strip(), welcomed_at)
        finally:
            self._ws = None
            self._conn_nursery = None
            for sub in self._subs.values():
                sub.request_id = None
            for waiter in self._requests.values():
                waiter.fail(RealtimeClosed("connection lost"))

    def _ended(self, code: int | None, reason: str, welcomed_at: float | None) -> Ended:
        if welcomed_at is None:
            self.stats.connect_failures += 1
        uptime = trio.current_time() - welcomed_at if welcomed_at is not None else 0.0
        return Ended(code, reason, welcomed=welcomed_at is not None, uptime_s=uptime)

    async def _resume(self, ws: WebSocketConnection, nursery: trio.Nursery) -> None:
        """Make the socket current; resend unanswered ops (same ids, in order); resubscribe."""
        async with self._send_lock:
            self._ws = ws
            self._generation += 1
            for pending in list(self._ops.values()):
                if not pending.waiter.done and pending.sent_on != self._generation:
                    await self._write_op(ws, pending)
        for pid in list(self._subs):
            nursery.start_soon(self._subscribe_task, pid)

    async def _reader(self, ws: WebSocketConnection, scope: trio.CancelScope) -> None:
        try:
            while True:
                message = await ws.get_message()
                self._last_rx = trio.current_time()
                frames = decode_message(message)
                self.stats.messages_received += 1
                self.stats.frames_received += len(frames)
                self.stats.batched_messages += message[:1] in ("[", b"[")
                for frame in frames:
                    self._handle(frame)
                self._progress.set()
                self._progress = trio.Event()
        except _SOCKET_ERRORS:
            pass
        except (MalformedMessage, KeyError, TypeError, ValueError) as exc:
            log.warning("realtime: unreadable message from the server (%s); reconnecting", exc, exc_info=True)
            self._abort_reason = "unreadable message"
        finally:
            scope.cancel()

    async def _pinger(self, scope: trio.CancelScope) -> None:
        """A ping every interval; a socket with nothing received for interval + pong
        timeout is dead (blackholed), whatever the send side still accepts."""
        opts = self.options
        while True:
            await trio.sleep(opts.ping_interval_s)
            if trio.current_time() - self._last_rx > opts.ping_interval_s + opts.pong_timeout_s:
                self._abort("nothing received in time (no pong)", hard=True)
                return
            with trio.move_on_after(opts.ping_interval_s):
                await self._send_frame({"type": "ping", "id": self._request_id("p")})

    def _abort(self, reason: str, *, hard: bool = False) -> None:
        """End the current socket; the run loop reconnects. ``hard``: no close handshake."""
        self._abort_reason = reason
        ws, nursery = self._ws, self._conn_nursery
        if hard and ws is not None:
            # Closing the TCP socket under trio-websocket makes its reader see a dead
            # connection (1006), exactly like a network failure.
            stream = getattr(ws, "_stream", None)
            while stream is not None and not hasattr(stream, "socket"):
                stream = getattr(stream, "transport_stream", None)  # TLS
            if stream is not None:
                stream.socket.close()
        if nursery is not None:
            nursery.cancel_scope.cancel()

    # --- sending -------------------------------------------------------------------------------

    async def _write(self, ws: WebSocketConnection, text: str) -> bool:
        await self._pacer.wait()
        try:
            await ws.send_message(text)
        except _SOCKET_ERRORS:
            return False
        return True

    async def _send_frame(self, frame: dict[str, Any]) -> bool:
        async with self._send_lock:
            ws = self._ws
            return ws is not None and await self._write(ws, orjson.dumps(frame).decode())

    async def _send_pending(self, pending: PendingOp) -> None:
        async with self._send_lock:
            ws, generation = self._ws, self._generation
            if ws is None or pending.sent_on == generation or pending.waiter.done:
                return
            await self._write_op(ws, pending)

    async def _write_op(self, ws: WebSocketConnection, pending: PendingOp) -> None:
        if await self._write(ws, pending.text):
            pending.sent_on = self._generation
            self.stats.ops_sent += 1
            self.stats.ops_resent += pending.sends > 0
            pending.sends += 1

