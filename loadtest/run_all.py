"""``python -m loadtest all [--quick]``: every scenario in turn, then the summary of issue 10's targets.

Runs :data:`loadtest.__main__.SCENARIOS` in order (calibration, foundation,
tasks, ws, soak, and attachments when that module exists), each exactly as its own
command would with the same ``--quick`` and the shared options, and each
rewriting its section of docs/benchmarks.md and its charts (``--docs`` is
passed even with ``--quick``; ``--no-docs`` turns all of it off). A
scenario that fails is reported and the others still run; the exit code is
then 1. Last, the summary section (targets, measured, met, goal; the wall
time of every scenario) is made from this run's result files and written
between the ``summary`` markers, with its JSON in
``loadtest/results/all-<time>.json``.

The calibration (:mod:`loadtest.calibration`: a bare quart-trio route's req/s
against the reference machine's) runs first even with ``--only``, unless
``--skip calibration``: the summary needs it to scale the targets to this
machine's speed. It writes no docs section of its own.

``all --quick`` is the one command that refreshes the whole document in
under 10 minutes on the 2-core machine; a full ``all`` takes ~25-30 minutes
(a 10-minute soak included).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from loadtest import report, summary
from loadtest.machine import describe_machine, describe_software, load_average
from loadtest.progress import PROGRESS, say

SCENARIO = "all"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="every scenario with --quick (same workloads, short runs, a 40 s soak): under 10 minutes")
    parser.add_argument("--only", help="comma-separated scenarios to run (default: all of them)")
    parser.add_argument("--skip", default="", help="comma-separated scenarios to leave out")
    parser.add_argument("--soak-duration", type=float, help="seconds of the soak (default 600; 90 with --quick)")
    parser.add_argument("--soak-result", type=Path,
                        help="a soak result JSON (e.g. of a 10-minute `python -m loadtest soak`) to report instead of "
                             "running the soak: the summary and the soak section then show that run")
    parser.add_argument("--no-docs", action="store_true", help="write the JSON results only; leave docs/ alone")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy runs (ws and tasks)")
    parser.add_argument("--database-url", help="use this PostgreSQL instead of embedded ones (the runs add data to it)")
    parser.add_argument("--server-log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="COLLAB_LOG_LEVEL for every server")
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary data dirs and server logs")
    parser.add_argument("--collab-command", help="run the servers with this command instead of the venv's `collab`")


def _scenario_argv(name: str, args: argparse.Namespace) -> list[str]:
    argv = []
    if args.quick:
        argv.append("--quick")
    argv.append("--no-docs" if args.no_docs else "--docs")
    if args.database_url:
        argv += ["--database-url", args.database_url]
    if args.server_log_level:
        argv += ["--server-log-level", args.server_log_level]
    if args.keep_data:
        argv.append("--keep-data")
    if args.collab_command:
        argv += ["--collab-command", args.collab_command]
    if args.no_profile and name in ("ws", "tasks"):
        argv.append("--no-profile")
    if name == "soak" and args.soak_duration:
        argv += ["--duration", str(args.soak_duration)]
    return argv


def _known(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``argv`` without the options this scenario does not take (e.g. ``--docs`` for one that writes no section)."""
    known = parser._option_string_actions  # noqa: SLF001 - argparse has no public lookup by option string
    out, i = [], 0
    while i < len(argv):
        action = known.get(argv[i])
        takes_value = action is not None and action.nargs != 0
        if action is not None:
            out += argv[i:i + (2 if takes_value else 1)]
        i += 2 if (takes_value or (action is None and i + 1 < len(argv) and not argv[i + 1].startswith("--"))) else 1
    return out


