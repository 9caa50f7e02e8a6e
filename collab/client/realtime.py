"""RealtimeClient: protocol v1 over trio-websocket, with resume and exactly-once ops.

Owns: one WebSocket at a time (reconnected as needed), a :class:`ProjectReplica`
per subscribed project, the ops sent and not yet answered, and the update
feed. It runs in a nursery: use ``async with open_realtime(url, token) as
client`` or ``await nursery.start(client.run)``.

Guarantees:
- Authentication is the first frame (``auth {token}``), never a URL token;
  ``run`` reports started only once ``welcome`` arrived.
- Each replica applies events exactly in seq order; duplicates are ignored; a
  gap, a ``resync`` or a reconnect resubscribes with ``since=replica.seq`` (the
  server answers the missed events, or a snapshot when it cannot).
- An op keeps its id until answered: it is resent with the SAME id after a
  reconnect or when no answer came within ``op_resend_after_s``, so the
  server applies it once (a resend of an applied op is acked with its
  original seq and ``duplicate=True``). ``task.create`` gets a client-chosen
  ``task_id`` so a resend names the same task.
- Reconnects use jittered exponential backoff on close codes 4000-4499 and
  dropped sockets; 4500-4999 and 1009 close the client for good
  (:class:`RealtimeClosed` from every call).
- Every wait has a deadline (:class:`RealtimeOptions`). Frames go out through
  one lock in call order, paced under the server's message rate.

Backpressure: the reader never blocks on the application. The update feed
(``client.updates`` / ``async for update in client``) holds
``updates_buffer`` items; when it is full, new items are dropped and counted
in ``stats.updates_dropped`` (replicas are updated regardless).

Cancellation: cancelling a ``send_op`` caller forgets the op (it may still be
applied; resend it with the same ``op_id`` to find out). Leaving
``open_realtime`` closes the socket with 1000 (bounded by ``close_timeout_s``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import uuid
from typing import Any, AsyncIterator

import orjson
import trio
from trio_websocket import WebSocketConnection

from collab.client.backoff import Backoff, floor_for
from collab.client.connection import ConnectionLoop
from collab.client.errors import CollabClientError, OpRejected, OpTimeout, RealtimeClosed, SubscribeRejected
from collab.client.frames import FrameHandler, Sub
from collab.client.options import (
    PendingOp, Pacer, RealtimeOptions, RealtimeStats, TokenSource, Waiter, ws_url,
)
from collab.client.replica import ProjectReplica
from collab.client.updates import Ack, ConnectionChanged, Update

log = logging.getLogger(__name__)


class RealtimeClient(ConnectionLoop, FrameHandler):
    def __init__(self, url: str, token: TokenSource, options: RealtimeOptions | None = None) -> None:
        self.url = ws_url(url)
        self.options = options or RealtimeOptions()
        self.stats = RealtimeStats()
        self.welcome: dict[str, Any] | None = None
        self._token = token
        self._subs: dict[str, Sub] = {}
        self._requests: dict[str, Waiter] = {}
        self._ops: dict[str, PendingOp] = {}
        self._ws: WebSocketConnection | None = None
        self._generation = 0
        self._send_lock = trio.Lock()  # fair: frames leave in the order callers asked
        self._inflight = trio.CapacityLimiter(self.options.max_inflight_ops)
        self._pacer = Pacer(burst=self.options.message_burst)
        self._updates_send, self.updates = trio.open_memory_channel[Update](self.options.updates_buffer)
        self._progress = trio.Event()
        self._conn_nursery: trio.Nursery | None = None
        self._run_scope: trio.CancelScope | None = None
        self._closing = False
        self._closed: RealtimeClosed | None = None
        self._ids = itertools.count(1)
        self._last_rx = 0.0
        self._abort_reason: str | None = None

    # --- what applications read ---------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._ws is not None

    @property
    def user(self) -> dict[str, Any] | None:
        return self.welcome["user"] if self.welcome else None

    def replica(self, project_id: uuid.UUID | str) -> ProjectReplica | None:
        sub = self._subs.get(str(project_id))
        return sub.replica if sub else None

    def __aiter__(self) -> AsyncIterator[Update]:
        return self.updates.__aiter__()

    # --- subscriptions --------------------------------------------------------------------

    async def subscribe(self, project_id: uuid.UUID | str, *, timeout_s: float | None = None) -> ProjectReplica:
        """Subscribe (or return the existing subscription) once its snapshot is loaded.

        Raises :class:`SubscribeRejected` (forbidden, not_found, timeout ...). After
        a timeout the subscription stays wanted and is made on the next connection.
        """
        self._check_open()
        pid = str(project_id)
        sub = self._subs.get(pid)
        if sub is None:
            sub = self._subs[pid] = Sub(ProjectReplica(pid), Waiter())
            if self._ws is not None and self._conn_nursery is not None:
                self._conn_nursery.start_soon(self._subscribe_task, pid)
        with trio.move_on_after(timeout_s or self.options.request_timeout_s):
            return await sub.first.wait()  # type: ignore[no-any-return]
        raise SubscribeRejected("timeout", "No subscribed answer in time", True)

    async def unsubscribe(self, project_id: uuid.UUID | str, *, timeout_s: float | None = None) -> None:
        """End the subscription; the replica stays readable but no longer changes."""
        pid = str(project_id)
        sub = self._subs.pop(pid, None)
        if sub is None:
            return
        sub.replica.end("requested")
        sub.first.fail(SubscribeRejected("requested", "Unsubscribed", False))
        rid = self._request_id("u")
        waiter = self._requests[rid] = Waiter()
        try:
            if await self._send_frame({"type": "unsubscribe", "id": rid, "project_id": pid}):
                with trio.move_on_after(timeout_s or self.options.request_timeout_s):
                    with contextlib.suppress(CollabClientError):
                        await waiter.wait()
        finally:
            self._requests.pop(rid, None)

    async def set_presence(self, project_id: uuid.UUID | str, *, viewing: uuid.UUID | str | None = None,
                           editing: uuid.UUID | str | None = None) -> None:
        """Tell the project's other subscribers what you are viewing/editing (re-sent after reconnects)."""
        sub = self._subs.get(str(project_id))
        if sub is None:
            raise ValueError("subscribe to the project before sending presence")
        sub.presence = {"viewing": str(viewing) if viewing else None, "editing": str(editing) if editing else None}
        if sub.live_on == self._generation and sub.request_id is None:
            await self._send_frame({"type": "presence", "project_id": str(project_id), "state": sub.presence})

    async def wait_for_seq(
        self, project_id: uuid.UUID | str, seq: int, *, timeout_s: float | None = None,
    ) -> ProjectReplica:
        """Wait until the replica has applied ``seq`` (e.g. an ack's seq); trio.TooSlowError otherwise."""
        with trio.fail_after(timeout_s or self.options.request_timeout_s):
            while True:
                self._check_open()
                sub = self._subs.get(str(project_id))
                if sub is None:
                    raise SubscribeRejected("not_subscribed", "Not subscribed to this project", False)
                if sub.replica.seq >= seq:
                    return sub.replica
                await self._progress.wait()

    # --- ops -----------------------------------------------------------------------------------

    async def send_op(self, project_id: uuid.UUID | str, op: dict[str, Any], op_id: str | None = None, *,
                      timeout_s: float | None = None) -> Ack:
        """Send an op and wait for its ack (sent after commit).

        Raises :class:`OpRejected` (code, message, retryable) when the server
        refuses it, after retrying retryable refusals ``op_retries`` times with the
        same id; :class:`OpTimeout` when no ack came in ``op_timeout_s``.
        """
        self._check_open()
        opts = self.options
        op = dict(op)
        if op.get("kind") == "task.create" and not op.get("task_id"):
            op["task_id"] = str(uuid.uuid4())  # a resend must name the same task
        op_id = op_id or uuid.uuid4().hex
        pid = str(project_id)
        text = orjson.dumps({"type": "op", "id": op_id, "project_id": pid, "op": op}).decode()
        limit = (self.welcome or {}).get("limits", {}).get("max_message_bytes")
        if limit is not None and len(text.encode()) > limit:
            raise OpRejected("payload_too_large", f"The op frame is over the server's {limit} bytes", False)
        async with self._inflight:
            if op_id in self._ops:
                raise ValueError(f"op {op_id!r} is already in flight")
            pending = self._ops[op_id] = PendingOp(op_id, pid, text, Waiter())
            backoff = Backoff(opts.backoff_base_s, opts.backoff_cap_s)
            retries = 0
            try:
                with trio.fail_after(timeout_s or opts.op_timeout_s):
                    while True:
                        await self._send_pending(pending)
                        with trio.move_on_after(opts.op_resend_after_s) as timer:
                            outcome = await pending.waiter.wait()
                        if timer.cancelled_caught:
                            pending.sent_on = None  # no answer on this socket: send again, same id
                            continue
                        if isinstance(outcome, Ack):
                            return outcome
                        if not outcome.retryable or retries >= opts.op_retries:
                            raise outcome
                        retries += 1
                        await trio.sleep(backoff.delay())
                        pending.rearm()
            except trio.TooSlowError:
                raise OpTimeout() from None
            finally:
                self._ops.pop(op_id, None)

    # --- lifecycle ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, and reconnect until closed; started once the first ``welcome`` arrived.

        Raises :class:`RealtimeClosed` when the first connection cannot be made
        within ``first_connect_timeout_s`` or is refused for good. A later fatal
        close does not raise here: calls raise it, and the feed ends.
        """
        opts = self.options
        backoff = Backoff(opts.backoff_base_s, opts.backoff_cap_s)
        first_deadline = trio.current_time() + opts.first_connect_timeout_s
        started = False
        failures = 0
        error: RealtimeClosed | None = None
        try:
            with trio.CancelScope() as self._run_scope:
                while not self._closing:
                    ended = await self._connect_and_serve(None if started else task_status)
                    started = started or ended.welcomed
                    self.stats.last_close_code, self.stats.last_close_reason = ended.code, ended.reason
                    if ended.welcomed:
                        self._emit(ConnectionChanged(False, ended.code, ended.reason))
                    if self._closing:
                        break
                    if ended.fatal:
                        error = RealtimeClosed(f"the server closed the connection for good: {ended.reason}", ended.code)
                        break
                    failures = 0 if ended.welcomed else failures + 1
                    if ended.welcomed and ended.uptime_s >= opts.stable_after_s:
                        backoff.reset()
                    if opts.max_reconnect_attempts is not None and failures > opts.max_reconnect_attempts:
                        error = RealtimeClosed(f"gave up reconnecting: {ended.reason}", ended.code)
                        break
                    delay = backoff.delay(floor_for(ended.code))
                    if not started:
                        remaining = first_deadline - trio.current_time()
                        if remaining <= 0:
                            error = RealtimeClosed(f"could not connect: {ended.reason}", ended.code)
                            break
                        delay = min(delay, remaining)
                    log.info("realtime: %s; reconnecting in %.2f s", ended.reason, delay)
                    await trio.sleep(delay)
        finally:
            self._finish(error or RealtimeClosed("the client was closed"))
        if error is not None and not started:
            raise error

    async def aclose(self) -> None:
        """Close the socket (1000) and stop; pending calls raise :class:`RealtimeClosed`."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            with trio.move_on_after(self.options.close_timeout_s) as scope:
                scope.shield = True
                await ws.aclose(1000, "client closing")
        if self._run_scope is not None:
            self._run_scope.cancel()

    def abort_connection(self, reason: str = "aborted by the application") -> None:
        """Drop the current socket as a network failure would (no close handshake);
        the client reconnects and resumes. For tests and failure drills."""
        self._abort(reason, hard=True)

    def _request_id(self, kind: str) -> str:
        return f"~{kind}{next(self._ids)}"  # '~' cannot occur in op ids: no clash

    def _check_open(self) -> None:
        if self._closed is not None:
            raise self._closed

    def _finish(self, error: RealtimeClosed) -> None:
        self._closed = error
        for pending in self._ops.values():
            pending.waiter.fail(error)
        for sub in self._subs.values():
            sub.first.fail(error)
        self._updates_send.close()
        self._progress.set()


@contextlib.asynccontextmanager
async def open_realtime(
    url: str, token: TokenSource, options: RealtimeOptions | None = None,
) -> AsyncIterator[RealtimeClient]:
    """A connected :class:`RealtimeClient` (welcome received), closed on exit.

    ``token``: an access token, or an async function returning a current one
    (e.g. ``rest.fresh_access_token``), called for each connection.
    """
    client = RealtimeClient(url, token, options)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            try:
                yield client
            finally:
                await client.aclose()
    except BaseExceptionGroup as group:  # one error from the body or the client: raise it plainly
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
