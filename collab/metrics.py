"""Prometheus metrics: what is counted, where, and how it is exposed.

Owns one :class:`prometheus_client.CollectorRegistry` per node (never the
library's global one, so several servers in one test process do not share
figures). Two kinds of figures:

- **Counted inline** on the paths where they happen, each a dict lookup and
  an add: HTTP requests by route *template* (``url_rule``, never the raw path,
  so ids and query strings never become labels), method and status, with a
  latency histogram (:meth:`Metrics.observe_request`); actor batch sizes and
  commit latencies (:meth:`Metrics.observe_batch`, called by the registry
  once per batch).
- **Read at scrape time** by :class:`FiguresCollector` from the objects that
  already keep them for ``/api/v1/admin/metrics``: the hub (sockets,
  subscriptions, frames in and out, closes by code, slow consumers), the
  actor registry (actors active, inbox depth), the database pool, the rate
  limiter (decisions per policy, fallback state), Redis, the principal cache,
  the event-loop monitor, readiness. Nothing is computed between scrapes.

Labels never carry user data: no user ids, paths, emails or addresses.
Unknown HTTP methods are counted as ``other`` so a client cannot grow the
label space. Everything here runs on the trio thread (scrapes too), so the
figures it reads are never changed under it.

:func:`metrics_asgi_app` serves the exposition on its own port
(``COLLAB_METRICS_PORT``) without authentication; on the main port
``GET /metrics`` asks for ``COLLAB_METRICS_TOKEN`` or an admin token
(:mod:`collab.http.routes_health`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Seconds; REST answers in ~1-10 ms here, writes wait for a group commit.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)


@dataclass
class Sources:
    """The objects the collector reads at scrape time (any may be None: not in this process)."""

    hub: Any = None            # collab.actors.hub.Hub
    registry: Any = None       # collab.actors.registry.ActorRegistry
    db: Any = None             # collab.storage.database.Database
    limiter: Any = None        # collab.ratelimit.Limiter
    redis: Any = None          # collab.bus.redis_link.RedisLink, None when not configured
    auth: Any = None           # collab.auth.service.AuthService
    loop_monitor: Any = None   # collab.loop_monitor.LoopMonitor
    ready: Callable[[], bool] | None = None


class Metrics:
    """The metrics of one node: inline counters plus a scrape-time collector."""

    def __init__(self, *, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.sources = Sources()
        self._http_requests = Counter(
            "collab_http_requests", "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"], registry=self.registry,
        )
        self._http_seconds = Histogram(
            "collab_http_request_duration_seconds",
            "Time from the request's arrival to its response, by route template",
            ["route", "method"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self._batch_size = Histogram(
            "collab_actor_batch_size", "Commands per actor batch (one group commit)",
            buckets=BATCH_BUCKETS, registry=self.registry,
        )
        self._commit_seconds = Histogram(
            "collab_actor_commit_seconds", "Duration of an actor batch's commit to PostgreSQL",
            buckets=COMMIT_BUCKETS, registry=self.registry,
        )
        self._failed_commits = Counter(
            "collab_actor_failed_commits", "Actor batches whose commit failed (fence lost, outage, deadline)",
            registry=self.registry,
        )
        self._http_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.registry.register(FiguresCollector(self.sources))
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

    def bind(self, sources: Sources) -> None:
        """Tell the collector where to read the live figures (the composition root calls this)."""
        for name in vars(sources):
            setattr(self.sources, name, getattr(sources, name))

    # --- inline -------------------------------------------------------------------------

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        if method not in KNOWN_METHODS:
            method = "other"
        key = (route, method, status)
        children = self._http_children.get(key)
        if children is None:
            children = self._http_children[key] = (
                self._http_requests.labels(route, method, str(status)),
                self._http_seconds.labels(route, method),
            )
        children[0].inc()
        children[1].observe(seconds)

    def observe_batch(self, size: int, commit_seconds: float | None, failed_commits: int) -> None:
        self._batch_size.observe(size)
        if commit_seconds is not None:
            self._commit_seconds.observe(commit_seconds)
        if failed_commits:
            self._failed_commits.inc(failed_commits)

    # --- exposition ---------------------------------------------------------------------

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    content_type = CONTENT_TYPE_LATEST


class FiguresCollector:
    """Gauges and counters read from the live objects when Prometheus scrapes."""

    def __init__(self, sources: Sources) -> None:
        self._s = sources

    def describe(self) -> Iterable[Metric]:
        return []  # no collect() at registration: the sources are bound later

    def collect(self) -> Iterator[Metric]:
        s = self._s
        if s.ready is not None:
            yield _gauge("collab_ready", "1 while serving, 0 once shutdown began (the load balancer drains the node)",
                         1 if s.ready() else 0)
        if s.hub is not None:
            yield from _hub_metrics(s.hub)
        if s.registry is not None:
            figures = s.registry.figures()
            yield _gauge("collab_actors_active", "Project actors running", figures["active"])
            yield _gauge("collab_actor_inbox_depth", "Commands queued in all actor inboxes", figures["inbox_depth"])
        if s.db is not None:
            pool = s.db.pool_stats()
            connections = GaugeMetricFamily("collab_db_pool_connections", "Database pool connections by state",
                                            labels=["state"])
            connections.add_metric(["in_use"], pool["in_use"])
            connections.add_metric(["idle"], pool["idle"])
            yield connections
            yield _gauge("collab_db_pool_max", "Largest size of the database pool", pool["max"])
        if s.limiter is not None:
            yield from _limiter_metrics(s.limiter)
        if s.redis is not None:
            yield _gauge("collab_redis_up", "1 when the last Redis operation succeeded", 1 if s.redis.up else 0)
        if s.auth is not None:
            yield _gauge("collab_auth_cache_entries", "Sessions held in the principal cache", s.auth.cached_sessions)
        if s.loop_monitor is not None:
            snap = s.loop_monitor.snapshot()
            yield _gauge("collab_event_loop_worst_stall_seconds", "Longest event-loop stall since start",
                         snap["worst_stall_ms"] / 1000)
            yield _counter("collab_event_loop_slow_stalls", "Event-loop stalls over 50 ms", snap["stalls_over_50ms"])


def _hub_metrics(hub: Any) -> Iterator[Metric]:
    yield _gauge("collab_ws_connections", "Open WebSocket connections", hub.connections)
    figures = hub.figures()
    yield _gauge("collab_ws_subscriptions", "Project subscriptions of open WebSockets", figures["subscriptions"])
    yield _counter("collab_ws_frames_received", "WebSocket messages received from clients", hub.frames_received)
    yield _counter("collab_ws_frames_sent", "Frames sent to clients (several may share one message)", hub.frames_sent)
    yield _counter("collab_ws_messages_sent", "WebSocket messages sent to clients", hub.messages_sent)
    yield _counter("collab_ws_events_published", "Committed events handed to the hub", figures["events_published"])
    closes = CounterMetricFamily("collab_ws_closes", "WebSockets closed by the server, by close code", labels=["code"])
    for code, count in sorted(hub.closes.items()):
        closes.add_metric([str(code)], count)
    yield closes
    yield _counter("collab_ws_slow_consumer_closes", "WebSockets closed for falling behind (4001)",
                   hub.closes.get(4001, 0))


def _limiter_metrics(limiter: Any) -> Iterator[Metric]:
    decisions = CounterMetricFamily("collab_ratelimit_decisions", "Rate-limit decisions by policy",
                                    labels=["policy", "decision"])
    for (policy, allowed), count in sorted(limiter.decisions.items()):
        decisions.add_metric([policy, "allowed" if allowed else "limited"], count)
    yield decisions
    backend = GaugeMetricFamily("collab_ratelimit_backend", "Where limits are kept now (1 = current)",
                                labels=["backend"])
    for name in ("redis", "memory", "fallback"):
        backend.add_metric([name], 1 if limiter.state == name else 0)
    yield backend
    yield _counter("collab_ratelimit_fallbacks", "Times the limiter fell back to in-process limits (Redis down)",
                   limiter.fallbacks)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def metrics_asgi_app(metrics: Metrics) -> Callable[..., Any]:
    """A bare ASGI app for the metrics port: ``GET /metrics``, 404 for anything else.

    No Quart, no auth: bind it to an address only the monitoring network reaches.
    """

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["path"] == "/metrics" and scope["method"] in ("GET", "HEAD"):
            status, body, content_type = 200, metrics.exposition(), metrics.content_type
        else:
            status, body, content_type = 404, b"not found: this port serves GET /metrics only\n", "text/plain"
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]})
        await send({"type": "http.response.body", "body": body if scope["method"] != "HEAD" else b""})

    return app
