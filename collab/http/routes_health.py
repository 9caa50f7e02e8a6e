"""/health and /api/v1/health: is this node able to serve, honestly.

``status`` is "ok" when the database answers, "degraded" when only the cache
is down, "unavailable" (503) when the database does not answer. The cache is
"disabled" when no Redis is configured.
"""

from __future__ import annotations

from datetime import datetime, timezone

from quart import Blueprint, Response

from collab import __version__
from collab.http.context import services
from collab.http.responses import json_response
from collab.http.openapi import api
from collab.http.schemas_out import Health, Pong

blueprint = Blueprint("health", __name__)


@blueprint.get("/health")
@api(tag="operations", ok=Health, auth=False, errors=(503,))
async def health() -> Response:
    """The same report at the root, for load balancers and orchestrators."""
    return await api_health()


@blueprint.get("/api/v1/health")
@api(tag="operations", ok=Health, auth=False, errors=(503,))
async def api_health() -> Response:
    svc = services()
    database = "up" if await svc.db.ping() else "down"
    if svc.cache_ping is None:
        cache = "disabled"
    else:
        cache = "up" if await svc.cache_ping() else "down"
    status = "unavailable" if database == "down" else ("degraded" if cache == "down" else "ok")
    return json_response(
        {
            "status": status,
            "timestamp": datetime.now(timezone.utc).isoformat(),
            "version": __version__,
            "services": {"database": database, "cache": cache},
        },
        status=503 if database == "down" else 200,
    )


@blueprint.get("/api/v1/ping")
@api(tag="operations", ok=Pong, auth=False)
async def ping() -> Response:
    """No auth, no I/O: a liveness probe and the benchmarks' baseline route."""
    return json_response({"pong": True})
