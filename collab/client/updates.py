"""What the realtime client hands to applications: acks and the update feed.

Pure: frozen dataclasses and the decoding of one WebSocket message (a frame
object, or a JSON array of frames) into frame dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import orjson


class MalformedMessage(ValueError):
    """A server message that is not a JSON object or array of objects."""


def decode_message(message: str | bytes) -> list[dict[str, Any]]:
    """One WebSocket message -> its frames, in order (a message may batch several)."""
    try:
        raw = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage("not JSON") from exc
    frames = raw if isinstance(raw, list) else [raw]
    if not all(isinstance(f, dict) and isinstance(f.get("type"), str) for f in frames):
        raise MalformedMessage("a frame is a JSON object with a 'type'")
    return frames


@dataclass(frozen=True, slots=True)
class Ack:
    """The server committed the op (``seq`` is its last event; unchanged for a no-op).

    ``duplicate`` is True when the op id had already been applied: ``seq`` is
    then the ORIGINAL seq and nothing was applied again.
    """

    op_id: str
    project_id: str
    seq: int
    result: Any
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class ProjectEvent:
    """A committed event, applied to the project's replica before it is handed out.

    ``catch_up`` is True for events that came in a ``subscribed {events}`` answer.
    """

    project_id: str
    seq: int
    kind: str
    data: dict[str, Any]
    actor_id: str | None
    client_op_id: str | None
    catch_up: bool = False


@dataclass(frozen=True, slots=True)
class SnapshotLoaded:
    """The replica was replaced by a snapshot (first subscribe, or ``reset``: the
    requested ``since`` could not be served, so redraw everything)."""

    project_id: str
    seq: int
    reset: bool


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    project_id: str
    change: str  # joined | updated | left
    user_id: str
    username: str
    connection_id: str
    state: dict[str, Any]  # {viewing, editing}: task ids or None


@dataclass(frozen=True, slots=True)
class NotificationReceived:
    notification: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SubscriptionEnded:
    """The server ended a subscription for good: removed, deleted, requested,
    forbidden or not_found (the last two when a resubscribe after reconnect is refused)."""

    project_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionChanged:
    """The socket went down (``connected=False``, with the close code when there
    was one) or a new one is authenticated and resubscribed (``connected=True``)."""

    connected: bool
    close_code: int | None = None
    reason: str | None = None


Update = Union[
    ProjectEvent, SnapshotLoaded, PresenceChanged, NotificationReceived, SubscriptionEnded, ConnectionChanged,
]


def presence_change(frame: dict[str, Any]) -> PresenceChanged | None:
    for change in ("joined", "updated", "left"):
        entry = frame.get(change)
        if isinstance(entry, dict):
            return PresenceChanged(
                frame["project_id"], change, entry.get("user_id", ""), entry.get("username", ""),
                entry.get("connection_id", ""), dict(entry.get("state") or {}),
            )
    return None


def project_event(frame: dict[str, Any], *, catch_up: bool = False) -> ProjectEvent:
    return ProjectEvent(
        frame["project_id"], int(frame["seq"]), frame["kind"], frame.get("data") or {},
        frame.get("actor_id"), frame.get("client_op_id"), catch_up,
    )
