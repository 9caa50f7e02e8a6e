"""``python -m loadtest.instrumented_server serve ...``: ``collab`` with a count of its live trio tasks.

The soak reports the server's trio task count over time, and the server does
not publish one (neither ``/api/v1/admin/metrics`` nor ``/metrics``). This
wrapper runs the unchanged ``collab`` CLI (:func:`collab.cli.main`) with one
trio :class:`~trio.abc.Instrument` added to its ``trio.run``: it counts
``task_spawned`` minus ``task_exited`` (two integer updates per task, no
per-step hook, so the cost is negligible), and a :data:`gc.callbacks` hook
adds up the garbage collector's passes and pause time per generation (two
clock reads per collection). A daemon thread writes ``<live> <spawned>
<monotonic time> <gen0> <gen1> <gen2> <gc seconds>`` to the file named by
``LOADTEST_TASKS_FILE`` every :data:`WRITE_EVERY_S`, atomically (write, then
rename), for the driver to read. When the driver creates ``<file>.collect``,
the thread runs a full :func:`gc.collect` and writes what it found to
``<file>.collected``, with the tracked objects counted by type
(:func:`full_collection`): the soak does that before and
after its load, to tell garbage the raised collector thresholds have not
reached yet from objects that stay alive.

Only the soak uses it; every other scenario runs the plain ``collab`` command.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import trio

WRITE_EVERY_S = 0.5
TYPES_KEPT = 200  # object counts by type after a full collection: the most common ones


class TaskCounter(trio.abc.Instrument):
    """Live and spawned trio tasks of the run it is added to."""

    def __init__(self) -> None:
        self.live = 0
        self.spawned = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.live += 1
        self.spawned += 1

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self.live -= 1


class GcTimer:
    """Collections per generation and their total pause, from :data:`gc.callbacks`."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.seconds = 0.0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._began
            self.collections[info["generation"]] += 1


def _full_collection(path: Path) -> None:
    """Run a full collection (asked for by the driver through ``<file>.collect``) and report what it found."""
    before = len(gc.get_objects())
    began = time.perf_counter()
    collected = gc.collect()
    pause = time.perf_counter() - began
    alive = gc.get_objects()
    after = len(alive)
    types = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in alive)
    del alive
    kinds = path.with_suffix(".types.tmp")
    kinds.write_text(json.dumps(dict(types.most_common(TYPES_KEPT))))
    os.replace(kinds, path.with_suffix(".types"))
    tmp = path.with_suffix(".collected.tmp")
    tmp.write_text(f"{before} {after} {collected} {pause:.6f}\n")
    os.replace(tmp, path.with_suffix(".collected"))


def _writer(counter: TaskCounter, timer: GcTimer, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    trigger = path.with_suffix(".collect")
    while True:
        if trigger.exists():
            trigger.unlink()
            _full_collection(path)
        g0, g1, g2 = timer.collections
        tmp.write_text(f"{counter.live} {counter.spawned} {time.monotonic():.3f} {g0} {g1} {g2} {timer.seconds:.6f}\n")
        os.replace(tmp, path)
        time.sleep(WRITE_EVERY_S)


def full_collection(path: Path, timeout_s: float = 30.0) -> dict[str, Any] | None:
    """Ask the server for a full garbage collection; returns ``objects_before``, ``objects_after`` (objects the
    collector tracks), ``collected`` (unreachable objects found) and ``pause_s``, or None (no answer in time).
    The server's loop stops for the pause: call it only when no load is measured."""
    result = path.with_suffix(".collected")
    result.unlink(missing_ok=True)
    path.with_suffix(".collect").touch()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            before, after, collected, pause = result.read_text().split()
        except (OSError, ValueError):
            time.sleep(0.1)
            continue
        try:
            types = json.loads(path.with_suffix(".types").read_text())
        except (OSError, ValueError):
            types = {}
        return {"objects_before": int(before), "objects_after": int(after), "collected": int(collected),
                "pause_s": float(pause), "types": types}
    return None


def read_counts(path: Path) -> dict[str, Any] | None:
    """The last figures the server wrote (``live``, ``spawned``, ``age_s``, ``gc_collections`` [gen0, gen1,
    gen2], ``gc_s``), or None (no file yet, or unreadable)."""
    try:
        live, spawned, at, g0, g1, g2, gc_s = path.read_text().split()
    except (OSError, ValueError):
        return None
    return {"live": int(live), "spawned": int(spawned), "age_s": round(time.monotonic() - float(at), 2),
            "gc_collections": [int(g0), int(g1), int(g2)], "gc_s": float(gc_s)}


def main() -> int:
    counter, timer = TaskCounter(), GcTimer()
    target = os.environ.get("LOADTEST_TASKS_FILE")
    if target:
        gc.callbacks.append(timer)
        threading.Thread(target=_writer, args=(counter, timer, Path(target)), name="task-count", daemon=True).start()
    original = trio.run

    def run_counted(async_fn: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["instruments"] = [*kwargs.get("instruments", ()), counter]
        return original(async_fn, *args, **kwargs)

    trio.run = run_counted  # collab.cli calls trio.run(...) through the module attribute
    from collab.cli import main as collab_main

    return collab_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
