"""Session revocations between nodes, over one Redis pub/sub channel.

Every node caches live sessions for ``COLLAB_AUTH_CACHE_TTL_S``
(:class:`collab.auth.principals.PrincipalCache`). A revocation in one node
(logout, session revoke, refresh-token reuse, password change, role change,
deactivation) clears that node's cache in the same step; this module tells
the other nodes, which drop the entry and close the WebSockets opened with it.

- **Publishing never waits for Redis.** :meth:`RevocationBus.announce` is
  synchronous: it puts the message on a bounded queue (``queue_size``) that a
  publisher task drains. When the queue is full or Redis is down, messages
  are dropped (logged once per outage): the cache TTL still bounds how long
  another node may serve a revoked session.
- **Subscribing survives outages.** The subscriber task reconnects with a
  backoff (up to ``max_backoff_s``). Because messages published while it was
  disconnected are lost, it clears the whole local cache each time it
  (re)subscribes after a failure: the next request of every session is then
  checked against PostgreSQL.
- Messages carry the sending node's id; a node ignores its own.

Both tasks run in the service nursery (:func:`collab.server.open_services`)
and stop when it is cancelled.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from typing import Callable

import orjson
import trio

from collab.bus.redis_link import RedisLink, stay_subscribed

log = logging.getLogger(__name__)

CHANNEL = "collab:auth:revocations"
KINDS = frozenset({"session", "user", "user_deactivated"})

#: Applies a remote revocation: (kind, id). ``kind`` "session": a login ended;
#: "user": cached principals of the user are stale (roles, password);
#: "user_deactivated": the user can no longer sign in at all.
Apply = Callable[[str, uuid.UUID], None]


class RevocationBus:
    def __init__(self, link: RedisLink, apply: Apply, clear_all: Callable[[], None], *, queue_size: int = 1024,
                 max_backoff_s: float = 10.0, poll_s: float = 1.0) -> None:
        self.node_id = secrets.token_hex(8)
        self._link = link
        self._apply = apply
        self._clear_all = clear_all
        self._send, self._recv = trio.open_memory_channel[bytes](queue_size)
        self._max_backoff_s = max_backoff_s
        self._poll_s = poll_s
        self._publish_failing = False
        self.subscribed = False
        self.received = 0
        self.dropped = 0

    def announce(self, kind: str, ident: uuid.UUID) -> None:
        """Queue a revocation for the other nodes; never blocks (dropped when the queue is full)."""
        message = orjson.dumps({"node": self.node_id, "kind": kind, "id": str(ident)})
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            self.dropped += 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Publish and subscribe until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._publish_loop)
            await nursery.start(self._subscribe_loop)
            task_status.started()

    async def _publish_loop(self) -> None:
        async for message in self._recv:
            try:
                with trio.fail_after(2):
                    await self._link.publish(CHANNEL, message)
            except Exception as exc:  # noqa: BLE001 - Redis down: the cache TTL bounds staleness
                self.dropped += 1
                if not self._publish_failing:
                    self._publish_failing = True
                    log.warning("revocations: cannot publish to Redis (%s); other nodes rely on the cache TTL",
                                type(exc).__name__)
            else:
                if self._publish_failing:
                    self._publish_failing = False
                    log.info("revocations: publishing to Redis again")

    async def _subscribe_loop(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # Started even without Redis: the cache TTL bounds staleness meanwhile.
        await stay_subscribed(
            self._link, (CHANNEL,), self._handle, name="revocations", set_subscribed=self._set_subscribed,
            on_resubscribed=self._clear_all,  # messages sent while we were away are lost
            resubscribed_note="cleared the session cache", poll_s=self._poll_s, first_backoff_s=0.5,
            max_backoff_s=self._max_backoff_s, task_status=task_status,
        )

    def _set_subscribed(self, subscribed: bool) -> None:
        self.subscribed = subscribed

    def _handle(self, data: bytes) -> None:
        try:
            doc = orjson.loads(data)
            if doc.get("node") == self.node_id:
                return
            kind = doc["kind"]
            ident = uuid.UUID(doc["id"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            log.warning("revocations: ignored a malformed message")
            return
        if kind not in KINDS:
            log.warning("revocations: ignored an unknown kind")
            return
        self.received += 1
        self._apply(kind, ident)
