"""Run ``collab`` as a separate process: start, wait until healthy, stop gracefully.

:class:`ServerProcess` owns one ``collab serve`` child. It guarantees that the
child is gone when its ``with`` block ends: a graceful SIGTERM first (the
server then stops its embedded PostgreSQL itself), SIGKILL only after
``stop_timeout_s``. Output goes to a log file, never to a pipe, so a chatty
server cannot block on a full pipe. Every wait here has a deadline.

The server's environment is the caller's minus every ``COLLAB_*`` variable
(so a developer's shell cannot change what is measured), plus the ones given.
``argv`` and ``health_path`` let the same class run another ASGI server (the
bare app of :mod:`loadtest.calibration`) with the same guarantees.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

from loadtest.cpu import postmaster_pids

HEALTH_POLL_S = 0.010
HEALTH_REQUEST_TIMEOUT_S = 2.0


class ServerFailed(Exception):
    """The server did not start, did not answer in time, or exited early."""


#: Replaces the ``collab`` executable for every server and CLI call (``--collab-command``), e.g.
#: ``python -m collab`` run from another checkout for a before/after comparison.
COLLAB_COMMAND: list[str] | None = None


def collab_command() -> list[str]:
    """The command that runs ``collab``: ``--collab-command`` if given, else this environment's executable."""
    return list(COLLAB_COMMAND) if COLLAB_COMMAND else [collab_executable()]


def collab_executable() -> str:
    """The ``collab`` command of this interpreter's environment."""
    beside = Path(sys.executable).parent / "collab"
    if beside.exists():
        return str(beside)
    found = shutil.which("collab")
    if found is None:
        raise ServerFailed("the `collab` command is not installed (pip install -e . in the project venv)")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: The load generator signs up and logs in many users from one address and
#: drives each user far beyond a person's pace: the login/registration limits
#: and the general REST limits (per user and per address) are lifted for it.
LOAD_GENERATOR_LIMITS = {
    "login_per_ip_per_minute": "1000000",
    "login_per_account_per_minute": "1000000",
    "register_per_ip_per_hour": "1000000",
    "rest_per_user_per_minute": "100000000",
    "rest_user_burst": "100000000",
    "rest_per_ip_per_minute": "100000000",
    "rest_ip_burst": "100000000",
}


#: Settings given with ``--server-setting NAME=VALUE`` for every server of the run (e.g. workers=2 and a
#: redis_url, to measure several worker processes); they win over a scenario's own.
EXTRA_SETTINGS: dict[str, str] = {}


def collab_env(settings: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment without ``COLLAB_*``, plus ``settings`` (names without the prefix)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")}
    merged = {**LOAD_GENERATOR_LIMITS, **settings, **EXTRA_SETTINGS}
    env.update({f"COLLAB_{name.upper()}": value for name, value in merged.items()})
    return env


def _workers(env: Mapping[str, str]) -> int:
    try:
        return int(env.get("COLLAB_WORKERS", "1") or "1")
    except ValueError:
        return 1


def _pin(cpus: set[int] | None):
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def run_collab(args: Sequence[str], env: Mapping[str, str], *, stdin_text: str = "", timeout_s: float = 120.0,
               cpus: set[int] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a one-shot ``collab`` command (e.g. ``user create``); raise on failure."""
    try:
        done = subprocess.run(
            [*collab_command(), *args], input=stdin_text, env=dict(env), capture_output=True,
            text=True, timeout=timeout_s, preexec_fn=_pin(cpus),
        )
    except subprocess.TimeoutExpired as exc:
        raise ServerFailed(f"`collab {' '.join(args)}` did not finish within {timeout_s:.0f} s") from exc
    if done.returncode != 0:
        raise ServerFailed(f"`collab {' '.join(args)}` exited with {done.returncode}: {done.stderr.strip()[-500:]}")
    return done


class ServerProcess:
    """One ``collab serve --port <port>`` child process (see the module docstring).

    ``argv`` replaces the whole command line (it must listen on ``port``) and ``health_path`` the route
    :meth:`wait_healthy` polls: for a server that is not ``collab``."""

    def __init__(self, env: Mapping[str, str], *, log_path: Path, port: int | None = None,
                 cpus: set[int] | None = None, data_dir: Path | None = None, stop_timeout_s: float = 60.0,
                 command: Sequence[str] | None = None, argv: Sequence[str] | None = None,
                 health_path: str = "/health") -> None:
        self.command = list(command) if command else None  # default: the `collab` executable
        self.argv = list(argv) if argv else None
        self.health_path = health_path
        self.env = dict(env)
        self.port = port or free_port()
        self.cpus = cpus
        self.log_path = log_path
        self.data_dir = data_dir
        self.stop_timeout_s = stop_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.launched_at = 0.0
        self.exit_code: int | None = None
        self.stop_s: float | None = None
        self.killed = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = self.argv or [*(self.command or collab_command()), "serve", "--port", str(self.port)]
        log = open(self.log_path, "ab")
        try:
            self.launched_at = time.perf_counter()
            self.proc = subprocess.Popen(
                argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                # Several worker processes spread over every core: pinning them to one would measure nothing.
                preexec_fn=_pin(self.cpus if _workers(self.env) <= 1 else None),
                cwd=str(Path(__file__).resolve().parent.parent),
            )
        finally:
            log.close()

    def wait_healthy(self, timeout_s: float) -> float:
        """Poll GET :attr:`health_path` (/health) until it answers 200; return seconds since launch."""
        assert self.proc is not None
        deadline = self.launched_at + timeout_s
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise ServerFailed(f"the server exited with {self.proc.returncode} before it was healthy; {self.log_tail()}")
            if self._health_status() == 200:
                return time.perf_counter() - self.launched_at
            time.sleep(HEALTH_POLL_S)
        raise ServerFailed(f"no 200 from {self.health_path} within {timeout_s:.0f} s; {self.log_tail()}")

    def _health_status(self) -> int | None:
        # A fresh connection per poll, closed at once: an idle keep-alive
        # connection would make the graceful stop wait (STACK.md, trap 3).
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HEALTH_REQUEST_TIMEOUT_S)
        try:
            conn.request("GET", self.health_path, headers={"Connection": "close"})
            response = conn.getresponse()
            response.read()
            return response.status
        except OSError:
            return None
        finally:
            conn.close()

    def pids(self) -> list[int]:
        """The server and its embedded PostgreSQL (a daemon, not a child)."""
        pids = [self.proc.pid] if self.proc is not None else []
        if self.data_dir is not None:
            pids += postmaster_pids(self.data_dir)
        return pids

    def stop(self) -> int:
        """SIGTERM, wait; SIGKILL after ``stop_timeout_s``. Returns the exit code."""
        if self.proc is None:
            raise ServerFailed("the server was never started")
        if self.exit_code is not None:
            return self.exit_code
        begun = time.perf_counter()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.stop_s = time.perf_counter() - begun
        self.exit_code = self.proc.returncode
        return self.exit_code

    def leftover_postgres(self) -> list[int]:
        """Postmasters still running for this data dir (there should be none after :meth:`stop`)."""
        return postmaster_pids(self.data_dir) if self.data_dir is not None else []

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "no server log"
        return "last lines of the server log:\n  " + "\n  ".join(text)

    def __enter__(self) -> "ServerProcess":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.proc is not None and self.exit_code is None:
            self.stop()
