"""The foundation benchmark: startup, REST throughput against a baseline, and login under a burst.

1. Startup: launch ``collab serve`` (embedded PostgreSQL in a fresh data
   dir) and time the first 200 from GET /health; then SIGTERM, wait, and start
   again on the same data dir (a restart). ``repetitions`` of each.
2. Throughput: one server (embedded database, or ``--database-url``) with
   production password hashing; wrk against GET /api/v1/ping (no auth, no I/O:
   the baseline) and GET /api/v1/users/me (bearer token, one database read),
   alternated ping, me, ping, me at each connection count.
3. Login: ``login_users`` pre-registered users log in at once, one
   httpx.AsyncClient each, ``login_rounds`` times; the server's event-loop
   monitor reports the worst stall of each round.

With 2+ CPUs the server (and the embedded PostgreSQL it spawns, which
inherits its affinity) runs on the first CPU, and this driver, wrk and the
login clients on the second; the startup servers are not pinned. Every server
this module starts is stopped with SIGTERM and its exit code recorded.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from loadtest import report
from loadtest.common import ServerRunOptions, server_run_options, add_common_arguments, picker, subset, whole_numbers
from loadtest.cpu import CpuWindow
from loadtest.foundation_login import measure_logins
from loadtest.machine import describe_machine, describe_software, load_average
from loadtest.progress import PROGRESS, say
from loadtest.serverproc import ServerFailed, ServerProcess, collab_env, run_collab
from loadtest.stats import median
from loadtest.wrk import WrkFailed, WrkMissing, require_wrk, run_wrk, write_script

SCENARIO = "foundation"
PING, ME = "/api/v1/ping", "/api/v1/users/me"
ROUTES = {"ping": PING, "me": ME}
ORDER = ("ping", "me", "ping", "me")
PHASES = ("startup", "throughput", "login")
PASSWORD = "loadtest " + "horse battery staple"
REQUEST_TIMEOUT_S = 30.0
SHARED_CORE_WARN_PCT = 10.0


@dataclass(frozen=True)
class Options(ServerRunOptions):
    phases: tuple[str, ...]
    repetitions: int
    duration_s: float
    warmup_s: float
    connections: tuple[int, ...]
    login_users: int
    login_rounds: int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="1 repetition, 1 login round, 2 s runs; does not touch docs/ without --docs")
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 10; 2 with --quick)")
    parser.add_argument("--warmup", type=float, help="seconds of wrk warm-up per route before measuring (default 2; 1 with --quick)")
    parser.add_argument("--repetitions", type=int, help="startup measurements of each kind (default 3; 1 with --quick)")
    parser.add_argument("--connections", default="1,50", help="comma-separated wrk connection counts (default 1,50)")
    parser.add_argument("--login-users", type=int, default=20, help="concurrent logins per round (default 20)")
    parser.add_argument("--login-rounds", type=int, help="login rounds (default 5; 1 with --quick)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    add_common_arguments(parser)


def options_from_args(args: argparse.Namespace) -> Options:
    pick = picker(args)
    phases = subset(args.phases, PHASES, "--phases")
    connections = whole_numbers(args.connections, "--connections", 1, 10_000)
    opts = Options(
        phases=phases, repetitions=pick(args.repetitions, 3, 1), duration_s=pick(args.duration, 10.0, 2.0),
        warmup_s=pick(args.warmup, 2.0, 1.0), connections=connections, login_users=args.login_users,
        login_rounds=pick(args.login_rounds, 5, 1), **server_run_options(args),
    )
    for name, value, lo, hi in (("--repetitions", opts.repetitions, 1, 20), ("--duration", opts.duration_s, 1, 600),
                                ("--warmup", opts.warmup_s, 0, 60), ("--login-users", opts.login_users, 1, 200),
                                ("--login-rounds", opts.login_rounds, 1, 50)):
        if not lo <= value <= hi:
            raise SystemExit(f"loadtest: {name} must be between {lo} and {hi}")
    if not all(1 <= c <= 1000 for c in opts.connections):
        raise SystemExit("loadtest: each --connections value must be between 1 and 1000")
    return opts


# --- CPU placement ---------------------------------------------------------

@dataclass(frozen=True)
class Placement:
    server: set[int] | None
    load: set[int] | None
    all: set[int]
    description: str


def plan_placement() -> Placement:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        return Placement(
            {cpus[0]}, {cpus[1]}, set(cpus),
            f"server (and the embedded PostgreSQL it spawns) pinned to CPU {cpus[0]}; "
            f"wrk, this driver and the login clients pinned to CPU {cpus[1]}; startup servers not pinned",
        )
    return Placement(None, None, set(cpus), "not pinned (fewer than 2 CPUs): server and load generator share a core")


# --- REST helpers ------------------------------------------------------------

def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def register(api: httpx.Client, email: str, username: str) -> None:
    response = api.post("/api/v1/auth/register", json={"email": email, "username": username, "password": PASSWORD})
    if response.status_code != 201:
        raise ServerFailed(f"register {email}: {response.status_code} {response.text[:300]}")


def login(api: httpx.Client, email: str) -> str:
    response = api.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    if response.status_code != 200:
        raise ServerFailed(f"login {email}: {response.status_code} {response.text[:300]}")
    return response.json()["access_token"]


def reset_stall(api: httpx.Client, admin_token: str) -> None:
    response = api.post("/api/v1/admin/metrics/reset", headers=bearer(admin_token))
    if response.status_code != 200:
        raise ServerFailed(f"metrics reset: {response.status_code} {response.text[:300]}")


def worst_stall_ms(api: httpx.Client, admin_token: str) -> float:
    response = api.get("/api/v1/admin/metrics", headers=bearer(admin_token))
    if response.status_code != 200:
        raise ServerFailed(f"metrics: {response.status_code} {response.text[:300]}")
    return float(response.json()["event_loop"]["worst_stall_since_reset_ms"])


# --- 1. startup --------------------------------------------------------------

def _server_settings(data_dir: Path, opts: Options, *, database_url: str | None = None) -> dict[str, str]:
    settings = {"data_dir": str(data_dir)}
    if database_url:
        settings["database_url"] = database_url
    if opts.server_log_level:
        settings["log_level"] = opts.server_log_level
    return settings


def _stop_record(server: ServerProcess, warnings: list[str], what: str) -> dict[str, Any]:
    leftovers = server.leftover_postgres()
    if server.exit_code != 0:
        warnings.append(f"{what}: the server exited with {server.exit_code}{' after SIGKILL' if server.killed else ''}")
    if leftovers:
        warnings.append(f"{what}: embedded PostgreSQL still running after the server exited (pids {leftovers})")
    return {"exit_code": server.exit_code, "killed": server.killed, "stop_s": round(server.stop_s or 0.0, 3),
            "leftover_postgres": leftovers}


def measure_startup(opts: Options, workdir: Path, place: Placement, warnings: list[str]) -> dict[str, Any]:
    say(f"== 1. Startup: launch -> first 200 from GET /health ({opts.repetitions} repetition(s))")
    runs: list[dict[str, Any]] = []
    for rep in range(1, opts.repetitions + 1):
        data_dir = workdir / f"startup-{rep}"
        data_dir.mkdir()
        env = collab_env(_server_settings(data_dir, opts))
        for kind in ("first_start", "restart"):
            server = ServerProcess(env, log_path=workdir / f"startup-{rep}-{kind}.log", cpus=place.all, data_dir=data_dir)
            with server:
                ready_s = server.wait_healthy(opts.startup_timeout_s)
            record = {"repetition": rep, "kind": kind, "ready_s": round(ready_s, 3),
                      **_stop_record(server, warnings, f"startup {rep} {kind}")}
            runs.append(record)
            say(f"   {kind:<11} #{rep}: healthy after {ready_s:6.3f} s; SIGTERM -> exit {server.exit_code} "
                f"in {server.stop_s:.2f} s")
    summary = {}
    for kind in ("first_start", "restart"):
        values = [r["ready_s"] for r in runs if r["kind"] == kind]
        summary[kind] = {"ready_s": values, "median_s": round(median(values), 3)}
        say(f"   {kind:<11} median {summary[kind]['median_s']:.3f} s")
    return {"runs": runs, **summary}


# --- 2. throughput -----------------------------------------------------------

def measure_throughput(opts: Options, server: ServerProcess, api: httpx.Client, admin_token: str,
                       user_token: str, script: Path, place: Placement, warnings: list[str]) -> dict[str, Any]:
    say(f"== 2. Throughput: wrk -t1 --latency, {opts.duration_s:g} s per run, order {', '.join(ORDER)}")
    for name, path in ROUTES.items():
        response = api.get(path, headers=bearer(user_token) if name == "me" else {})
        if response.status_code != 200:
            raise ServerFailed(f"GET {path} answered {response.status_code} before the runs: {response.text[:300]}")
    if opts.warmup_s > 0:
        for name, path in ROUTES.items():
            run_wrk(server.base_url, path, connections=max(opts.connections), duration_s=opts.warmup_s, script=script,
                    token=user_token if name == "me" else None, cpus=place.load)
        say(f"   warmed up: {opts.warmup_s:g} s per route at {max(opts.connections)} connections (not reported)")
    levels = []
    for connections in opts.connections:
        runs = []
        for index, name in enumerate(ORDER, start=1):
            reset_stall(api, admin_token)
            window = CpuWindow(server.pids())
            window.start()
            result = run_wrk(server.base_url, ROUTES[name], connections=connections, duration_s=opts.duration_s,
                             script=script, token=user_token if name == "me" else None, cpus=place.load)
            cpu = window.stop()
            if place.server is not None and cpu["server_cpu_pct"] is not None:
                busy = cpu["core_busy_pct"].get(str(min(place.server)))
                cpu["other_on_server_core_pct"] = round(max(0.0, busy - cpu["server_cpu_pct"]), 1) if busy is not None else None
            stall = worst_stall_ms(api, admin_token)
            run = {"route": name, "order": index, "run": (index + 1) // 2, **result.as_dict(),
                   "worst_stall_ms": stall, "cpu": cpu}
            runs.append(run)
            if result.error_count:
                warnings.append(f"{name} at {connections} connections, run {run['run']}: wrk counted errors {result.errors}")
            say(f"   c={connections:<3} {name:<4} run {run['run']}: {result.requests_per_s:9,.1f} req/s  "
                f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  errors {result.error_count}  "
                f"stall {stall:6.1f} ms  server CPU {cpu['server_cpu_pct']}%  cores busy {cpu['core_busy_pct']}")
        _warn_if_shared(runs, connections, warnings)
        level = {"connections": connections, "runs": runs, **_ratios(runs)}
        say(f"   c={connections:<3} me/ping req/s ratio: per pair {level['ratio_me_ping_by_run']}, "
            f"of the means {level['ratio_me_ping']}")
        levels.append(level)
    return {"levels": levels}


def _warn_if_shared(runs: list[dict[str, Any]], connections: int, warnings: list[str]) -> None:
    """Warn when other programs took a noticeable share of the server's core."""
    shares = [r["cpu"]["other_on_server_core_pct"] for r in runs if r["cpu"].get("other_on_server_core_pct") is not None]
    if shares and max(shares) > SHARED_CORE_WARN_PCT:
        warnings.append(f"at {connections} connections other programs used up to {max(shares):.0f}% of the server's "
                        "core (the machine is shared): treat these numbers as noisy")


