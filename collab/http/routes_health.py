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

blueprint = Blueprint("health", __name__)


@blueprint.get("/health")
@blueprint.get("/api/v1/health")
async def health() -> Response:
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
async def ping() -> Response:
    """No auth, no I/O: a liveness probe and the benchmarks' baseline route."""
    return json_response({"pong": True})
