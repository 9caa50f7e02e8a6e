"""Client op ids a project has already applied: WebSocket exactly-once.

Every WebSocket op carries a client op id; the change log stores it with the
(last) event the op produced, unique per (project, user, id). :class:`OpIds`
remembers the ids of a window of recent events, loaded with the actor, so a
resent op is answered with its original seq instead of being applied again,
also after a reconnect or a server restart. Ids older than the window are
looked up in PostgreSQL, one query per batch, and only in projects whose
history is longer than the window.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict

from collab.storage import changelog
from collab.storage.database import Database

OpKey = tuple[uuid.UUID, str]  # (user id, client op id)


class OpIds:
    def __init__(self, window: int) -> None:
        self._window = window
        self._seen: OrderedDict[OpKey, changelog.AppliedOp] = OrderedDict()
        self._complete = True  # every op id of the project is in memory

    async def load(self, db: Database, project_id: uuid.UUID) -> None:
        applied, complete = await db.run(changelog.recent_op_ids, project_id, self._window, transaction=False)
        self._seen.clear()
        for op in applied:
            self._seen[(op.actor_id, op.client_op_id)] = op
        self._complete = complete

    def get(self, key: OpKey) -> changelog.AppliedOp | None:
        return self._seen.get(key)

    async def look_up(self, db: Database, project_id: uuid.UUID, keys: list[OpKey]) -> None:
        """Fetch older ids from PostgreSQL when memory cannot vouch for them."""
        unknown = [k for k in keys if k not in self._seen]
        if self._complete or not unknown:
            return
        for op in await db.run(changelog.find_op_ids, project_id, unknown, transaction=False):
            self._seen[(op.actor_id, op.client_op_id)] = op

    def add(self, op: changelog.AppliedOp) -> None:
        self._seen[(op.actor_id, op.client_op_id)] = op
        while len(self._seen) > self._window:
            self._seen.popitem(last=False)
            self._complete = False
