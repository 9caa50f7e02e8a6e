"""The composition root: trio -> trio-asyncio loop -> storage -> services -> hypercorn.

:func:`open_services` builds everything a node needs (database, embedded or
given; migrations; Redis when configured; the auth service) and closes it in
reverse order. :func:`serve` runs the HTTP server on top until its
``shutdown_trigger`` fires, then lets in-flight requests finish within
``Settings.shutdown_grace_s``. :func:`run` is the process entry point used by
``collab serve``: it installs SIGINT/SIGTERM handlers and returns the exit
status.
"""

from __future__ import annotations

import logging
import signal
from functools import partial
from contextlib import AsyncExitStack, asynccontextmanager
from typing import AsyncIterator, Awaitable, Callable, Sequence

import trio
import trio_asyncio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from collab import __version__, gc_policy
from collab.actors.committer import GroupCommitter
from collab.actors.hub import Hub
from collab.actors.ownership import Ownership
from collab.actors.registry import RegistryOptions, open_registry
from collab.auth.passwords import ARGON2_OWASP, ARGON2_TEST, PasswordHasher
from collab.auth.principals import PrincipalCache
from collab.auth.service import AuthService
from collab.auth.tokens import TokenCodec
from collab.bus.cluster import ClusterBus
from collab.bus.redis_link import RedisLink, open_redis
from collab.bus.revocations import RevocationBus
from collab.metrics import Metrics, Sources, metrics_asgi_app
from collab.ratelimit import Limiter, RedisLimiter
from collab.config import Settings
from collab.domain.notifications import Notification
from collab.errors import Unavailable
from collab.http.app import create_app
from collab.http.context import AppServices
from collab.storage.attachments import referenced_hashes
from collab.storage.blobs import sweep_periodically
from collab.storage.database import Database, PoolOptions, open_database
from collab.storage.db_thread import open_threaded_database
from collab.storage.local_blobs import LocalBlobStore
from collab.storage.embedded import open_embedded_postgres
from collab.storage.migrations import check_schema, migrate

log = logging.getLogger(__name__)


