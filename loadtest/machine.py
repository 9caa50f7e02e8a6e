"""What the benchmark ran on: machine, operating system, and software versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

#: Distributions whose versions explain the numbers.
KEY_PACKAGES = (
    "collab", "trio", "quart", "quart-trio", "hypercorn", "asyncpg", "trio-asyncio",
    "pgserver", "pydantic", "orjson", "pyjwt", "argon2-cffi", "httpx",
)


def _first_line_with(path: str, prefix: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip() if ":" in line else line.split("=", 1)[1].strip().strip('"')
    except OSError:
        return None
    return None


def python_speed_mops(iterations: int = 2_000_000, repeats: int = 3) -> float:
    """Millions of iterations per second of a plain Python loop (best of ``repeats``): a probe of how fast
    this (virtual) machine runs Python right now. A shared VM's speed varies over the day; figures of runs
    whose probes differ are not comparable, their ratios to the same run's baseline are."""
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        total = 0
        for i in range(iterations):
            total += i
        best = min(best, time.perf_counter() - began)
    return round(iterations / best / 1e6, 1)


def describe_machine() -> dict[str, Any]:
    mem_kib = _first_line_with("/proc/meminfo", "MemTotal")
    return {
        "python_speed_mops": python_speed_mops(),
        "hostname": platform.node(),
        "cpu_model": _first_line_with("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0)),
        "ram_gib": round(int(mem_kib.split()[0]) / 1024 / 1024, 1) if mem_kib else None,
        "os": _first_line_with("/etc/os-release", "PRETTY_NAME=") or platform.platform(),
        "kernel": platform.release(),
        "loadavg_at_start": load_average(),
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _command_version(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None and not Path(argv[0]).exists():
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if text else None


def embedded_postgres_version() -> str | None:
    try:
        import importlib.util

        spec = importlib.util.find_spec("pgserver")
    except ImportError:
        return None
    if spec is None or spec.origin is None:
        return None
    return _command_version([str(Path(spec.origin).parent / "pginstall" / "bin" / "postgres"), "--version"])


def describe_checkout() -> dict[str, Any]:
    """The commit measured, and whether the server code had uncommitted changes."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    changed = git("status", "--porcelain", "--", "collab", "migrations", "pyproject.toml")
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted_server_files": None if changed is None else len(changed.splitlines())}


def describe_software() -> dict[str, Any]:
    packages: dict[str, str | None] = {}
    for name in KEY_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    wrk = _command_version(["wrk", "-v"])
    from loadtest import serverproc

    return {
        "collab_command": " ".join(serverproc.COLLAB_COMMAND) if serverproc.COLLAB_COMMAND else "collab (this venv)",
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "packages": packages,
        "wrk": wrk.split(" Copyright")[0] if wrk else None,
        "embedded_postgres": embedded_postgres_version(),
        "checkout": describe_checkout(),
    }
