"""ProjectReplica: a client's copy of one project, kept by applying events in seq order.

Pure: no trio, no I/O. The realtime client owns one replica per subscribed
project and is the only code that changes it; applications read it (the
dicts are the server's JSON, keyed by id strings) and must not write it.

Guarantee: ``seq`` is the last event applied, and the replica equals the
server's project as of that seq, provided events are applied through
:meth:`apply` and every gap it reports is filled (the client resubscribes with
``since=seq``). :meth:`apply` never applies an event out of order: an old
event is ignored (``STALE``, at-least-once delivery makes duplicates normal),
a later one is refused (``GAP``).

Tasks loaded from a snapshot carry the display fields of a task view
(``project_name``, ``assignee_name``, ``created_by_name``); events carry the
task record only, so after them those fields may be missing or stale. The
record fields (everything a REST task has besides those three) are exact.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Applied(enum.Enum):
    APPLIED = "applied"            # seq was replica.seq + 1; the replica moved on
    STALE = "stale"                # seq <= replica.seq: already applied, ignored
    GAP = "gap"                    # seq > replica.seq + 1: events are missing; resubscribe with since
    INCONSISTENT = "inconsistent"  # it names a task we do not have: reload a snapshot


@dataclass
class ProjectReplica:
    project_id: str
    seq: int = 0
    project: dict[str, Any] = field(default_factory=dict)
    members: dict[str, dict[str, Any]] = field(default_factory=dict)  # by user_id
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)    # by task id
    presence: dict[str, dict[str, Any]] = field(default_factory=dict)  # by connection_id
    deleted: bool = False
    #: False once the subscription ended for good (removed, deleted, unsubscribed).
    active: bool = True
    ended_reason: str | None = None
    #: How many events were applied and how many full snapshots were loaded.
    events_applied: int = 0
    snapshots_loaded: int = 0

    # --- loading ----------------------------------------------------------------------

    def load_snapshot(self, snapshot: dict[str, Any], seq: int) -> None:
        """Replace everything with a ``subscribed.snapshot`` taken at ``seq``."""
        self.project = dict(snapshot.get("project") or {})
        self.members = {m["user_id"]: dict(m) for m in snapshot.get("members", ())}
        self.tasks = {t["id"]: dict(t) for t in snapshot.get("tasks", ())}
        self.seq = seq
        self.deleted = False
        self.snapshots_loaded += 1

    def load_presence(self, entries: list[dict[str, Any]]) -> None:
        self.presence = {e["connection_id"]: dict(e) for e in entries}

    # --- events -----------------------------------------------------------------------

    def check(self, seq: int) -> Applied:
        """Where an event with this seq stands, without applying it."""
        if seq <= self.seq:
            return Applied.STALE
        if seq > self.seq + 1:
            return Applied.GAP
        return Applied.APPLIED

    def apply(self, event: dict[str, Any]) -> Applied:
        """Apply one ``event`` frame (or change-log row) if it is the next one."""
        seq = int(event["seq"])
        verdict = self.check(seq)
        if verdict is not Applied.APPLIED:
            return verdict
        if not self._apply(event["kind"], event.get("data") or {}):
            return Applied.INCONSISTENT
        self.seq = seq
        self.events_applied += 1
        if self.project:
            self.project["seq"] = seq
        return Applied.APPLIED

    def _apply(self, kind: str, data: dict[str, Any]) -> bool:
        if kind == "task.created":
            task = data["task"]
            self.tasks[task["id"]] = dict(task)
        elif kind == "task.updated":
            task = self.tasks.get(data["task_id"])
            if task is None:
                return False
            task.update(data.get("changes") or {})
        elif kind == "task.deleted":
            self.tasks.pop(data["task_id"], None)
        elif kind in ("member.added", "member.updated"):
            member = data["member"]
            self.members[member["user_id"]] = dict(member)
        elif kind == "member.removed":
            self.members.pop(data["user_id"], None)
        elif kind == "project.created":
            self.project = dict(data.get("project") or {})
            member = data.get("member")
            if member:
                self.members[member["user_id"]] = dict(member)
        elif kind == "project.updated":
            self.project.update(data.get("changes") or {})
        elif kind == "project.deleted":
            self.deleted = True
        # Unknown kinds still advance seq: newer servers may add kinds (forward compatible).
        return True

    # --- presence and lifecycle ----------------------------------------------------------

    def apply_presence(self, change: str, entry: dict[str, Any]) -> None:
        """``change`` is joined, updated or left."""
        if change == "left":
            self.presence.pop(entry["connection_id"], None)
        else:
            self.presence[entry["connection_id"]] = dict(entry)

    def end(self, reason: str) -> None:
        self.active = False
        self.ended_reason = reason
        self.presence.clear()

    # --- reading -------------------------------------------------------------------------

    def column(self, status: str) -> list[dict[str, Any]]:
        """The tasks with this status in board order (position, then id)."""
        return sorted((t for t in self.tasks.values() if t.get("status") == status),
                      key=lambda t: (t.get("position") or "", t["id"]))
