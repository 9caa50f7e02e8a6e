"""``python -m loadtest calibration``: how fast this machine is today against the one that set the targets.

Issue 10's targets are absolute figures, measured in an earlier session on a
2-core VM of the same kind (STACK.md), and the VM's speed varies over the day.
:func:`measure` serves :mod:`loadtest.calibration_app` (a bare QuartTrio app,
one ``GET /ping``) with ``python -m hypercorn -k trio -b 127.0.0.1:<free port>
loadtest.calibration_app:app``, pinned to the server's CPU as every scenario
pins the server (:func:`loadtest.foundation.plan_placement`), waits until it
answers, and runs wrk against it as the ws scenario's baseline does (50
connections, one thread, pinned to the load CPU; 3 s, 2 s with ``--quick``)
``repetitions`` times (2). It returns each run, the medians and
``speed_ratio`` = median req/s / :data:`REFERENCE_REQUESTS_PER_S` (0.46: this
machine serves the same bare route at 46% of the reference speed).

``python -m loadtest all`` runs this scenario first (also with ``--only``,
unless ``--skip calibration``); the summary shows the figure under the machine
line and scales the W1/W2/W3 targets by the ratio (:mod:`loadtest.summary`).

Guarantees: every process of the app (hypercorn's parent, the worker it
spawns, its resource tracker) is gone when :func:`measure` returns or raises:
SIGTERM to the parent, SIGKILL after a deadline, then SIGKILL for any
descendant still alive. Every wait has a deadline. The result is JSON-able.
It writes ``loadtest/results/calibration-<time>.json`` and never touches
docs/benchmarks.md (its figures appear in the summary section).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from loadtest import report
from loadtest.cpu import CpuWindow
from loadtest.foundation import Placement
from loadtest.machine import describe_software, load_average
from loadtest.progress import PROGRESS, say
from loadtest.serverproc import ServerFailed, ServerProcess, free_port
from loadtest.stats import median
from loadtest.wrk import WrkFailed, WrkMissing, run_wrk, write_script

SCENARIO = "calibration"
APP = "loadtest.calibration_app:app"
PATH = "/ping"
CONNECTIONS = 50  # as the ws scenario's baseline (loadtest.ws.Server.baseline)
REPETITIONS = 2
STOP_TIMEOUT_S = 15.0
SURVIVOR_GRACE_S = 3.0
SHARED_CORE_WARN_PCT = 10.0

#: req/s of a hello-world route on quart-trio + hypercorn (trio worker) in the session that measured
#: issue 10's targets: /work/shared/STACK.md, "Traps", 2 ("Cost of the bridge": "~1,100 req/s for a
#: hello-world route").
REFERENCE_REQUESTS_PER_S = 1100.0
REFERENCE = "STACK.md, trap 2: a hello-world route on quart-trio + hypercorn (trio worker) served ~1,100 req/s"


class CalibrationFailed(Exception):
    """The bare app did not start or answer, or wrk failed or is missing."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="2 s wrk runs instead of 3 s")
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 3; 2 with --quick), as the ws "
                                                       "scenario's --baseline")
    parser.add_argument("--repetitions", type=int, default=REPETITIONS,
                        help=f"wrk runs; the median is reported (default {REPETITIONS})")
    parser.add_argument("--startup-timeout", type=float, default=30.0,
                        help="seconds the bare app may take to answer (default 30)")
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary dir with the app's log")


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time in clock ticks since boot) of every live (not zombie) process, from /proc."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] in ("Z", "X"):  # exited, not yet reaped: nothing left to stop
                continue
            table[int(entry.name)] = (int(fields[1]), fields[19])  # stat fields 4 (ppid) and 22 (starttime)
        except (OSError, IndexError, ValueError):
            continue
    return table


