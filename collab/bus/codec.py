"""A closed JSON codec for what crosses between nodes: ops, callers, records, replies, errors.

Values are tagged so that they decode to the very types they were
(``{"$u": ...}`` a UUID, ``{"$dt": ...}`` a datetime, ``{"$e": [class,
value]}`` an enum member, ``{"$c": class, ...fields}`` a dataclass, ``{"$x":
class, ...}`` a :class:`CollabError`). Only the classes listed here can be
built from a message: a message can never make a node construct anything
else (no pickle, no import by name).
"""

from __future__ import annotations

import dataclasses
import enum
import uuid
from datetime import date, datetime
from typing import Any

import orjson

from collab.actors.project import Accepted, Idempotency
from collab.domain import model, ops
from collab.domain.notifications import Notification
from collab.domain.users import Principal
from collab.errors import CollabError, FieldError, ValidationFailed

_DATACLASSES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        model.Project, model.Member, model.Task, model.Comment, model.Attachment, Principal, Idempotency,
        ops.ProjectUpdate, ops.ProjectDelete, ops.MemberAdd, ops.MemberUpdate, ops.MemberRemove, ops.TaskCreate,
        ops.TaskUpdate, ops.TaskMove, ops.TaskAddTags, ops.TaskRemoveTags, ops.TaskAssign, ops.TaskDelete,
        ops.CommentAdd, ops.CommentEdit, ops.CommentDelete, ops.AttachmentAdd, ops.AttachmentRemove, ops.Event,
        Notification,
    )
}
_ENUMS: dict[str, type[enum.Enum]] = {
    cls.__name__: cls for cls in (model.TaskStatus, model.Priority, model.ProjectStatus, model.ProjectRole)
}


def _errors() -> dict[str, type[CollabError]]:
    found: dict[str, type[CollabError]] = {}
    pending: list[type[CollabError]] = [CollabError]
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found


class CodecError(ValueError):
    """A message that is not one this codec writes."""


def encode_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):  # before str: our enums are str enums
        return {"$e": [type(value).__name__, value.value]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, uuid.UUID):
        return {"$u": str(value)}
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, date):
        return {"$d": value.isoformat()}
    if isinstance(value, tuple):
        return {"$t": [encode_value(v) for v in value]}
    if isinstance(value, list):
        return [encode_value(v) for v in value]
    if isinstance(value, dict):
        return {"$m": [[encode_value(k), encode_value(v)] for k, v in value.items()]}
    if isinstance(value, ValidationFailed):
        return {"$x": "ValidationFailed", "errors": [[list(e.loc), e.message, e.kind] for e in value.errors],
                "detail": value.detail}
    if isinstance(value, CollabError):
        return {"$x": type(value).__name__, "detail": value.detail}
    if dataclasses.is_dataclass(value) and type(value).__name__ in _DATACLASSES:
        out = {"$c": type(value).__name__}
        for f in dataclasses.fields(value):
            out[f.name] = encode_value(getattr(value, f.name))
        return out
    raise CodecError(f"cannot encode {type(value).__name__}")


def decode_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if not isinstance(value, dict):
        raise CodecError("unexpected value")
    try:
        if "$u" in value:
            return uuid.UUID(value["$u"])
        if "$dt" in value:
            return datetime.fromisoformat(value["$dt"])
        if "$d" in value:
            return date.fromisoformat(value["$d"])
        if "$t" in value:
            return tuple(decode_value(v) for v in value["$t"])
        if "$m" in value:
            return {decode_value(k): decode_value(v) for k, v in value["$m"]}
        if "$e" in value:
            name, raw = value["$e"]
            return _ENUMS[name](raw)
        if "$x" in value:
            cls = _errors()[value["$x"]]
            if cls is ValidationFailed:
                return ValidationFailed([FieldError(tuple(loc), msg, kind) for loc, msg, kind in value["errors"]],
                                        value.get("detail"))
            return cls(value.get("detail"))
        if "$c" in value:
            cls = _DATACLASSES[value["$c"]]
            return cls(**{k: decode_value(v) for k, v in value.items() if k != "$c"})
    except (KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"bad value: {exc}") from None
    raise CodecError("untagged object")


def dumps(message: dict[str, Any]) -> bytes:
    return orjson.dumps({k: encode_value(v) for k, v in message.items()})


def loads(data: bytes) -> dict[str, Any]:
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CodecError("not JSON") from exc
    if not isinstance(raw, dict):
        raise CodecError("not an object")
    return {k: decode_value(v) for k, v in raw.items()}


def encode_accepted(accepted: Accepted) -> dict[str, Any]:
    """An ack as a forwarder relays it (events travel on the event channel, not here)."""
    return {"seq": accepted.seq, "result": accepted.result, "replayed": accepted.replayed}
