"""WsSession: one WebSocket connection's state, outbox and writer.

Owns: the authenticated principal, the connection's subscriptions (with the
last seq queued per project), a bounded outbox, and the writer task that
drains it. Everything that feeds the outbox (:meth:`deliver`,
:meth:`send_control`) is synchronous and never blocks, so the hub and the
actors never wait on a client.

Backpressure: the outbox holds at most ``max_queued_events`` events. When a
subscriber falls that far behind, its queued events are dropped and each
affected subscription ends with one ``resync {project_id, since}`` frame (the
client resubscribes with ``since`` and catches up from the change log). A
subscriber that needs ``max_resyncs`` resyncs within ``resync_window_s`` is
closed with ``4001 slow consumer``.

Coalescing: queuing something for an idle writer asks the shared
:class:`FlushClock` to wake it at the next flush moment; the writer then
sends whatever is queued as one message (a JSON array when there are several
frames), up to ``max_frames_per_message``. One wake per flush, one reused
cancel scope for the send deadline: the per-message cost that hundreds of
writers pay in every flush is kept small.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import trio

from collab.actors.flush_clock import FlushClock
from collab.domain.users import Principal
from collab.protocol import server_frames as frames

if TYPE_CHECKING:
    from collab.actors.hub import Hub

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class SessionLimits:
    max_queued_events: int = 1024
    max_queued_control: int = 1024
    max_frames_per_message: int = 64
    max_resyncs: int = 3
    resync_window_s: float = 60.0
    send_timeout_s: float = 10.0


@dataclass
class Subscription:
    last_seq: int                        # the last seq queued for (or sent to) the client
    pending: list[tuple[int, str]] | None = None  # live events held back while catching up
    overflowed: bool = False


#: An outbox entry: (text, project id, seq) for an event (droppable), (text, None, 0) for a control frame.
_Entry = tuple[str, "uuid.UUID | None", int]


class WsSession:
    def __init__(
        self, principal: Principal, hub: "Hub", send: Send, limits: SessionLimits, clock: FlushClock | None = None,
    ) -> None:
        self.id = uuid.uuid4()
        self.principal = principal
        self.hub = hub
        self.subscriptions: dict[uuid.UUID, Subscription] = {}
        self._send = send
        self._limits = limits
        self._clock = clock
        self._outbox: deque[_Entry] = deque()
        self._queued_events = 0
        self._wake = trio.Event()
        self._kicked = False  # a wake is requested (from the clock) and not yet taken by the writer
        self._resyncs: deque[float] = deque()
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed = trio.Event()  # set once the close frame is sent (or the socket is gone)

    # --- feeding the outbox (synchronous, never blocks) ---------------------------

    def deliver(self, project_id: uuid.UUID, seq: int, text: str) -> None:
        """A committed event of a project this session is subscribed to."""
        sub = self.subscriptions.get(project_id)
        if sub is not None:
            self.deliver_to(sub, project_id, seq, text)

    def deliver_to(self, sub: Subscription, project_id: uuid.UUID, seq: int, text: str) -> None:
        """:meth:`deliver` with the subscription at hand (the hub's fan-out: no lookup per socket)."""
        if self.close_code is not None:
            return
        if sub.pending is not None:
            if len(sub.pending) >= self._limits.max_queued_events:
                sub.overflowed = True
                return
            sub.pending.append((seq, text))
            return
        if seq <= sub.last_seq:
            return  # already delivered (e.g. by the catch-up)
        if self._queued_events >= self._limits.max_queued_events:
            self._fall_behind()
            if project_id not in self.subscriptions:
                return
        sub.last_seq = seq
        self._outbox.append((text, project_id, seq))
        self._queued_events += 1
        if not self._kicked:
            self._kick()

    def send_control(self, frame: dict[str, Any]) -> None:
        self.send_control_text(frames.encode(frame))

    def send_control_text(self, text: str) -> None:
        if self.close_code is not None:
            return
        if len(self._outbox) - self._queued_events >= self._limits.max_queued_control:
            self.close(frames.CloseCode.SLOW_CONSUMER, "too many unread replies")
            return
        self._outbox.append((text, None, 0))
        if not self._kicked:
            self._kick()

    def _kick(self) -> None:
        """Wake the writer at the next flush moment (at once without a clock)."""
        self._kicked = True
        if self._clock is None:
            self._wake.set()
        else:
            self._clock.request(self._wake)

    def close(self, code: int, reason: str) -> None:
        """Ask the writer to send a close frame (once) and stop."""
        if self.close_code is None:
            self.close_code = int(code)
            self.close_reason = reason
            self.hub.record_close(self.close_code)
            self._wake.set()

    # --- catching up after subscribe ------------------------------------------------

    def finish_catch_up(self, project_id: uuid.UUID, caught_up_to: int) -> None:
        """The catch-up up to ``caught_up_to`` is queued: release held live events."""
        sub = self.subscriptions.get(project_id)
        if sub is None:
            return
        held, sub.pending = sub.pending or [], None
        sub.last_seq = max(sub.last_seq, caught_up_to)
        if sub.overflowed:
            sub.overflowed = False
            self._resync(project_id, sub.last_seq)
            return
        for seq, text in held:
            self.deliver(project_id, seq, text)

    # --- falling behind ---------------------------------------------------------------

    def _fall_behind(self) -> None:
        """Drop queued events; each affected subscription ends with one resync frame."""
        first_dropped: dict[uuid.UUID, int] = {}
        kept: deque[_Entry] = deque()
        for entry in self._outbox:
            if entry[1] is None:
                kept.append(entry)
            else:
                first_dropped.setdefault(entry[1], entry[2])
        self._outbox = kept
        self._queued_events = 0
        for project_id, seq in first_dropped.items():
            self._resync(project_id, seq - 1)

    def _resync(self, project_id: uuid.UUID, since: int) -> None:
        self.hub.unsubscribe(self, project_id)
        self.send_control(frames.resync(project_id, since))
        now = time.monotonic()
        self._resyncs.append(now)
        while self._resyncs and now - self._resyncs[0] > self._limits.resync_window_s:
            self._resyncs.popleft()
        if len(self._resyncs) >= self._limits.max_resyncs:
            self.close(frames.CloseCode.SLOW_CONSUMER, "slow consumer")

    # --- presence --------------------------------------------------------------------

    def presence_entry(self, state: dict[str, Any]) -> dict[str, Any]:
        return {
            "user_id": str(self.principal.user_id),
            "username": self.principal.username,
            "connection_id": str(self.id),
            "state": state,
        }

    # --- the writer --------------------------------------------------------------------

    async def run_writer(self) -> None:
        """Send queued frames until closed; then send the close frame.

        Raises :class:`trio.TooSlowError` when one send takes longer than
        ``send_timeout_s`` (the peer stopped reading).
        """
        limits = self._limits
        try:
            with trio.CancelScope() as send_deadline:  # one scope, re-armed around each send
                while True:
                    await self._wake.wait()
                    self._wake = trio.Event()
                    self._kicked = False
                    while self._outbox:
                        batch: list[str] = []
                        while self._outbox and len(batch) < limits.max_frames_per_message:
                            text, project_id, _ = self._outbox.popleft()
                            if project_id is not None:
                                self._queued_events -= 1
                            batch.append(text)
                        send_deadline.deadline = trio.current_time() + limits.send_timeout_s
                        await self._send({"type": "websocket.send", "text": frames.join(batch)})
                        send_deadline.deadline = math.inf
                        self.hub.messages_sent += 1
                        self.hub.frames_sent += len(batch)
                        del batch, text  # an idle socket must not keep its last message (often a snapshot)
                    if self.close_code is not None:
                        send_deadline.deadline = math.inf
                        break
            if send_deadline.cancelled_caught:
                raise trio.TooSlowError
            with trio.move_on_after(limits.send_timeout_s):
                await self._send({"type": "websocket.close", "code": self.close_code, "reason": self.close_reason})
        finally:
            self.closed.set()
