"""Drive wrk: a fixed-duration run against one URL, results read from a Lua ``done`` hook.

The Lua script adds ``Authorization: Bearer <token>`` when ``LOADTEST_TOKEN``
is set in wrk's environment (so the token never appears in a process
listing) and prints one ``LOADTEST_RESULT {json}`` line at the end with exact
percentiles from wrk's histogram, so nothing is parsed from wrk's human text.
A scenario may append Lua of its own (a ``request`` function, say) and print
``LOADTEST_EXTRA {json}`` lines from its ``done``; they are merged into
:attr:`WrkResult.extra`.
wrk runs as a child process with a deadline of its duration plus a margin.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtest.progress import PROGRESS

RESULT_PREFIX = "LOADTEST_RESULT "
EXTRA_PREFIX = "LOADTEST_EXTRA "
DEADLINE_MARGIN_S = 30.0

LUA_SCRIPT = r"""
local token = os.getenv("LOADTEST_TOKEN")
if token ~= nil and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'LOADTEST_RESULT {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,' ..
    '"errors":{"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f},' ..
    '"latency_us":{"min":%.0f,"mean":%.1f,"stdev":%.1f,"max":%.0f,"p50":%.0f,"p90":%.0f,"p99":%.0f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


class WrkMissing(Exception):
    """wrk is not installed."""


class WrkFailed(Exception):
    """wrk exited with an error, timed out, or printed no result."""


@dataclass(frozen=True)
class WrkResult:
    url_path: str
    connections: int
    threads: int
    duration_s: float
    requests: int
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: dict[str, int]
    wrk_cpu_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissing("wrk is not installed; install it with `apt-get install -y wrk` and run again")
    return path


def write_script(directory: Path) -> Path:
    path = directory / "loadtest_auth.lua"
    path.write_text(LUA_SCRIPT)
    return path


def run_wrk(base_url: str, path: str, *, connections: int, duration_s: float, script: Path,
            token: str | None = None, threads: int = 1, cpus: set[int] | None = None,
            request_timeout: str = "5s") -> WrkResult:
    """Run wrk for ``duration_s`` seconds with ``connections`` keep-alive connections."""
    argv = [
        require_wrk(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
        f"--timeout={request_timeout}", "--latency", "-s", str(script), base_url + path,
    ]
    env = {k: v for k, v in os.environ.items() if k != "LOADTEST_TOKEN"}
    if token:
        env["LOADTEST_TOKEN"] = token
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        with PROGRESS.step(f"wrk {path.split('?')[0]} c={connections}", max(1, round(duration_s))):
            done = subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=duration_s + DEADLINE_MARGIN_S,
                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
            )
    except subprocess.TimeoutExpired as exc:
        raise WrkFailed(f"wrk did not finish within {duration_s + DEADLINE_MARGIN_S:.0f} s") from exc
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise WrkFailed(f"wrk exited with {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    line = next((l for l in done.stdout.splitlines() if l.startswith(RESULT_PREFIX)), None)
    if line is None:
        raise WrkFailed(f"wrk printed no result line:\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line[len(RESULT_PREFIX):])
    extra: dict[str, Any] = {}
    for l in done.stdout.splitlines():
        if l.startswith(EXTRA_PREFIX):
            extra.update(json.loads(l[len(EXTRA_PREFIX):]))
    seconds = raw["duration_us"] / 1e6
    lat = raw["latency_us"]
    return WrkResult(
        url_path=path, connections=connections, threads=threads, duration_s=round(seconds, 3),
        requests=int(raw["requests"]), requests_per_s=round(raw["requests"] / seconds, 1) if seconds else 0.0,
        p50_ms=lat["p50"] / 1000, p90_ms=lat["p90"] / 1000, p99_ms=lat["p99"] / 1000,
        mean_ms=round(lat["mean"] / 1000, 3), max_ms=lat["max"] / 1000,
        errors={k: int(v) for k, v in raw["errors"].items()},
        wrk_cpu_s=round((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 3),
        extra=extra,
    )
