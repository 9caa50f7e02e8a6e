"""py-spy against the server during a run, and a summary of where its CPU went.

:func:`start_profile` runs ``py-spy record --nonblocking --format raw``
(collapsed stacks; the server is never paused) for a fixed duration,
pinned to the load CPU; py-spy needs root or ptrace rights, and is found next
to this interpreter (it is in the dev extra) or on PATH. When it is missing,
the run goes on without a profile and says so. The scenarios profile one
extra run each: ``ws`` the largest fan-out level (W1) and the most ops in
flight (W2, the group commit), ``tasks`` ``POST /api/v1/tasks`` into one
project (a REST hot path).

:func:`summarize` reads the collapsed stacks and returns the share of
samples (idle samples are not recorded, so 100% = the server's busy time in
its Python threads): by the package of the innermost frame (self time), for
named inclusive areas of the WebSocket and REST paths (:data:`AREAS`), and
the top functions, self and inclusive (a function counts once per sample
when it is anywhere on the stack).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

RATE_HZ = 100
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")

#: Inclusive areas: a sample counts for an area when any frame of its stack matches (function, part of the file
#: path as py-spy prints it: relative to site-packages or the project, e.g. ``quart_trio/app.py``), unless a
#: frame's file contains the optional third element (WebSockets pass through ``Quart.__call__``).
AREAS: dict[str, tuple[str, ...]] = {
    "connection writers (WsSession.run_writer)": ("run_writer", "ws_session.py"),
    "hypercorn WebSocket send (WSStream.app_send)": ("app_send", "hypercorn/protocol/ws_stream.py"),
    "hypercorn WebSocket receive (WSStream.handle)": ("handle", "hypercorn/protocol/ws_stream.py"),
    "frame readers (ws_endpoint._read + dispatch)": ("_read", "ws_endpoint.py"),
    "op dispatch (actors/ws_dispatch.py)": ("", "actors/ws_dispatch.py"),
    "hub fan-out (Hub.publish)": ("publish", "hub.py"),
    "project actors (actors/project.py)": ("", "actors/project.py"),
    "storage (collab/storage)": ("", "collab/storage/"),
    "database driver (asyncpg)": ("", "asyncpg/"),
    "asyncio loop inside trio (trio_asyncio)": ("", "trio_asyncio/"),
    "flush clock (wait_all_tasks_blocked)": ("wait_all_tasks_blocked", ""),
    "hypercorn connection protocol (protocol/h11.py, h11; WebSockets too)": ("", "h11"),
    "REST framework (quart, quart_trio, quart_schema)": ("", "quart", "ws_endpoint.py"),
    "validation and serialization (pydantic)": ("", "pydantic/"),
    "middleware (auth gate, rate limit, headers, gzip)": ("", "collab/http/middleware.py"),
    "request context and access log (collab/http/context.py)": ("", "collab/http/context.py"),
    "authentication (collab/auth)": ("", "collab/auth/"),
    "rate limiter (collab/ratelimit.py)": ("", "collab/ratelimit.py"),
    "task routes (routes_tasks, writes, task_access)": ("", "collab/http/routes_tasks.py"),
    "Prometheus metrics (prometheus_client)": ("", "prometheus_client/"),
    "logging (stdlib logging, its queue thread)": ("", "logging/"),
}


def py_spy_path() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start_profile(pid: int, duration_s: float, output: Path, cpus: set[int] | None) -> subprocess.Popen[bytes] | None:
    exe = py_spy_path()
    if exe is None:
        return None
    argv = [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(duration_s))), "--rate", str(RATE_HZ),
            "--nonblocking", "--format", "raw", "--output", str(output)]
    log = open(output.with_suffix(".log"), "wb")
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    finally:
        log.close()


def finish_profile(proc: subprocess.Popen[bytes] | None, output: Path, timeout_s: float) -> dict[str, Any]:
    if proc is None:
        return {"available": False, "note": "py-spy not installed (pip install py-spy into the venv; run as root)"}
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
        return {"available": False, "note": f"py-spy did not finish within {timeout_s:.0f} s"}
    if proc.returncode != 0 or not output.exists():
        log = output.with_suffix(".log")
        text = log.read_text(errors="replace")[-300:] if log.exists() else ""
        return {"available": False, "note": f"py-spy exited with {proc.returncode}: {text.strip()}"}
    return {"available": True, **summarize(output.read_text())}


def _package(file: str) -> str:
    parts = file.replace("\\", "/").split("/")
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1:]
    if parts and parts[0] == "collab" and len(parts) > 1:
        return "collab/" + "/".join(parts[1:]) if len(parts) <= 3 else "collab/" + parts[1]
    if parts and parts[0] in ("python3.11", "lib"):
        return "stdlib"
    if len(parts) == 1:
        return "stdlib" if parts[0].endswith(".py") else parts[0]
    return parts[0]


def summarize(collapsed: str, top: int = 15) -> dict[str, Any]:
    total = 0
    by_package: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [m for m in (FRAME.match(f) for f in stack.split(";")) if m]
        if not frames:
            continue
        leaf = frames[-1]
        by_package[_package(leaf["file"])] += count
        by_function[_name(leaf)] += count
        for name in {_name(m) for m in frames}:
            inclusive[name] += count
        for area, (func, file, *exclude) in AREAS.items():
            if exclude and any(exclude[0] in m["file"] for m in frames):
                continue
            for m in frames:
                if (not func or m["func"] == func or m["func"].endswith("." + func)) and (not file or file in m["file"]):
                    areas[area] += count
                    break

    def share(counter: Counter[str], n: int | None = None) -> list[list[Any]]:
        return [[k, round(100 * v / total, 1)] for k, v in counter.most_common(n)] if total else []

    return {"samples": total, "rate_hz": RATE_HZ, "self_by_package_pct": share(by_package, 12),
            "inclusive_areas_pct": share(areas), "top_functions_self_pct": share(by_function, top),
            "top_functions_inclusive_pct": share(inclusive, 3 * top)}


def _name(m: re.Match[str]) -> str:
    return f"{m['func']} ({m['file'].split('site-packages/')[-1].split('/work/main/')[-1]})"
