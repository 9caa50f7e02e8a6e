"""CPU accounting for one measurement window: per-core busy time and the server's share.

:class:`CpuWindow` takes a snapshot of ``/proc/stat`` (per core) and of the
CPU time of a set of processes (the server, its children and the embedded
PostgreSQL, found by its data directory) at :meth:`start`, and reports the
difference at :meth:`stop`. On a shared machine, "busy" minus "server" on the
server's core is what other programs took from it: the noise indicator.
Needs Linux ``/proc``; psutil is used when installed for process times.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterable

try:
    import psutil
except ImportError:  # psutil is a dev dependency; without it only core figures are reported
    psutil = None

_TICKS = os.sysconf("SC_CLK_TCK")


def _core_times() -> dict[int, tuple[float, float]]:
    """cpu index -> (busy seconds, total seconds) since boot."""
    result: dict[int, tuple[float, float]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        values = [int(x) for x in fields[:8]]
        idle = values[3] + values[4]  # idle + iowait
        total = sum(values)
        result[int(name[3:])] = ((total - idle) / _TICKS, total / _TICKS)
    return result


def postmaster_pids(data_dir: Path) -> list[int]:
    """PostgreSQL postmasters whose command line names ``<data_dir>/postgres``."""
    needle = str((data_dir / "postgres").resolve()).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and b"postgres" in cmdline.split(b"\0", 1)[0]:
            found.append(int(entry.name))
    return found


def _tree_cpu_s(root_pids: Iterable[int]) -> float | None:
    if psutil is None:
        return None
    total = 0.0
    for pid in root_pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in procs:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                continue
    return total


class CpuWindow:
    """CPU use between :meth:`start` and :meth:`stop` (see the module docstring)."""

    def __init__(self, server_pids: Iterable[int]) -> None:
        self._pids = list(server_pids)

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._cores0 = _core_times()
        self._server0 = _tree_cpu_s(self._pids)

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self._t0
        cores1 = _core_times()
        server1 = _tree_cpu_s(self._pids)
        busy = {}
        for cpu, (b1, t1) in cores1.items():
            b0, t0 = self._cores0.get(cpu, (b1, t1))
            busy[str(cpu)] = round(100 * (b1 - b0) / (t1 - t0), 1) if t1 > t0 else None
        server_pct = None
        if server1 is not None and self._server0 is not None and wall > 0:
            # Processes that exited during the window make this an underestimate.
            server_pct = round(100 * max(0.0, server1 - self._server0) / wall, 1)
        return {"wall_s": round(wall, 3), "core_busy_pct": busy, "server_cpu_pct": server_pct}
