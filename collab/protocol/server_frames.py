"""Frames the server sends (protocol v1), as JSON-ready dicts, and their encoding.

Every frame is a JSON object with a ``type``. Under load the server may send
several frames in one WebSocket message as a JSON array; clients accept
both. :func:`encode` produces the text of one frame; :func:`join` packs
already-encoded frames into one message without re-encoding them.
"""

from __future__ import annotations

import enum
import uuid
from typing import Any, Sequence

import orjson

from collab.protocol.frames import PROTOCOL_VERSION


class CloseCode(enum.IntEnum):
    """4000-4499: reconnect (with jitter) and resume. 4500-4999: do not reconnect."""

    GOING_AWAY = 4000        # server shutting down or restarting
    SLOW_CONSUMER = 4001     # fell behind repeatedly; reconnect and resume from your last seq
    IDLE_TIMEOUT = 4002      # nothing received for too long (send pings)
    RATE_LIMITED = 4003      # kept sending faster than allowed; back off before reconnecting
    BAD_PROTOCOL = 4500      # frames that cannot be understood, repeatedly
    UNAUTHENTICATED = 4501   # no/invalid token, auth deadline missed, or the session ended
    TOO_MANY_SOCKETS = 4503  # this user has too many open sockets
    MESSAGE_TOO_BIG = 1009   # a message over the frame size limit (standard code)


def encode(frame: dict[str, Any]) -> str:
    return orjson.dumps(frame).decode()


def join(encoded: Sequence[str]) -> str:
    """One message: a single frame as is, several as a JSON array."""
    if len(encoded) == 1:
        return encoded[0]
    return "[" + ",".join(encoded) + "]"


def welcome(user: dict[str, Any], session_id: uuid.UUID, limits: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "welcome", "protocol": PROTOCOL_VERSION, "user": user, "session_id": str(session_id), "limits": limits,
    }


def subscribed(
    request_id: str, project_id: uuid.UUID, seq: int, *, snapshot: dict[str, Any] | None = None,
    events: list[dict[str, Any]] | None = None, reset: bool = False, presence: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "subscribed", "id": request_id, "project_id": str(project_id), "seq": seq}
    if snapshot is not None:
        frame["snapshot"] = snapshot
        frame["reset"] = reset
    if events is not None:
        frame["events"] = events
    frame["presence"] = presence or []
    return frame


def event(project_id: uuid.UUID, seq: int, kind: str, data: dict[str, Any], actor_id: uuid.UUID | None,
          client_op_id: str | None) -> dict[str, Any]:
    return {
        "type": "event", "project_id": str(project_id), "seq": seq, "kind": kind, "data": data,
        "actor_id": str(actor_id) if actor_id else None, "client_op_id": client_op_id,
    }


def ack(request_id: str, seq: int, result: Any, *, duplicate: bool = False) -> dict[str, Any]:
    frame = {"type": "ack", "id": request_id, "seq": seq, "result": result}
    if duplicate:
        frame["duplicate"] = True
    return frame


def error(request_id: str | None, code: str, message: str, retryable: bool,
          errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "error", "id": request_id, "code": code, "message": message, "retryable": retryable,
    }
    if errors:
        frame["errors"] = errors
    return frame


def presence(project_id: uuid.UUID, change: str, entry: dict[str, Any]) -> dict[str, Any]:
    """``change`` is "joined", "left" or "updated"."""
    return {"type": "presence", "project_id": str(project_id), change: entry}


def unsubscribed(project_id: uuid.UUID, reason: str, request_id: str | None = None) -> dict[str, Any]:
    frame = {"type": "unsubscribed", "project_id": str(project_id), "reason": reason}
    if request_id is not None:
        frame["id"] = request_id
    return frame


def resync(project_id: uuid.UUID, since: int) -> dict[str, Any]:
    return {"type": "resync", "project_id": str(project_id), "since": since}


def pong(request_id: str | None) -> dict[str, Any]:
    return {"type": "pong", "id": request_id}


def notification(payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": "notification", "notification": payload}
