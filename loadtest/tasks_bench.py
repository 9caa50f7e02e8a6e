"""Measured runs of the tasks benchmark against one running server.

:class:`Bench` holds the server, an httpx client for set-up calls, the admin
(for ``GET /api/v1/admin/metrics``) and cached logins (access tokens live 15
minutes, so they are renewed after 10). :meth:`Bench.run` is one wrk run with
everything around it: the loop-stall window reset before, CPU use (the
server, its embedded PostgreSQL, and what other programs took from its core),
the status codes, and for writes the actors' mean batch size over the run,
from the deltas of ``actors.commands`` and ``actors.batches``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from loadtest import tasks_lua
from loadtest.cpu import CpuWindow
from loadtest.foundation import Placement, bearer, login
from loadtest.profiling import finish_profile, start_profile
from loadtest.progress import say
from loadtest.serverproc import ServerFailed, ServerProcess
from loadtest.wrk import run_wrk

if TYPE_CHECKING:
    from loadtest.tasks import Options

TOKEN_MAX_AGE_S = 600.0  # access tokens live 15 minutes


class Bench:
    """The running server, its admin, cached logins, and one measured wrk run at a time."""

    def __init__(self, opts: "Options", server: ServerProcess, api: httpx.Client, admin_email: str,
                 place: Placement, workdir: Path, warnings: list[str]) -> None:
        self.opts, self.server, self.api, self.place = opts, server, api, place
        self.workdir, self.warnings, self.admin_email = workdir, warnings, admin_email
        self._tokens: dict[str, tuple[str, float]] = {}
        self.fixed_script = tasks_lua.fixed_path_script(workdir)

    def token(self, email: str) -> str:
        """A fresh enough access token for ``email`` (tokens expire after 15 minutes)."""
        cached = self._tokens.get(email)
        if cached is None or time.monotonic() - cached[1] > TOKEN_MAX_AGE_S:
            cached = (login(self.api, email), time.monotonic())
            self._tokens[email] = cached
        return cached[0]

    def metrics(self) -> dict[str, Any]:
        response = self.api.get("/api/v1/admin/metrics", headers=bearer(self.token(self.admin_email)))
        if response.status_code != 200:
            raise ServerFailed(f"metrics: {response.status_code} {response.text[:300]}")
        return response.json()

    def check(self, path: str, email: str | None) -> dict[str, Any]:
        """One GET before the runs: it must answer 200; returns rows/total of a list."""
        response = self.api.get(path, headers=bearer(self.token(email)) if email else {})
        if response.status_code != 200:
            raise ServerFailed(f"GET {path} answered {response.status_code} before the runs: {response.text[:300]}")
        body = response.json()
        if isinstance(body, dict) and "pagination" in body:
            return {"rows": len(body["data"]), "total": body["pagination"]["total"]}
        return {}

    def warm(self, path: str, email: str | None, script: Path | None = None, connections: int | None = None) -> None:
        if self.opts.warmup_s > 0:
            run_wrk(self.server.base_url, path, connections=connections or self.opts.connections,
                    duration_s=self.opts.warmup_s, script=script or self.fixed_script,
                    token=self.token(email) if email else None, cpus=self.place.load)

    def run(self, label: str, path: str, *, connections: int, email: str | None, script: Path | None = None,
            batches: bool = False, profile_to: Path | None = None, duration_s: float | None = None,
            **extra: Any) -> dict[str, Any]:
        """One measured wrk run, with loop stall, CPU, status codes and (for writes) the actors' batch size;
        with ``profile_to``, py-spy records the server meanwhile (:mod:`loadtest.profiling`)."""
        token = self.token(email) if email else None
        admin = bearer(self.token(self.admin_email))
        self.api.post("/api/v1/admin/metrics/reset", headers=admin).raise_for_status()
        before = self.metrics()["actors"] if batches else None
        window = CpuWindow(self.server.pids())
        window.start()
        seconds = duration_s or self.opts.duration_s
        spy = start_profile(self.server.proc.pid, seconds, profile_to, self.place.load) if profile_to else None
        result = run_wrk(self.server.base_url, path, connections=connections, duration_s=seconds,
                         script=script or self.fixed_script, token=token, cpus=self.place.load)
        cpu = window.stop()
        profile = finish_profile(spy, profile_to, seconds + 30) if profile_to else None
        busy = cpu["core_busy_pct"].get(str(min(self.place.server))) if self.place.server else None
        if busy is not None and cpu["server_cpu_pct"] is not None:
            cpu["other_on_server_core_pct"] = round(max(0.0, busy - cpu["server_cpu_pct"]), 1)
        after = self.metrics()
        record = {"label": label, **extra, **result.as_dict(), "statuses": result.extra.get("statuses", {}),
                  "worst_stall_ms": after["event_loop"]["worst_stall_since_reset_ms"], "cpu": cpu}
        if profile is not None:
            record["profile"] = profile
        if before is not None:
            record["actors"] = _batch_delta(before, after["actors"])
            if record["actors"]["mean_batch_size"] is None:
                self.warnings.append(f"{label}: actor figures not usable ({record['actors']})")
        bad = {code: n for code, n in record["statuses"].items() if not code.startswith("2")}
        if result.error_count or bad:
            self.warnings.append(f"{label} at {connections} connections: wrk errors {result.errors}, "
                                 f"non-2xx statuses {bad or 'none'}")
        batch = f"  batch {record['actors']['mean_batch_size']}" if before is not None else ""
        say(f"   {label:<34} c={connections:<3} {result.requests_per_s:8,.1f} req/s  p50 {result.p50_ms:7.2f} ms  "
            f"p99 {result.p99_ms:7.2f} ms  statuses {record['statuses']}{batch}  stall {record['worst_stall_ms']:.0f} ms  "
            f"server CPU {cpu['server_cpu_pct']}%")
        return record


def _batch_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    commands, batches = after["commands"] - before["commands"], after["batches"] - before["batches"]
    usable = after["active"] >= before["active"] and commands >= 0 and batches > 0
    return {"commands": commands, "batches": batches, "active_before": before["active"], "active_after": after["active"],
            "failed_commits": after["failed_commits"] - before["failed_commits"],
            "mean_batch_size": round(commands / batches, 2) if usable else None}


def mean_of(runs: list[dict[str, Any]], key: str, field: str = "requests_per_s") -> float | None:
    values = [r[field] for r in runs if r["key"] == key]
    return round(sum(values) / len(values), 1) if values else None
