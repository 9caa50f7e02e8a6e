"""Client op ids a project has already applied: WebSocket exactly-once.

Every WebSocket op carries a client op id; the change log stores it with the
(last) event the op produced, unique per (project, user, id) in PostgreSQL.
:class:`OpIds` remembers the ids of a window of recent events, loaded with
the actor, so the common resend (after a reconnect, a lost ack) is answered
with its original seq at no cost.

An id older than the window is not looked up before applying (that would
cost a query per batch once a project's history outgrows the window): the
op is applied as new, and if it was in fact applied long ago, the commit
hits the unique constraint (:class:`DuplicateOpId`). The actor then looks
the batch's ids up (:meth:`OpIds.fetch`) and runs the batch again, so the
resend is answered as already applied. An old resend the rules refuse (a
create whose task now exists) is looked up before its refusal is sent.
Exactly-once holds either way; the window only decides which resends are
cheap, and it bounds the memory each active project keeps for them.
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
        self._complete = True  # every op id of the project is in memory (its history fits the window)

    @property
    def complete(self) -> bool:
        """True while the window holds every op id the project ever applied."""
        return self._complete

    def __len__(self) -> int:
        return len(self._seen)

    async def load(self, db: Database, project_id: uuid.UUID) -> None:
        applied, self._complete = await db.run(changelog.recent_op_ids, project_id, self._window, transaction=False)
        self._seen.clear()
        for op in applied:
            self._seen[(op.actor_id, op.client_op_id)] = op

    def get(self, key: OpKey) -> changelog.AppliedOp | None:
        return self._seen.get(key)

    async def fetch(self, db: Database, project_id: uuid.UUID, keys: list[OpKey]) -> int:
        """Look ``keys`` up in the change log and remember the ones found (after a
        :class:`DuplicateOpId`); how many were found."""
        unknown = [k for k in keys if k not in self._seen]
        found = await db.run(changelog.find_op_ids, project_id, unknown, transaction=False) if unknown else []
        for op in found:
            self.add(op)
        return len(found)

    def add(self, op: changelog.AppliedOp) -> None:
        self._seen[(op.actor_id, op.client_op_id)] = op
        while len(self._seen) > self._window:
            self._seen.popitem(last=False)
            self._complete = False
