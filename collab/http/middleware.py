"""HTTP middleware: authentication gate, rate limits, CORS, security headers, gzip, deadlines.

Installed by :func:`install_middleware` after :func:`collab.http.context.install_request_hooks`
(request id, body, access log), so per request, in order:

1. **Authentication gate** (before the handler): routes outside
   ``PUBLIC_ENDPOINTS`` need a valid access token (401 otherwise). CORS
   preflights (``OPTIONS``) never carry one and are not asked for it.
2. **Rate limit** (before the handler): every ``/api/...`` request except the
   health probe is counted by the shared :class:`collab.ratelimit.Limiter`
   (GCRA; Redis when configured, in-process meanwhile) under the
   ``rest-user`` policy per user when authenticated, else ``rest-ip`` per
   client address (:mod:`collab.http.client_address`). A request with a bad
   token is counted per address before its 401, so a flood of bad tokens is
   throttled too. Over the limit: 429 ``rate_limited`` with ``Retry-After``.
   Every limited response carries ``RateLimit-Policy`` and ``RateLimit``
   (IETF draft); a route with a tighter policy of its own (login,
   registration) keeps its own headers.
3. **Deadline**: the handler gets ``COLLAB_REQUEST_TIMEOUT_S``; past it the
   request ends with 503 ``unavailable`` (retryable; a write may still have
   been committed, so retry writes with the same ``Idempotency-Key``).
4. **After the handler**: CORS headers for allow-listed origins
   (``COLLAB_CORS_ORIGINS``, exact matches; preflights included; other origins
   get no ``Access-Control-Allow-*`` header, so browsers refuse them); a
   Content-Security-Policy fitting what is served (JSON API, the browser UI
   at ``/`` and ``/static/*``, the ``/docs`` page); ``Connection: close``
   while the node drains; gzip last.

Gzip: only when the client accepts it, for JSON bodies of at least
``COLLAB_GZIP_MIN_BYTES`` held in memory, without an ``ETag`` (a compressed
body would need its own validator) and not already encoded; never for
files or streamed bodies. Bodies over :data:`GZIP_IN_THREAD_BYTES` are
compressed in a worker thread (zlib releases the GIL), so the loop never
stalls on a large list.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

import trio
from quart import Response, current_app, g, request
from quart.wrappers.response import DataBody
from quart_trio import QuartTrio

from collab.config import Settings
from collab.domain.users import Principal
from collab.errors import RateLimited, Unauthenticated, Unavailable
from collab.http.upload_body import is_streamed
from collab.http.context import PUBLIC_ENDPOINTS, client_ip, current_principal, services
from collab.ratelimit import Policy

#: Endpoints under /api/ that are never rate limited (probes must always answer).
UNLIMITED_ENDPOINTS = frozenset({"health.api_health"})
#: Endpoints that check their own credentials (/metrics takes a scrape token or an admin's token).
SELF_AUTHENTICATING_ENDPOINTS = frozenset({"health.metrics"})
GZIP_LEVEL = 5
GZIP_IN_THREAD_BYTES = 64 * 1024

CORS_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
CORS_REQUEST_HEADERS = ["Authorization", "Content-Type", "If-Match", "If-None-Match", "Idempotency-Key", "X-Request-ID"]
CORS_EXPOSED_HEADERS = [
    "ETag", "Location", "Retry-After", "RateLimit", "RateLimit-Policy", "X-Request-ID", "Idempotent-Replayed",
]
CORS_MAX_AGE_S = 600

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
_SAFE_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)


def rest_policies(settings: Settings) -> tuple[Policy, Policy]:
    """(per user, per client address) policies of the general REST limit."""
    return (
        Policy("rest-user", settings.rest_per_user_per_minute, 60, min(settings.rest_user_burst,
                                                                       settings.rest_per_user_per_minute)),
        Policy("rest-ip", settings.rest_per_ip_per_minute, 60, min(settings.rest_ip_burst,
                                                                   settings.rest_per_ip_per_minute)),
    )


def install_middleware(app: QuartTrio, settings: Settings) -> None:
    per_user, per_ip = rest_policies(settings)

    async def limit(principal: Principal | None) -> None:
        if not request.path.startswith("/api/") or request.endpoint in UNLIMITED_ENDPOINTS:
            return
        if principal is not None:
            key, policy = f"rest:user:{principal.user_id}", per_user
        else:
            key, policy = f"rest:ip:{client_ip() or 'unknown'}", per_ip
        decision = await services().limiter.hit(key, policy)
        g.rate_limit = decision.headers(policy)
        if not decision.allowed:
            raise RateLimited("Too many requests; retry after the number of seconds in Retry-After",
                              headers=g.rate_limit)

    @app.before_request
    async def _authenticate_and_limit() -> None:
        principal: Principal | None = None
        if (request.method != "OPTIONS" and request.url_rule is not None
                and request.endpoint not in PUBLIC_ENDPOINTS and request.endpoint not in SELF_AUTHENTICATING_ENDPOINTS):
            try:
                principal = await current_principal()
            except Unauthenticated:
                await limit(None)  # a 429 instead of the 401 once an address floods bad tokens
                raise
        await limit(principal)

    _install_deadline(app, settings.request_timeout_s, settings.attachment_transfer_timeout_s)

    # after_request hooks run in reverse order of registration: gzip (first here) runs last.
    if settings.gzip_min_bytes > 0:
        @app.after_request
        async def _gzip(response: Response) -> Response:
            return await compress(response, settings.gzip_min_bytes)

    @app.after_request
    async def _headers(response: Response) -> Response:
        limit_headers = g.get("rate_limit")
        if limit_headers and "RateLimit-Policy" not in response.headers:
            for name in ("RateLimit-Policy", "RateLimit"):
                response.headers[name] = limit_headers[name]
        if "Content-Security-Policy" not in response.headers:
            response.headers["Content-Security-Policy"] = await content_security_policy(response)
        if services().draining.is_set():
            response.headers["Connection"] = "close"  # keep-alive clients move to another node
        return response

    if settings.cors_origins:
        install_cors(app, settings.cors_origins)


def install_cors(app: QuartTrio, origins: tuple[str, ...]) -> None:
    """CORS for an exact allowlist of origins, preflights included; no credentials mode.

    quart-cors does the same but rebuilds its settings on every response;
    this hook costs one header lookup for requests without ``Origin``.
    """
    allowed = frozenset(origins)
    request_headers = {h.lower(): h for h in CORS_REQUEST_HEADERS}
    methods = ", ".join(CORS_METHODS)
    exposed = ", ".join(CORS_EXPOSED_HEADERS)

    @app.after_request
    async def _cors(response: Response) -> Response:
        response.vary.add("Origin")
        origin = request.headers.get("Origin")
        if origin is None or origin not in allowed:
            return response  # no Access-Control-Allow-*: a browser refuses the response
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = exposed
        wanted = request.headers.get("Access-Control-Request-Method")
        if request.method == "OPTIONS" and wanted:
            if wanted.upper() in CORS_METHODS:
                response.headers["Access-Control-Allow-Methods"] = methods
                asked = (
                    h.strip().lower() for h in request.headers.get("Access-Control-Request-Headers", "").split(",")
                )
                granted = [request_headers[h] for h in asked if h in request_headers]
                if granted:
                    response.headers["Access-Control-Allow-Headers"] = ", ".join(granted)
                response.headers["Access-Control-Max-Age"] = str(CORS_MAX_AGE_S)
        return response


def _install_deadline(app: QuartTrio, timeout_s: float, upload_timeout_s: float) -> None:
    """Bound the handler (not the body upload, not the response send: Quart's own timeouts do those).

    A streamed upload reads its body inside the handler, so it gets the transfer timeout on top."""
    dispatch: Callable[..., Awaitable[Any]] = app.dispatch_request

    async def dispatch_within_deadline(request_context: Any = None) -> Any:
        deadline = timeout_s + upload_timeout_s if is_streamed(request) else timeout_s
        with trio.move_on_after(deadline):
            return await dispatch(request_context)
        raise Unavailable("The request took too long to answer; retry (writes with the same Idempotency-Key)")

    app.dispatch_request = dispatch_within_deadline  # type: ignore[method-assign]


def is_ui_request() -> bool:
    """The browser UI (collab/http/routes_web.py): ``/``, ``/static/*`` and the ``web`` blueprint."""
    return (request.path == "/" or request.path.startswith("/static/")
            or (request.endpoint or "").startswith("web."))


async def content_security_policy(response: Response) -> str:
    """Scripts, styles and connections from this origin only; nothing inline; never framed."""
    if is_ui_request():
        host = request.headers.get("Host", "")
        sockets = f" ws://{host} wss://{host}" if _SAFE_HOST.match(host) else ""
        return (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
            f"connect-src 'self'{sockets}; manifest-src 'self'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'"
        )
    if request.endpoint == "swagger_ui" and response.mimetype == "text/html":
        return await _docs_policy(response)
    return API_CSP


async def _docs_policy(response: Response) -> str:
    """The /docs page: Swagger UI from its CDN plus the page's own inline script, by hash."""
    cdn = {
        f"{parts.scheme}://{parts.netloc}"
        for key in ("QUART_SCHEMA_SWAGGER_JS_URL", "QUART_SCHEMA_SWAGGER_CSS_URL")
        if (parts := urlsplit(current_app.config.get(key, ""))).netloc
    }
    body = await response.get_data(as_text=False)
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(body)
    ]
    sources = " ".join(sorted(cdn))
    return (
        f"default-src 'none'; script-src {sources} {' '.join(hashes)}; style-src {sources} 'unsafe-inline'; "
        f"img-src 'self' data: {sources}; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


async def compress(response: Response, min_bytes: int) -> Response:
    """Gzip a JSON response in place when it is worth it and the client accepts it (see module doc)."""
    length = response.content_length
    if (length is None or length < min_bytes or request.method == "HEAD" or response.status_code < 200
            or response.status_code in (204, 206, 304) or not isinstance(response.response, DataBody)):
        return response
    mimetype = response.mimetype or ""
    if not (mimetype == "application/json" or mimetype.endswith("+json")):
        return response
    if "Content-Encoding" in response.headers or "ETag" in response.headers:
        return response
    data = await response.get_data(as_text=False)
    if len(data) < min_bytes:
        return response
    response.vary.add("Accept-Encoding")
    if request.accept_encodings["gzip"] <= 0:
        return response
    if len(data) >= GZIP_IN_THREAD_BYTES:
        packed = await trio.to_thread.run_sync(_gzip, data)
    else:
        packed = _gzip(data)
    response.set_data(packed)
    response.headers["Content-Encoding"] = "gzip"
    return response


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, GZIP_LEVEL, mtime=0)
