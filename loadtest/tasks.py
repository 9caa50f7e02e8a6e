"""The projects-and-tasks benchmark: task reads, durable task writes, lists and search, and the seed's scenarios.

One server process (embedded PostgreSQL in a fresh data dir, or
``--database-url``), with ``COLLAB_PASSWORD_HASHING=argon2id-fast-insecure``
(logins are not what is measured here) and project actors kept for the whole
run (``COLLAB_ACTOR_IDLE_TIMEOUT_S=3600``, so the actor figures do not drop
when an idle actor is passivated). Everything is measured against
``GET /api/v1/ping`` in the same run.

Data: ``--tasks`` tasks (10,000) made through ``POST /api/v1/tasks`` with
``--seed-concurrency`` requests in flight, in 10 projects owned by a "reader"
user (half in the listed project, the rest spread over nine), see
:mod:`loadtest.tasks_seed`. Writes go to fresh projects of a "writer" user, so
they never change what the lists read.

Phases (``--phases``):

- ``single``: wrk at 50 connections, in rounds of ping, ``GET /tasks/{id}``
  (rotating over 100 ids), ``POST /tasks`` into one project, ``POST /tasks``
  over 50 projects; for each POST run, the actors' mean batch size from the
  deltas of ``actors.commands`` / ``actors.batches`` (admin metrics).
- ``lists``: wrk at 10 connections, in rounds of ping, a project's tasks with
  ``limit=20`` and ``limit=100``, and a full-text search with status and priority.
- ``seed``: the seed's benchmarks (API.md's ``benches/api_benchmarks.rs``): task creation at
  1/5/10/20/50 connections, listing with page sizes 10/20/50/100, search,
  and 10/25/50/100 concurrent users who log in, then list tasks and projects
  (trio + httpx driver, :mod:`loadtest.tasks_users`).
"""

from __future__ import annotations

import argparse
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

from loadtest import report, tasks_lua
from loadtest.common import (
    ServerRunOptions, server_run_options, add_common_arguments, picker, prepare_run, subset, whole_numbers,
)
from loadtest.foundation import PASSWORD, Placement
from loadtest.machine import describe_software, load_average
from loadtest.progress import PROGRESS, say
from loadtest.serverproc import ServerFailed, ServerProcess, collab_env, run_collab
from loadtest.tasks_bench import Bench, mean_of
from loadtest.tasks_data import Dataset, make_dataset, make_users, writer_projects
from loadtest.tasks_users import measure_users
from loadtest.wrk import WrkFailed

SCENARIO = "tasks"
TITLE = "Projects and tasks"
PING = "/api/v1/ping"
PHASES = ("single", "lists", "seed")
TARGETS = {"get_ratio": 0.6, "post_ratio": 0.4, "list_p99_ms": 50.0}
REQUEST_TIMEOUT_S = 60.0
PROFILE_MIN_S = 5.0  # a profile needs a few hundred samples (py-spy at 100 Hz)


def _ints(text: str, name: str) -> tuple[int, ...]:
    return whole_numbers(text, name, 1, 1000)