def _ratios(runs: list[dict[str, Any]]) -> dict[str, Any]:
    by_run: dict[int, dict[str, float]] = {}
    for run in runs:
        by_run.setdefault(run["run"], {})[run["route"]] = run["requests_per_s"]
    pairs = [round(r["me"] / r["ping"], 3) for _, r in sorted(by_run.items()) if r.get("ping")]
    mean = {name: sum(r["requests_per_s"] for r in runs if r["route"] == name) / 2 for name in ROUTES}
    return {
        "mean_requests_per_s": {k: round(v, 1) for k, v in mean.items()},
        "ratio_me_ping_by_run": pairs,
        "ratio_me_ping": round(mean["me"] / mean["ping"], 3) if mean["ping"] else None,
    }


# --- the bench server (phases 2 and 3) ----------------------------------------

def bench_server(opts: Options, workdir: Path, place: Placement, stack: ExitStack,
                 warnings: list[str]) -> tuple[ServerProcess, dict[str, Any]]:
    """Create the admin with the CLI, start the server, and return it with the admin's credentials."""
    data_dir = workdir / "bench"
    data_dir.mkdir()
    env = collab_env(_server_settings(data_dir, opts, database_url=opts.database_url))
    tag = secrets.token_hex(4)
    admin = {"email": f"lt-admin-{tag}@example.com", "username": f"lt_admin_{tag}"}
    began = time.perf_counter()
    run_collab(["user", "create", "--email", admin["email"], "--username", admin["username"], "--admin"],
               env, stdin_text=PASSWORD + "\n", cpus=place.server)
    admin["create_s"] = round(time.perf_counter() - began, 3)
    server = ServerProcess(env, log_path=workdir / "bench-server.log", cpus=place.server,
                           data_dir=None if opts.database_url else data_dir)
    stack.enter_context(server)
    admin["server_ready_s"] = round(server.wait_healthy(opts.startup_timeout_s), 3)
    say(f"   admin created with `collab user create --admin` in {admin['create_s']:.2f} s; "
        f"bench server on {server.base_url} (pid {server.proc.pid}) healthy after {admin['server_ready_s']:.2f} s")
    return server, admin


