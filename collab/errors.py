"""The one error tree of Collab.

Every error a client can see is a :class:`CollabError` with a stable string
``code`` (part of the public contract: clients branch on it), the HTTP status
it maps to, and whether retrying the same request may succeed::

    CollabError                      code               status  retryable
    ├── BadRequest                   bad_request        400
    │   └── MalformedJSON            malformed_json     400
    ├── Unauthenticated              unauthenticated    401
    │   └── InvalidCredentials       invalid_credentials 401
    ├── Forbidden                    forbidden          403
    ├── NotFound                     not_found          404
    ├── MethodNotAllowed             method_not_allowed 405
    ├── RequestTimeout               request_timeout    408
    ├── Conflict                     conflict           409
    │   └── StaleVersion             conflict           409   (REST with If-Match: 412)
    ├── PreconditionFailed           precondition_failed 412
    ├── PayloadTooLarge              payload_too_large  413
    ├── UnsupportedMediaType         unsupported_media_type 415
    ├── ValidationFailed             invalid            422   (carries field errors)
    ├── IdempotencyKeyReused         idempotency_key_reused 422
    ├── RateLimited                  rate_limited       429   yes
    ├── Busy                         busy               503   yes
    ├── Unavailable                  unavailable        503   yes
    └── InternalError                internal           500

Lower layers raise these (or convert foreign exceptions into them with
``raise X(...) from exc``); exactly one place, ``collab.http.problems``, turns
them into responses. Messages are written for the client: they never contain
SQL, tracebacks, tokens or internal identifiers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class FieldError:
    """One offending input field: where it is, what is wrong, a stable kind."""

    loc: tuple[str | int, ...]
    message: str
    kind: str

    def as_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "message": self.message, "type": self.kind}


class CollabError(Exception):
    """Base of every client-visible error."""

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 400
    retryable: ClassVar[bool] = False
    title: ClassVar[str] = "Error"

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        self.detail = detail or self.title
        self.headers = dict(headers or {})
        super().__init__(self.detail)

    def extra(self) -> dict[str, Any]:
        """Extension members added to the problem document."""
        return {}


class BadRequest(CollabError):
    code = "bad_request"
    status = 400
    title = "Bad request"


class MalformedJSON(BadRequest):
    code = "malformed_json"
    title = "The request body is not valid JSON"


class Unauthenticated(CollabError):
    code = "unauthenticated"
    status = 401
    title = "Authentication required"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="collab"'})


class InvalidCredentials(Unauthenticated):
    code = "invalid_credentials"
    title = "Invalid email or password"


class Forbidden(CollabError):
    code = "forbidden"
    status = 403
    title = "You are not allowed to do this"


class NotFound(CollabError):
    code = "not_found"
    status = 404
    title = "Not found"


class MethodNotAllowed(CollabError):
    code = "method_not_allowed"
    status = 405
    title = "Method not allowed"


class RequestTimeout(CollabError):
    code = "request_timeout"
    status = 408
    title = "The request body did not arrive in time"


class Conflict(CollabError):
    code = "conflict"
    status = 409
    title = "Conflict"


class StaleVersion(Conflict):
    """An op's ``if_version`` is not the target's current version."""

    title = "It changed since the version you sent"


class PreconditionFailed(CollabError):
    code = "precondition_failed"
    status = 412
    title = "The resource changed since you read it"


class PayloadTooLarge(CollabError):
    code = "payload_too_large"
    status = 413
    title = "The request body is too large"


class UnsupportedMediaType(CollabError):
    code = "unsupported_media_type"
    status = 415
    title = "Unsupported media type"


class ValidationFailed(CollabError):
    code = "invalid"
    status = 422
    title = "The request is not valid"

    def __init__(self, errors: list[FieldError], detail: str | None = None) -> None:
        self.errors = errors
        super().__init__(detail or _summarize(errors))

    def extra(self) -> dict[str, Any]:
        return {"errors": [e.as_dict() for e in self.errors]}

    @classmethod
    def single(cls, field: str, message: str, kind: str = "value_error") -> "ValidationFailed":
        return cls([FieldError((field,), message, kind)])


class IdempotencyKeyReused(CollabError):
    code = "idempotency_key_reused"
    status = 422
    title = "This Idempotency-Key was already used with a different request"


class RateLimited(CollabError):
    code = "rate_limited"
    status = 429
    retryable = True
    title = "Too many requests"


class Busy(CollabError):
    code = "busy"
    status = 503
    retryable = True
    title = "The server is busy, retry shortly"


class Unavailable(CollabError):
    code = "unavailable"
    status = 503
    retryable = True
    title = "A backing service is unavailable"


class InternalError(CollabError):
    code = "internal"
    status = 500
    title = "Internal server error"


def _summarize(errors: list[FieldError]) -> str:
    if not errors:
        return ValidationFailed.title
    fields = ", ".join(".".join(str(p) for p in e.loc) or "body" for e in errors[:5])
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return f"Invalid fields: {fields}{more}"
