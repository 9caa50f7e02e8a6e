"""Presence of sockets connected to other nodes, as this node knows it.

Each node publishes its own presence changes on the cluster bus and, every
``refresh_s``, a ``refresh`` of every entry it holds; entries not refreshed
for ``expire_s`` belong to a node that died or was cut off and are dropped
(reported as ``left``). A ``refresh`` of a known, unchanged entry is silent;
of an unknown one it counts as ``joined`` (a node that started late learns
who is already there).
"""

from __future__ import annotations

import uuid
from typing import Any

Key = tuple[str, str]  # (node id, connection id)


class RemotePresence:
    def __init__(self, expire_s: float = 30.0) -> None:
        self.expire_s = expire_s
        self._entries: dict[uuid.UUID, dict[Key, tuple[dict[str, Any], float]]] = {}

    def apply(self, node: str, project_id: uuid.UUID, change: str, entry: dict[str, Any], now: float) -> str | None:
        """Record a remote change; the change to show local subscribers, or None (nothing new)."""
        key = (node, str(entry.get("connection_id")))
        table = self._entries.setdefault(project_id, {})
        known = table.get(key)
        if change == "left":
            table.pop(key, None)
            if not table:
                del self._entries[project_id]
            return "left" if known is not None else None
        table[key] = (entry, now)
        if known is None:
            return "joined"
        if change == "refresh" and known[0] == entry:
            return None
        return "updated"

    def entries(self, project_id: uuid.UUID) -> list[dict[str, Any]]:
        return [entry for entry, _ in self._entries.get(project_id, {}).values()]

    def expire(self, now: float) -> list[tuple[uuid.UUID, dict[str, Any]]]:
        """Drop entries not refreshed in time; (project, entry) for each, to report as left."""
        gone = []
        for project_id, table in list(self._entries.items()):
            for key, (entry, seen) in list(table.items()):
                if now - seen > self.expire_s:
                    del table[key]
                    gone.append((project_id, entry))
            if not table:
                del self._entries[project_id]
        return gone
