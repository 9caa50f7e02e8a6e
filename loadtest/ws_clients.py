"""Lightweight WebSocket load clients for ``loadtest ws``: subscribers and editors on raw trio-websocket.

The SDK's RealtimeClient keeps replicas, pacing, reconnects and a feed per
connection: right for an application, far too heavy for hundreds of sockets
in one load-generator process. These clients do only what a measurement
needs:

- a **subscriber** authenticates with the first frame, subscribes to one
  project (no ``since``: the answer carries the snapshot), and from then on
  only scans each message for ``"client_op_id":"e<editor>-<n>"`` (a message
  is one frame or a JSON array of frames: the scan handles both, and nothing
  is decoded). For each op it records, once, the receive time minus the
  editor's send time of that op (both :func:`time.perf_counter` of this
  process), and it counts messages, event frames, duplicates, and any
  ``resync``/``unsubscribed``/``error`` frame or close. Like the SDK, it
  sends an application ping every 20 s (a socket the server does not hear
  from is dropped; the soak holds sockets for minutes), and so do editors;
- an **editor** sends ``task.update`` ops over its own socket, either on a
  fixed schedule (``rate`` per second, op n due at ``t0 + phase + n/rate``:
  open loop, a late send is recorded as lag, not hidden) or closed loop with
  ``inflight`` ops outstanding (the next op goes when an answer arrives). Its
  reader decodes acks and errors (orjson) and records the ack latency.

Every op changes the task's title to a new value, so every op commits exactly
one ``task.updated`` event carrying its client op id. Op ids are
``e<editor>-<n>``: n indexes the editor's arrays (send time, answer flag), so
matching costs two ``int()`` and an array lookup.
"""

from __future__ import annotations

import itertools
import re
import time
from array import array
from collections import Counter
from typing import Any

import orjson
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from collab.client.updates import decode_message

OP_ID = re.compile(r'"client_op_id":"e(\d+)-(\d+)"')
EVENT_MARK = '"type":"event"'
PONG_MARK = '{"type":"pong"'
TROUBLE_MARKS = ('"type":"resync"', '"type":"unsubscribed"', '"type":"error"')
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
RECEIVE_BUFFER = 65536
CONNECT_TIMEOUT_S = 15.0
HANDSHAKE_TIMEOUT_S = 20.0   # auth -> welcome -> subscribe -> subscribed
DISCONNECT_TIMEOUT_S = 5.0
PING_INTERVAL_S = 20.0       # collab.client's RealtimeOptions.ping_interval_s

ACKED, REFUSED = 1, 2


class Stream:
    """One editor's ops: when each was sent and whether it was answered."""

    def __init__(self, index: int, project_id: str, task_ids: list[str], capacity: int) -> None:
        self.index, self.project_id, self.task_ids, self.capacity = index, project_id, task_ids, capacity
        self.sent_at = array("d", bytes(8 * capacity))      # perf_counter at send; 0.0 = not sent
        self.answer = bytearray(capacity)                   # 0 none, ACKED, REFUSED
        self.sent = self.acked = self.refused = self.duplicates = 0
        self.errors: Counter[str] = Counter()
        self.ack_ms = array("d")
        self.ack_at = array("d")                            # perf_counter of each ok ack
        self.lag_ms = array("d")                            # fixed rate: how late each send went out
        self.waiters: dict[int, trio.Event] = {}
        self.closed: str | None = None
        self.connected = False

    def op_text(self, n: int) -> str:
        task_id = self.task_ids[n % len(self.task_ids)]
        return ('{"type":"op","id":"e%d-%d","project_id":"%s","op":{"kind":"task.update","task_id":"%s",'
                '"fields":{"title":"load op e%d-%d"}}}' % (self.index, n, self.project_id, task_id, self.index, n))

    @property
    def unanswered(self) -> int:
        return self.sent - self.acked - self.refused

    def on_answer(self, frame: dict[str, Any], now: float) -> None:
        op_id = frame.get("id")
        if not isinstance(op_id, str) or not op_id.startswith(f"e{self.index}-"):
            self.errors[f"unmatched {frame.get('type')}: {frame.get('code')}"] += 1
            return
        n = int(op_id.rsplit("-", 1)[1])
        if n >= self.capacity or self.answer[n]:
            self.duplicates += 1
            return
        if frame["type"] == "ack":
            self.answer[n] = ACKED
            self.acked += 1
            self.ack_ms.append((now - self.sent_at[n]) * 1000)
            self.ack_at.append(now)
        else:
            self.answer[n] = REFUSED
            self.refused += 1
            self.errors[str(frame.get("code"))] += 1
        waiter = self.waiters.pop(n, None)
        if waiter is not None:
            waiter.set()


