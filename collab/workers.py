"""``collab serve --workers N``: N full nodes on one port, supervised by this process.

One Python process uses one core. This supervisor binds the listening socket
once, then starts N worker processes (``collab serve --listen-fd``) that all
accept on it (the kernel spreads connections between them) and restarts any
that dies. Each worker is a complete node of the cluster: it holds its own
lease, owns the projects it loads first, forwards commands for the others
and follows their events over the Redis bus (docs/architecture.md,
"Scale-out"). So more than one worker needs Redis and a PostgreSQL shared by
all of them; the embedded PostgreSQL serves a single process.

SIGTERM/SIGINT go to every worker, which drain gracefully; the supervisor
waits up to the grace period (plus a margin) and kills what is left.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from collab import __version__
from collab.config import ConfigError, Settings, env_var

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (0.5, 1, 2, 5)
POLL_S = 0.2


def default_workers(settings: Settings) -> int:
    """``COLLAB_WORKERS`` if set, else every core when the node can be one of many
    (Redis and a shared database), else one."""
    if settings.workers:
        return settings.workers
    if settings.redis_url and settings.database_url:
        return os.cpu_count() or 1
    return 1


def check_workers(settings: Settings, workers: int) -> None:
    if workers < 1 or workers > 256:
        raise ConfigError("--workers must be from 1 to 256")
    if workers > 1 and not settings.redis_url:
        raise ConfigError(
            f"--workers {workers} needs COLLAB_REDIS_URL: workers are nodes of a cluster and talk over Redis"
        )
    if workers > 1 and not settings.database_url:
        raise ConfigError(
            f"--workers {workers} needs COLLAB_DATABASE_URL: the embedded PostgreSQL serves a single process"
        )


def _child_env(settings: Settings, overrides: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in overrides.items():
        if value is not None:
            env[env_var(name)] = str(value)
    env[env_var("migrate_on_start")] = "false"  # done once, here
    env[env_var("data_dir")] = str(settings.data_dir)
    return env


def run_workers(settings: Settings, workers: int, overrides: dict[str, Any]) -> int:
    """Bind, start the workers, supervise them until a signal; the exit status."""
    try:
        listener = socket.create_server((settings.host, settings.port), backlog=2048)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc.strerror)
        return 1
    listener.set_inheritable(True)
    host, port = listener.getsockname()[:2]
    env = _child_env(settings, overrides)
    command = [sys.executable, "-m", "collab", "serve", "--listen-fd", str(listener.fileno())]
    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        if stopping:
            for child in children:
                if child.poll() is None:
                    child.kill()
            return
        stopping = True
        log.info("%s received: stopping %d workers", signal.Signals(signum).name, workers)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def start(slot: int) -> subprocess.Popen[bytes]:
        own = {"COLLAB_WORKER_SLOT": str(slot)}
        if settings.metrics_port:  # each worker's metrics on a port of its own: metrics_port + slot
            own[env_var("metrics_port")] = str(settings.metrics_port + slot)
        # Our own interpreter and arguments (no shell): sys.executable -m collab serve ...
        return subprocess.Popen(  # noqa: S603
            command, env=env | own, pass_fds=(listener.fileno(),), stdin=subprocess.DEVNULL,
        )

    children = [start(i) for i in range(workers)]
    restarts = [0] * workers
    next_start = [0.0] * workers
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    log.info("collab %s listening on http://%s:%d with %d workers (pids %s)", __version__, shown, port, workers,
             ", ".join(str(c.pid) for c in children))
    try:
        while not stopping:
            time.sleep(POLL_S)
            for i, child in enumerate(children):
                code = child.poll()
                if code is None or stopping:
                    continue
                now = time.monotonic()
                if next_start[i] == 0.0:
                    delay = RESTART_BACKOFF_S[min(restarts[i], len(RESTART_BACKOFF_S) - 1)]
                    log.warning("worker %d (pid %d) exited with %s; restarting in %.1f s", i, child.pid, code, delay)
                    next_start[i] = now + delay
                elif now >= next_start[i]:
                    children[i] = start(i)
                    restarts[i] += 1
                    next_start[i] = 0.0
        deadline = time.monotonic() + settings.shutdown_grace_s + settings.shutdown_drain_s + 10
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop in time: killing it", child.pid)
                child.kill()
                child.wait()
    finally:
        listener.close()
    log.info("stopped")
    return 0