# --- orchestration -----------------------------------------------------------

def _print_header(result: dict[str, Any]) -> None:
    m, s, p = result["machine"], result["software"], result["parameters"]
    say(f"Collab loadtest: {SCENARIO}{' (--quick: short runs, noisier figures)' if p['quick'] else ''}")
    say(f"machine : {m['cpu_model']}, {m['cores']} cores (usable {m['usable_cpus']}), {m['ram_gib']} GiB RAM, "
        f"{m['os']}, kernel {m['kernel']}"
        + f"; Python speed probe {m['python_speed_mops']} M loop iterations/s")
    say(f"load    : loadavg {m['loadavg_at_start']}; cores busy over 1 s before start {m['background_busy_pct']} %")
    pkgs = ", ".join(f"{k} {v}" for k, v in s["packages"].items())
    say(f"software: Python {s['python']}; {pkgs}")
    say(f"          {s['wrk']}; embedded {s['embedded_postgres']}; commit {s['checkout']['commit']} "
        f"({s['checkout']['uncommitted_server_files']} server files with uncommitted changes)")
    say(f"pinning : {result['placement']}")
    say("params  : " + ", ".join(f"{k}={v}" for k, v in p.items()))
    say(f"hashing : {result['password_hashing']}")


def _password_hashing() -> str:
    from collab.auth.passwords import ARGON2_OWASP
    from collab.config import Settings

    a = ARGON2_OWASP
    return (f"argon2id m={a.memory_kib // 1024} MiB, t={a.time_cost}, p={a.parallelism} (production; "
            f"COLLAB_PASSWORD_HASHING not set), {Settings.password_hash_concurrency} hashing threads")