@asynccontextmanager
async def open_storage(settings: Settings, *, check: bool = True) -> AsyncIterator[Database]:
    """The database (embedded or given), migrated (or checked) unless ``check`` is False.

    Must run inside ``trio_asyncio.open_loop()``.
    """
    async with AsyncExitStack() as stack:
        dsn = settings.database_url
        if dsn is None:
            dsn = await stack.enter_async_context(open_embedded_postgres(settings.data_dir))
        log.info("database: %s", settings.database_label)
        db = await stack.enter_async_context(open_database(
            dsn,
            PoolOptions(
                min_size=settings.db_pool_min, max_size=settings.db_pool_max,
                connect_timeout_s=settings.db_connect_timeout_s,
                statement_timeout_s=settings.db_statement_timeout_s,
            ),
            label=settings.database_label,
        ))
        if check and settings.migrate_on_start:
            report = await migrate(db)
            if report.applied:
                log.info("migrated the schema to version %d", report.current)
        elif check:
            await check_schema(db)
        yield db


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[AppServices]:
    """Open storage and services for one node. Must run inside ``trio_asyncio.open_loop()``."""
    async with AsyncExitStack() as stack:
        db = await stack.enter_async_context(open_storage(settings))
        cache_ping: Callable[[], Awaitable[bool]] | None = None
        limiter = Limiter(None)
        redis: RedisLink | None = None
        if settings.redis_url:
            redis = await stack.enter_async_context(open_redis(settings.redis_url))
            cache_ping = redis.ping
            limiter = Limiter(RedisLimiter(redis))
            log.info("redis: %s", redis.label)
        else:
            log.info("redis: not configured; rate limits and fan-out stay in this process")

        hasher = PasswordHasher(
            ARGON2_OWASP if settings.password_hashing == "argon2id" else ARGON2_TEST,  # noqa: S105 - an algorithm name
            max_concurrent=settings.password_hash_concurrency,
        )
        await hasher.verify_dummy("")  # makes the dummy hash now, not in the first login
        codec = TokenCodec(
            secret=settings.jwt_secret, issuer=settings.jwt_issuer, audience=settings.jwt_audience,
            access_ttl_s=settings.access_token_ttl_s, refresh_ttl_s=settings.refresh_token_ttl_s,
        )
        cache = PrincipalCache(ttl_s=settings.auth_cache_ttl_s, max_entries=settings.auth_cache_entries)
        auth = AuthService(
            db, hasher, codec, cache,
            registration_role=settings.registration_role, refresh_ttl_s=settings.refresh_token_ttl_s,
        )
        hub = Hub()
        auth.on_logins_ended = hub.logins_ended
        auth.on_user_deactivated = hub.user_ended
        # The cluster: this node's lease and, with Redis, the bus to the other nodes. Their tasks
        # outlive the registry (entered before it), so actors finish their batches while the
        # node still owns its projects; leaving hands the projects back.
        ownership = Ownership(db, ttl_s=settings.node_lease_ttl_s, standalone=redis is None)
        cluster = await stack.enter_async_context(trio.open_nursery())
        stack.callback(cluster.cancel_scope.cancel)
        await cluster.start(ownership.run)
        # The committers' statements run on a pool of their own, on its own thread and asyncio loop
        # (collab/storage/db_thread.py): a busy trio scheduler does not slow the commit down.
        commit_db = await stack.enter_async_context(open_threaded_database(db.dsn, PoolOptions(
            min_size=1, max_size=settings.committers, connect_timeout_s=settings.db_connect_timeout_s,
            statement_timeout_s=settings.db_statement_timeout_s, application_name="collab-committer",
        ), label="committer"))
        committer = GroupCommitter(commit_db, workers=settings.committers)
        await cluster.start(committer.run)
        cluster_bus = ClusterBus(redis, ownership.node_id) if redis is not None else None
        notify: Callable[[Sequence[Notification]], None] = hub.push_notifications
        if cluster_bus is not None:
            await cluster.start(cluster_bus.run)
            hub.on_presence_change = cluster_bus.publish_presence
            cluster.start_soon(_refresh_presence, hub)

            def notify_cluster(notes: Sequence[Notification]) -> None:
                hub.push_notifications(notes)
                cluster_bus.publish_notifications(notes)

            notify = notify_cluster
        log.info("node %s (%s)", ownership.node_id, "standalone" if cluster_bus is None else "cluster over Redis")
        registry = await stack.enter_async_context(open_registry(db, RegistryOptions(
            inbox_size=settings.actor_inbox_size, max_batch=settings.actor_max_batch,
            ask_timeout_s=settings.actor_ask_timeout_s, commit_timeout_s=settings.db_statement_timeout_s,
            idle_timeout_s=settings.actor_idle_timeout_s,
        ), publish=hub.publish, keep_alive=hub.is_watched, notify=notify, ownership=ownership, bus=cluster_bus,
            committer=committer))
        if cluster_bus is not None:
            cluster_bus.wants_project = registry.follows
            cluster_bus.on_events = registry.apply_remote
            cluster_bus.on_commands = registry.handle_forwarded
            cluster_bus.on_resubscribed = registry.catch_up_followers
            cluster_bus.on_notifications = hub.push_notifications
            cluster_bus.on_presence = hub.remote_presence
        blobs = LocalBlobStore(settings.data_dir / "attachments")
        try:
            blobs.prepare()
        except OSError as exc:
            raise Unavailable(f"cannot keep attachments in {blobs.root}: {exc.strerror}") from exc
        services = AppServices(
            settings=settings, db=db, auth=auth, registry=registry, hub=hub, cache_ping=cache_ping, limiter=limiter,
            redis=redis, blobs=blobs, gc_sweeper=gc_policy.YoungSweeper(settings.gc_sweep_interval_s),
        )
        metrics: Metrics = services.metrics
        metrics.bind(Sources(
            hub=hub, registry=registry, db=db, limiter=limiter, redis=redis, auth=auth,
            loop_monitor=services.loop_monitor, ready=lambda: not services.draining.is_set(),
        ))
        registry.on_batch = metrics.observe_batch
        if redis is not None:
            # Revocations travel to the other nodes; theirs come here (collab/bus/revocations.py).
            bus = RevocationBus(redis, auth.apply_remote_revocation, auth.clear_cache)
            auth.announce = bus.announce
            nursery = await stack.enter_async_context(trio.open_nursery())
            stack.callback(nursery.cancel_scope.cancel)  # runs first on the way out: stops the bus tasks
            await nursery.start(bus.run)
        yield services


PRESENCE_REFRESH_S = 10.0


async def _refresh_presence(hub: Hub) -> None:
    while True:
        await trio.sleep(PRESENCE_REFRESH_S)
        hub.refresh_presence()


def hypercorn_config(settings: Settings, listen_fd: int | None = None) -> HypercornConfig:
    """Every hypercorn limit set explicitly (its defaults are loose: STACK.md trap 4).

    ``listen_fd``: accept on a socket a supervisor bound (``--workers``) instead of binding."""
    config = HypercornConfig()
    config.bind = [f"fd://{listen_fd}"] if listen_fd is not None else [f"{settings.host}:{settings.port}"]
    config.graceful_timeout = settings.shutdown_grace_s
    config.keep_alive_timeout = settings.keep_alive_timeout_s
    # hypercorn's read timeout also cuts a WebSocket that sends nothing: it must outlast the protocol's
    # own idle limit (clients may stay silent up to COLLAB_WS_IDLE_TIMEOUT_S; the app closes them with
    # 4002 then). Slow HTTP bodies are bounded by Quart's BODY_TIMEOUT, idle keep-alives by keep_alive_timeout.
    config.read_timeout = max(  # type: ignore[assignment]  # seconds, fractions too (trio.fail_after)
        settings.body_timeout_s, settings.ws_idle_timeout_s + 5,
    )
    config.h11_max_incomplete_size = 16 * 1024
    config.h2_max_concurrent_streams = 100
    config.h2_max_header_list_size = 16 * 1024
    config.websocket_max_message_size = settings.ws_max_message_bytes
    # No server pings: hypercorn's ping task sleeps through shutdown and holds
    # every socket for the whole grace period (STACK.md trap 3). Clients ping
    # (protocol.md); silence closes the socket (COLLAB_WS_IDLE_TIMEOUT_S).
    config.websocket_ping_interval = None
    config.include_server_header = False
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


