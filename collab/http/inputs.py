"""Reading client input at the edge: JSON bodies, query strings, path ids.

Bodies: the size cap (Settings.max_body_bytes) is enforced while reading
(413); a body that is not JSON is 400 ``malformed_json``; a non-JSON content
type is 415; a body of the wrong shape is 422 ``invalid`` with the offending
fields. Pydantic models for bodies forbid unknown fields, so a client cannot
set what it may not (mass assignment) and typos do not pass silently.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

import orjson
import pydantic
from quart import request

from collab.errors import FieldError, MalformedJSON, NotFound, UnsupportedMediaType, ValidationFailed

M = TypeVar("M", bound=pydantic.BaseModel)


class Body(pydantic.BaseModel):
    """Base of request bodies: unknown fields are refused, strings stripped."""

    model_config = pydantic.ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


def validation_failed(exc: pydantic.ValidationError, prefix: tuple[str | int, ...] = ()) -> ValidationFailed:
    problems = [
        FieldError(prefix + tuple(e["loc"]), e["msg"], e["type"])
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    return ValidationFailed(problems)


async def read_json() -> Any:
    """The request body parsed as JSON (size-capped by the app config)."""
    mimetype = request.mimetype
    if mimetype and mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType("Send the body as application/json")
    data = await request.get_data(cache=True)
    if not data:
        raise MalformedJSON("The request body is empty; send a JSON object")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise MalformedJSON() from None


def _nul_errors(value: Any, loc: tuple[str | int, ...] = ()) -> list[FieldError]:
    """NUL characters cannot be stored in PostgreSQL text: refuse them up front."""
    if isinstance(value, str):
        return [FieldError(loc, "Must not contain NUL characters", "nul_character")] if "\x00" in value else []
    if isinstance(value, dict):
        return [e for k, v in value.items() for e in _nul_errors(v, loc + (k,))]
    if isinstance(value, list):
        return [e for i, v in enumerate(value) for e in _nul_errors(v, loc + (i,))]
    return []


async def read_body(model: type[M]) -> M:
    """The JSON body validated against ``model``."""
    raw = await read_json()
    if not isinstance(raw, dict):
        raise ValidationFailed([FieldError((), "The body must be a JSON object", "object_type")])
    if problems := _nul_errors(raw):
        raise ValidationFailed(problems)
    try:
        return model.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise validation_failed(exc) from None


def read_query(model: type[M]) -> M:
    """Query-string parameters validated against ``model`` (repeated keys become lists)."""
    raw: dict[str, Any] = {}
    for key in request.args:
        values = request.args.getlist(key)
        field = model.model_fields.get(key)
        is_list = field is not None and getattr(field.annotation, "__origin__", None) in (list, tuple)
        raw[key] = values if is_list else values[-1]
    if problems := _nul_errors(raw, ("query",)):
        raise ValidationFailed(problems)
    try:
        return model.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise validation_failed(exc, ("query",)) from None


def path_uuid(value: str, what: str = "resource") -> uuid.UUID:
    """A UUID from the path; a malformed one is simply not found."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"No such {what}") from None
