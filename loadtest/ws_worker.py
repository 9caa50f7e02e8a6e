"""A load-generator process of ``loadtest ws``, and the handle the driver holds on it.

The driver starts ``python -m loadtest.ws_worker`` (pinned to the load CPU)
and talks to it over its stdin/stdout, one line at a time:

1. driver -> worker: the spec, one JSON line (server URL, tokens, projects,
   mode, rates, durations). Tokens go this way, never on a command line.
2. worker: opens every socket (at most 50 handshakes at once), then prints
   ``READY {json}`` (how many connected, failures, handshake times).
3. driver -> worker: ``GO <start>`` with ``<start>`` a ``time.monotonic()``
   instant (CLOCK_MONOTONIC is the same in every process here), so several
   workers start their editors together; ``STOP`` ends the worker without a run.
4. worker: editors send for ``duration_s``; then it waits up to ``drain_s``
   for every answer and every delivery, stops receiving, closes its sockets
   (each close bounded), writes the result JSON to a file in the work dir,
   and prints ``DONE <path>``. Latencies (delivery, ack, send lag) are kept
   as raw arrays during the run (an append is all a hot loop can afford) and
   go into the result as HDR histograms (:mod:`loadtest.hdr`, encoded), so
   the driver merges several workers exactly; acks are also counted per
   :data:`SERIES_BIN_S` (the throughput-over-time chart).

The worker is bounded in time on its own (setup, run, drain, close), and the
driver kills it if it overruns; stderr goes to a log file in the work dir.
"""

from __future__ import annotations

import gc
import json
import math
import os
import random
import select
import signal
import subprocess
import sys
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

from loadtest.hdr import Latencies

SETUP_DEADLINE_S = 120.0
CLOSE_DEADLINE_S = 20.0
DRAIN_POLL_S = 0.05
SERIES_BIN_S = 0.25


# --- the worker process ----------------------------------------------------------------------

def _worker_main() -> int:
    import trio

    spec = json.loads(sys.stdin.readline())
    gc.set_threshold(100_000, 50, 100)  # the load generator keeps ~1M small objects alive
    return trio.run(_run_worker, spec)


async def _run_worker(spec: dict[str, Any]) -> int:
    import trio

    from loadtest.ws_clients import Load, Stream, Subscriber

    load = Load(spec["url"])
    mode = spec["mode"]
    tokens = spec["tokens"]
    rng = random.Random(spec.get("seed", 1))
    capacity = spec.get("capacity", 1)
    result: dict[str, Any] = {"name": spec["name"], "pid": os.getpid()}
    async with trio.open_nursery() as nursery:
        for project in spec["projects"]:
            stream = Stream(project["editor"], project["project_id"], project["task_ids"], capacity)
            load.streams[stream.index] = stream
            if mode != "idle":
                load.expected += 1
                phase = rng.uniform(0, 1 / spec["rate"]) if spec.get("random_phase") else 0.0
                nursery.start_soon(lambda s=stream, p=phase: load.editor(
                    s, tokens["editor"], mode=mode, rate=spec.get("rate", 1.0), phase_s=p,
                    duration_s=spec["duration_s"], inflight=spec.get("inflight", 1)))
            for user in project["subscribers"]:
                sub = Subscriber(stream)
                load.subscribers.append(sub)
                load.expected += 1
                nursery.start_soon(load.subscriber, sub, tokens["subscribers"][user])
        began = time.perf_counter()
        with trio.move_on_after(SETUP_DEADLINE_S):
            await load.all_settled.wait()
        ready_subs = sum(1 for s in load.subscribers if s.ready)
        result["setup"] = {
            "seconds": round(time.perf_counter() - began, 3), "subscribers": len(load.subscribers),
            "subscribers_ready": ready_subs, "editors": len(load.streams) if mode != "idle" else 0,
            "editors_ready": sum(1 for s in load.streams.values() if s.connected),
            "failures": dict(load.failures),
            "handshake_ms_p50": _pct(load.handshake_s, 50, 1000), "handshake_ms_max": _pct(load.handshake_s, 100, 1000),
        }
        gc.collect()
        gc.freeze()
        _say("READY " + json.dumps(result["setup"]))
        command = (await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)).split()
        if not command or command[0] != "GO":
            load.stop_receiving()
            nursery.cancel_scope.cancel()
            return 0
        start_at = trio.current_time() + (float(command[1]) - time.monotonic())
        load.t0 = start_at
        await trio.sleep_until(start_at)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        load.go.set()
        await trio.sleep_until(start_at + spec["duration_s"])
        run_cpu, run_wall = time.process_time() - cpu0, time.perf_counter() - wall0
        drain_began = time.perf_counter()
        with trio.move_on_after(spec["drain_s"]):
            while not _drained(load, mode):
                await trio.sleep(DRAIN_POLL_S)
        drain_s = time.perf_counter() - drain_began
        result["run"] = {"wall_s": round(run_wall, 3), "cpu_pct": round(100 * run_cpu / run_wall, 1) if run_wall else None,
                         "drain_s": round(drain_s, 3), "drained": _drained(load, mode)}
        load.stop_receiving()  # every client now closes its socket (each close bounded)
        closing = time.perf_counter()
        nursery.cancel_scope.deadline = trio.current_time() + CLOSE_DEADLINE_S
    result["run"]["close_s"] = round(time.perf_counter() - closing, 3)
    result["run"]["close_deadline_hit"] = nursery.cancel_scope.cancelled_caught
    result.update(_summarize(load, mode, wall0, wall0 + spec["duration_s"]))
    result["latency_hdr"] = Latencies().record_many_ms(load.latencies_ms).encode() if len(load.latencies_ms) else None
    Path(spec["result_path"]).write_text(json.dumps(result))
    _say(f"DONE {spec['result_path']}")
    return 0


