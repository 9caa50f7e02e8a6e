"""Pieces every scenario shares: how parameters are shown, and the run preamble."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, ClassVar, Sequence

from loadtest.cpu import CpuWindow
from loadtest.machine import describe_machine
from loadtest.wrk import WrkMissing, require_wrk


def picker(args: Any) -> Callable[[Any, Any, Any], Any]:
    """``pick(value, normal, quick)``: the flag's value, else the default for the run's mode."""
    def pick(value: Any, normal: Any, quick: Any) -> Any:
        return value if value is not None else (quick if args.quick else normal)
    return pick


def subset(text: str, allowed: Sequence[str], flag: str) -> tuple[str, ...]:
    """A comma-separated choice of ``allowed`` names (exit with a message otherwise)."""
    chosen = tuple(p.strip() for p in text.split(",") if p.strip())
    if not chosen or set(chosen) - set(allowed):
        raise SystemExit(f"loadtest: {flag} takes a subset of {','.join(allowed)}")
    return chosen


def whole_numbers(text: str, flag: str, lo: int, hi: int) -> tuple[int, ...]:
    """Comma-separated whole numbers, each within [lo, hi] (exit with a message otherwise)."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise SystemExit(f"loadtest: {flag} takes comma-separated whole numbers") from None
    if not values or not all(lo <= v <= hi for v in values):
        raise SystemExit(f"loadtest: each {flag} value must be between {lo} and {hi}")
    return values


def add_common_arguments(parser: Any) -> None:
    """The options every scenario takes: where the database is, logging, start-up, output."""
    parser.add_argument("--database-url", help="use this PostgreSQL instead of an embedded one (the run adds its data to it)")
    parser.add_argument("--server-log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="COLLAB_LOG_LEVEL for the server (default: collab's own, INFO, which logs every request)")
    parser.add_argument("--startup-timeout", type=float, default=120.0, help="seconds a server may take to be healthy")
    parser.add_argument("--no-docs", action="store_true", help="write the JSON only; leave docs/benchmarks.md alone")
    parser.add_argument("--docs", action="store_true",
                        help="rewrite docs/benchmarks.md (and its charts) even with --quick, as `all --quick` does")
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary data dirs, server logs and profiles")
    parser.add_argument("--server-setting", type=_server_setting, action="append", metavar="NAME=VALUE",
                        help="a COLLAB_* setting (name without the prefix) for every server of the run, e.g. "
                             "--server-setting workers=2 --server-setting redis_url=redis://127.0.0.1:6379/0 "
                             "(several workers also need --database-url; they run unpinned)")
    parser.add_argument("--collab-command", type=_command,
                        help="run the server with this command instead of the venv's `collab` (e.g. "
                             "'env PYTHONPATH=/tmp/other-checkout python -m collab', for a before/after comparison)")


def _server_setting(text: str) -> str:
    from loadtest import serverproc

    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise SystemExit(f"loadtest: --server-setting wants NAME=VALUE, got {text!r}")
    serverproc.EXTRA_SETTINGS[name.strip().lower()] = value
    return text


def _command(text: str) -> list[str]:
    import shlex

    from loadtest import serverproc

    argv = shlex.split(text)
    if not argv:
        raise SystemExit("loadtest: --collab-command is empty")
    serverproc.COLLAB_COMMAND = argv  # parsed once per run; every server and CLI call of the run uses it
    return argv


def docs_wanted(args: Any) -> bool:
    """Whether a run rewrites its docs section: full runs do, --quick runs only with --docs, never with --no-docs."""
    return not args.no_docs and (args.docs or not args.quick)


@dataclass(frozen=True, kw_only=True)
class ServerRunOptions:
    """The options of every scenario that starts servers (the common command-line options);
    a scenario's ``Options`` adds its own fields."""

    database_url: str | None
    server_log_level: str | None
    startup_timeout_s: float
    quick: bool
    update_docs: bool
    keep_data: bool

    DEFAULT_LOG_LEVEL: ClassVar[str] = "collab default (INFO, access log on)"

    def public(self) -> dict[str, Any]:
        return public_params(self, self.DEFAULT_LOG_LEVEL)


def server_run_options(args: Any) -> dict[str, Any]:
    """The :class:`ServerRunOptions` fields from parsed arguments (``Options(**server_run_options(args), ...)``)."""
    return {
        "database_url": args.database_url, "server_log_level": args.server_log_level,
        "startup_timeout_s": args.startup_timeout, "quick": args.quick, "update_docs": docs_wanted(args),
        "keep_data": args.keep_data,
    }


def public_params(options: Any, default_log_level: str) -> dict[str, Any]:
    """A scenario's options as printed and recorded: no database URL (it may hold a password)."""
    doc = asdict(options)
    doc["database"] = "given (--database-url)" if options.database_url else "embedded PostgreSQL (pgserver)"
    doc.pop("database_url")
    doc["server_log_level"] = options.server_log_level or default_log_level
    return doc


def prepare_run(*, needs_wrk: bool = True) -> tuple[Any, dict[str, Any]] | None:
    """Check for wrk (unless the scenario does without), pin this process to the load core,
    describe the machine (with how busy it was just before). None (after printing why) when
    wrk is missing."""
    from loadtest.foundation import plan_placement  # foundation imports this module

    try:
        if needs_wrk:
            require_wrk()
    except WrkMissing as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return None
    place = plan_placement()
    machine = describe_machine()
    if place.load is not None:
        os.sched_setaffinity(0, place.load)
    background = CpuWindow([])
    background.start()
    time.sleep(1.0)
    machine["background_busy_pct"] = background.stop()["core_busy_pct"]
    return place, machine
