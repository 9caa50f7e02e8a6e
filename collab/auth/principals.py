"""A bounded cache of live sessions, so authenticating a request costs no query.

Maps a session id to the :class:`Principal` behind it for at most ``ttl_s``
seconds, holding at most ``max_entries`` (least recently used evicted).
Every revocation in this process (logout, session revoke, refresh-token reuse,
password change, deactivation, role change) calls :meth:`forget_session` or
:meth:`forget_user` in the same step that commits it, so the very next request
with an old token misses the cache and is refused by the database.

Other nodes' revocations reach this cache over Redis when it is configured
(:mod:`collab.bus.revocations`); while Redis is unreachable, or without it,
the TTL bounds how long another process could serve a revoked session, and
after an outage the whole cache is cleared. ``ttl_s = 0`` disables caching.

Owned by the single :class:`collab.auth.service.AuthService` of a process;
used only from the trio thread, so it needs no lock.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from typing import Callable

from collab.domain.users import Principal


class PrincipalCache:
    def __init__(self, *, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[uuid.UUID, tuple[Principal, float]] = OrderedDict()
        self._by_user: dict[uuid.UUID, set[uuid.UUID]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, session_id: uuid.UUID) -> Principal | None:
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        principal, expires = entry
        if self._clock() >= expires:
            self.forget_session(session_id)
            return None
        self._entries.move_to_end(session_id)
        return principal

    def put(self, principal: Principal) -> None:
        if self._ttl_s <= 0 or self._max_entries <= 0:
            return
        sid = principal.session_id
        self._entries[sid] = (principal, self._clock() + self._ttl_s)
        self._entries.move_to_end(sid)
        self._by_user.setdefault(principal.user_id, set()).add(sid)
        while len(self._entries) > self._max_entries:
            oldest, _ = next(iter(self._entries.items()))
            self.forget_session(oldest)

    def forget_session(self, session_id: uuid.UUID) -> None:
        entry = self._entries.pop(session_id, None)
        if entry is not None:
            sids = self._by_user.get(entry[0].user_id)
            if sids is not None:
                sids.discard(session_id)
                if not sids:
                    del self._by_user[entry[0].user_id]

    def clear(self) -> None:
        self._entries.clear()
        self._by_user.clear()

    def forget_user(self, user_id: uuid.UUID) -> None:
        for sid in list(self._by_user.get(user_id, ())):
            self.forget_session(sid)
