"""Probes and metrics: /health, /api/v1/health, /ready, /api/v1/ping, /metrics.

- ``/health`` (and ``/api/v1/health``): is this node able to serve, honestly.
  ``status`` is "ok" when the database answers, "degraded" when only the
  cache is down, "unavailable" (503) when the database does not answer. The
  cache is "disabled" when no Redis is configured; ``rate_limiter`` says where
  limits are kept: "memory" (no Redis configured), "redis", or "fallback"
  (Redis configured but unreachable: limits are per node until it is back).
- ``/ready``: 200 while the node takes traffic, 503 from the moment shutdown
  begins, so a load balancer drains it before it stops. No I/O, no auth, no
  rate limit: cheap enough to poll every second.
- ``/metrics``: the Prometheus exposition (:mod:`collab.metrics`). On the
  main port it needs ``Authorization: Bearer <COLLAB_METRICS_TOKEN>`` (a
  static scrape token, compared in constant time) or an admin's access
  token: the figures hold no user data, but they describe load and capacity,
  which is nobody else's business. ``COLLAB_METRICS_PORT`` serves the same
  text without auth on a port of its own, for a monitoring network.
"""

from __future__ import annotations

import hmac
from datetime import datetime, timezone

from quart import Blueprint, Response, request

from collab import __version__
from collab.errors import Forbidden, Unavailable
from collab.http.context import current_principal, services
from collab.http.openapi import api
from collab.http.responses import json_response
from collab.http.schemas_out import Health, MetricsText, Pong, Ready

blueprint = Blueprint("health", __name__)


@blueprint.get("/health")
@api(tag="operations", ok=Health, auth=False, errors=(503,), limited=False)
async def health() -> Response:
    """The same report at the root, for load balancers and orchestrators."""
    return await api_health()


@blueprint.get("/api/v1/health")
@api(tag="operations", ok=Health, auth=False, errors=(503,), limited=False)
async def api_health() -> Response:
    svc = services()
    database = "up" if await svc.db.ping() else "down"
    if svc.cache_ping is None:
        cache = "disabled"
    else:
        cache = "up" if await svc.cache_ping() else "down"
        if cache == "down":
            svc.limiter.redis_failed("health check")  # limit in process now, not after a timed-out hit
        else:
            svc.limiter.redis_answered()  # back: the next request tries Redis again at once
    status = "unavailable" if database == "down" else ("degraded" if cache == "down" else "ok")
    return json_response(
        {
            "status": status,
            "timestamp": datetime.now(timezone.utc).isoformat(),
            "version": __version__,
            "services": {"database": database, "cache": cache, "rate_limiter": svc.limiter.state},
        },
        status=503 if database == "down" else 200,
    )


@blueprint.get("/ready")
@api(tag="operations", ok=Ready, auth=False, errors=(503,), limited=False)
async def ready() -> Response:
    """200 while serving; 503 once shutdown began (take this node out of the pool)."""
    if services().draining.is_set():
        raise Unavailable("This node is shutting down; send traffic elsewhere")
    return json_response({"status": "ready"})


@blueprint.get("/api/v1/ping")
@api(tag="operations", ok=Pong, auth=False)
async def ping() -> Response:
    """No auth, no I/O: a liveness probe and the benchmarks' baseline route."""
    return json_response({"pong": True})


@blueprint.get("/metrics")
@api(tag="operations", ok=MetricsText, errors=(403,), limited=False)
async def metrics() -> Response:
    """Prometheus text format. Bearer: COLLAB_METRICS_TOKEN, or an admin's access token."""
    svc = services()
    expected = svc.settings.metrics_token
    scheme, _, supplied = request.headers.get("Authorization", "").partition(" ")
    if not (expected and scheme.lower() == "bearer"
            and hmac.compare_digest(supplied.strip().encode(), expected.encode())):
        principal = await current_principal()  # 401 without a valid access token
        if not principal.is_admin:
            raise Forbidden("Metrics need the scrape token (COLLAB_METRICS_TOKEN) or the admin role")
    return Response(svc.metrics.exposition(), status=200, content_type=svc.metrics.content_type)
