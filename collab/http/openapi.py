"""The OpenAPI document (quart-schema), served at /openapi.json with a page at /docs.

Handlers parse their input themselves (collab.http.inputs); :func:`api`
only documents a route: its request body, query string, success response and
the problem responses it can give. Every route must carry it:
``tests/e2e/test_openapi.py`` fails when a registered route is missing from
the document.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, TypeVar

from quart_schema import (
    QuartSchema, document_querystring, document_request, document_response, operation_id, security_scheme,
)
from quart_schema.openapi import OpenAPIProvider
from quart_schema import tag as schema_tag
from quart_trio import QuartTrio

from collab import __version__
from collab.http.schemas_out import Empty, MetricsText, Problem

F = TypeVar("F", bound=Callable[..., Any])

#: Problem statuses every authenticated route can answer.
_AUTH_ERRORS = (401,)
_ALWAYS = (400, 413, 422)

PROBLEM_DESCRIPTIONS = {
    400: "Malformed request (e.g. body is not JSON)",
    401: "Missing, invalid or expired access token, or an ended session",
    403: "Authenticated, but not allowed",
    404: "No such resource",
    409: "Conflict with the current state",
    412: "If-Match names an outdated version",
    413: "Body larger than the configured limit",
    415: "Body is not JSON",
    422: "Invalid fields (listed in `errors`)",
    429: "Rate limited",
    503: "Temporarily unavailable or busy; retry",
}


#: Problem statuses of every rate-limited route (collab/http/middleware.py): over the
#: limit, and past the request deadline.
_LIMITED = (429, 503)


def api(
    *, tag: str, ok: Any = None, status: int = 200, body: Any = None, query: Any = None,
    errors: Iterable[int] = (), auth: bool = True, limited: bool = True,
) -> Callable[[F], F]:
    """Document one route. ``ok`` is the success model (None for 204); ``limited=False``
    for the probes and /metrics, which the general rate limit leaves alone."""

    def decorate(func: F) -> F:
        func = schema_tag([tag])(func)
        func = operation_id(f"{tag}_{func.__name__.strip('_')}")(func)
        if body is not None:
            func = document_request(body)(func)
        if query is not None:
            func = document_querystring(query)(func)
        func = document_response(ok if ok is not None else Empty, status)(func)
        codes = set(errors) | set(_ALWAYS if body is not None or query is not None else ()) | (
            set(_AUTH_ERRORS) if auth else set()
        )
        if body is not None:
            codes.add(415)
        if limited:
            codes.update(_LIMITED)
        for code in sorted(codes):
            func = document_response(Problem, code)(func)
        if auth:
            func = security_scheme([{"bearer": []}])(func)
        else:
            func = security_scheme([])(func)
        return func

    return decorate


class CollabOpenAPIProvider(OpenAPIProvider):
    """Problems are served as application/problem+json; 204 responses have no body; /metrics is text."""

    def build_response_object(self, model: Any, headers_model: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        response, definitions = super().build_response_object(model, headers_model)
        if model is Empty:
            response.pop("content", None)
            response["description"] = "No content"
        elif model is Problem:
            response["content"] = {"application/problem+json": response["content"]["application/json"]}
        elif model is MetricsText:
            response["content"] = {"text/plain": {"schema": {"type": "string"}}}
            response["description"] = "Prometheus text exposition format"
        return response, definitions


def install_openapi(app: QuartTrio) -> None:
    QuartSchema(
        app,
        openapi_provider_class=CollabOpenAPIProvider,
        openapi_path="/openapi.json",
        swagger_ui_path="/docs",
        redoc_ui_path=None,
        scalar_ui_path=None,
        info={"title": "Collab", "version": __version__,
              "description": "Realtime collaboration server for task management. Errors are "
                             "application/problem+json with a stable `code`."},
        security_schemes={"bearer": {"type": "http", "scheme": "bearer", "bearer_format": "JWT"}},
    )
