"""The one place where errors become HTTP responses (RFC 9457 problem+json).

Every error leaves as ``application/problem+json`` with ``type``, ``title``,
``status``, ``detail``, the stable ``code``, ``retryable`` and the
``request_id``; validation errors add ``errors`` (the offending fields).
Werkzeug's HTTP exceptions (unknown route, wrong method, body too large or too
slow) are mapped onto the same tree. Anything unexpected is logged once, with
its traceback and request id, and answered with a bare 500.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from quart import Response
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from collab import errors
from collab.logs import request_id_var

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_TYPE_BASE = "https://collab.dev/problems/"

_HTTP_TO_ERROR: dict[int, type[errors.CollabError]] = {
    400: errors.BadRequest,
    401: errors.Unauthenticated,
    403: errors.Forbidden,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    409: errors.Conflict,
    412: errors.PreconditionFailed,
    413: errors.PayloadTooLarge,
    415: errors.UnsupportedMediaType,
    429: errors.RateLimited,
    503: errors.Unavailable,
}


def problem_document(error: errors.CollabError) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": _TYPE_BASE + error.code,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "code": error.code,
        "retryable": error.retryable,
    }
    doc.update(error.extra())
    request_id = request_id_var.get()
    if request_id:
        doc["request_id"] = request_id
    return doc


def problem_response(error: errors.CollabError) -> Response:
    response = Response(orjson.dumps(problem_document(error)), status=error.status, content_type=PROBLEM_JSON)
    for name, value in error.headers.items():
        response.headers[name] = value
    if error.status in (408, 413):
        # The body was not (fully) read: the connection cannot be reused.
        response.headers["Connection"] = "close"
    return response


def from_http_exception(exc: HTTPException) -> errors.CollabError:
    if exc.code == 408:
        return errors.RequestTimeout()
    cls = _HTTP_TO_ERROR.get(exc.code or 500)
    if cls is None:
        return errors.InternalError() if (exc.code or 500) >= 500 else errors.BadRequest(exc.description)
    if cls is errors.MethodNotAllowed:
        allowed = ", ".join(sorted(getattr(exc, "valid_methods", None) or ()))
        return errors.MethodNotAllowed(headers={"Allow": allowed} if allowed else None)
    if cls is errors.NotFound:
        return errors.NotFound("No such resource")
    return cls()


def install_problem_handlers(app: QuartTrio) -> None:
    @app.errorhandler(errors.CollabError)
    async def _collab_error(error: errors.CollabError) -> Response:
        if isinstance(error, errors.InternalError):
            log.error("internal error: %s", error.detail)
            return problem_response(errors.InternalError())
        return problem_response(error)

    @app.errorhandler(HTTPException)
    async def _http_error(error: HTTPException) -> Response:
        return problem_response(from_http_exception(error))

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> Response:
        log.error("unhandled %s while serving the request", type(error).__name__, exc_info=error)
        return problem_response(errors.InternalError())