def run(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    PROGRESS.scenario(SCENARIO)
    try:
        if {"throughput"} & set(opts.phases):
            require_wrk()
    except WrkMissing as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2
    place = plan_placement()
    machine = describe_machine()  # before pinning, so usable_cpus is the machine's
    if place.load is not None:
        os.sched_setaffinity(0, place.load)  # this driver; wrk and the CLI get theirs explicitly
    background = CpuWindow([])
    background.start()
    time.sleep(1.0)
    machine["background_busy_pct"] = background.stop()["core_busy_pct"]
    result: dict[str, Any] = {
        "scenario": SCENARIO, "format": 1, "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine, "software": describe_software(), "placement": place.description,
        "password_hashing": _password_hashing(), "parameters": opts.public(),
        "server_cpu": min(place.server) if place.server else None,
    }
    _print_header(result)
    warnings: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="collab-loadtest-"))
    try:
        if "startup" in opts.phases:
            result["startup"] = measure_startup(opts, workdir, place, warnings)
        if {"throughput", "login"} & set(opts.phases):
            _run_bench_phases(opts, workdir, place, warnings, result)
    except (ServerFailed, WrkFailed) as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        print(f"loadtest: data and server logs kept in {workdir}", file=sys.stderr)
        return 1
    finally:
        result["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    result["machine"]["loadavg_at_end"] = load_average()
    result["warnings"] = warnings
    if opts.keep_data:
        say(f"data and server logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return _finish(result, opts)


def _run_bench_phases(opts: Options, workdir: Path, place: Placement, warnings: list[str],
                      result: dict[str, Any]) -> None:
    say("== bench server for throughput and login" + (" (given database)" if opts.database_url else " (embedded database)"))
    with ExitStack() as stack:
        server, admin = bench_server(opts, workdir, place, stack, warnings)
        result["bench_server"] = {"admin_create_s": admin["create_s"], "ready_s": admin["server_ready_s"]}
        with httpx.Client(base_url=server.base_url, timeout=REQUEST_TIMEOUT_S) as api:
            admin_token = login(api, admin["email"])
            if "throughput" in opts.phases:
                tag = secrets.token_hex(4)
                email = f"lt-bench-{tag}@example.com"
                register(api, email, f"lt_bench_{tag}")
                user_token = login(api, email)
                script = write_script(workdir)
                result["throughput"] = measure_throughput(opts, server, api, admin_token, user_token, script,
                                                          place, warnings)
            if "login" in opts.phases:
                result["login"] = measure_logins(
                    server.base_url, api, admin_token, admin["email"], PASSWORD,
                    users=opts.login_users, rounds=opts.login_rounds, say=say, warnings=warnings,
                    register=register,
                )
        server.stop()
        result["bench_server"].update(_stop_record(server, warnings, "bench server"))
        say(f"   bench server: SIGTERM -> exit {server.exit_code} in {server.stop_s:.2f} s")


def _finish(result: dict[str, Any], opts: Options) -> int:
    return report.finish(result, SCENARIO, None, opts.update_docs, result["warnings"])
