"""The REST side of the write path: preconditions, idempotency, the actor ask.

- ``If-Match: "<version>"`` becomes the op's ``if_version``; a stale version
  answers 412 ``precondition_failed``. ``*`` means "any version".
- ``Idempotency-Key`` (1-255 visible characters): the first response of a
  write is stored in the same transaction as the change; a retry with the
  same key and the same request within 24 h gets that response again
  (``Idempotent-Replayed: true``) and changes nothing; the same key with a
  different request is 422 ``idempotency_key_reused``.
- Every write goes through the project's actor and returns after commit.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any, Callable

from quart import Response, request

from collab.actors.project import Idempotency
from collab.domain.ops import Op
from collab.domain.users import Principal
from collab.errors import IdempotencyKeyReused, PreconditionFailed, StaleVersion, ValidationFailed
from collab.http.context import current_principal, services
from collab.http.responses import json_response
from collab.storage import projects as store

_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_ETAG = re.compile(r'^(?:W/)?"?(\d{1,18})"?$')


def etag(version: int) -> str:
    return f'"{version}"'


def if_match_version() -> int | None:
    """The version named by If-Match, or None when absent or ``*``."""
    raw = request.headers.get("If-Match")
    if raw is None or raw.strip() == "*":
        return None
    match = _ETAG.match(raw.strip())
    if match is None:
        raise PreconditionFailed("If-Match must be an ETag this server sent, like \"12\"")
    return int(match[1])


def not_modified(version: int) -> bool:
    """True when If-None-Match names the current version (answer 304)."""
    raw = request.headers.get("If-None-Match")
    return raw is not None and any(
        (m := _ETAG.match(part.strip())) is not None and int(m[1]) == version for part in raw.split(",")
    )


async def idempotency_for(
    principal: Principal, success_status: int, request_digest: str | None = None,
) -> Idempotency | Response | None:
    """The key's stored response, or what to store with this write. ``request_digest``
    stands for the body when the handler streamed it (uploads): the same key with
    another file is then a different request."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _KEY.match(key):
        raise ValidationFailed.single("Idempotency-Key", "Must be 1 to 255 visible ASCII characters", "header")
    if request_digest is not None:
        body = request_digest.encode()
    else:
        body = await request.get_data(cache=True, as_text=False, parse_form_data=False)
    digest = hashlib.sha256(f"{request.method} {request.path}\n".encode() + body).hexdigest()
    stored = await services().db.run(store.find_idempotency, principal.user_id, key, transaction=False)
    if stored is None:
        return Idempotency(key, digest, success_status)
    if stored.request_hash != digest:
        raise IdempotencyKeyReused()
    return _replayed(stored.status, stored.response)


def _replayed(status: int, body: Any) -> Response:
    if status == 204:
        response = Response(b"", status=204)
    else:
        response = json_response(body, status)
    response.headers["Idempotent-Replayed"] = "true"
    return response


async def write(
    project_id: uuid.UUID, make_op: Callable[[Principal], Op], *, success_status: int = 200,
    location: Callable[[Any], str] | None = None, request_digest: str | None = None,
) -> Response:
    """Run one op through the project's actor and answer after commit."""
    principal = await current_principal()
    idempotency = await idempotency_for(principal, success_status, request_digest)
    if isinstance(idempotency, Response):
        return idempotency
    op = make_op(principal)
    try:
        accepted = await services().registry.ask(project_id, op, principal, idempotency=idempotency)
    except StaleVersion as exc:
        raise PreconditionFailed(exc.detail) from None
    if success_status == 204:
        response = Response(b"", status=204)
    else:
        response = json_response(accepted.result, success_status)
        version = _version_of(accepted.result)
        if version is not None:
            response.headers["ETag"] = etag(version)
        if location is not None:
            response.headers["Location"] = location(accepted.result)
    if accepted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _version_of(result: Any) -> int | None:
    if isinstance(result, dict):
        value = result.get("version", result.get("seq"))
        return value if isinstance(value, int) else None
    return None
