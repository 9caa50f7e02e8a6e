"""The WebSocket benchmark: fan-out latency, durable op throughput, many projects, idle sockets.

Sub-scenarios (``--scenarios``), each against its own fresh server process
(embedded PostgreSQL in a fresh data dir, or ``--database-url``), with a
brief wrk run of ``GET /api/v1/ping`` as the baseline of that server:

- ``fanout`` (W1): 1 project; 1 editor sends ``task.update`` ops at
  ``--fanout-rate`` (200) per second on a fixed schedule (open loop) over its
  own socket; N = ``--fanout-levels`` (10, 100, 500) subscribers. Delivery
  latency = receive time at each subscriber - the editor's send time of that
  op (one process, one clock), matched by the client op id in the event.
  Missing = acknowledged ops some subscriber never received after the drain.
  Then the largest level again under py-spy (the profile; not in the table;
  with ``--quick`` the largest level's own run is profiled instead).
- ``throughput`` (W2): 1 project, 10 subscribers, the editor keeps 1 and then
  16 ops in flight (closed loop): acknowledged (= committed) ops per second;
  then the largest in-flight level again under py-spy (the group commit;
  with ``--quick``, that level's own run).
- ``many`` (W3): ``--many-projects`` (200) projects x 5 subscribers, one
  editor per project at 5 ops/s (random phase): 1,200 sockets in all.
- ``idle``: ``--idle-sockets`` (2,000) authenticated, subscribed, idle
  sockets: server RSS before and after, per socket.

The load runs in separate load-generator processes (:mod:`loadtest.ws_worker`,
pinned to the load CPU) with the lightweight clients of
:mod:`loadtest.ws_clients`; this driver starts them together, measures the
server (CPU of the server process and of its embedded PostgreSQL, RSS, the
event-loop stall and actor batch figures from the admin metrics) and merges
their results. Every process it starts is stopped before it returns.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from loadtest import report
from loadtest.common import (
    ServerRunOptions, server_run_options, add_common_arguments, picker, prepare_run, subset, whole_numbers,
)
from loadtest.cpu import CpuWindow
from loadtest.foundation import PASSWORD, Placement, bearer, login
from loadtest.hdr import merged
from loadtest.machine import describe_software, load_average
from loadtest.profiling import finish_profile, start_profile
from loadtest.progress import PROGRESS, say
from loadtest.serverproc import ServerFailed, ServerProcess, collab_env, run_collab
from loadtest.wrk import WrkFailed, run_wrk, write_script
from loadtest.ws_setup import SUBSCRIBER_USERS, Project, Users, make_projects, make_users
from loadtest.ws_worker import WorkerFailed, WorkerProcess

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is in the dev dependencies
    psutil = None

SCENARIO = "ws"
TITLE = "WebSocket fan-out"
SUBSCENARIOS = ("fanout", "throughput", "many", "idle")
PING = "/api/v1/ping"
REQUEST_TIMEOUT_S = 60.0
#: Issue 10's targets, all on the durable path (an ack means committed): what the minimal hub of STACK.md
#: reached durably on this machine...
TARGETS = {"fanout_p99_ms": {100: 71.0, 500: 210.0}, "missing": 0, "throughput_ops_per_s": {1: 670.0, 16: 3500.0},
           "many_p99_ms": 190.0, "idle_kib_per_socket": 30.0}
#: ...and the goal beyond it: ahead of ShareDB + PostgreSQL on the same workloads.
GOALS = {"fanout_p99_ms": {100: 24.0, 500: 56.0}, "throughput_ops_per_s": {1: 604.0}, "many_p99_ms": 100.0}
#: The server's settings for these runs (names without the COLLAB_ prefix).
SERVER_SETTINGS = {
    "password_hashing": "argon2id-fast-insecure",  # logins are not measured here
    "actor_idle_timeout_s": "3600",                # no actor is passivated mid-run
    "ws_max_sockets_per_user": "5000",             # default 20: the load users hold up to 400 sockets each
    "ws_messages_per_s": "100000",                 # default 50/s: the editors send 200/s and, closed loop, more
    "ws_message_burst": "100000",                  # default 200
}
START_MARGIN_S = 0.5
QUIET_BUSY_PCT = 15.0     # other programs' share of a core above which the machine is not quiet
QUIET_WAIT_S = 30.0       # how long a run waits for a quiet machine before going ahead (and saying so)
QUIET_WAIT_QUICK_S = 2.0
NOFILE_WANTED = 65536


@dataclass(frozen=True)
class Options(ServerRunOptions):
    scenarios: tuple[str, ...]
    fanout_levels: tuple[int, ...]
    fanout_rate: float
    fanout_duration_s: float
    profile: bool
    throughput_inflight: tuple[int, ...]
    throughput_subscribers: int
    throughput_duration_s: float
    many_projects: int
    many_subscribers: int
    many_rate: float
    many_duration_s: float
    many_workers: int
    idle_sockets: int
    drain_s: float
    baseline_s: float
    quiet_wait_s: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="every workload at full size with short runs (4 s; 500 idle sockets); "
                             "does not touch docs/ without --docs")
    parser.add_argument("--scenarios", default=",".join(SUBSCENARIOS),
                        help=f"comma-separated subset of {','.join(SUBSCENARIOS)}")
    parser.add_argument("--fanout-levels", default="10,100,500", help="subscriber counts of fanout (10,100,500)")
    parser.add_argument("--fanout-rate", type=float, default=200.0, help="the editor's ops per second in fanout (200)")
    parser.add_argument("--fanout-duration", type=float, help="seconds the editor sends per level (default 10; 4 with --quick)")
    parser.add_argument("--no-profile", action="store_true",
                        help="skip the py-spy runs (largest fanout level, most ops in flight)")
    parser.add_argument("--throughput-inflight", default="1,16", help="ops in flight of the throughput runs (1,16)")
    parser.add_argument("--throughput-subscribers", type=int, default=10, help="subscribers in throughput (10)")
    parser.add_argument("--throughput-duration", type=float, help="seconds per throughput run (default 10; 4 with --quick)")
    parser.add_argument("--many-projects", type=int, default=200, help="projects in many (200)")
    parser.add_argument("--many-subscribers", type=int, default=5, help="subscribers per project in many (5)")
    parser.add_argument("--many-rate", type=float, default=5.0, help="ops per second of each editor in many (5)")
    parser.add_argument("--many-duration", type=float, help="seconds of the many run (default 20; 4 with --quick)")
    parser.add_argument("--many-workers", type=int, default=1,
                        help="load-generator processes for many (default 1; all on the load CPU)")
    parser.add_argument("--idle-sockets", type=int, help="sockets of idle (default 2000; 500 with --quick)")
    parser.add_argument("--drain", type=float, default=5.0, help="seconds to wait for late answers and deliveries (5)")
    parser.add_argument("--baseline", type=float, help="seconds of the wrk ping baseline per server (default 3; 2 with --quick)")
    parser.add_argument("--quiet-wait", type=float,
                        help="seconds each run waits for other programs to leave the cores idle (default 30; 2 with --quick)")
    add_common_arguments(parser)


def options_from_args(args: argparse.Namespace) -> Options:
    pick = picker(args)
    scenarios = subset(args.scenarios, SUBSCENARIOS, "--scenarios")
    opts = Options(
        scenarios=scenarios,
        fanout_levels=whole_numbers(args.fanout_levels, "--fanout-levels", 1, 2000),
        fanout_rate=args.fanout_rate, fanout_duration_s=pick(args.fanout_duration, 10.0, 4.0),
        profile=not args.no_profile,
        throughput_inflight=whole_numbers(args.throughput_inflight, "--throughput-inflight", 1, 256),
        throughput_subscribers=args.throughput_subscribers,
        throughput_duration_s=pick(args.throughput_duration, 10.0, 4.0),
        many_projects=args.many_projects, many_subscribers=args.many_subscribers,
        many_rate=args.many_rate, many_duration_s=pick(args.many_duration, 20.0, 4.0), many_workers=args.many_workers,
        idle_sockets=pick(args.idle_sockets, 2000, 500), drain_s=args.drain, baseline_s=pick(args.baseline, 3.0, 2.0),
        quiet_wait_s=pick(args.quiet_wait, QUIET_WAIT_S, QUIET_WAIT_QUICK_S),
        **server_run_options(args),
    )
    for name, value, lo, hi in (("--fanout-rate", opts.fanout_rate, 1, 5000),
                                ("--fanout-duration", opts.fanout_duration_s, 1, 300),
                                ("--throughput-subscribers", opts.throughput_subscribers, 0, 1000),
                                ("--throughput-duration", opts.throughput_duration_s, 1, 300),
                                ("--many-projects", opts.many_projects, 1, 1000),
                                ("--many-subscribers", opts.many_subscribers, 1, 50),
                                ("--many-rate", opts.many_rate, 0.1, 100),
                                ("--many-duration", opts.many_duration_s, 1, 300),
                                ("--many-workers", opts.many_workers, 1, 8),
                                ("--idle-sockets", opts.idle_sockets, 1, 10_000),
                                ("--drain", opts.drain_s, 0.5, 60), ("--baseline", opts.baseline_s, 1, 60),
                                ("--quiet-wait", opts.quiet_wait_s, 0, 600)):
        if not lo <= value <= hi:
            raise SystemExit(f"loadtest: {name} must be between {lo} and {hi}")
    return opts


# --- measurement helpers ------------------------------------------------------------------------

def _rss_kib(pid: int) -> int | None:
    if psutil is None:
        return None
    try:
        return psutil.Process(pid).memory_info().rss // 1024
    except psutil.Error:
        return None


def _process_cpu_s(pid: int) -> float | None:
    if psutil is None:
        return None
    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return None


class Server:
    """One fresh server for a sub-scenario: admin, users, baseline, measured runs."""

    def __init__(self, opts: Any, place: Placement, workdir: Path, name: str, warnings: list[str], *,
                 settings: dict[str, str] | None = None, command: list[str] | None = None,
                 extra_env: dict[str, str] | None = None) -> None:
        """``opts``: this module's :class:`Options` or another scenario's with the same server fields
        (database_url, server_log_level, startup_timeout_s, baseline_s, drain_s); ``settings`` replace
        :data:`SERVER_SETTINGS`; ``command`` replaces the ``collab`` executable (the soak's instrumented one)."""
        self.opts, self.place, self.name, self.warnings = opts, place, name, warnings
        self.workdir = workdir / name
        self.workdir.mkdir()
        data_dir = self.workdir / "data"
        data_dir.mkdir()
        self.data_dir = None if opts.database_url else data_dir
        settings = {"data_dir": str(data_dir), **(SERVER_SETTINGS if settings is None else settings)}
        if opts.database_url:
            settings["database_url"] = opts.database_url
        if opts.server_log_level:
            settings["log_level"] = opts.server_log_level
        env = {**collab_env(settings), **(extra_env or {})}
        tag = secrets.token_hex(4)
        self.admin_email = f"lt-admin-{tag}@example.com"
        run_collab(["user", "create", "--email", self.admin_email, "--username", f"lt_admin_{tag}", "--admin"], env,
                   stdin_text=PASSWORD + "\n", cpus=place.server)
        self.proc = ServerProcess(env, log_path=self.workdir / "server.log", cpus=place.server,
                                  data_dir=self.data_dir, command=command)
        self.proc.start()
        self.ready_s = self.proc.wait_healthy(opts.startup_timeout_s)
        self.api = httpx.Client(base_url=self.proc.base_url, timeout=REQUEST_TIMEOUT_S)
        self.admin_token = login(self.api, self.admin_email)
        self.url = self.proc.base_url.replace("http://", "ws://") + "/ws"
        self.record: dict[str, Any] = {"ready_s": round(self.ready_s, 3), "pid": self.proc.proc.pid}
        say(f"   server on {self.proc.base_url} (pid {self.proc.proc.pid}) healthy after {self.ready_s:.2f} s")

    def baseline(self) -> dict[str, Any]:
        script = write_script(self.workdir)
        result = run_wrk(self.proc.base_url, PING, connections=50, duration_s=self.opts.baseline_s, script=script,
                         cpus=self.place.load)
        say(f"   baseline: wrk GET {PING}, 50 connections, {self.opts.baseline_s:g} s: "
            f"{result.requests_per_s:,.0f} req/s (p99 {result.p99_ms:.1f} ms, errors {result.error_count})")
        return {"requests_per_s": result.requests_per_s, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
                "errors": result.errors, "connections": 50, "duration_s": result.duration_s}

    def metrics(self) -> dict[str, Any]:
        response = self.api.get("/api/v1/admin/metrics", headers=bearer(self.admin_token))
        if response.status_code != 200:
            raise ServerFailed(f"metrics: {response.status_code} {response.text[:300]}")
        return response.json()

    def reset_metrics(self) -> None:
        self.api.post("/api/v1/admin/metrics/reset", headers=bearer(self.admin_token)).raise_for_status()

    def rss_kib(self) -> int | None:
        return _rss_kib(self.proc.proc.pid)

    def spec(self, name: str, users: Users, mode: str, projects: list[tuple[Project, int]], **extra: Any) -> dict[str, Any]:
        """A worker spec: ``projects`` pairs a project with its subscriber count; editor index = position."""
        capacity = extra.pop("capacity")
        return {"name": name, "url": self.url, "mode": mode, "tokens": users.tokens(), "capacity": capacity,
                "projects": [{"project_id": p.project_id, "task_ids": p.task_ids, "editor": i,
                              "subscribers": [k % SUBSCRIBER_USERS for k in range(n)]}
                             for i, (p, n) in enumerate(projects)], **extra}

    def wait_for_quiet(self, label: str) -> dict[str, Any]:
        """Wait (1 s samples, at most ``--quiet-wait`` s) until other programs leave both cores nearly idle.

        The machine may be shared: a run that starts while something else
        keeps a core busy measures that program too. The last sample is
        returned, and a warning is recorded when the wait ran out.
        """
        began = time.perf_counter()
        while True:
            window = CpuWindow(self.proc.pids())
            window.start()
            time.sleep(1.0)
            sample = window.stop()
            busy = sample["core_busy_pct"]
            server_core = str(min(self.place.server)) if self.place.server else None
            load_core = str(min(self.place.load)) if self.place.load else None
            others = {
                "server_core": round(max(0.0, busy.get(server_core, 0) - (sample["server_cpu_pct"] or 0)), 1)
                if server_core else None,
                "load_core": busy.get(load_core) if load_core else None,
            }
            waited = time.perf_counter() - began
            if all(v is None or v <= QUIET_BUSY_PCT for v in others.values()):
                return {"waited_s": round(waited, 1), "others_busy_pct": others, "quiet": True}
            if waited >= self.opts.quiet_wait_s:
                self.warnings.append(f"{label}: other programs kept the cores busy ({others} %) for {waited:.0f} s "
                                     "before the run; it went ahead: treat its figures as noisy")
                return {"waited_s": round(waited, 1), "others_busy_pct": others, "quiet": False}
            say(f"      machine busy with other programs ({others} %): waiting for quiet ({waited:.0f} s)")

    def measured_run(self, label: str, specs: list[dict[str, Any]], duration_s: float, *,
                     profile_to: Path | None = None) -> dict[str, Any]:
        """Start the workers, wait until every socket is ready, run them together, merge their results."""
        workers: list[WorkerProcess] = []
        try:
            with PROGRESS.step(f"{label}: opening sockets"):
                for spec in specs:
                    workers.append(WorkerProcess({**spec, "duration_s": duration_s, "drain_s": self.opts.drain_s},
                                                 self.workdir, self.place.load))
                setups = [w.wait_ready() for w in workers]
                quiet = self.wait_for_quiet(label)
            rss_before = self.rss_kib()
            self.reset_metrics()
            actors_before = self.metrics()["actors"]
            start = time.monotonic() + START_MARGIN_S
            for w in workers:
                w.go(start)
            time.sleep(max(0.0, start - time.monotonic()))
            window = CpuWindow(self.proc.pids())
            window.start()
            py0 = _process_cpu_s(self.proc.proc.pid)
            spy = start_profile(self.proc.proc.pid, duration_s, profile_to, self.place.load) if profile_to else None
            with PROGRESS.step(label, duration_s):
                time.sleep(duration_s)
            cpu = window.stop()
            py1 = _process_cpu_s(self.proc.proc.pid)
            rss_end = self.rss_kib()
            with PROGRESS.step(f"{label}: drain, close"):
                profile = finish_profile(spy, profile_to, duration_s + 30) if profile_to else None
                results = [w.wait_done(duration_s + self.opts.drain_s + 60) for w in workers]
            after = self.metrics()
        finally:
            for w in workers:
                w.kill()
        server_core = str(min(self.place.server)) if self.place.server else None
        cpu["server_process_pct"] = round(100 * (py1 - py0) / cpu["wall_s"], 1) if py0 is not None and py1 is not None else None
        if server_core is not None and cpu["server_cpu_pct"] is not None:
            cpu["other_on_server_core_pct"] = round(max(0.0, cpu["core_busy_pct"].get(server_core, 0) - cpu["server_cpu_pct"]), 1)
        merged = _merge(results, setups)
        load_core = str(min(self.place.load)) if self.place.load else None
        if load_core is not None:
            # This driver and py-spy also run there: a small overestimate of the others.
            cpu["other_on_load_core_pct"] = round(max(0.0, cpu["core_busy_pct"].get(load_core, 0) - merged["load_cpu_pct"]), 1)
        merged["quiet_before"] = quiet
        merged.update({
            "label": label, "duration_s": duration_s, "cpu": cpu, "rss_kib_before": rss_before, "rss_kib_end": rss_end,
            "worst_stall_ms": after["event_loop"]["worst_stall_since_reset_ms"],
            "stalls_over_50ms": after["event_loop"].get("stalls_over_50ms"),
            "actors": _actor_delta(actors_before, after["actors"]),
        })
        if profile is not None:
            merged["profile"] = profile
        self._check(merged)
        return merged

    def _check(self, run: dict[str, Any]) -> None:
        label, d, ops = run["label"], run["deliveries"], run["ops"]
        setup = run["setup"]
        if setup["subscribers_ready"] < setup["subscribers"] or setup["editors_ready"] < setup["editors"]:
            self.warnings.append(f"{label}: only {setup['subscribers_ready']}/{setup['subscribers']} subscribers and "
                                 f"{setup['editors_ready']}/{setup['editors']} editors connected "
                                 f"(failures {setup['failures']})")
        if ops["refused"] or ops["unanswered"]:
            self.warnings.append(f"{label}: {ops['refused']} ops refused {ops['errors']}, {ops['unanswered']} unanswered")
        if d["missing"] or d["trouble_frames"] or run["closed_during_run"]:
            self.warnings.append(f"{label}: {d['missing']} deliveries missing, trouble frames {d['trouble_frames']}, "
                                 f"sockets closed during the run {run['closed_during_run']}")
        cpu = run["cpu"]
        if (cpu.get("other_on_server_core_pct") or 0) > QUIET_BUSY_PCT or \
                (cpu.get("other_on_load_core_pct") or 0) > 2 * QUIET_BUSY_PCT:
            self.warnings.append(f"{label}: other programs took {cpu.get('other_on_server_core_pct')}% of the server's "
                                 f"core and ~{cpu.get('other_on_load_core_pct')}% of the load core during the run: "
                                 "noisy")
        if run["load_cpu_pct"] is not None and run["load_cpu_pct"] >= 90:
            self.warnings.append(f"{label}: the load generator used {run['load_cpu_pct']:.0f}% of its core: its own "
                                 "queueing is part of the latencies")

    def stop(self) -> dict[str, Any]:
        self.api.close()
        self.proc.stop()
        leftovers = self.proc.leftover_postgres()
        if self.proc.exit_code != 0 or leftovers:
            self.warnings.append(f"{self.name} server stop: exit {self.proc.exit_code}, leftover postgres {leftovers}")
        say(f"   server: SIGTERM -> exit {self.proc.exit_code} in {self.proc.stop_s:.2f} s")
        return {"exit_code": self.proc.exit_code, "killed": self.proc.killed, "stop_s": round(self.proc.stop_s or 0, 3),
                "leftover_postgres": leftovers}

    def kill(self) -> None:
        try:
            self.api.close()
        finally:
            if self.proc.exit_code is None:
                self.proc.stop()


def _merge(results: list[dict[str, Any]], setups: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = merged(r.pop("latency_hdr") for r in results)

    def total(section: str, key: str) -> Any:
        return sum(r[section][key] for r in results)

    def counts(section: str, key: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in results:
            for k, v in r[section][key].items():
                out[k] = out.get(k, 0) + v
        return out

    first = results[0]
    setup = {k: sum(s[k] for s in setups) for k in ("subscribers", "subscribers_ready", "editors", "editors_ready")}
    setup["failures"] = {k: v for s in setups for k, v in s["failures"].items()}
    setup["seconds"] = max(s["seconds"] for s in setups)
    ops = {k: total("ops", k) for k in ("sent", "acked", "refused", "unanswered", "duplicate_answers", "acked_in_window")}
    ops["errors"] = counts("ops", "errors")
    # HDR histograms add up exactly across the load-generator processes.
    for key in ("ack_ms", "send_lag_ms"):
        ops[key] = merged(r["ops"][key].get("hdr") for r in results).as_dict()
    bins = [r["ops"]["acks_per_bin"] for r in results]
    width = max(len(b["counts"]) for b in bins)
    ops["acks_per_bin"] = {"bin_s": bins[0]["bin_s"],
                           "counts": [sum(b["counts"][k] for b in bins if k < len(b["counts"])) for k in range(width)]}
    deliveries = {k: total("deliveries", k) for k in first["deliveries"] if k != "trouble_frames"}
    deliveries["trouble_frames"] = counts("deliveries", "trouble_frames")
    d = deliveries
    d["events_per_message"] = round(d["event_frames"] / d["messages"], 2) if d["messages"] else None
    d["messages_per_event"] = round(d["messages"] / d["event_frames"], 3) if d["event_frames"] else None
    closed = counts_of([r["closed_during_run"] for r in results])
    runs = [r["run"] for r in results]
    load_cpu = sum(r["cpu_pct"] or 0 for r in runs)
    return {"setup": setup, "ops": ops, "deliveries": deliveries, "latency_ms": latencies.as_dict(),
            "closed_during_run": closed, "workers": len(results), "load_cpu_pct": round(load_cpu, 1),
            "drain_s": max(r["drain_s"] for r in runs), "drained": all(r["drained"] for r in runs),
            "close_s": max(r["close_s"] for r in runs)}


def counts_of(dicts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def _actor_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The actors' figures over a run: batches, ops per batch, mean commit time and, with the shared
    committers, project batches per statement (older servers lack some figures: those stay None)."""
    commands, batches = after["commands"] - before["commands"], after["batches"] - before["batches"]
    out: dict[str, Any] = {
        "commands": commands, "batches": batches,
        "mean_batch_size": round(commands / batches, 2) if batches > 0 else None,
        "failed_commits": after["failed_commits"] - before["failed_commits"],
        "mean_commit_ms": None, "statements": None, "batches_per_statement": None,
    }
    if "commit_seconds_total" in after and batches > 0:
        out["mean_commit_ms"] = round((after["commit_seconds_total"] - before["commit_seconds_total"]) * 1000
                                      / batches, 2)
    if "shared_commit_statements" in after:
        statements = after["shared_commit_statements"] - before["shared_commit_statements"]
        shared = after["shared_commit_batches"] - before["shared_commit_batches"]
        out["statements"] = statements
        out["batches_per_statement"] = round(shared / statements, 2) if statements > 0 else None
    return out


def _line(run: dict[str, Any]) -> str:
    lat, d, cpu = run["latency_ms"], run["deliveries"], run["cpu"]
    return (f"delivery p50 {lat['p50']} p99 {lat['p99']} max {lat['max']} ms; missing {d['missing']}/{d['expected']}; "
            f"events/msg {d['events_per_message']}; acked {run['ops']['acked']}/{run['ops']['sent']} "
            f"(ack p50 {run['ops']['ack_ms']['p50']} p99 {run['ops']['ack_ms']['p99']} ms); "
            f"server CPU {cpu['server_process_pct']}% (+PG {cpu['server_cpu_pct']}%); load CPU {run['load_cpu_pct']}%; "
            f"others on cores {cpu.get('other_on_server_core_pct')}/{cpu.get('other_on_load_core_pct')}%; "
            f"stall {run['worst_stall_ms']:.0f} ms")


# --- the sub-scenarios ----------------------------------------------------------------------------

def run_fanout(srv: Server, users: Users, opts: Options, results_dir: Path, stamp: str) -> dict[str, Any]:
    """W1 at every level; the largest again under py-spy (with --quick: the largest level's own run is profiled)."""
    levels = list(opts.fanout_levels)
    top = max(levels)
    separate = opts.profile and not opts.quick
    projects = make_projects(srv.api, users, len(levels) + (1 if separate else 0), "fanout")
    capacity = int(opts.fanout_rate * opts.fanout_duration_s) + 1
    path = results_dir / f"ws-{stamp}-pyspy-fanout-{top}.txt"
    runs = []
    out: dict[str, Any] = {"rate": opts.fanout_rate, "duration_s": opts.fanout_duration_s, "runs": runs}
    for level, project in zip(levels, projects):
        inline = opts.profile and opts.quick and level == top
        say(f"   fanout: {level} subscribers, editor at {opts.fanout_rate:g} ops/s for {opts.fanout_duration_s:g} s"
            + (" (under py-spy)" if inline else ""))
        spec = srv.spec(f"fanout-{level}", users, "fixed", [(project, level)], rate=opts.fanout_rate, capacity=capacity)
        run = srv.measured_run(f"fanout {level} subscribers", [spec], opts.fanout_duration_s,
                               profile_to=path if inline else None)
        run["subscribers"] = level
        say(f"      {_line(run)}")
        runs.append(run)
        if inline:
            out["profiled"] = _profiled(run, path)
    if separate:
        say(f"   fanout: {top} subscribers again, under py-spy (--nonblocking, 100 Hz) on the server")
        spec = srv.spec(f"fanout-{top}-profiled", users, "fixed", [(projects[-1], top)], rate=opts.fanout_rate,
                        capacity=capacity)
        run = srv.measured_run(f"fanout {top} subscribers (profiled)", [spec], opts.fanout_duration_s, profile_to=path)
        run["subscribers"] = top
        say(f"      {_line(run)}")
        out["profiled"] = _profiled(run, path)
    return out


def run_throughput(srv: Server, users: Users, opts: Options, results_dir: Path, stamp: str) -> dict[str, Any]:
    """W2 at every in-flight level; the largest again under py-spy (with --quick: its own run is profiled)."""
    runs = []
    levels = list(opts.throughput_inflight)
    top = max(levels)
    separate = opts.profile and not opts.quick
    projects = make_projects(srv.api, users, len(levels) + (1 if separate else 0), "throughput")
    path = results_dir / f"ws-{stamp}-pyspy-throughput-{top}.txt"
    out: dict[str, Any] = {"subscribers": opts.throughput_subscribers, "duration_s": opts.throughput_duration_s,
                           "runs": runs}
    for inflight, project in zip(levels, projects):
        inline = opts.profile and opts.quick and inflight == top
        say(f"   throughput: {inflight} op(s) in flight, {opts.throughput_subscribers} subscribers, "
            f"{opts.throughput_duration_s:g} s" + (" (under py-spy)" if inline else ""))
        run = _throughput_run(srv, users, opts, inflight, project, f"throughput {inflight} in flight",
                              path if inline else None)
        runs.append(run)
        if inline:
            out["profiled"] = _profiled(run, path)
    if separate:
        say(f"   throughput: {top} in flight again, under py-spy (--nonblocking, 100 Hz) on the server")
        out["profiled"] = _profiled(_throughput_run(srv, users, opts, top, projects[-1],
                                                    f"throughput {top} in flight (profiled)", path), path)
    return out


def _throughput_run(srv: Server, users: Users, opts: Options, inflight: int, project: Project, label: str,
                    profile_to: Path | None = None) -> dict[str, Any]:
    spec = srv.spec(re.sub(r"[^a-z0-9]+", "-", label).strip("-"), users, "closed", [(project, opts.throughput_subscribers)],
                    inflight=inflight, capacity=200_000)
    run = srv.measured_run(label, [spec], opts.throughput_duration_s, profile_to=profile_to)
    run["inflight"] = inflight
    run["acked_ops_per_s"] = round(run["ops"]["acked_in_window"] / opts.throughput_duration_s, 1)
    say(f"      {run['acked_ops_per_s']:,.0f} acked ops/s (batch {run['actors']['mean_batch_size']}); {_line(run)}")
    return run


def _profiled(run: dict[str, Any], path: Path) -> dict[str, Any]:
    """Print a profiled run's summary; keep the path of its collapsed stacks."""
    prof = run["profile"]
    if prof.get("available"):
        prof["collapsed_stacks"] = report.relative(path)
        say(f"      profile ({prof['samples']} samples): self by package {prof['self_by_package_pct'][:6]}")
        say(f"      areas (inclusive): {prof['inclusive_areas_pct'][:8]}")
    else:
        say(f"      no profile: {prof.get('note')}")
    return run


def run_many(srv: Server, users: Users, opts: Options, results_dir: Path, stamp: str) -> dict[str, Any]:
    """W3, its measured run under py-spy when profiling (the profile shows where a core of mixed work goes)."""
    n = opts.many_projects
    say(f"   many: creating {n} projects ({n * SUBSCRIBER_USERS} memberships, {n * 4} tasks)")
    began = time.perf_counter()
    with PROGRESS.step(f"many: creating {n} projects"):
        projects = make_projects(srv.api, users, n, "many")
    setup_s = time.perf_counter() - began
    capacity = int(opts.many_rate * opts.many_duration_s) + 1
    workers = min(opts.many_workers, n)
    specs = []
    for w in range(workers):
        mine = [(p, opts.many_subscribers) for i, p in enumerate(projects) if i % workers == w]
        spec = srv.spec(f"many-{w}", users, "fixed", mine, rate=opts.many_rate, capacity=capacity, random_phase=True,
                        seed=w + 1)
        # Editor indexes must be unique per worker only: each worker matches its own editors.
        specs.append(spec)
    sockets = n * (opts.many_subscribers + 1)
    say(f"   many: {n} projects x {opts.many_subscribers} subscribers + 1 editor each ({sockets:,} sockets, "
        f"{workers} load process(es)), {opts.many_rate:g} ops/s per editor for {opts.many_duration_s:g} s")
    path = results_dir / f"ws-{stamp}-pyspy-many-{n}.txt"
    run = srv.measured_run(f"many {n} projects", specs, opts.many_duration_s,
                           profile_to=path if opts.profile else None)
    if opts.profile:
        _profiled(run, path)
    run.update({"projects": n, "subscribers_per_project": opts.many_subscribers, "rate": opts.many_rate,
                "sockets": sockets, "setup_s": round(setup_s, 1)})
    say(f"      {_line(run)}; server RSS {run['rss_kib_before']} -> {run['rss_kib_end']} KiB")
    return run


def run_idle(srv: Server, users: Users, opts: Options) -> dict[str, Any]:
    per_project = 20
    n_projects = max(1, -(-opts.idle_sockets // per_project))
    projects = make_projects(srv.api, users, n_projects, "idle")
    layout = [(p, min(per_project, opts.idle_sockets - i * per_project)) for i, p in enumerate(projects)]
    # Warm-up: one socket per project, then closed: code paths, caches and the projects' actors are in
    # place before the "before" figure, so the difference is what the sockets themselves hold.
    say(f"   idle: warm-up with {n_projects} sockets (one per project), closed again")
    srv.measured_run("idle warm-up", [srv.spec("idle-warmup", users, "idle", [(p, 1) for p in projects], capacity=1)], 0.1)
    time.sleep(2.0)
    rss_before = srv.rss_kib()
    say(f"   idle: opening {opts.idle_sockets:,} sockets ({n_projects} projects x up to {per_project}); "
        f"server RSS before {rss_before:,} KiB")
    worker = WorkerProcess({**srv.spec("idle", users, "idle", layout, capacity=1), "duration_s": 0.0,
                            "drain_s": opts.drain_s}, srv.workdir, srv.place.load)
    try:
        with PROGRESS.step(f"idle: opening {opts.idle_sockets:,} sockets"):
            setup = worker.wait_ready()
        time.sleep(3.0)
        rss_open = srv.rss_kib()
        fds = _num_fds(srv.proc.proc.pid)
        worker.go(time.monotonic() + 0.1)
        result = worker.wait_done(60 + opts.drain_s)
    finally:
        worker.kill()
    time.sleep(2.0)
    rss_closed = srv.rss_kib()
    ready = setup["subscribers_ready"]
    per_socket = round((rss_open - rss_before) / ready, 1) if ready and rss_open and rss_before else None
    if ready < opts.idle_sockets:
        srv.warnings.append(f"idle: only {ready}/{opts.idle_sockets} sockets connected ({setup['failures']})")
    say(f"      {ready:,} sockets ready in {setup['seconds']:.1f} s; RSS {rss_before:,} -> {rss_open:,} KiB "
        f"({per_socket} KiB per socket); {rss_closed:,} KiB 2 s after they closed; server fds {fds}")
    return {"sockets": opts.idle_sockets, "ready": ready, "setup_s": setup["seconds"], "projects": n_projects,
            "handshake_ms_p50": setup["handshake_ms_p50"], "handshake_ms_max": setup["handshake_ms_max"],
            "rss_kib_before": rss_before, "rss_kib_open": rss_open, "rss_kib_after_close": rss_closed,
            "kib_per_socket": per_socket, "server_fds_open": fds,
            "closed_during_hold": result["closed_during_run"]}


def _num_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


# --- orchestration -----------------------------------------------------------------------------------

def _raise_nofile() -> dict[str, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = NOFILE_WANTED if hard == resource.RLIM_INFINITY else min(hard, NOFILE_WANTED)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return {"before": soft, "now": resource.getrlimit(resource.RLIMIT_NOFILE)[0], "hard": hard}


def _print_header(result: dict[str, Any]) -> None:
    m, s, p = result["machine"], result["software"], result["parameters"]
    say(f"Collab loadtest: {SCENARIO}{' (--quick: short runs, noisier figures)' if p['quick'] else ''}")
    say(f"machine : {m['cpu_model']}, {m['cores']} cores (usable {m['usable_cpus']}), {m['ram_gib']} GiB RAM, "
        f"{m['os']}, kernel {m['kernel']}"
        + f"; Python speed probe {m['python_speed_mops']} M loop iterations/s")
    say(f"load    : loadavg {m['loadavg_at_start']}; cores busy over 1 s before start {m['background_busy_pct']} %")
    say(f"software: Python {s['python']}; " + ", ".join(f"{k} {v}" for k, v in s["packages"].items()))
    say(f"          trio-websocket {s.get('trio_websocket')}; {s['wrk']}; embedded {s['embedded_postgres']}; "
        f"commit {s['checkout']['commit']} ({s['checkout']['uncommitted_server_files']} server files uncommitted)")
    say(f"pinning : {result['placement']}")
    say("server  : " + ", ".join(f"COLLAB_{k.upper()}={v}" for k, v in SERVER_SETTINGS.items()))
    say(f"fds     : RLIMIT_NOFILE {result['nofile']}")
    say("params  : " + ", ".join(f"{k}={v}" for k, v in p.items()))


def run(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    PROGRESS.scenario(SCENARIO)
    prepared = prepare_run()
    if prepared is None:
        return 2
    place, machine = prepared
    nofile = _raise_nofile()
    software = describe_software()
    try:
        from importlib import metadata

        software["trio_websocket"] = metadata.version("trio-websocket")
    except Exception:  # noqa: BLE001
        software["trio_websocket"] = None
    result: dict[str, Any] = {
        "scenario": SCENARIO, "format": 1, "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine, "software": software,
        "placement": place.description.replace("wrk, this driver and the login clients", "wrk, this driver, "
                                               "the load-generator processes and py-spy").replace(
                                               "; startup servers not pinned", ""),
        "password_hashing": "argon2id-fast-insecure (COLLAB_PASSWORD_HASHING; logins are not what this measures)",
        "server_settings": {f"COLLAB_{k.upper()}": v for k, v in SERVER_SETTINGS.items()},
        "parameters": opts.public(), "targets": {k: v for k, v in TARGETS.items()}, "goals": GOALS, "nofile": nofile,
        "server_cpu": min(place.server) if place.server else None, "command": " ".join(["python -m loadtest", *sys.argv[1:]]),
    }
    _print_header(result)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    warnings: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="collab-loadtest-ws-"))
    report.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    failed = False
    try:
        for name in opts.scenarios:
            say(f"== {name}")
            srv = None
            try:
                with PROGRESS.step(f"{name}: starting a server"):
                    srv = Server(opts, place, workdir, name, warnings)
                section: dict[str, Any] = {"server": srv.record, "baseline": srv.baseline()}
                with PROGRESS.step(f"{name}: users"):
                    users = make_users(srv.api)
                if name == "fanout":
                    section.update(run_fanout(srv, users, opts, report.RESULTS_DIR, stamp))
                elif name == "throughput":
                    section.update(run_throughput(srv, users, opts, report.RESULTS_DIR, stamp))
                elif name == "many":
                    section.update(run_many(srv, users, opts, report.RESULTS_DIR, stamp))
                else:
                    section.update(run_idle(srv, users, opts))
                section["server"].update(srv.stop())
                result[name] = section
            except (ServerFailed, WrkFailed, WorkerFailed, httpx.HTTPError) as exc:
                failed = True
                print(f"loadtest: {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
                if srv is not None:
                    srv.kill()
                    print(srv.proc.log_tail(), file=sys.stderr)
                warnings.append(f"{name} failed: {type(exc).__name__}: {str(exc)[:300]}")
            finally:
                if srv is not None:
                    srv.kill()
    finally:
        result["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    result["machine"]["loadavg_at_end"] = load_average()
    result["warnings"] = warnings
    if opts.keep_data or failed:
        say(f"data, server and load-generator logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if failed:
        path = report.write_json(result, SCENARIO)
        for warning in warnings:
            say(f"WARNING: {warning}")
        say(f"results: {report.relative(path)}; docs not touched (a sub-scenario failed)")
        return 1
    return report.finish(result, SCENARIO, TITLE, opts.update_docs, warnings)