def _drained(load: Any, mode: str) -> bool:
    if mode == "idle":
        return True
    for stream in load.streams.values():
        if stream.connected and stream.closed is None and stream.unanswered:
            return False
    for sub in load.subscribers:
        if sub.ready and sub.closed is None and sub.failed is None and sub.unique < sub.stream.acked:
            return False
    return True


def _summarize(load: Any, mode: str, window_start: float, window_end: float) -> dict[str, Any]:
    streams = [s for s in load.streams.values() if s.connected] if mode != "idle" else []
    subs = [s for s in load.subscribers if s.ready]
    errors: Counter[str] = Counter()
    trouble: Counter[str] = Counter()
    closes: Counter[str] = Counter()
    ack_ms, lag_ms = array("d"), array("d")
    for stream in streams:
        errors.update(stream.errors)
        ack_ms.extend(stream.ack_ms)
        lag_ms.extend(stream.lag_ms)
        if stream.closed:
            closes[f"editor: {stream.closed}"] += 1
    for sub in subs:
        trouble.update(sub.trouble)
        if sub.closed or sub.failed:
            closes[sub.closed or sub.failed] += 1
    # Acks that arrived inside the run window (the closed-loop throughput), and per bin of the window.
    window_acks = sum(sum(1 for t in s.ack_at if t <= window_end) for s in streams)
    bins = [0] * max(1, math.ceil((window_end - window_start) / SERIES_BIN_S))
    for s in streams:
        for t in s.ack_at:
            k = int((t - window_start) / SERIES_BIN_S)
            if 0 <= k < len(bins):
                bins[k] += 1
    expected = sum(s.stream.acked for s in subs)
    return {
        "ops": {"sent": sum(s.sent for s in streams), "acked": sum(s.acked for s in streams),
                "refused": sum(s.refused for s in streams), "unanswered": sum(s.unanswered for s in streams),
                "duplicate_answers": sum(s.duplicates for s in streams), "errors": dict(errors),
                "acked_in_window": window_acks, "acks_per_bin": {"bin_s": SERIES_BIN_S, "counts": bins},
                "ack_ms": _histogram(ack_ms), "send_lag_ms": _histogram(lag_ms)},
        "deliveries": {"subscribers": len(subs), "expected": expected, "received": sum(s.unique for s in subs),
                       "missing": sum(s.missing() for s in subs), "duplicates": sum(s.duplicates for s in subs),
                       "foreign": sum(s.foreign for s in subs), "messages": sum(s.messages for s in subs),
                       "event_frames": sum(s.event_frames for s in subs), "trouble_frames": dict(trouble),
                       "subscribers_with_missing": sum(1 for s in subs if s.missing()),
                       "latencies": len(load.latencies_ms)},
        "closed_during_run": dict(closes),
    }


def _pct(values: Any, p: float, scale: float = 1.0) -> float | None:
    if not len(values):
        return None
    ordered = sorted(values)
    rank = max(1, -(-int(p * len(ordered)) // 100))
    return round(ordered[min(rank, len(ordered)) - 1] * scale, 3)


def _histogram(values: Any) -> dict[str, Any]:
    """Summary (ms) plus the encoded HDR histogram of ``values`` (ms)."""
    return Latencies().record_many_ms(values).as_dict()


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# --- the driver's handle ------------------------------------------------------------------------

class WorkerFailed(Exception):
    """A load-generator process failed, overran its deadline, or printed something unexpected."""


class WorkerProcess:
    """One ``python -m loadtest.ws_worker`` child (see the module docstring)."""

    def __init__(self, spec: dict[str, Any], workdir: Path, cpus: set[int] | None) -> None:
        self.name = spec["name"]
        self.log_path = workdir / f"{self.name}.log"
        spec = {**spec, "result_path": str(workdir / f"{self.name}.json")}
        self.spec = spec
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "loadtest.ws_worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log, cwd=str(Path(__file__).resolve().parent.parent),
                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
            )
        self._buffer = b""
        self._write(json.dumps(spec))

    def _write(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((line + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError as exc:
            raise WorkerFailed(f"{self.name} exited early; {self.log_tail()}") from exc

    def _read_line(self, timeout_s: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerFailed(f"{self.name} said nothing within {timeout_s:.0f} s; {self.log_tail()}")
            readable, _, _ = select.select([fd], [], [], min(remaining, 1.0))
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise WorkerFailed(f"{self.name} exited (code {self.proc.wait(timeout=5)}); {self.log_tail()}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def wait_ready(self, timeout_s: float = SETUP_DEADLINE_S + 30) -> dict[str, Any]:
        line = self._read_line(timeout_s)
        if not line.startswith("READY "):
            raise WorkerFailed(f"{self.name}: expected READY, got {line[:200]!r}")
        return json.loads(line[6:])

    def go(self, start_monotonic: float) -> None:
        self._write(f"GO {start_monotonic:.6f}")

    def stop(self) -> None:
        self._write("STOP")

    def wait_done(self, timeout_s: float) -> dict[str, Any]:
        line = self._read_line(timeout_s)
        if not line.startswith("DONE "):
            raise WorkerFailed(f"{self.name}: expected DONE, got {line[:200]!r}")
        result = json.loads(Path(line[5:]).read_text())
        self.proc.wait(timeout=30)
        return result

    def kill(self) -> None:
        """Ends the process if it still runs (SIGTERM, then SIGKILL)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass

    def log_tail(self, lines: int = 10) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "no worker log"
        return "last lines of its log:\n  " + "\n  ".join(text) if text else "its log is empty"


if __name__ == "__main__":
    raise SystemExit(_worker_main())