def _descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` (children, grandchildren, ...): pid -> start time (its identity)."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = table[child][1]
            todo.append(child)
    return found


def _alive(processes: dict[int, str]) -> list[int]:
    """The pids of ``processes`` (pid -> start time) still running; a pid whose start time differs is
    another process that reused the number."""
    table = _process_table()
    return [pid for pid, started in sorted(processes.items()) if pid in table and table[pid][1] == started]


def _kill_survivors(processes: dict[int, str], grace_s: float = SURVIVOR_GRACE_S) -> list[int]:
    """SIGKILL each process of ``processes`` still alive after ``grace_s`` (hypercorn's worker and
    multiprocessing's resource tracker exit on their own just after the parent); returns the killed pids."""
    deadline = time.monotonic() + grace_s
    while _alive(processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = []
    for pid in _alive(processes):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
        killed.append(pid)
    return killed


def _pinning(place: Placement) -> str:
    if place.server is None or place.load is None:
        return "not pinned (fewer than 2 CPUs): the app and wrk share the cores"
    return f"bare app (hypercorn and its worker) pinned to CPU {min(place.server)}; wrk to CPU {min(place.load)}"


def measure(place: Placement, *, duration_s: float, repetitions: int = REPETITIONS, startup_timeout_s: float = 30.0,
            workdir: Path | None = None) -> dict[str, Any]:
    """Serve the bare app, run wrk ``repetitions`` times, stop the app; the JSON-able result (module docstring).

    Raises :class:`CalibrationFailed`; the app's processes are gone either way."""
    own_dir = workdir is None
    directory = Path(tempfile.mkdtemp(prefix="collab-loadtest-calibration-")) if workdir is None else workdir
    port = free_port()
    argv = [sys.executable, "-m", "hypercorn", "-k", "trio", "-b", f"127.0.0.1:{port}", APP]
    # No COLLAB_* variable reaches it (nothing of Collab's runs), so --server-setting workers=N cannot unpin it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")}
    proc = ServerProcess(env, log_path=directory / "calibration-app.log", port=port, cpus=place.server,
                         stop_timeout_s=STOP_TIMEOUT_S, argv=argv, health_path=PATH)
    tree: dict[int, str] = {}
    runs: list[dict[str, Any]] = []
    warnings: list[str] = []
    server: dict[str, Any] = {}
    failed = True
    try:
        with PROGRESS.step("calibration: starting the bare app"):
            proc.start()
            assert proc.proc is not None
            server["ready_s"] = round(proc.wait_healthy(startup_timeout_s), 3)
        tree.update(_descendants(proc.proc.pid))
        say(f"   bare app: {' '.join(['python', *argv[1:]])} (pid {proc.proc.pid}) answering after "
            f"{server['ready_s']:.2f} s")
        script = write_script(directory)
        server_core = str(min(place.server)) if place.server else None
        for index in range(1, repetitions + 1):
            window = CpuWindow([proc.proc.pid])
            window.start()
            result = run_wrk(proc.base_url, PATH, connections=CONNECTIONS, duration_s=duration_s, script=script,
                             cpus=place.load)
            cpu = window.stop()
            run = {"requests_per_s": result.requests_per_s, "p50_ms": result.p50_ms, "p90_ms": result.p90_ms,
                   "p99_ms": result.p99_ms, "requests": result.requests, "errors": result.errors,
                   "duration_s": result.duration_s, "cpu": cpu}
            busy = cpu["core_busy_pct"].get(server_core) if server_core is not None else None
            if busy is not None and cpu["server_cpu_pct"] is not None:
                run["other_programs_pct_of_server_core"] = other = round(max(0.0, busy - cpu["server_cpu_pct"]), 1)
                if other > SHARED_CORE_WARN_PCT:
                    warnings.append(f"bare-app run {index}: other programs took ~{other:.0f}% of the server's "
                                    f"CPU {server_core}: the figure is noisy")
            if result.error_count:
                warnings.append(f"bare-app run {index}: wrk counted {result.error_count} errors {result.errors}")
            runs.append(run)
            say(f"   calibration {index}/{repetitions}: wrk GET {PATH}, {CONNECTIONS} connections, {duration_s:g} s: "
                f"{result.requests_per_s:,.0f} req/s (p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
                f"errors {result.error_count})")
        failed = False
    except (ServerFailed, WrkFailed, WrkMissing, OSError) as exc:
        raise CalibrationFailed(f"{type(exc).__name__}: {exc}") from exc
    finally:
        if proc.proc is not None:
            tree.update(_descendants(proc.proc.pid))
            server["exit_code"] = proc.stop()
            server["stop_s"] = round(proc.stop_s or 0.0, 3)
            server["killed"] = proc.killed
            survivors = _kill_survivors(tree)
            if survivors:
                server["survivors_killed"] = survivors
                warnings.append(f"{len(survivors)} process(es) of the bare app outlived its stop and "
                                "were killed")
        if own_dir and not failed:
            shutil.rmtree(directory, ignore_errors=True)
        elif failed:
            print(f"loadtest: calibration: the bare app's log is in {directory}", file=sys.stderr)
    rates = [r["requests_per_s"] for r in runs]
    rate = median(rates)
    return {
        "app": f"{APP} (QuartTrio, one GET {PATH} returning {{\"ok\": true}})",
        "command": f"python -m hypercorn -k trio -b 127.0.0.1:<free port> {APP}",
        "pinning": _pinning(place),
        "server_cpu": min(place.server) if place.server else None,
        "load_cpu": min(place.load) if place.load else None,
        "wrk": {"path": PATH, "connections": CONNECTIONS, "threads": 1, "duration_s": duration_s},
        "repetitions": repetitions,
        "runs": runs,
        "requests_per_s": rates,
        "median_requests_per_s": round(rate, 1),
        "p50_ms": round(median([r["p50_ms"] for r in runs]), 3),
        "p99_ms": round(median([r["p99_ms"] for r in runs]), 3),
        "reference_requests_per_s": REFERENCE_REQUESTS_PER_S,
        "reference": REFERENCE,
        "speed_ratio": round(rate / REFERENCE_REQUESTS_PER_S, 3),
        "server": server,
        "warnings": warnings,
    }


def describe(result: dict[str, Any]) -> str:
    """The figures of one calibration in a few lines (what :func:`run` prints)."""
    runs = ", ".join(f"{r:,.0f}" for r in result["requests_per_s"])
    return (f"Calibration: a bare quart-trio hello-world route (`{result['command']}`; {result['pinning']}) served "
            f"**{result['median_requests_per_s']:,.0f} req/s** (median of {result['repetitions']}: {runs}; p50 "
            f"{result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms at {result['wrk']['connections']} "
            f"connections); reference {result['reference_requests_per_s']:,.0f} req/s ({result['reference']}): "
            f"**speed ratio {result['speed_ratio']:.3f}**: this machine runs at ~{round(100 * result['speed_ratio'])}% "
            "of the reference speed.")


def run(args: argparse.Namespace) -> int:
    from loadtest.common import prepare_run  # common imports foundation, which the scenarios import

    duration_s = args.duration if args.duration is not None else (2.0 if args.quick else 3.0)
    if not 1 <= duration_s <= 60:
        raise SystemExit("loadtest: --duration must be between 1 and 60")
    if not 1 <= args.repetitions <= 20:
        raise SystemExit("loadtest: --repetitions must be between 1 and 20")
    PROGRESS.scenario(SCENARIO)
    prepared = prepare_run()
    if prepared is None:
        return 2
    place, machine = prepared
    doc: dict[str, Any] = {
        "scenario": SCENARIO, "format": 1, "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine, "software": describe_software(),
        "parameters": {"quick": args.quick, "duration_s": duration_s, "repetitions": args.repetitions},
        "command": " ".join(["python -m loadtest", *sys.argv[1:]]),
    }
    say(f"Collab loadtest: {SCENARIO}{' (--quick: 2 s runs)' if args.quick else ''}")
    say(f"machine : {machine['cpu_model']}, {machine['cores']} cores, {machine['ram_gib']} GiB RAM; loadavg "
        f"{machine['loadavg_at_start']}; cores busy over 1 s before start {machine['background_busy_pct']} %; "
        f"Python speed probe {machine['python_speed_mops']} M loop iterations/s")
    say(f"pinning : {_pinning(place)}")
    workdir = Path(tempfile.mkdtemp(prefix="collab-loadtest-calibration-"))
    try:
        doc.update(measure(place, duration_s=duration_s, repetitions=args.repetitions,
                           startup_timeout_s=args.startup_timeout, workdir=workdir))
    except CalibrationFailed as exc:
        print(f"loadtest: calibration: {exc}", file=sys.stderr)
        return 1
    if args.keep_data:
        say(f"the bare app's log kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    doc["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    doc["machine"]["loadavg_at_end"] = load_average()
    path = report.write_json(doc, SCENARIO)
    say()
    say(describe(doc))
    say()
    for warning in doc["warnings"]:
        say(f"WARNING: {warning}")
    say(f"results: {report.relative(path)} (docs/benchmarks.md not touched: `all` puts this in its summary)")
    return 0