def metrics_config(settings: Settings) -> HypercornConfig:
    """The metrics port: plain HTTP/1.1, short timeouts, no WebSockets."""
    config = HypercornConfig()
    config.bind = [f"{settings.metrics_host}:{settings.metrics_port}"]
    config.graceful_timeout = 1.0
    config.keep_alive_timeout = settings.keep_alive_timeout_s
    config.read_timeout = 10
    config.h11_max_incomplete_size = 16 * 1024
    config.include_server_header = False
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


async def serve(
    settings: Settings, *, shutdown_trigger: Callable[[], Awaitable[None]], listen_fd: int | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown_trigger`` returns; ``task_status`` gets the bound URLs (main port).

    After the trigger: ``/ready`` answers 503 and responses carry
    ``Connection: close`` at once; the node keeps serving for
    ``shutdown_drain_s`` (load balancers take it out of the pool); then every
    WebSocket gets 4000, hypercorn stops accepting connections and in-flight
    requests get ``shutdown_grace_s`` to finish; then the actors finish the
    batch they are committing and services close (pools shielded with their
    own deadline). ``metrics_port``, when set, serves ``/metrics`` beside.
    """
    async with trio_asyncio.open_loop():
        async with open_services(settings) as services:
            app = create_app(services)

            stopping = trio.Event()

            async def shutdown_then_close_sockets() -> None:
                await shutdown_trigger()
                services.draining.set()  # /ready answers 503 from now on; responses say Connection: close
                if settings.shutdown_drain_s > 0:
                    log.info(
                        "draining: still serving for %.1f s while load balancers notice /ready",
                        settings.shutdown_drain_s,
                    )
                    await trio.sleep(settings.shutdown_drain_s)
                stopping.set()
                services.hub.shutdown()  # every socket gets 4000 (reconnect) before hypercorn drains

            assert services.blobs is not None  # open_services always makes the store
            async with trio.open_nursery() as background:
                await background.start(services.loop_monitor.run)
                await background.start(services.gc_sweeper.run)
                await background.start(services.hub.clock.run)
                await background.start(partial(
                    sweep_periodically, services.blobs,
                    partial(services.db.run, referenced_hashes, transaction=False),
                    interval_s=settings.attachment_sweep_interval_s, grace_s=settings.attachment_gc_grace_s,
                    # a live upload's temp file may sit unwritten for up to a whole transfer
                    leftover_grace_s=max(settings.attachment_gc_grace_s,
                                     settings.attachment_transfer_timeout_s + settings.body_timeout_s),
                ))
                async with trio.open_nursery() as server:
                    binds = await server.start(
                        partial(hypercorn_serve, app, hypercorn_config(settings, listen_fd),
                                shutdown_trigger=shutdown_then_close_sockets)
                    )
                    log.info("collab %s listening on %s", __version__, ", ".join(binds))
                    if settings.metrics_port is not None:
                        metrics_binds = await server.start(partial(
                            hypercorn_serve, metrics_asgi_app(services.metrics), metrics_config(settings),
                            shutdown_trigger=stopping.wait,
                        ))
                        log.info("metrics on %s", ", ".join(b + "/metrics" for b in metrics_binds))
                    task_status.started(binds)
                background.cancel_scope.cancel()
    log.info("stopped")


async def serve_until_signalled(settings: Settings, listen_fd: int | None = None) -> None:
    """Serve until SIGINT or SIGTERM stops it gracefully; a second signal stops at once."""
    gc_policy.configure()
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(_watch_signals, stop, nursery.cancel_scope, settings.shutdown_grace_s)
        await serve(settings, shutdown_trigger=stop.wait, listen_fd=listen_fd)
        nursery.cancel_scope.cancel()


async def _watch_signals(
    stop: trio.Event, hard_stop: trio.CancelScope, grace_s: float,
    *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if stop.is_set():
                log.warning("second %s: stopping now", name)
                hard_stop.cancel()
                return
            log.info("%s received: finishing in-flight requests (up to %.0f s)", name, grace_s)
            stop.set()
