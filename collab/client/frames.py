"""The reader's half of :class:`~collab.client.realtime.RealtimeClient`: what each server frame does.

Every handler is synchronous and runs in the connection's reader task, in the
order frames arrive (also inside a JSON-array message), so replica updates
follow the server's order exactly. Anything that must send (a resubscribe, a
presence re-send) is started as a task in the connection's nursery; the
reader itself never blocks on the network or on the application.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import trio

from collab.client.backoff import Backoff
from collab.client.errors import OpRejected, Rejected, SubscribeRejected
from collab.client.options import PendingOp, RealtimeOptions, RealtimeStats, Waiter
from collab.client.replica import Applied, ProjectReplica
from collab.client.updates import (
    Ack, NotificationReceived, SnapshotLoaded, SubscriptionEnded, Update, presence_change, project_event,
)

log = logging.getLogger("collab.client.realtime")

#: ``Sub.request_id`` while a resubscribe is decided but its task has not started yet.
SCHEDULED = "~scheduled"


@dataclass(eq=False)
class Sub:
    """One wanted subscription: its replica and where its subscribe stands."""

    replica: ProjectReplica
    first: Waiter                  # resolved by the first ``subscribed`` (or a refusal)
    request_id: str | None = None  # the subscribe in flight (or SCHEDULED)
    live_on: int | None = None     # the connection generation it is subscribed on
    fresh: bool = False            # next subscribe asks for a snapshot (no since)
    presence: dict[str, Any] | None = None  # our last presence state, re-sent after resubscribing


class FrameHandler:
    # Provided by RealtimeClient.
    options: RealtimeOptions
    stats: RealtimeStats
    _subs: dict[str, Sub]
    _requests: dict[str, Waiter]
    _ops: dict[str, PendingOp]
    _generation: int
    _conn_nursery: trio.Nursery | None
    _updates_send: trio.MemorySendChannel[Update]

    if TYPE_CHECKING:
        async def _send_frame(self, frame: dict[str, Any]) -> bool: ...
        def _request_id(self, kind: str) -> str: ...
        def _abort(self, reason: str, *, hard: bool = False) -> None: ...

    def _handle(self, frame: dict[str, Any]) -> None:
        handler = _HANDLERS.get(frame["type"])
        if handler is not None:
            handler(self, frame)  # unknown types are ignored: newer servers may add some

    # --- subscriptions -----------------------------------------------------------------------

    def _on_subscribed(self, frame: dict[str, Any]) -> None:
        waiter = self._requests.get(frame["id"])
        sub = self._subs.get(frame["project_id"])
        if sub is None or sub.request_id != frame["id"]:
            if waiter is not None:
                waiter.set(frame)
            return
        sub.request_id = None
        replica = sub.replica
        seq = int(frame["seq"])
        if "snapshot" in frame:
            replica.load_snapshot(frame["snapshot"], seq)
            sub.fresh = False
            self._emit(SnapshotLoaded(replica.project_id, seq, bool(frame.get("reset"))))
        else:
            for event in frame.get("events", ()):
                verdict = replica.apply(event)
                if verdict is Applied.APPLIED:
                    self._emit(project_event(event, catch_up=True))
                elif verdict is not Applied.STALE:
                    break
            if replica.seq < seq:  # the catch-up did not reach its own seq: start from a snapshot
                log.warning(
                    "realtime: catch-up of %s stopped at %d < %d; reloading", replica.project_id, replica.seq, seq,
                )
                self._resubscribe(replica.project_id, fresh=True)
        replica.load_presence(frame.get("presence") or [])
        sub.live_on = self._generation
        sub.first.set(replica)
        if sub.presence is not None and self._conn_nursery is not None:
            self._conn_nursery.start_soon(
                self._send_frame, {"type": "presence", "project_id": replica.project_id, "state": sub.presence})
        if waiter is not None:
            waiter.set(frame)

    def _on_event(self, frame: dict[str, Any]) -> None:
        sub = self._subs.get(frame["project_id"])
        if sub is None or (sub.replica.snapshots_loaded == 0 and sub.replica.seq == 0):
            return
        verdict = sub.replica.apply(frame)
        if verdict is Applied.APPLIED:
            self._emit(project_event(frame))
        elif verdict is Applied.GAP and sub.request_id is None:
            self.stats.gaps += 1
            self._resubscribe(sub.replica.project_id)
        elif verdict is Applied.INCONSISTENT:
            log.warning(
                "realtime: event %s of %s does not fit the replica; reloading", frame["seq"], frame["project_id"],
            )
            self._resubscribe(sub.replica.project_id, fresh=True)

    def _on_resync(self, frame: dict[str, Any]) -> None:
        """The server ended the subscription (we fell behind): resubscribe from our seq."""
        self.stats.resyncs += 1
        sub = self._subs.get(frame["project_id"])
        if sub is not None:
            sub.live_on = None
            self._resubscribe(frame["project_id"])

    def _on_unsubscribed(self, frame: dict[str, Any]) -> None:
        waiter = self._requests.get(frame.get("id") or "")
        if waiter is not None:
            waiter.set(frame)
        if frame.get("reason") != "requested":
            self._end_sub(frame["project_id"], frame.get("reason") or "ended")

    def _resubscribe(self, project_id: str, *, fresh: bool = False) -> None:
        sub = self._subs.get(project_id)
        if sub is None or self._conn_nursery is None:
            return  # a reconnect resubscribes everything anyway
        sub.fresh = sub.fresh or fresh
        if sub.request_id is None:
            sub.request_id = SCHEDULED
            self._conn_nursery.start_soon(self._subscribe_task, project_id)

    async def _subscribe_task(self, project_id: str) -> None:
        """Subscribe (since the replica's seq when it has one); retry retryable refusals."""
        sub = self._subs.get(project_id)
        if sub is None or sub.request_id not in (None, SCHEDULED):
            return
        backoff = Backoff(self.options.backoff_base_s, self.options.backoff_cap_s)
        for attempt in range(self.options.op_retries + 1):
            rid = self._request_id("s")
            sub.request_id = rid
            waiter = self._requests[rid] = Waiter()
            frame: dict[str, Any] = {"type": "subscribe", "id": rid, "project_id": project_id}
            replica = sub.replica
            if not sub.fresh and (replica.snapshots_loaded or replica.seq):
                frame["since"] = replica.seq
            self.stats.subscribes_sent += 1
            try:
                if not await self._send_frame(frame):
                    return  # the socket is going; the reconnect resubscribes
                with trio.fail_after(self.options.request_timeout_s):
                    await waiter.wait()
                return
            except trio.TooSlowError:
                self._abort("no answer to subscribe in time")
                return
            except Rejected as exc:
                if exc.retryable and attempt < self.options.op_retries:
                    await trio.sleep(backoff.delay())
                    continue
                self._end_sub(project_id, exc.code, SubscribeRejected(exc.code, exc.message, exc.retryable, exc.errors))
                return
            finally:
                self._requests.pop(rid, None)
                if sub.request_id == rid:
                    sub.request_id = None

    def _end_sub(self, project_id: str, reason: str, error: SubscribeRejected | None = None) -> None:
        sub = self._subs.pop(project_id, None)
        if sub is None:
            return
        sub.replica.end(reason)
        sub.first.fail(error or SubscribeRejected(reason, f"The subscription ended: {reason}", False))
        self._emit(SubscriptionEnded(project_id, reason))

    # --- replies -------------------------------------------------------------------------------

    def _on_ack(self, frame: dict[str, Any]) -> None:
        pending = self._ops.get(frame["id"])
        if pending is None:
            return  # a second answer to a resent op, or one we gave up on
        duplicate = bool(frame.get("duplicate"))
        self.stats.duplicate_acks += duplicate
        pending.waiter.set(Ack(frame["id"], pending.project_id, int(frame["seq"]), frame.get("result"), duplicate))

    def _on_error(self, frame: dict[str, Any]) -> None:
        rid = frame.get("id")
        args = (
            frame.get("code") or "error", frame.get("message") or "", bool(frame.get("retryable")), frame.get("errors"),
        )
        pending = self._ops.get(rid) if rid else None
        if pending is not None:
            pending.waiter.set(OpRejected(*args))
        elif rid and rid in self._requests:
            self._requests[rid].fail(Rejected(*args))
        else:
            # No id: e.g. rate_limited (the frame was dropped unread; unanswered ops
            # are resent after op_resend_after_s) or a presence refusal.
            self.stats.unsolicited_errors += 1
            log.debug("realtime: server error without a request: %s %s", args[0], args[1])

    # --- presence and notifications ---------------------------------------------------------

    def _on_presence(self, frame: dict[str, Any]) -> None:
        change = presence_change(frame)
        sub = self._subs.get(frame["project_id"])
        if change is None or sub is None:
            return
        sub.replica.apply_presence(change.change, {
            "user_id": change.user_id, "username": change.username,
            "connection_id": change.connection_id, "state": change.state,
        })
        self._emit(change)

    def _on_notification(self, frame: dict[str, Any]) -> None:
        self._emit(NotificationReceived(frame.get("notification") or {}))

    def _emit(self, update: Update) -> None:
        try:
            self._updates_send.send_nowait(update)
        except trio.WouldBlock:
            self.stats.updates_dropped += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass


_HANDLERS: dict[str, Callable[[Any, dict[str, Any]], None]] = {
    "subscribed": FrameHandler._on_subscribed,
    "event": FrameHandler._on_event,
    "resync": FrameHandler._on_resync,
    "unsubscribed": FrameHandler._on_unsubscribed,
    "ack": FrameHandler._on_ack,
    "error": FrameHandler._on_error,
    "presence": FrameHandler._on_presence,
    "notification": FrameHandler._on_notification,
}
