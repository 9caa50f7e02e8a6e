"""Per-request plumbing: the services, request ids, the caller, the access log.

:class:`AppServices` is what the composition root hands the HTTP layer.
:func:`install_request_hooks` gives every request an id (a client's
``X-Request-ID`` when it is 1-128 characters of ``[A-Za-z0-9._:-]``, a fresh
one otherwise), echoes it in the response and puts it on every log record of
the request, reads the body up front (within its cap) so that an early
401/403 never leaves unread bytes on a keep-alive connection (STACK.md trap
9; file uploads are streamed instead, and drained by
:mod:`collab.http.upload_body`), adds security headers and writes one
access-log line (method, route template, status, duration, user id; never
the path's ids or the query string) and counts the request in the metrics.
Authentication and rate limits are :mod:`collab.http.middleware`.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import trio
from quart import Response, current_app, g, request
from quart_trio import QuartTrio

from collab.actors.hub import Hub
from collab.actors.registry import ActorRegistry
from collab.auth.service import AuthService, ClientInfo
from collab.config import Settings
from collab.domain.users import Principal
from collab.errors import Unauthenticated
from collab.http.client_address import ClientAddressResolver
from collab.http.upload_body import is_streamed
from collab.logs import request_id_var
from collab.gc_policy import YoungSweeper
from collab.loop_monitor import LoopMonitor
from collab.metrics import Metrics
from collab.ratelimit import Limiter
from collab.storage.blobs import BlobStore
from collab.storage.database import Database

access_log = logging.getLogger("collab.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Endpoints that answer without a token; every other route authenticates
#: first, so an anonymous caller learns nothing (not even whether an id exists).
PUBLIC_ENDPOINTS = frozenset({
    "health.health", "health.api_health", "health.ping", "health.ready",
    "auth.register", "auth.login", "auth.refresh",
    "openapi", "swagger_ui", "static",
    "web.index", "web.static",  # the board's page and files (routes_web): no data in them
})
MAX_USER_AGENT_CHARS = 512


@dataclass
class AppServices:
    """Everything a request handler may use, built by the composition root."""

    settings: Settings
    db: Database
    auth: AuthService
    registry: ActorRegistry
    hub: Hub
    cache_ping: Any = None  # async () -> bool, or None when no Redis is configured
    limiter: Limiter = field(default_factory=lambda: Limiter(None))
    loop_monitor: LoopMonitor = field(default_factory=LoopMonitor)
    gc_sweeper: YoungSweeper = field(default_factory=lambda: YoungSweeper(0.0))
    started_at: float = field(default_factory=time.time)
    metrics: Metrics = field(default_factory=Metrics)
    draining: trio.Event = field(default_factory=trio.Event)  # set when shutdown begins: /ready says 503
    redis: Any = None  # collab.bus.redis_link.RedisLink when configured
    client_addresses: ClientAddressResolver | None = None
    blobs: BlobStore | None = None  # attachment files (collab/storage/blobs.py); None: uploads answer 503

    def __post_init__(self) -> None:
        if self.client_addresses is None:
            self.client_addresses = ClientAddressResolver(self.settings.trusted_proxies if self.settings else ())


def services() -> AppServices:
    found: AppServices = current_app.extensions["collab"]
    return found


def client_info() -> ClientInfo:
    agent = request.headers.get("User-Agent")
    return ClientInfo(user_agent=agent[:MAX_USER_AGENT_CHARS] if agent else None, ip_address=client_ip())


def client_ip() -> str | None:
    """The client's address: the peer, or X-Forwarded-For behind ``COLLAB_TRUSTED_PROXIES`` (client_address.py)."""
    cached: str | None = g.get("client_ip", "")
    if cached != "":
        return cached
    resolver = services().client_addresses
    address: str | None
    if resolver is None or not resolver.trusts_proxies:
        address = request.remote_addr or None
    else:
        address = resolver.resolve(request.remote_addr, request.headers.getlist("X-Forwarded-For"))
    g.client_ip = address
    return address


async def current_principal() -> Principal:
    """The authenticated caller of this request; 401 when there is none."""
    cached: Principal | None = g.get("principal")
    if cached is not None:
        return cached
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Send an access token as 'Authorization: Bearer <token>'")
    principal = await services().auth.authenticate(token.strip())
    g.principal = principal
    return principal


def install_request_hooks(app: QuartTrio) -> None:
    @app.before_request
    async def _begin() -> None:
        g.started = time.perf_counter()
        supplied = request.headers.get("X-Request-ID", "")
        g.request_id = supplied if _REQUEST_ID.match(supplied) else secrets.token_hex(8)
        request_id_var.set(g.request_id)
        if request.method in _BODY_METHODS and not is_streamed(request):  # streamed: see upload_body.py
            await request.get_data(cache=True)

    @app.after_request
    async def _finish(response: Response) -> Response:
        request_id = g.get("request_id") or request_id_var.get()
        if request_id:
            response.headers["X-Request-ID"] = request_id
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Frame-Options", "DENY")
        started = g.get("started")
        principal = g.get("principal")
        rule = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        seconds = time.perf_counter() - started if started else 0.0
        svc = services()
        policy = svc.settings.access_log
        if policy == "all" or (policy == "errors" and response.status_code >= 400):
            access_log.info(
                "%s %s %d", request.method, rule, response.status_code,
                extra={
                    "method": request.method,
                    "route": rule,
                    "status": response.status_code,
                    "duration_ms": round(seconds * 1000, 2),
                    "user_id": str(principal.user_id) if principal else None,
                },
            )
        svc.metrics.observe_request(rule, request.method, response.status_code, seconds)
        return response
