"""The garbage-collector policy (collab/gc_policy.py): thresholds and the young sweep."""

from __future__ import annotations

import gc

import trio
import trio.testing

from collab import gc_policy
from collab.gc_policy import YoungSweeper


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_configure_sets_the_thresholds() -> None:
    before = gc.get_threshold()
    try:
        gc_policy.configure()
        assert gc.get_threshold() == gc_policy.GC_THRESHOLDS
    finally:
        gc.set_threshold(*before)


def test_a_sweep_frees_young_cycles_and_is_counted() -> None:
    gc.collect()
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    del a, b  # a cycle: only the collector can free it
    sweeper = YoungSweeper(30.0)
    assert sweeper.sweep() >= 2
    figures = sweeper.figures()
    assert figures["sweeps"] == 1 and figures["swept_objects"] >= 2
    assert figures["worst_sweep_pause_ms"] >= 0 and len(figures["collections"]) == 3


async def test_the_sweeper_runs_on_its_interval_and_not_at_all_when_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    off = YoungSweeper(0.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(off.run)  # returns at once: nothing scheduled
    on = YoungSweeper(1.0)
    with trio.move_on_after(3.5):
        await on.run()
    assert on.sweeps == 3 and off.sweeps == 0
