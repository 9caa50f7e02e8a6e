"""FlushClock: one shared, idle-gated moment at which connection writers flush.

On trio, coalescing does not happen by itself: every channel operation
yields, so with hundreds of sockets each writer would wake and send once per
event while the editor's next op waits its turn. Instead, a writer that has
something queued waits for the clock; the clock fires once every other task
is blocked (the actor has committed and fanned out, readers have parsed what
arrived) or after ``max_wait_s`` at the latest, and then every waiting writer
drains its whole queue as one message. Writers do not wait on the clock
themselves: whoever queues something for an idle writer hands the clock that
writer's wake event (:meth:`FlushClock.request`), so each writer is woken once
per flush. Under light load that costs one
scheduler pass; under heavy load it turns N events into one frame per
connection (STACK.md, "What the broadcast path can do").
"""

from __future__ import annotations

import trio
import trio.testing


class FlushClock:
    def __init__(self, max_wait_s: float = 0.05) -> None:
        self.max_wait_s = max_wait_s
        self._due: list[trio.Event] = []  # writers' wake events to set at the next tick
        self._wanted = trio.Event()
        self.ticks = 0

    def request(self, wake: trio.Event) -> None:
        """Set ``wake`` at the next flush moment (synchronous, never blocks).

        A writer parks on its own event, and the producer (an actor's
        fan-out, a reply) asks for it here: so a writer wakes once per flush,
        not once when something is queued and again at the tick.
        """
        self._due.append(wake)
        self._wanted.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fire ticks while writers wait; until cancelled."""
        task_status.started()
        while True:
            await self._wanted.wait()
            self._wanted = trio.Event()
            with trio.move_on_after(self.max_wait_s):
                await trio.testing.wait_all_tasks_blocked()
            due, self._due = self._due, []
            self.ticks += 1
            for wake in due:
                wake.set()