@dataclass(frozen=True)
class Options(ServerRunOptions):
    phases: tuple[str, ...]
    duration_s: float
    warmup_s: float
    rounds: int
    tasks: int
    seed_concurrency: int
    connections: int
    list_connections: int
    seed_read_connections: int
    creation_levels: tuple[int, ...]
    page_sizes: tuple[int, ...]
    user_levels: tuple[int, ...]
    user_duration_s: float
    profile: bool


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="1,000 tasks, 2 s runs, 1 round; does not touch docs/ without --docs")
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 10; 2 with --quick)")
    parser.add_argument("--warmup", type=float, help="seconds of wrk warm-up per route (default 2; 1 with --quick)")
    parser.add_argument("--rounds", type=int, help="rounds of the single and lists phases (default 2; 1 with --quick)")
    parser.add_argument("--tasks", type=int, help="tasks to seed (default 10000; 1000 with --quick)")
    parser.add_argument("--seed-concurrency", type=int, default=50, help="seeding requests in flight (default 50)")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections of the single phase (default 50)")
    parser.add_argument("--list-connections", type=int, default=10, help="wrk connections of the lists phase (default 10)")
    parser.add_argument("--seed-read-connections", type=int, default=1,
                        help="wrk connections for the seed's listing and search (default 1: the seed sends one at a time)")
    parser.add_argument("--creation-levels", default="1,5,10,20,50", help="connections of the seed's creation runs")
    parser.add_argument("--page-sizes", default="10,20,50,100", help="page sizes of the seed's listing runs")
    parser.add_argument("--users", default="10,25,50,100", help="concurrent-user levels (10,25,50,100)")
    parser.add_argument("--no-profile", action="store_true",
                        help="skip the py-spy run of POST /api/v1/tasks (one project) after the single phase")
    parser.add_argument("--user-duration", type=float, help="seconds per concurrent-user level (default 10; 2 with --quick)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    add_common_arguments(parser)


def options_from_args(args: argparse.Namespace) -> Options:
    pick = picker(args)
    phases = subset(args.phases, PHASES, "--phases")
    opts = Options(
        phases=phases, duration_s=pick(args.duration, 10.0, 2.0), warmup_s=pick(args.warmup, 2.0, 1.0),
        rounds=pick(args.rounds, 2, 1), tasks=pick(args.tasks, 10_000, 1_000), seed_concurrency=args.seed_concurrency,
        connections=args.connections, list_connections=args.list_connections,
        seed_read_connections=args.seed_read_connections,
        creation_levels=_ints(args.creation_levels, "--creation-levels"),
        page_sizes=_ints(args.page_sizes, "--page-sizes"),
        user_levels=_ints(args.users, "--users"),
        user_duration_s=pick(args.user_duration, 10.0, 2.0), profile=not args.no_profile, **server_run_options(args),
    )
    for name, value, lo, hi in (("--duration", opts.duration_s, 1, 600), ("--warmup", opts.warmup_s, 0, 60),
                                ("--rounds", opts.rounds, 1, 10), ("--tasks", opts.tasks, 100, 50_000),
                                ("--seed-concurrency", opts.seed_concurrency, 1, 200),
                                ("--connections", opts.connections, 1, 1000),
                                ("--list-connections", opts.list_connections, 1, 1000),
                                ("--seed-read-connections", opts.seed_read_connections, 1, 1000),
                                ("--user-duration", opts.user_duration_s, 1, 600)):
        if not lo <= value <= hi:
            raise SystemExit(f"loadtest: {name} must be between {lo} and {hi}")
    if max(opts.page_sizes) > 100 or max(opts.user_levels) > 200:
        raise SystemExit("loadtest: page sizes go up to 100 (the API's limit), user levels up to 200")
    return opts


def phase_single(bench: Bench, data: Dataset) -> dict[str, Any]:
    opts, c = bench.opts, bench.opts.connections
    say(f"== single routes at {c} connections: {opts.rounds} round(s) of ping, GET task, POST one project, POST 50 projects")
    get_script = tasks_lua.get_tasks_script(bench.workdir, data.sample_task_ids)
    bench.check(PING, None)
    bench.check(f"/api/v1/tasks/{data.sample_task_ids[0]}", data.reader)
    bench.warm(PING, None)
    bench.warm("/api/v1/tasks/{id}", data.reader, get_script)
    runs = []
    for number in range(1, opts.rounds + 1):
        one = writer_projects(bench.api, bench.token(data.writer), 1, f"single-one-{number}")
        spread = writer_projects(bench.api, bench.token(data.writer), 50, f"single-spread-{number}")
        one_script = tasks_lua.post_tasks_script(bench.workdir, f"post_one_{number}", one, "one")
        spread_script = tasks_lua.post_tasks_script(bench.workdir, f"post_spread_{number}", spread, "spread")
        for key, label, path, email, script, batches in (
            ("ping", "GET /api/v1/ping", PING, None, None, False),
            ("get", "GET /api/v1/tasks/{id}", "/api/v1/tasks/{id}", data.reader, get_script, False),
            ("post_one", "POST /api/v1/tasks (1 project)", "/api/v1/tasks", data.writer, one_script, True),
            ("post_spread", "POST /api/v1/tasks (50 projects)", "/api/v1/tasks", data.writer, spread_script, True),
        ):
            runs.append(bench.run(label, path, connections=c, email=email, script=script, batches=batches,
                                  key=key, round=number))
    profiled = None
    if opts.profile:
        say("   POST /api/v1/tasks (1 project) again, under py-spy (--nonblocking, 100 Hz) on the server")
        one = writer_projects(bench.api, bench.token(data.writer), 1, "single-profiled")
        script = tasks_lua.post_tasks_script(bench.workdir, "post_profiled", one, "one")
        path = report.RESULTS_DIR / f"tasks-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-pyspy-post-tasks.txt"
        report.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        profiled = bench.run("POST /api/v1/tasks (1 project, profiled)", "/api/v1/tasks", connections=c,
                             email=data.writer, script=script, batches=True, key="post_one_profiled", round=0,
                             profile_to=path, duration_s=max(opts.duration_s, PROFILE_MIN_S))
        prof = profiled["profile"]
        if prof.get("available"):
            prof["collapsed_stacks"] = report.relative(path)
            say(f"      profile ({prof['samples']} samples): self by package {prof['self_by_package_pct'][:6]}")
            say(f"      areas (inclusive): {prof['inclusive_areas_pct'][:8]}")
        else:
            say(f"      no profile: {prof.get('note')}")
    ping = mean_of(runs, "ping")
    summary = {}
    for key in ("ping", "get", "post_one", "post_spread"):
        mean = mean_of(runs, key)
        summary[key] = {"requests_per_s": mean, "ratio_to_ping": round(mean / ping, 3) if ping and mean else None,
                        "p50_ms": mean_of(runs, key, "p50_ms"), "p99_ms": mean_of(runs, key, "p99_ms")}
        if key.startswith("post"):
            made = [r["statuses"].get("201", 0) for r in runs if r["key"] == key]
            summary[key]["created_per_run"] = round(sum(made) / len(made))
            sizes = [r["actors"]["mean_batch_size"] for r in runs if r["key"] == key and r["actors"]["mean_batch_size"]]
            summary[key]["mean_batch_size"] = round(sum(sizes) / len(sizes), 2) if sizes else None
        say(f"   {key:<12} mean {mean} req/s, ratio to ping {summary[key]['ratio_to_ping']}")
    return {"connections": c, "runs": runs, "summary": summary, "profiled": profiled}


def phase_lists(bench: Bench, data: Dataset) -> dict[str, Any]:
    opts, c = bench.opts, bench.opts.list_connections
    say(f"== lists and search on {data.description['tasks']:,} tasks at {c} connections, {opts.rounds} round(s)")
    p = data.listed_project
    routes = [("ping", "GET /api/v1/ping", PING, None),
              ("list20", "project's tasks, limit=20", f"/api/v1/tasks?project_id={p}&limit=20", data.reader),
              ("list100", "project's tasks, limit=100", f"/api/v1/tasks?project_id={p}&limit=100", data.reader),
              ("search", "search + status + priority", f"/api/v1/tasks?search={data.description['search_word']}"
                                                       "&status=todo&priority=high", data.reader)]
    shapes = {key: bench.check(path, email) for key, _, path, email in routes}
    for key, _, path, email in routes:
        bench.warm(path, email, connections=c)
    runs = [bench.run(label, path, connections=c, email=email, key=key, round=number, **shapes[key])
            for number in range(1, opts.rounds + 1) for key, label, path, email in routes]
    summary = {key: {"requests_per_s": mean_of(runs, key), "p50_ms": mean_of(runs, key, "p50_ms"),
                     "p99_ms": max(r["p99_ms"] for r in runs if r["key"] == key), **shapes[key]}
               for key, *_ in routes}
    return {"connections": c, "listed_project_tasks": data.listed_project_tasks, "runs": runs, "summary": summary}


def phase_seed(bench: Bench, data: Dataset) -> dict[str, Any]:
    opts = bench.opts
    say("== the seed's benchmarks: creation, listing, search, concurrent users")
    creation = []
    for level in opts.creation_levels:
        project = writer_projects(bench.api, bench.token(data.writer), 1, f"seed-creation-{level}")
        script = tasks_lua.post_tasks_script(bench.workdir, f"post_seed_{level}", project, "seed")
        creation.append(bench.run(f"create, {level} concurrent", "/api/v1/tasks", connections=level,
                                  email=data.writer, script=script, batches=True, key="create", level=level))
    rc = opts.seed_read_connections
    listing = []
    for size in opts.page_sizes:
        path = f"/api/v1/tasks?limit={size}&page=1"
        shape = bench.check(path, data.reader)
        listing.append(bench.run(f"list, limit={size}", path, connections=rc, email=data.reader, key="list",
                                 page_size=size, **shape))
    path = f"/api/v1/tasks?search={data.description['search_word']}&status=todo&priority=high"
    search = bench.run("search + status + priority", path, connections=rc, email=data.reader, key="search",
                       **bench.check(path, data.reader))
    say(f"   concurrent users: levels {', '.join(map(str, opts.user_levels))}, ~{opts.user_duration_s:g} s each")
    users = measure_users(bench.server.base_url, data.user_emails, PASSWORD, opts.user_levels,
                          duration_s=opts.user_duration_s, max_iterations=200, say=say)
    for level in users:
        if level["failures"]:
            bench.warnings.append(f"concurrent users {level['users']}: failures {level['failures']}")
    return {"creation": creation, "listing": listing, "search": search, "read_connections": rc, "users": users}


# --- orchestration -----------------------------------------------------------

def _start_server(opts: Options, workdir: Path, place: Placement, tag: str) -> tuple[ServerProcess, str, dict[str, Any]]:
    data_dir = workdir / "data"
    data_dir.mkdir()
    settings = {"data_dir": str(data_dir), "password_hashing": "argon2id-fast-insecure", "actor_idle_timeout_s": "3600"}
    if opts.database_url:
        settings["database_url"] = opts.database_url
    if opts.server_log_level:
        settings["log_level"] = opts.server_log_level
    env = collab_env(settings)
    admin = f"lt-admin-{tag}@example.com"
    began = time.perf_counter()
    run_collab(["user", "create", "--email", admin, "--username", f"lt_admin_{tag}", "--admin"], env,
               stdin_text=PASSWORD + "\n", cpus=place.server)
    info: dict[str, Any] = {"admin_create_s": round(time.perf_counter() - began, 3)}
    server = ServerProcess(env, log_path=workdir / "server.log", cpus=place.server,
                           data_dir=None if opts.database_url else data_dir)
    server.start()
    info["ready_s"] = round(server.wait_healthy(opts.startup_timeout_s), 3)
    say(f"   admin created with `collab user create --admin`; server on {server.base_url} (pid {server.proc.pid}) "
        f"healthy after {info['ready_s']:.2f} s")
    return server, admin, info


def run(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    PROGRESS.scenario(SCENARIO)
    prepared = prepare_run()
    if prepared is None:
        return 2
    place, machine = prepared
    result: dict[str, Any] = {
        "scenario": SCENARIO, "format": 1, "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine, "software": describe_software(), "placement": place.description.replace(
            "; startup servers not pinned", ""),
        "password_hashing": "argon2id-fast-insecure (COLLAB_PASSWORD_HASHING; argon2's CHEAPEST profile, not "
                            "for production: logins are not what this scenario measures)",
        "parameters": opts.public(), "targets": TARGETS,
        "server_cpu": min(place.server) if place.server else None,
    }
    say(f"Collab loadtest: {SCENARIO}{' (--quick: short runs, noisier figures)' if opts.quick else ''}")
    say(f"machine : {machine['cpu_model']}, {machine['cores']} cores; loadavg {machine['loadavg_at_start']}; "
        f"busy before start {machine['background_busy_pct']} %"
        + f"; Python speed probe {machine['python_speed_mops']} M loop iterations/s")
    say(f"pinning : {result['placement']}")
    say("params  : " + ", ".join(f"{k}={v}" for k, v in opts.public().items()))
    warnings: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="collab-loadtest-tasks-"))
    server = None
    try:
        with PROGRESS.step("starting the server"):
            server, admin, info = _start_server(opts, workdir, place, secrets.token_hex(4))
        result["server"] = info
        with httpx.Client(base_url=server.base_url, timeout=REQUEST_TIMEOUT_S) as api:
            bench = Bench(opts, server, api, admin, place, workdir, warnings)
            with PROGRESS.step(f"seeding {opts.tasks:,} tasks"):
                data = make_dataset(bench, say)
            result["dataset"] = data.report
            if "seed" in opts.phases:
                result["dataset"]["users"] = make_users(bench, data, max(opts.user_levels), say)
            if "single" in opts.phases:
                result["single"] = phase_single(bench, data)
            if "lists" in opts.phases:
                result["lists"] = phase_lists(bench, data)
            if "seed" in opts.phases:
                result["seed"] = phase_seed(bench, data)
            result["final_metrics"] = bench.metrics()
    except (ServerFailed, WrkFailed, httpx.HTTPError) as exc:
        print(f"loadtest: {type(exc).__name__}: {exc}", file=sys.stderr)
        if server is not None:
            server.stop()
            print(server.log_tail(), file=sys.stderr)
        print(f"loadtest: data and server log kept in {workdir}", file=sys.stderr)
        return 1
    finally:
        result["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    server.stop()
    result["server"].update({"exit_code": server.exit_code, "killed": server.killed, "stop_s": round(server.stop_s or 0, 3),
                             "leftover_postgres": server.leftover_postgres()})
    if server.exit_code != 0 or result["server"]["leftover_postgres"]:
        warnings.append(f"server stop: exit {server.exit_code}, leftover postgres {result['server']['leftover_postgres']}")
    say(f"   server: SIGTERM -> exit {server.exit_code} in {server.stop_s:.2f} s")
    result["machine"]["loadavg_at_end"] = load_average()
    result["warnings"] = warnings
    if opts.keep_data:
        say(f"data and server log kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return report.finish(result, SCENARIO, TITLE, opts.update_docs, warnings)
