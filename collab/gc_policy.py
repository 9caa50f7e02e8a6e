"""The garbage collector's policy: large young generation, regular sweeps of the middle one.

With hundreds of connections, CPython's default thresholds spend a large
share of the server's CPU in the collector (STACK.md), so ``collab serve``
collects generation 0 only every 100,000 net allocations
(:data:`GC_THRESHOLDS`). The catch: generation 1 then runs every 50 of those
passes, which at a steady load is hours, and the cyclic garbage a closed
WebSocket leaves behind (the session, its tasks and hypercorn's protocol
objects reference each other) waits there. The soak measured it: RSS rising
~1 MiB a minute with two socket closes a second, and 80,000 unreachable
objects found by a full collection after 10 minutes.

:class:`YoungSweeper` therefore collects generations 0 and 1 every
``interval_s`` (``COLLAB_GC_SWEEP_INTERVAL_S``): short pauses (timed, in
``/api/v1/admin/metrics``), garbage freed while it is young. Objects that
survive two sweeps are promoted to generation 2, which CPython collects
when it has grown by a quarter since its last full collection.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import trio

#: Fewer, larger young-generation collections (see the module docstring).
GC_THRESHOLDS = (100_000, 50, 100)


def configure() -> None:
    """Apply :data:`GC_THRESHOLDS` (once, at server start)."""
    gc.set_threshold(*GC_THRESHOLDS)


class YoungSweeper:
    """Collects generations 0 and 1 every ``interval_s`` (never when ``interval_s`` is 0)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.sweeps = 0
        self.freed = 0
        self.pause_total_s = 0.0
        self.worst_pause_s = 0.0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if self.interval_s <= 0:
            return
        while True:
            await trio.sleep(self.interval_s)
            self.sweep()

    def sweep(self) -> int:
        started = time.perf_counter()
        freed = gc.collect(1)
        pause = time.perf_counter() - started
        self.sweeps += 1
        self.freed += freed
        self.pause_total_s += pause
        self.worst_pause_s = max(self.worst_pause_s, pause)
        return freed

    def figures(self) -> dict[str, Any]:
        """Sweeps and their pauses, and the collector's own counters, for the admin metrics."""
        return {
            "sweep_interval_s": self.interval_s,
            "sweeps": self.sweeps,
            "swept_objects": self.freed,
            "sweep_pause_total_ms": round(self.pause_total_s * 1000, 3),
            "worst_sweep_pause_ms": round(self.worst_pause_s * 1000, 3),
            "thresholds": list(gc.get_threshold()),
            "pending": list(gc.get_count()),
            "collections": [s["collections"] for s in gc.get_stats()],
            "collected": [s["collected"] for s in gc.get_stats()],
        }
