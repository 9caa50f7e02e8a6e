"""The cluster bus: what nodes tell each other over Redis pub/sub.

- **Events.** After each commit the owner of a project publishes the batch
  (events with the records they leave, see :mod:`collab.bus.codec`) on one
  channel; every node hands it to its follower of that project, if it has one.
  A message starts with ``E`` and the project id (16 bytes), so a node skips
  projects it does not follow without decoding them.
- **Commands.** A node that gets a command for a project owned elsewhere
  sends it to the owner's own channel (:meth:`call`) and waits for the reply
  on its own; the owner runs it like a local command (:attr:`on_commands`).
- **Presence and notifications** are published by the node where they happen
  and delivered by every other node to its own sockets.

Publishing never waits: messages go on one bounded queue (so per-project
order is kept) that a publisher task drains; when Redis is down they are
dropped, and followers catch up from the change log when the subscription
comes back (:attr:`on_resubscribed`), because pub/sub does not replay.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from typing import Any, Awaitable, Callable, Sequence

import trio

from collab.bus import codec
from collab.bus.redis_link import RedisLink, stay_subscribed
from collab.storage.projects import EventRecord

log = logging.getLogger(__name__)

EVENTS = "collab:cluster:events"
PRESENCE = "collab:cluster:presence"
NOTIFY = "collab:cluster:notify"
PUBLISH_RETRIES = 3  # attempts after a failed publish while Redis seemed up (0.1, 0.2, 0.4 s apart)


def node_channel(node_id: str) -> str:
    return f"collab:cluster:node:{node_id}"


OnEvents = Callable[[uuid.UUID, list[EventRecord]], None]
OnCommands = Callable[[uuid.UUID, list[dict[str, Any]], float], Awaitable[list[dict[str, Any]]]]


class ClusterBus:
    def __init__(self, link: RedisLink, node_id: str, *, queue_size: int = 10_000, poll_s: float = 1.0,
                 max_backoff_s: float = 5.0) -> None:
        self._link = link
        self.node_id = node_id
        self._out_send, self._out_recv = trio.open_memory_channel[tuple[str, bytes]](queue_size)
        self._calls: dict[str, trio.MemorySendChannel[list[dict[str, Any]]]] = {}
        self._poll_s = poll_s
        self._max_backoff_s = max_backoff_s
        self._nursery: trio.Nursery | None = None
        self.wants_project: Callable[[uuid.UUID], bool] = lambda project_id: False
        self.on_events: OnEvents = lambda project_id, records: None
        self.on_commands: OnCommands | None = None
        self.on_presence: Callable[[str, uuid.UUID, str, dict[str, Any]], None] = lambda *a: None
        self.on_notifications: Callable[[list[Any]], None] = lambda notes: None
        self.on_resubscribed: Callable[[], None] = lambda: None
        self.subscribed = False
        self.published = 0
        self.dropped = 0
        self.received = 0

    # --- sending (never blocks) ---------------------------------------------------------

    def _enqueue(self, channel: str, message: bytes) -> bool:
        try:
            self._out_send.send_nowait((channel, message))
            return True
        except trio.WouldBlock:
            self.dropped += 1
            return False

    def publish_events(self, project_id: uuid.UUID, records: Sequence[EventRecord]) -> None:
        body = codec.dumps({"records": [[r.event, r.actor_id, r.client_op_id] for r in records]})
        self._enqueue(EVENTS, b"E" + project_id.bytes + body)

    def publish_presence(self, project_id: uuid.UUID, change: str, entry: dict[str, Any]) -> None:
        self._enqueue(PRESENCE, b"J" + codec.dumps({"node": self.node_id, "p": project_id, "change": change,
                                                      "entry": entry}))

    def publish_notifications(self, notifications: Sequence[Any]) -> None:
        self._enqueue(NOTIFY, b"J" + codec.dumps({"node": self.node_id, "notes": list(notifications)}))

    async def call(self, node_id: str, project_id: uuid.UUID, commands: list[dict[str, Any]],
                   timeout_s: float) -> list[dict[str, Any]] | None:
        """Send commands to their project's owner; its replies, or None if none came in time."""
        rid = secrets.token_hex(8)
        send, recv = trio.open_memory_channel[list[dict[str, Any]]](1)
        self._calls[rid] = send
        try:
            message = codec.dumps({"t": "cmds", "rid": rid, "from": self.node_id, "p": project_id,
                                   "cmds": commands, "timeout_s": timeout_s})
            if not self._enqueue(node_channel(node_id), b"J" + message):
                return None
            with trio.move_on_after(timeout_s):
                return await recv.receive()
            return None
        finally:
            del self._calls[rid]

    # --- running ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._publish_loop)
            await nursery.start(self._subscribe_loop)
            task_status.started()

    async def _publish_loop(self) -> None:
        failing = False
        async for channel, message in self._out_recv:
            error = await self._publish_with_retries(channel, message, retries=0 if failing else PUBLISH_RETRIES)
            if error is None:
                self.published += 1
                if failing:
                    failing = False
                    log.info("cluster bus: publishing to Redis again")
                continue
            self.dropped += 1  # Redis down: followers catch up from the log when they resubscribe
            if not failing:
                failing = True
                log.warning("cluster bus: cannot publish to Redis (%s); messages are dropped until it is back",
                            type(error).__name__)

    async def _publish_with_retries(self, channel: str, message: bytes, retries: int) -> Exception | None:
        """Publish; on failure try again (after a Redis restart the first attempt often meets a
        dead pooled connection, and a follower whose subscription survived would not notice a
        dropped event until the project's next one). The last error, or None once published."""
        error: Exception | None = None
        for attempt in range(retries + 1):
            if attempt:
                await trio.sleep(0.05 * 2 ** attempt)
            try:
                with trio.fail_after(2):
                    await self._link.publish(channel, message)
                return None
            except Exception as exc:  # noqa: BLE001 - any Redis or network error
                error = exc
        return error

    async def _subscribe_loop(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await stay_subscribed(
            self._link, (EVENTS, PRESENCE, NOTIFY, node_channel(self.node_id)), self._handle, name="cluster bus",
            set_subscribed=self._set_subscribed, on_resubscribed=lambda: self.on_resubscribed(),
            resubscribed_note="catching up from the change log", poll_s=self._poll_s, first_backoff_s=0.2,
            max_backoff_s=self._max_backoff_s, task_status=task_status,
        )

    def _set_subscribed(self, subscribed: bool) -> None:
        self.subscribed = subscribed

    # --- receiving ----------------------------------------------------------------------

    def _handle(self, data: bytes) -> None:
        self.received += 1
        try:
            if data[:1] == b"E":
                project_id = uuid.UUID(bytes=data[1:17])
                if self.wants_project(project_id):
                    raw = codec.loads(data[17:])
                    records = [EventRecord(event, actor_id, op_id) for event, actor_id, op_id in raw["records"]]
                    self.on_events(project_id, records)
                return
            if data[:1] != b"J":
                raise codec.CodecError("unknown message type")
            message = codec.loads(data[1:])
            kind = message.get("t")
            if kind == "replies":
                waiter = self._calls.get(message["rid"])
                if waiter is not None:
                    waiter.send_nowait(message["replies"])
            elif kind == "cmds":
                if self._nursery is not None and self.on_commands is not None:
                    self._nursery.start_soon(self._answer, message)
            elif message.get("node") == self.node_id:
                return  # our own presence or notifications
            elif "change" in message:
                self.on_presence(message["node"], message["p"], message["change"], message["entry"])
            elif "notes" in message:
                self.on_notifications(message["notes"])
        except (codec.CodecError, KeyError, TypeError, ValueError, trio.WouldBlock) as exc:
            log.warning("cluster bus: ignored a malformed message (%s)", exc)

    async def _answer(self, message: dict[str, Any]) -> None:
        assert self.on_commands is not None
        replies = await self.on_commands(message["p"], message["cmds"], float(message["timeout_s"]))
        self._enqueue(node_channel(message["from"]), b"J" + codec.dumps({"t": "replies", "rid": message["rid"],
                                                                            "replies": replies}))
