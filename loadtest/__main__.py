"""``python -m loadtest <scenario>``: run a benchmark scenario, or regenerate docs from a result.

Add a scenario by writing ``loadtest/<name>.py`` with ``add_arguments(parser)``
and ``run(args) -> int``, and listing it in :data:`SCENARIOS`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from loadtest import foundation, report, tasks, ws

SCENARIOS = {
    "foundation": (foundation, "startup time, REST throughput (ping vs users/me), concurrent logins"),
    "tasks": (tasks, "task reads and durable writes vs ping, lists and search on 10,000 tasks, the seed's benchmarks"),
    "ws": (ws, "WebSocket fan-out latency (W1), durable op throughput (W2), many projects (W3), idle sockets"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest", description="Collab benchmarks.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, summary) in SCENARIOS.items():
        sub = commands.add_parser(name, help=summary, description=(module.__doc__ or summary).strip(),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    regen = commands.add_parser("report", help="regenerate a docs/benchmarks.md section from a result JSON file")
    regen.add_argument("result", type=Path, help="a loadtest/results/<scenario>-<time>.json file")
    regen.set_defaults(handler=_regenerate)
    return parser


def _regenerate(args: argparse.Namespace) -> int:
    try:
        result = report.read_json(args.result)
        scenario = result.get("scenario", "")
        body = report.renderer(scenario)(result, report.relative(args.result))
        path = report.update_docs(scenario, body)
    except report.ReportError as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 1
    print(f"regenerated the {scenario} section of {report.relative(path)}")
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
