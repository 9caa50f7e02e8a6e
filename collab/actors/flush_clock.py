"""FlushClock: one shared, idle-gated moment at which connection writers flush.

On trio, coalescing does not happen by itself: every channel operation
yields, so with hundreds of sockets each writer would wake and send once per
event while the editor's next op waits its turn. Instead, a writer that has
something queued waits for the clock; the clock fires once every other task
is blocked (the actor has committed and fanned out, readers have parsed what
arrived) or after ``max_wait_s`` at the latest, and then every waiting writer
drains its whole queue as one message. Under light load that costs one
scheduler pass; under heavy load it turns N events into one frame per
connection (STACK.md, "What the broadcast path can do").
"""

from __future__ import annotations

import trio
import trio.testing


class FlushClock:
    def __init__(self, max_wait_s: float = 0.05) -> None:
        self.max_wait_s = max_wait_s
        self._tick = trio.Event()
        self._wanted = trio.Event()
        self.ticks = 0

    async def wait(self) -> None:
        """Return at the next flush moment."""
        tick = self._tick
        self._wanted.set()
        await tick.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fire ticks while writers wait; until cancelled."""
        task_status.started()
        while True:
            await self._wanted.wait()
            self._wanted = trio.Event()
            with trio.move_on_after(self.max_wait_s):
                await trio.testing.wait_all_tasks_blocked()
            tick, self._tick = self._tick, trio.Event()
            self.ticks += 1
            tick.set()
