"""What a WebSocket session does with each client frame.

:class:`FrameDispatcher` runs in the connection's reader task. Subscribing
checks membership and answers with a snapshot or the missed events; ops are
handed to the project actor IN THE ORDER RECEIVED (so one client's ops apply
in its order) while their replies are awaited concurrently (so a client can
keep many ops in flight and the actor can batch them); presence goes to the
hub. Errors become ``error`` frames with stable codes; the socket stays open.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import trio

from collab.actors.hub import Hub
from collab.actors.project import Command, ProjectActor, Rejected, Reply
from collab.actors.registry import ActorRegistry
from collab.actors.ws_session import Subscription, WsSession
from collab.domain.model import ProjectRole, ProjectState
from collab.domain.permissions import Action, require
from collab.domain.views import project_payload, task_view
from collab.errors import Busy, CollabError, NotFound
from collab.protocol import frames as wire
from collab.protocol import server_frames as frames
from collab.storage import changelog
from collab.storage.database import Database

log = logging.getLogger(__name__)


class FrameDispatcher:
    def __init__(
        self, session: WsSession, hub: Hub, registry: ActorRegistry, db: Database, nursery: trio.Nursery, *,
        max_catchup_events: int, max_inflight_ops: int, ask_timeout_s: float,
    ) -> None:
        self.session = session
        self.hub = hub
        self.registry = registry
        self.db = db
        self.nursery = nursery
        self.max_catchup_events = max_catchup_events
        self.ask_timeout_s = ask_timeout_s
        self.inflight = trio.CapacityLimiter(max_inflight_ops)

    async def handle(self, frame: Any) -> None:
        try:
            if isinstance(frame, wire.OpFrame):
                await self.op(frame)
            elif isinstance(frame, wire.SubscribeFrame):
                await self.subscribe(frame)
            elif isinstance(frame, wire.UnsubscribeFrame):
                self.unsubscribe(frame)
            elif isinstance(frame, wire.PresenceFrame):
                self.presence(frame)
            elif isinstance(frame, wire.PingFrame):
                self.session.send_control(frames.pong(frame.id))
            elif isinstance(frame, wire.AuthFrame):
                self.session.send_control(frames.error(None, "invalid", "Already authenticated", False))
        except CollabError as error:
            self.session.send_control(
                frames.error(getattr(frame, "id", None), error.code, error.detail, error.retryable)
            )

    # --- subscriptions ---------------------------------------------------------------

    async def subscribe(self, frame: wire.SubscribeFrame) -> None:
        project_id = frame.project_id
        actor = await self.registry.read(project_id)
        state = actor.state
        if state is None or state.deleted:
            raise NotFound("No such project")
        require(self.session.principal, state.members.get(self.session.principal.user_id), Action.READ)
        # From here to queuing the answer nothing awaits, except the catch-up
        # read, during which live events are held back (Subscription.pending).
        self.hub.unsubscribe(self.session, project_id)
        seq = state.seq
        since = frame.since
        catch_up = since is not None and since <= seq and seq - since <= self.max_catchup_events
        self.session.subscriptions[project_id] = Subscription(last_seq=seq, pending=[] if catch_up else None)
        self.hub.subscribe(self.session, project_id)
        if since is None or not catch_up:
            self.session.send_control(frames.subscribed(
                frame.id, project_id, seq, snapshot=_snapshot(actor, state), reset=since is not None,
                presence=self.hub.presence_of(project_id),
            ))
            return
        try:
            events = await self.db.run(changelog.events_since, project_id, since, seq - since, transaction=False)
        except CollabError:
            self.hub.unsubscribe(self.session, project_id)
            raise
        if project_id not in self.session.subscriptions:
            return  # ended meanwhile (removed, resync, unsubscribe)
        self.session.send_control(frames.subscribed(
            frame.id, project_id, seq, events=[_wire_event(project_id, e) for e in events],
            presence=self.hub.presence_of(project_id),
        ))
        self.session.finish_catch_up(project_id, seq)

    def unsubscribe(self, frame: wire.UnsubscribeFrame) -> None:
        self.hub.unsubscribe(self.session, frame.project_id)
        self.session.send_control(frames.unsubscribed(frame.project_id, "requested", frame.id))

    def presence(self, frame: wire.PresenceFrame) -> None:
        if frame.project_id not in self.session.subscriptions:
            raise NotFound("Subscribe to the project before sending presence")
        state = {k: (str(v) if v else None) for k, v in frame.state.model_dump().items()}
        self.hub.set_presence(self.session, frame.project_id, state)

    # --- ops -------------------------------------------------------------------------------

    async def op(self, frame: wire.OpFrame) -> None:
        if self.inflight.available_tokens == 0:
            raise Busy("Too many ops in flight on this connection; wait for acks")
        reply_send, reply_recv = trio.open_memory_channel[Reply](1)
        command = Command(wire.to_domain_op(frame.op), self.session.principal, reply_send, client_op_id=frame.id)
        self.inflight.acquire_on_behalf_of_nowait(command)
        try:
            with trio.move_on_after(self.ask_timeout_s) as deadline:
                await self.registry.submit(frame.project_id, command)
            if deadline.cancelled_caught:
                raise Busy("The project is busy; resend the op (same id)")
        except BaseException:
            self.inflight.release_on_behalf_of(command)
            raise
        self.nursery.start_soon(self._await_reply, frame, command, reply_recv)

    async def _await_reply(
        self, frame: wire.OpFrame, command: Command, reply_recv: trio.MemoryReceiveChannel[Reply],
    ) -> None:
        try:
            with trio.move_on_after(self.ask_timeout_s) as deadline:
                reply = await reply_recv.receive()
            if deadline.cancelled_caught:
                self.session.send_control(
                    frames.error(frame.id, "busy", "No answer in time; resend the op (same id)", True)
                )
                return
            if isinstance(reply, Rejected):
                e = reply.error
                self.session.send_control(frames.error(frame.id, e.code, e.detail, e.retryable))
                return
            self.session.send_control(frames.ack(frame.id, reply.seq, reply.result, duplicate=reply.replayed))
        finally:
            self.inflight.release_on_behalf_of(command)


def _wire_event(project_id: uuid.UUID, event: dict[str, Any]) -> dict[str, Any]:
    """A change-log row in the same shape as a live ``event`` frame."""
    return {
        "type": "event", "project_id": str(project_id), "seq": event["seq"], "kind": event["kind"],
        "data": event["data"], "actor_id": event["actor_id"], "client_op_id": event["client_op_id"],
    }


def _snapshot(actor: ProjectActor, state: ProjectState) -> dict[str, Any]:
    """The project (the actor's ``state``) as the client needs it to draw a board, at the current seq."""
    rank = {ProjectRole.OWNER: 0, ProjectRole.MANAGER: 1, ProjectRole.MEMBER: 2, ProjectRole.VIEWER: 3}

    def name_of(user_id: uuid.UUID) -> str | None:
        member = state.members.get(user_id)
        return member.username if member else actor.name_of(user_id)

    tasks = sorted(state.tasks.values(), key=lambda t: (t.status.value, t.position, str(t.id)))
    return {
        "project": project_payload(state.project) | {"seq": state.seq},
        "members": [m.view() for m in sorted(state.members.values(), key=lambda m: (rank[m.role], m.username))],
        "tasks": [task_view(t, state.project.name, name_of) for t in tasks],
    }
