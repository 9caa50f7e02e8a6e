"""Hub: who is connected, who is subscribed to what, and the fan-out of events.

The hub is called synchronously from the trio thread: by project actors after
each commit (:meth:`publish`), by WebSocket sessions (subscribe, presence,
register), and by the auth service when sessions end. It never awaits: each
event is encoded once and handed to every subscribed session's bounded
outbox with :meth:`WsSession.deliver_to`, which never blocks (a full outbox
turns into a ``resync`` for that subscriber, see ws_session.py).

Membership acts at once: a ``member.removed`` event ends that user's
subscriptions to the project (``unsubscribed {reason: "removed"}``) in the same
step that delivers it, so a removed member receives nothing after it; a
``project.deleted`` event ends every subscription to the project.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import trio

from collab.actors.flush_clock import FlushClock
from collab.actors.remote_presence import RemotePresence
from collab.domain.notifications import Notification
from collab.protocol import server_frames as frames
from collab.storage.projects import EventRecord

if TYPE_CHECKING:
    from collab.actors.ws_session import Subscription, WsSession

log = logging.getLogger(__name__)


class Hub:
    def __init__(self, clock: FlushClock | None = None) -> None:
        self.clock = clock or FlushClock()
        # project -> its subscribed sessions, each with its Subscription (held here so the fan-out
        # does not look it up per socket and event)
        self._subscribers: dict[uuid.UUID, dict["WsSession", "Subscription"]] = {}
        self._by_user: dict[uuid.UUID, set["WsSession"]] = {}
        self._by_login: dict[uuid.UUID, set["WsSession"]] = {}  # auth session id -> sockets
        self._presence: dict[uuid.UUID, dict["WsSession", dict[str, Any]]] = {}
        self.closing_event = trio.Event()  # set by shutdown(): also wakes sockets not registered yet
        self.events_published = 0
        self.frames_enqueued = 0
        # Plain counters for metrics (collab/metrics.py reads them at scrape time).
        self.frames_received = 0  # client messages read
        self.frames_sent = 0      # frames written (several may share one message)
        self.messages_sent = 0    # WebSocket messages written
        self.closes: dict[int, int] = {}  # server-initiated closes by code
        # Cluster: presence changes here go to the other nodes; theirs are kept in ``remote``.
        self.on_presence_change: Callable[[uuid.UUID, str, dict[str, Any]], None] | None = None
        self.remote = RemotePresence()

    # --- sockets ---------------------------------------------------------------

    @property
    def closing(self) -> bool:
        return self.closing_event.is_set()

    def sockets_of(self, user_id: uuid.UUID) -> int:
        return len(self._by_user.get(user_id, ()))

    @property
    def connections(self) -> int:
        return sum(len(s) for s in self._by_user.values())

    def register(self, session: "WsSession") -> None:
        self._by_user.setdefault(session.principal.user_id, set()).add(session)
        self._by_login.setdefault(session.principal.session_id, set()).add(session)

    def unregister(self, session: "WsSession") -> None:
        for project_id in list(session.subscriptions):
            self.unsubscribe(session, project_id)
        _discard(self._by_user, session.principal.user_id, session)
        _discard(self._by_login, session.principal.session_id, session)

    # --- subscriptions -----------------------------------------------------------

    def subscribe(self, session: "WsSession", project_id: uuid.UUID) -> None:
        self._subscribers.setdefault(project_id, {})[session] = session.subscriptions[project_id]

    def unsubscribe(self, session: "WsSession", project_id: uuid.UUID) -> None:
        subscribers = self._subscribers.get(project_id)
        if subscribers is not None:
            subscribers.pop(session, None)
            if not subscribers:
                del self._subscribers[project_id]
        session.subscriptions.pop(project_id, None)
        self._leave_presence(session, project_id)

    def is_watched(self, project_id: uuid.UUID) -> bool:
        return bool(self._subscribers.get(project_id))

    # --- fan-out -------------------------------------------------------------------

    def publish(self, project_id: uuid.UUID, records: Sequence[EventRecord]) -> None:
        """Deliver a committed batch to the project's subscribers, in seq order."""
        subscribers = self._subscribers.get(project_id)
        self.events_published += len(records)
        if not subscribers:
            return
        for record in records:
            e = record.event
            text = frames.encode(
                frames.event(project_id, e.seq, e.kind, e.payload, record.actor_id, record.client_op_id)
            )
            for session, sub in list(subscribers.items()):
                session.deliver_to(sub, project_id, e.seq, text)
            self.frames_enqueued += len(subscribers)
            if e.kind == "member.removed" and e.subject_id is not None:
                for session in [s for s in subscribers if s.principal.user_id == e.subject_id]:
                    self.end_subscription(session, project_id, "removed")
            elif e.kind == "project.deleted":
                for session in list(subscribers):
                    self.end_subscription(session, project_id, "deleted")

    def end_subscription(self, session: "WsSession", project_id: uuid.UUID, reason: str) -> None:
        self.unsubscribe(session, project_id)
        session.send_control(frames.unsubscribed(project_id, reason))

    def push_notifications(self, notifications: Sequence[Notification]) -> None:
        """Committed notifications, to every socket of each recipient."""
        for n in notifications:
            self.notify_user(n.user_id, n.view())

    def notify_user(self, user_id: uuid.UUID, notification: dict[str, Any]) -> None:
        """Push a notification to every socket of the user."""
        text = frames.encode(frames.notification(notification))
        for session in list(self._by_user.get(user_id, ())):
            session.send_control_text(text)

    # --- presence ------------------------------------------------------------------

    def presence_of(self, project_id: uuid.UUID) -> list[dict[str, Any]]:
        local = [s.presence_entry(state) for s, state in self._presence.get(project_id, {}).items()]
        return local + self.remote.entries(project_id)

    def set_presence(self, session: "WsSession", project_id: uuid.UUID, state: dict[str, Any]) -> None:
        table = self._presence.setdefault(project_id, {})
        change = "updated" if session in table else "joined"
        table[session] = state
        self._broadcast_presence(project_id, change, session.presence_entry(state))
        if self.on_presence_change is not None:
            self.on_presence_change(project_id, change, session.presence_entry(state))

    def remote_presence(self, node: str, project_id: uuid.UUID, change: str, entry: dict[str, Any]) -> None:
        """A presence change of a socket on another node."""
        shown = self.remote.apply(node, project_id, change, entry, trio.current_time())
        if shown is not None:
            self._broadcast_presence(project_id, shown, entry)

    def refresh_presence(self) -> None:
        """Re-announce every local entry to the other nodes and drop remote ones that went stale."""
        for project_id, gone in self.remote.expire(trio.current_time()):
            self._broadcast_presence(project_id, "left", gone)
        if self.on_presence_change is None:
            return
        for project_id, table in self._presence.items():
            for session, state in table.items():
                self.on_presence_change(project_id, "refresh", session.presence_entry(state))

    def _leave_presence(self, session: "WsSession", project_id: uuid.UUID) -> None:
        table = self._presence.get(project_id)
        if table is None or session not in table:
            return
        state = table.pop(session)
        if not table:
            del self._presence[project_id]
        self._broadcast_presence(project_id, "left", session.presence_entry(state))
        if self.on_presence_change is not None:
            self.on_presence_change(project_id, "left", session.presence_entry(state))

    def _broadcast_presence(self, project_id: uuid.UUID, change: str, entry: dict[str, Any]) -> None:
        text = frames.encode(frames.presence(project_id, change, entry))
        for session in list(self._subscribers.get(project_id, ())):
            session.send_control_text(text)

    # --- ending sockets --------------------------------------------------------------

    def logins_ended(self, login_ids: Iterable[uuid.UUID]) -> None:
        """Auth sessions were revoked: close the sockets opened with them."""
        for login_id in login_ids:
            for session in list(self._by_login.get(login_id, ())):
                session.close(frames.CloseCode.UNAUTHENTICATED, "session ended")

    def user_ended(self, user_id: uuid.UUID) -> None:
        for session in list(self._by_user.get(user_id, ())):
            session.close(frames.CloseCode.UNAUTHENTICATED, "session ended")

    def shutdown(self) -> None:
        """Close every socket with the reconnect code (server going away)."""
        self.closing_event.set()
        for sessions in list(self._by_user.values()):
            for session in list(sessions):
                session.close(frames.CloseCode.GOING_AWAY, "server shutting down")

    def record_close(self, code: int) -> None:
        self.closes[code] = self.closes.get(code, 0) + 1

    def figures(self) -> dict[str, int]:
        return {
            "connections": self.connections,
            "subscriptions": sum(len(s) for s in self._subscribers.values()),
            "events_published": self.events_published,
            "frames_enqueued": self.frames_enqueued,
            "flushes": self.clock.ticks,
        }


def _discard(table: dict[uuid.UUID, set[Any]], key: uuid.UUID, item: Any) -> None:
    members = table.get(key)
    if members is not None:
        members.discard(item)
        if not members:
            del table[key]
