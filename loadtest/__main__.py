"""``python -m loadtest <scenario>``: run a benchmark scenario, all of them, or regenerate docs from a result.

Add a scenario by writing ``loadtest/<name>.py`` with ``add_arguments(parser)``
(taking ``--quick`` and :func:`loadtest.common.add_common_arguments`) and
``run(args) -> int``, and listing it in :data:`SCENARIOS`; ``all`` runs every
scenario listed there, in order.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Sequence

from loadtest import calibration, foundation, report, run_all, scaleout, soak, tasks, ws

SCENARIOS: dict[str, tuple[Any, str]] = {
    "calibration": (calibration, "req/s of a bare quart-trio hello-world route on the server's core against "
                                 "the ~1,100 req/s of STACK.md: how fast this machine is today (`all` runs it "
                                 "first)"),
    "foundation": (foundation, "startup time, REST throughput (ping vs users/me), concurrent logins"),
    "tasks": (tasks, "task reads and durable writes vs ping, lists and search, the seed's benchmarks, "
                     "a profile of POST /tasks"),
    "ws": (ws, "WebSocket fan-out latency (W1), durable op throughput (W2), many projects (W3), idle sockets, "
               "profiles of W1 and W2"),
    "soak": (soak, "a mixed load for --duration: RSS, open files, trio tasks over time; is RSS flat after warm-up"),
    "scaleout": (scaleout, "1 vs 2 worker processes on many projects, and the cost of a forwarded op (needs "
                           "PostgreSQL and Redis)"),
}

# Attachments (upload/download throughput) are written by another module owner; registered once present.
if importlib.util.find_spec("loadtest.attachments") is not None:
    try:
        _attachments = importlib.import_module("loadtest.attachments")
    except Exception as exc:  # noqa: BLE001 - a module being written must not break the other scenarios
        print(f"loadtest: the attachments scenario is not available: {type(exc).__name__}: {exc}", file=sys.stderr)
    else:
        if hasattr(_attachments, "add_arguments") and hasattr(_attachments, "run"):
            SCENARIOS["attachments"] = (_attachments, (_attachments.__doc__ or "attachments").strip().splitlines()[0])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest", description="Collab benchmarks.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, summary) in SCENARIOS.items():
        sub = commands.add_parser(name, help=summary, description=(module.__doc__ or summary).strip(),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    every = commands.add_parser("all", help="every scenario in turn, then the summary of the targets "
                                            "(--quick: under 10 minutes)",
                                description=(run_all.__doc__ or "").strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    run_all.add_arguments(every)
    every.set_defaults(handler=run_all.run)
    regen = commands.add_parser("report", help="regenerate a docs/benchmarks.md section (and its charts) from a "
                                               "result JSON file")
    regen.add_argument("result", type=Path, help="a loadtest/results/<scenario>-<time>.json file")
    regen.set_defaults(handler=_regenerate)
    return parser


def _regenerate(args: argparse.Namespace) -> int:
    try:
        result = report.read_json(args.result)
        scenario = result.get("scenario", "")
        body = report.renderer(scenario)(result, report.relative(args.result))
        notes = report.publish(scenario, result, body)
    except report.ReportError as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 1
    for note in notes:
        print(note)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
