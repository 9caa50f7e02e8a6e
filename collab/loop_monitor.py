"""Event-loop stall measurement: how late a periodic timer wakes up.

:class:`LoopMonitor` runs one task that sleeps ``interval_s`` at a time and
records how much later than asked it woke: that lateness is the longest any
other task kept the loop busy. It keeps the worst stall since start and since
the last :meth:`reset`, and a count of stalls over 50 ms; the admin metrics
endpoint and the benchmarks read them. Cost: one wake-up per interval.
"""

from __future__ import annotations

import time

import trio

SLOW_STALL_S = 0.050


class LoopMonitor:
    def __init__(self, interval_s: float = 0.010) -> None:
        self.interval_s = interval_s
        self.worst_since_start_s = 0.0
        self.worst_since_reset_s = 0.0
        self.slow_stalls = 0
        self.samples = 0

    def reset(self) -> None:
        self.worst_since_reset_s = 0.0

    def snapshot(self) -> dict[str, float | int]:
        return {
            "worst_stall_ms": round(self.worst_since_start_s * 1000, 3),
            "worst_stall_since_reset_ms": round(self.worst_since_reset_s * 1000, 3),
            "stalls_over_50ms": self.slow_stalls,
            "samples": self.samples,
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Measure until cancelled."""
        task_status.started()
        while True:
            before = time.perf_counter()
            await trio.sleep(self.interval_s)
            lag = max(0.0, time.perf_counter() - before - self.interval_s)
            self.samples += 1
            if lag > self.worst_since_reset_s:
                self.worst_since_reset_s = lag
            if lag > self.worst_since_start_s:
                self.worst_since_start_s = lag
            if lag > SLOW_STALL_S:
                self.slow_stalls += 1
