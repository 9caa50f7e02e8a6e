"""Unit tests of the summary's calibration scaling (loadtest.summary) and the calibration's process cleanup.

No server, no network, no wrk: pure functions on hand-made results, plus one
sleeping child for :func:`loadtest.calibration._kill_survivors`.
Run: ``.venv/bin/python -m pytest -q -p no:cacheprovider loadtest/tests``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import pytest

from loadtest import calibration, summary

CALIBRATION = {"command": "python -m hypercorn -k trio -b 127.0.0.1:<free port> loadtest.calibration_app:app",
               "pinning": "bare app pinned to CPU 0; wrk to CPU 1", "wrk": {"connections": 50}, "repetitions": 2,
               "requests_per_s": [540.0, 560.0], "median_requests_per_s": 550.0, "p50_ms": 80.0, "p99_ms": 120.0,
               "reference_requests_per_s": 1100.0, "reference": "STACK.md, trap 2", "speed_ratio": 0.5}


def _ws_result() -> dict[str, Any]:
    def run(p50: float, p99: float, missing: int = 0) -> dict[str, Any]:
        return {"latency_ms": {"p50": p50, "p99": p99}, "deliveries": {"missing": missing}}

    return {
        "fanout": {"runs": [{"subscribers": 100, **run(20.0, 100.0)},            # > 71 ms; <= 142 ms scaled
                            {"subscribers": 500, **run(90.0, 300.0, 3)}]},       # <= 420 ms scaled, but 3 missing
        "throughput": {"runs": [{"inflight": 1, "acked_ops_per_s": 400.0, "actors": {"mean_batch_size": 1.0}},
                                {"inflight": 16, "acked_ops_per_s": 1500.0, "actors": {"mean_batch_size": 9.0}}]},
        "many": {"projects": 200, "subscribers_per_project": 5, **run(5.0, 150.0)},  # met, scaled or not
        "idle": {"kib_per_socket": 20.0, "ready": 500},
    }


def _tasks_result() -> dict[str, Any]:
    return {"single": {"summary": {"ping": {"requests_per_s": 500.0},
                                   "get": {"requests_per_s": 350.0, "ratio_to_ping": 0.7},
                                   "post_one": {"requests_per_s": 150.0, "ratio_to_ping": 0.3},
                                   "post_spread": {"requests_per_s": 250.0, "ratio_to_ping": 0.5}}}}


def _doc(results: dict[str, dict[str, Any]], timing_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    timing = {"started_at": "2026-11-27T10:00:00+00:00", "finished_at": "2026-11-27T10:08:00+00:00", "wall_s": 480.0,
              "scenarios": {"ws": {"wall_s": 200.0, "exit_code": 0}, **(timing_extra or {})}}
    machine = {"cpu_model": "test CPU", "cores": 2, "ram_gib": 4, "python_speed_mops": 20.0,
               "loadavg_at_start": [1.0], "loadavg_at_end": [1.0]}
    software = {"python": "3.11", "packages": {}, "checkout": {"commit": "abc", "uncommitted_server_files": 0}}
    return summary.build(results, {}, timing, machine, software, {"quick": True, "command": "python -m loadtest all"})


@pytest.mark.parametrize("given, expected", [
    (None, None), ({}, None), ({"speed_ratio": None}, None), ({"speed_ratio": 0}, None), ({"speed_ratio": -1}, None),
    ({"speed_ratio": "0.5"}, None), ({"speed_ratio": 0.46}, 0.46), ({"speed_ratio": 2}, 2.0),
])
def test_speed_ratio_is_a_positive_number_or_none(given: dict[str, Any] | None, expected: float | None) -> None:
    assert summary.speed_ratio(given) == expected


def test_throughput_targets_are_multiplied_and_latency_targets_divided_by_the_ratio() -> None:
    throughput = {"scale": summary._scale("throughput", 670.0, 400.0)}
    assert summary.scaled(throughput, 0.5) == (">= 335 ops/s", True)
    assert summary.scaled(throughput, 0.5 * 1.25) == (">= 419 ops/s", False)
    latency = {"scale": summary._scale("latency", 71.0, 120.0, True)}
    assert summary.scaled(latency, 0.5) == ("p99 <= 142 ms, nothing missing", True)
    assert summary.scaled(latency, 0.8) == ("p99 <= 89 ms, nothing missing", False)
    assert summary.scaled(latency, 2.0) == ("p99 <= 36 ms, nothing missing", False)   # a faster machine: stricter
    assert summary.scaled({"scale": summary._scale("latency", 8.0, 5.0)}, 1.0) == ("p99 <= 8.0 ms, nothing missing",
                                                                                    True)


def test_a_latency_target_with_deliveries_missing_is_not_met_when_scaled() -> None:
    assert summary.scaled({"scale": summary._scale("latency", 210.0, 300.0, False)}, 0.5) == (
        "p99 <= 420 ms, nothing missing", False)


def test_rows_that_do_not_scale_or_were_not_measured() -> None:
    assert summary.scaled({"target": "RSS per idle socket"}, 0.5) == ("", None)
    assert summary.scaled({"scale": summary._scale("throughput", 670.0, 400.0)}, None) == ("", None)
    assert summary.scaled({"scale": summary._scale("throughput", 670.0, None)}, 0.5) == (">= 335 ops/s", None)


def test_only_the_w1_w2_w3_rows_carry_a_scale() -> None:
    rows = _doc({"ws": _ws_result(), "tasks": _tasks_result()})["rows"]
    scaled = [r["target"].split(",")[0].split(":")[0] for r in rows if "scale" in r]
    assert scaled == ["W1 fan-out", "W1 fan-out", "W2 durable throughput", "W2 durable throughput",
                      "W3 200 projects x 5 subscribers"]
    assert not any("scale" in r for r in rows if r["target"].startswith(("RSS", "authenticated", "durable")))


def test_the_table_gets_the_scaled_columns_with_a_calibration() -> None:
    doc = _doc({"ws": _ws_result(), "tasks": _tasks_result(), "calibration": CALIBRATION},
               {"calibration": {"wall_s": 8.0, "exit_code": 0}})
    assert doc["calibration"]["speed_ratio"] == 0.5
    header, cells = summary.targets_table(doc["rows"], 0.5)
    assert header == ["target", "measured", "met", "scaled to this machine", "met when scaled",
                      "goal (ahead of ShareDB)", "section"]
    by_target = {c[0].split(":")[0]: c for c in cells}
    assert by_target["W1 fan-out, 100 subscribers"][2:5] == ["**no**", "p99 <= 142 ms, nothing missing", "**yes**"]
    assert by_target["W1 fan-out, 500 subscribers"][2:5] == ["**no**", "p99 <= 420 ms, nothing missing", "**no**"]
    assert by_target["W2 durable throughput, 1 in flight"][2:5] == ["**no**", ">= 335 ops/s", "**yes**"]
    assert by_target["W2 durable throughput, 16 in flight"][2:5] == ["**no**", ">= 1,750 ops/s", "**no**"]
    assert by_target["W3 200 projects x 5 subscribers"][2:5] == ["**yes**", "p99 <= 380 ms, nothing missing",
                                                                 "**yes**"]
    assert by_target["RSS per idle socket < 30 KiB"][3:5] == ["", ""]
    assert by_target["authenticated `GET /tasks/{id}` >= 0.6x the trivial route"][3:5] == ["", ""]

    text = summary.render(doc, "loadtest/results/all-x.json")
    assert "| target | measured | met | scaled to this machine | met when scaled | goal (ahead of ShareDB) |" in text
    assert "**550 req/s** (median of 2: 540, 560" in text
    assert "this machine ran at **~50%** of that speed" in text
    assert "**3 of the 5 W1/W2/W3 targets met when scaled to this machine's speed.**" in text
    assert text.index("Machine:") < text.index("Calibration:") < text.index("targets met.")


def test_without_a_calibration_the_table_renders_as_before() -> None:
    old = _doc({"ws": _ws_result(), "tasks": _tasks_result()})
    del old["calibration"]                          # an all-*.json written before calibrations existed
    for row in old["rows"]:
        row.pop("scale", None)
    text = summary.render(old, "loadtest/results/all-old.json")
    assert "| target | measured | met | goal (ahead of ShareDB) | section |" in text
    assert "Calibration" not in text and "scaled" not in text
    assert summary.targets_table(old["rows"], None)[0] == ["target", "measured", "met", "goal (ahead of ShareDB)",
                                                           "section"]


def test_a_failed_calibration_is_said_and_nothing_is_scaled() -> None:
    doc = _doc({"ws": _ws_result()}, {"calibration": {"wall_s": 3.0, "exit_code": 1}})
    assert doc["calibration"] is None
    text = summary.render(doc, "loadtest/results/all-x.json")
    assert "Calibration: not measured in this run (the calibration scenario exited with 1)" in text
    assert "| target | measured | met | goal (ahead of ShareDB) | section |" in text
    broken = _doc({"ws": _ws_result(), "calibration": {**CALIBRATION, "median_requests_per_s": 0.0,
                                                        "speed_ratio": 0.0}})
    assert "Calibration: no usable figure (median 0 req/s)" in summary.render(broken, "x.json")


def test_the_calibration_stops_every_descendant_and_leaves_zombies_and_strangers_alone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # noqa: S603 - a fixed argv
    try:
        found = calibration._descendants(os.getpid())
        assert child.pid in found
        stranger = {child.pid: "not its start time"}
        assert calibration._kill_survivors(stranger, grace_s=0.0) == []   # a reused pid is not killed
        assert child.poll() is None
        assert calibration._kill_survivors({child.pid: found[child.pid]}, grace_s=0.1) == [child.pid]
        deadline = time.monotonic() + 5
        while calibration._alive({child.pid: found[child.pid]}) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert calibration._alive({child.pid: found[child.pid]}) == []   # a zombie (not reaped yet) counts as gone
        assert child.wait(timeout=5) == -9
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