def _newest_result(name: str, since: float) -> Path | None:
    found = [p for p in report.RESULTS_DIR.glob(f"{name}-*.json") if p.stat().st_mtime >= since]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def run(args: argparse.Namespace) -> int:
    from loadtest.__main__ import SCENARIOS

    names = list(SCENARIOS)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = set(wanted) - set(names)
        if unknown:
            raise SystemExit(f"loadtest: unknown scenario(s) {', '.join(sorted(unknown))}; known: {', '.join(names)}")
        names = [n for n in names if n in wanted]
    skipped = {n.strip() for n in args.skip.split(",") if n.strip()}
    names = [n for n in names if n not in skipped]
    reused: dict[str, Any] | None = None
    if args.soak_result is not None:
        reused = report.read_json(args.soak_result)
        if reused.get("scenario") != "soak":
            raise SystemExit(f"loadtest: {args.soak_result} is not a soak result")
        names = [n for n in names if n != "soak"]
    if not names:
        raise SystemExit("loadtest: no scenario left to run")
    if "calibration" in SCENARIOS and "calibration" not in names and "calibration" not in skipped:
        names.insert(0, "calibration")  # the summary scales the targets by it (module docstring)
    began = time.perf_counter()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    machine, software = describe_machine(), describe_software()
    command = " ".join(["python -m loadtest", *sys.argv[1:]]) if sys.argv[1:2] == ["all"] else "python -m loadtest all"
    say(f"Collab loadtest: all{' --quick' if args.quick else ''}: {', '.join(names)}")
    say(f"machine : {machine['cpu_model']}, {machine['cores']} cores, {machine['ram_gib']} GiB RAM, {machine['os']}; "
        f"loadavg {machine['loadavg_at_start']}"
        + f"; Python speed probe {machine['python_speed_mops']} M loop iterations/s")
    say(f"software: Python {software['python']}; " + ", ".join(f"{k} {v}" for k, v in software["packages"].items()))
    say(f"code    : commit {software['checkout']['commit']} ({software['checkout']['uncommitted_server_files']} "
        "server files with uncommitted changes)")
    # Each scenario pins this process to its load CPU; the next one must plan from every CPU again.
    cpus = os.sched_getaffinity(0)
    timing: dict[str, Any] = {"started_at": started_at, "scenarios": {}}
    results: dict[str, dict[str, Any]] = {}
    paths: dict[str, str] = {}
    failed = []
    for index, name in enumerate(names, start=1):
        module, _ = SCENARIOS[name]
        parser = argparse.ArgumentParser(prog=f"python -m loadtest {name}")
        module.add_arguments(parser)
        argv = _known(parser, _scenario_argv(name, args))
        say()
        say(f"######## all: {index}/{len(names)} {name} {' '.join(argv)}")
        PROGRESS.position = (index, len(names))
        os.sched_setaffinity(0, cpus)
        t0, wall0 = time.time(), time.perf_counter()
        try:
            code = module.run(parser.parse_args(argv))
        except SystemExit as exc:  # a scenario's option check
            code = exc.code if isinstance(exc.code, int) else 2
        except Exception:  # noqa: BLE001 - one scenario's crash must not stop the others
            traceback.print_exc()
            code = 1
        finally:
            PROGRESS.position = None
        wall = time.perf_counter() - wall0
        timing["scenarios"][name] = {"wall_s": round(wall, 1), "exit_code": code}
        say(f"######## all: {name} finished with exit code {code} after {wall:.0f} s "
            f"(total {(time.perf_counter() - began) / 60:.1f} min)")
        if code != 0:
            failed.append(name)
        path = _newest_result(name, t0)
        if path is not None:
            paths[name] = report.relative(path)
            results[name] = report.read_json(path)
    if reused is not None and args.soak_result is not None:
        paths["soak"] = report.relative(args.soak_result.resolve())
        results["soak"] = reused
        timing["scenarios"]["soak"] = {"wall_s": 0.0, "exit_code": 0, "reused": paths["soak"]}
        if not args.no_docs:
            body = report.renderer("soak")(reused, paths["soak"])
            for note in report.publish("soak", reused, body, report.TITLES.get("soak")):
                say(note)
    timing["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    timing["wall_s"] = round(time.perf_counter() - began, 1)
    machine["loadavg_at_end"] = load_average()
    doc = summary.build(results, paths, timing, machine, software,
                        {"quick": args.quick, "command": command, "scenarios": names})
    path = report.write_json(doc, SCENARIO)
    body = summary.render(doc, report.relative(path))
    say()
    say(body)
    say()
    say(f"results: {report.relative(path)}")
    if not args.no_docs:
        for note in report.publish("summary", doc, body, report.TITLES["summary"]):
            say(note)
    say(f"all: {len(names) - len(failed)}/{len(names)} scenarios ok"
        + (f"; failed: {', '.join(failed)}" if failed else "") + f"; wall time {timing['wall_s'] / 60:.1f} min")
    return 1 if failed else 0
