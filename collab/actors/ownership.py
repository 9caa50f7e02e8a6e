"""This node's membership of the cluster and the projects it owns.

One writer per project across the cluster: a node hosts a project's actor
only after :meth:`Ownership.acquire` made it the owner in PostgreSQL (at a new
epoch that fences its commits). A node stays alive by renewing its lease
every ``ttl_s / 3`` (:meth:`run`); if it stops renewing (killed, paused, cut
off from PostgreSQL) its projects can be taken by another node once the lease
expires, which bounds the takeover time by ``ttl_s`` plus the renewal period.

``standalone`` (one node, no Redis to forward over): acquiring always
succeeds, so a restarted process takes its projects back at once; the epoch
still fences a previous process that might linger.
"""

from __future__ import annotations

import logging
import secrets
import socket
import uuid

import trio

from collab.errors import CollabError
from collab.storage import cluster as store
from collab.storage.database import Database

log = logging.getLogger(__name__)


class OwnedElsewhere(Exception):
    """Another live node owns the project: forward commands to it."""

    def __init__(self, project_id: uuid.UUID, owner: str | None) -> None:
        super().__init__(f"project {project_id} is owned by {owner}")
        self.owner = owner


class Ownership:
    def __init__(self, db: Database, *, ttl_s: float = 5.0, standalone: bool = True) -> None:
        self._db = db
        self.ttl_s = ttl_s
        self.standalone = standalone
        self.node_id = f"{socket.gethostname()[:40]}-{secrets.token_hex(4)}"
        self.renewals = 0
        self.renewal_failures = 0

    async def acquire(self, project_id: uuid.UUID) -> int | None:
        return await self._db.run(store.acquire, project_id, self.node_id, steal=self.standalone)

    async def release(self, project_id: uuid.UUID, epoch: int) -> None:
        await self._db.run(store.release, project_id, self.node_id, epoch)

    async def owner_of(self, project_id: uuid.UUID) -> tuple[bool, str | None]:
        return await self._db.run(store.owner_of, project_id, transaction=False)

    async def join(self) -> None:
        await self._db.run(store.heartbeat, self.node_id, self.ttl_s)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Renew the lease until cancelled; leave the cluster (handing projects back) on the way out."""
        await self.join()
        task_status.started()
        try:
            while True:
                await trio.sleep(self.ttl_s / 3)
                try:
                    with trio.fail_after(self.ttl_s / 2):
                        await self._db.run(store.heartbeat, self.node_id, self.ttl_s)
                    self.renewals += 1
                except (CollabError, trio.TooSlowError) as exc:
                    self.renewal_failures += 1
                    log.warning("node lease renewal failed: %s", exc)
        finally:
            with trio.move_on_after(3) as scope:
                scope.shield = True
                try:
                    await self._db.run(store.leave, self.node_id)
                except CollabError as exc:
                    log.warning("could not leave the cluster cleanly: %s", exc)