class Subscriber:
    """One subscriber socket's counters (see the module docstring)."""

    __slots__ = ("stream", "seen", "unique", "duplicates", "messages", "event_frames", "foreign", "trouble",
                 "closed", "failed", "ready")

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.seen = bytearray(stream.capacity)
        self.unique = self.duplicates = self.messages = self.event_frames = self.foreign = 0
        self.trouble: Counter[str] = Counter()
        self.closed: str | None = None
        self.failed: str | None = None
        self.ready = False

    def missing(self) -> int:
        """Ops of its editor that were acknowledged but never reached this subscriber."""
        seen, answer = self.seen, self.stream.answer
        return sum(1 for n in range(self.stream.sent) if answer[n] == ACKED and not seen[n])


class Load:
    """Everything one load-generator process runs, and the shared latency record."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.streams: dict[int, Stream] = {}
        self.subscribers: list[Subscriber] = []
        self.latencies_ms = array("d")
        self.connect_limiter = trio.CapacityLimiter(50)
        self.settled = 0            # connections that are ready or failed
        self.expected = 0
        self.all_settled = trio.Event()
        self.go = trio.Event()
        self.t0 = 0.0               # trio clock: when the editors start
        self.receive_scopes: list[trio.CancelScope] = []
        self.failures: Counter[str] = Counter()
        self.handshake_s = array("d")

    def settle(self) -> None:
        self.settled += 1
        if self.settled >= self.expected:
            self.all_settled.set()

    def stop_receiving(self) -> None:
        for scope in self.receive_scopes:
            scope.cancel()

    # --- subscribers -----------------------------------------------------------------------

    async def subscriber(self, sub: Subscriber, token: str) -> None:
        stream = sub.stream
        try:
            async with self._open() as ws:
                began = time.perf_counter()
                try:
                    await self._authenticate(ws, token)
                    await ws.send_message(orjson.dumps({"type": "subscribe", "id": "s", "project_id": stream.project_id}).decode())
                    with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                        while True:
                            frames = decode_message(await ws.get_message())
                            kinds = {f["type"] for f in frames}
                            if "subscribed" in kinds:
                                break
                            if "error" in kinds:
                                raise RuntimeError(f"subscribe refused: {frames}")
                finally:
                    self.connect_limiter.release()
                self.handshake_s.append(time.perf_counter() - began)
                sub.ready = True
                self.settle()
                await self._receive_events(ws, sub)
        except ConnectionClosed as exc:
            sub.closed = f"{exc.reason.code} {exc.reason.reason or ''}".strip()
        except Exception as exc:  # noqa: BLE001 - counted and reported, never fatal for the run
            sub.failed = _describe(exc)
        finally:
            if not sub.ready:
                self.failures[sub.failed or sub.closed or "cancelled"] += 1
                self.settle()

    async def _ping(self, ws: WebSocketConnection) -> None:
        """An application ping every :data:`PING_INTERVAL_S`, as the SDK sends (a subscriber sends nothing
        else, and the server may drop a socket it has not heard from; the pong carries no op id)."""
        for n in itertools.count():
            await trio.sleep(PING_INTERVAL_S)
            await ws.send_message('{"type":"ping","id":"k%d"}' % n)

    async def _receive_events(self, ws: WebSocketConnection, sub: Subscriber) -> None:
        latencies, perf, streams = self.latencies_ms, time.perf_counter, self.streams
        own = sub.stream.index
        with trio.CancelScope() as scope:
            self.receive_scopes.append(scope)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._ping, ws)
                await self._scan(ws, sub, latencies, perf, streams, own)

    async def _scan(self, ws: WebSocketConnection, sub: Subscriber, latencies: array, perf: Any,
                    streams: dict[int, Stream], own: int) -> None:
        while True:
            text = await ws.get_message()
            now = perf()
            if isinstance(text, bytes):
                text = text.decode()
            if text.startswith(PONG_MARK):
                continue  # the answer to our own ping: not part of the fan-out
            sub.messages += 1
            sub.event_frames += text.count(EVENT_MARK)
            for match in OP_ID.finditer(text):
                editor, n = int(match.group(1)), int(match.group(2))
                if editor != own:
                    sub.foreign += 1
                    continue
                if n >= len(sub.seen) or sub.seen[n]:
                    sub.duplicates += 1
                    continue
                sub.seen[n] = 1
                sub.unique += 1
                sent = streams[editor].sent_at[n]
                if sent:
                    latencies.append((now - sent) * 1000)
            for mark in TROUBLE_MARKS:
                if mark in text:
                    sub.trouble[mark.split(":")[1].strip('"')] += 1

    # --- editors -------------------------------------------------------------------------------

    async def editor(self, stream: Stream, token: str, *, mode: str, rate: float, phase_s: float,
                     duration_s: float, inflight: int) -> None:
        ready = False
        try:
            async with self._open() as ws:
                try:
                    await self._authenticate(ws, token)
                finally:
                    self.connect_limiter.release()
                ready = stream.connected = True
                self.settle()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._editor_reader, ws, stream)
                    await self.go.wait()
                    if mode == "fixed":
                        await self._send_fixed(ws, stream, rate, phase_s, duration_s)
                    else:
                        await self._send_closed(ws, stream, inflight, duration_s)
        except ConnectionClosed as exc:
            stream.closed = f"{exc.reason.code} {exc.reason.reason or ''}".strip()
        except Exception as exc:  # noqa: BLE001
            stream.closed = _describe(exc)
        finally:
            if not ready:
                self.failures[f"editor: {stream.closed or 'cancelled'}"] += 1
                self.settle()

    async def _editor_reader(self, ws: WebSocketConnection, stream: Stream) -> None:
        with trio.CancelScope() as scope:
            self.receive_scopes.append(scope)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._ping, ws)  # an editor waits for GO in silence, maybe for long
                while True:
                    message = await ws.get_message()
                    now = time.perf_counter()
                    for frame in decode_message(message):
                        if frame["type"] in ("ack", "error"):
                            stream.on_answer(frame, now)

    async def _send_fixed(self, ws: WebSocketConnection, stream: Stream, rate: float, phase_s: float,
                          duration_s: float) -> None:
        start = self.t0 + phase_s
        count = min(stream.capacity, int(duration_s * rate))
        for n in range(count):
            due = start + n / rate
            await trio.sleep_until(due)
            stream.lag_ms.append((trio.current_time() - due) * 1000)
            stream.sent_at[n] = time.perf_counter()
            stream.sent = n + 1
            await ws.send_message(stream.op_text(n))

    async def _send_closed(self, ws: WebSocketConnection, stream: Stream, inflight: int, duration_s: float) -> None:
        end = self.t0 + duration_s

        async def slot() -> None:
            while trio.current_time() < end and stream.sent < stream.capacity:
                n = stream.sent
                stream.sent = n + 1
                answered = stream.waiters[n] = trio.Event()
                stream.sent_at[n] = time.perf_counter()
                await ws.send_message(stream.op_text(n))
                await answered.wait()

        with trio.move_on_after(duration_s + 30):  # an answer that never comes cannot hold the run
            async with trio.open_nursery() as nursery:
                for _ in range(inflight):
                    nursery.start_soon(slot)

    # --- shared -------------------------------------------------------------------------------------

    def _open(self):  # noqa: ANN202 - an async context manager
        return _Limited(self)

    async def _authenticate(self, ws: WebSocketConnection, token: str) -> None:
        await ws.send_message(orjson.dumps({"type": "auth", "token": token}).decode())
        with trio.fail_after(HANDSHAKE_TIMEOUT_S):
            frames = decode_message(await ws.get_message())
        if frames[0].get("type") != "welcome":
            raise RuntimeError(f"expected welcome, got {frames[0].get('type')!r}")


class _Limited:
    """``open_websocket_url`` entered while holding a slot of the connect limiter.

    The caller releases the slot once its handshake is done (or failed), so at
    most 50 handshakes are in progress at once (the server's listen backlog is
    hypercorn's default, 100).
    """

    def __init__(self, load: Load) -> None:
        self.load = load
        self.cm: Any = None

    async def __aenter__(self) -> WebSocketConnection:
        await self.load.connect_limiter.acquire()
        try:
            self.cm = open_websocket_url(
                self.load.url, max_message_size=MAX_MESSAGE_BYTES, connect_timeout=CONNECT_TIMEOUT_S,
                disconnect_timeout=DISCONNECT_TIMEOUT_S, receive_buffer_size=RECEIVE_BUFFER,
            )
            return await self.cm.__aenter__()
        except BaseException:
            self.load.connect_limiter.release()
            raise

    async def __aexit__(self, *exc: Any) -> bool | None:
        return await self.cm.__aexit__(*exc)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _describe(exc.exceptions[0])
    return f"{type(exc).__name__}: {exc}"[:200]
