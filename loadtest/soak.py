"""The soak: a mixed load for a given duration, and whether the server's resources stay flat.

One server process (embedded PostgreSQL in a fresh data dir, or
``--database-url``) started through :mod:`loadtest.instrumented_server` (the
unchanged ``collab serve`` plus a count of its live trio tasks), with the
load generator's limits lifted (:data:`SETTINGS`). For ``--duration``
seconds (600; 40 with ``--quick``), all at once:

- **WebSocket fan-out** (a :mod:`loadtest.ws_worker` process):
  ``--ws-projects`` (20) projects x ``--ws-subscribers`` (5) subscribers,
  one editor per project sending ``task.update`` at ``--ws-rate`` (5) ops/s;
  every acknowledged op must reach every subscriber;
- **REST mix** (:mod:`loadtest.soak_load`, through :mod:`collab.client`):
  ``--rest-rate`` (40) requests/s open loop over ``--rest-clients`` (8)
  connections: task reads, lists, search, creates, updates, deletes,
  projects, me, and logins on fresh connections;
- **socket churn**: ``--churn`` (2) SDK realtime clients per second connect,
  subscribe, stay 0.5-3 s and close.

Every ``--sample-every`` seconds (10; 2 with ``--quick``) it records the
server's RSS, open files, OS threads, CPU, live trio tasks, sockets,
subscriptions, actors, database pool and PostgreSQL backends, and the REST
throughput and latency of the window. The verdict: RSS is **flat** when the
least-squares line through the samples of the second half (after the
warm-up) rises by less than :data:`FLAT_FRACTION` of the mean RSS (at least
:data:`FLAT_MIN_KIB`) over that half; the slope is reported in MiB per hour.
The baseline: wrk ``GET /api/v1/ping`` on the same server before and after
the soak (what the soak left behind).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import trio

from loadtest import report
from loadtest.common import ServerRunOptions, server_run_options, add_common_arguments, picker, prepare_run
from loadtest.instrumented_server import full_collection
from loadtest.machine import describe_software, load_average
from loadtest.progress import PROGRESS, say
from loadtest.serverproc import ServerFailed
from loadtest.soak_load import MIX, Plan, Soak
from loadtest.tasks_data import writer_projects
from loadtest.tasks_seed import parallel
from loadtest.wrk import WrkFailed
from loadtest.ws import SERVER_SETTINGS, Server, _raise_nofile
from loadtest.ws_setup import make_projects, make_users
from loadtest.ws_worker import WorkerFailed, WorkerProcess

SCENARIO = "soak"
TITLE = "Soak"
#: The soak's server: the ws scenario's lifted limits, but the default actor idle timeout (5 minutes),
#: so actors are passivated and restarted during a long soak as in production.
SETTINGS = {k: v for k, v in SERVER_SETTINGS.items() if k != "actor_idle_timeout_s"}
FLAT_FRACTION = 0.02
FLAT_MIN_KIB = 2048
WARMUP_FRACTION = 0.5
REST_PROJECTS = 10
REST_SEED_TASKS = 200
START_MARGIN_S = 1.0
GROWN_TYPES_SHOWN = 12


@dataclass(frozen=True)
class Options(ServerRunOptions):
    duration_s: float
    sample_every_s: float
    rest_rate: float
    rest_clients: int
    churn_per_s: float
    ws_projects: int
    ws_subscribers: int
    ws_rate: float
    drain_s: float
    baseline_s: float
    quiet_wait_s: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="a short soak (40 s, samples every 2 s); does not touch docs/ without --docs")
    parser.add_argument("--duration", type=float, help="seconds of mixed load (default 600; 40 with --quick)")
    parser.add_argument("--sample-every", type=float, help="seconds between samples (default 10; 2 with --quick)")
    parser.add_argument("--rest-rate", type=float, default=40.0, help="REST requests per second, open loop (40)")
    parser.add_argument("--rest-clients", type=int, default=8, help="REST connections (logged-in SDK clients) (8)")
    parser.add_argument("--churn", type=float, default=2.0, help="realtime clients that connect and leave per second (2)")
    parser.add_argument("--ws-projects", type=int, default=20, help="projects with a live editor and subscribers (20)")
    parser.add_argument("--ws-subscribers", type=int, default=5, help="subscribers per project (5)")
    parser.add_argument("--ws-rate", type=float, default=5.0, help="ops per second of each project's editor (5)")
    parser.add_argument("--drain", type=float, default=5.0, help="seconds to wait for late deliveries at the end (5)")
    parser.add_argument("--baseline", type=float, help="seconds of the wrk ping baseline, before and after (default 3; 2 with --quick)")
    parser.add_argument("--quiet-wait", type=float,
                        help="seconds to wait for other programs to leave the cores idle first (default 30; 2 with --quick)")
    add_common_arguments(parser)


def options_from_args(args: argparse.Namespace) -> Options:
    pick = picker(args)
    opts = Options(
        duration_s=pick(args.duration, 600.0, 40.0), sample_every_s=pick(args.sample_every, 10.0, 2.0),
        rest_rate=args.rest_rate, rest_clients=args.rest_clients, churn_per_s=args.churn,
        ws_projects=args.ws_projects, ws_subscribers=args.ws_subscribers, ws_rate=args.ws_rate, drain_s=args.drain,
        baseline_s=pick(args.baseline, 3.0, 2.0), quiet_wait_s=pick(args.quiet_wait, 30.0, 2.0),
        **server_run_options(args),
    )
    for name, value, lo, hi in (("--duration", opts.duration_s, 10, 24 * 3600),
                                ("--sample-every", opts.sample_every_s, 0.5, 600),
                                ("--rest-rate", opts.rest_rate, 0, 2000), ("--rest-clients", opts.rest_clients, 1, 200),
                                ("--churn", opts.churn_per_s, 0, 100), ("--ws-projects", opts.ws_projects, 0, 500),
                                ("--ws-subscribers", opts.ws_subscribers, 1, 50), ("--ws-rate", opts.ws_rate, 0.1, 100),
                                ("--drain", opts.drain_s, 0.5, 60), ("--baseline", opts.baseline_s, 1, 60)):
        if not lo <= value <= hi:
            raise SystemExit(f"loadtest: {name} must be between {lo} and {hi}")
    if opts.duration_s < 4 * opts.sample_every_s:
        raise SystemExit("loadtest: --duration must cover at least 4 samples (--sample-every)")
    return opts


# --- analysis -------------------------------------------------------------------------------------

def _fit(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least-squares (slope per second, intercept) of (t, value) points; None for fewer than 3."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return None
    slope = sum((t - mt) * (v - mv) for t, v in points) / var
    return slope, mv - slope * mt


def trend(samples: list[dict[str, Any]], key: str, since_s: float) -> dict[str, Any] | None:
    """First, last, min, max and the fitted slope of ``key`` over the samples from ``since_s`` on."""
    points = [(s["t_s"], float(s[key])) for s in samples if s["t_s"] >= since_s and s.get(key) is not None]
    if not points:
        return None
    fit = _fit(points)
    span = points[-1][0] - points[0][0]
    values = [v for _, v in points]
    out = {"first": points[0][1], "last": points[-1][1], "min": min(values), "max": max(values),
           "mean": round(sum(values) / len(values), 1), "samples": len(points), "span_s": round(span, 1)}
    if fit is not None:
        out.update({"slope_per_s": fit[0], "intercept": fit[1], "fitted_change": round(fit[0] * span, 1),
                    "slope_per_hour": round(fit[0] * 3600, 1)})
    return out


def analyze(samples: list[dict[str, Any]], duration_s: float) -> dict[str, Any]:
    since = WARMUP_FRACTION * duration_s
    out: dict[str, Any] = {"warmup_s": since}
    for key in ("rss_kib", "open_files", "threads", "trio_tasks", "ws_connections", "actors_active", "pg_processes"):
        out[key] = trend(samples, key, since)
    rss = out["rss_kib"]
    if rss and "fitted_change" in rss:
        allowed = max(FLAT_FRACTION * rss["mean"], FLAT_MIN_KIB)
        rss["allowed_change_kib"] = round(allowed, 1)
        rss["slope_mib_per_hour"] = round(rss["slope_per_s"] * 3600 / 1024, 1)
        out["rss_flat"] = rss["fitted_change"] <= allowed
    else:
        out["rss_flat"] = None
    whole = trend(samples, "rss_kib", 0.0)
    out["rss_whole_run"] = whole
    return out


# --- the run ------------------------------------------------------------------------------------

def _seed_rest_projects(srv: Server, token: str) -> list[str]:
    projects = writer_projects(srv.api, token, REST_PROJECTS, "soak-rest")
    bodies = [("POST", "/api/v1/tasks", {"project_id": projects[i % len(projects)], "title": f"soak seed {i}"
                                         + (" soak" if i % 10 == 0 else ""), "status": "todo",
                                         "priority": ("low", "medium", "high")[i % 3]})
              for i in range(REST_SEED_TASKS)]
    done = parallel(str(srv.api.base_url), token, bodies, concurrency=20, deadline_s=300)
    if done["statuses"].get(201) != len(bodies):
        raise ServerFailed(f"seeding the soak's tasks: statuses {done['statuses']}")
    return projects


def run_soak(opts: Options, srv: Server, warnings: list[str]) -> dict[str, Any]:
    with PROGRESS.step("users, projects and tasks"):
        users = make_users(srv.api)
        ws_projects = make_projects(srv.api, users, opts.ws_projects, "soak-ws") if opts.ws_projects else []
        rest_projects = _seed_rest_projects(srv, users.editor_token)
    read_ids = [t for p in ws_projects for t in p.task_ids] or []
    if not read_ids:
        listing = srv.api.get("/api/v1/tasks", params={"project_id": rest_projects[0], "limit": 100},
                              headers={"Authorization": f"Bearer {users.editor_token}"}).json()
        read_ids = [t["id"] for t in listing["data"]]
    # Full collections with the same state loaded (projects, tasks, actors) and no client connected: before
    # the fan-out sockets open, and after every client closed.
    tasks_file = srv.workdir / "trio-tasks.txt"
    time.sleep(1.0)
    collections = {"before": _collect(srv, tasks_file, "before the load")}
    worker = None
    if ws_projects:
        spec = srv.spec("soak-ws", users, "fixed", [(p, opts.ws_subscribers) for p in ws_projects],
                        rate=opts.ws_rate, capacity=int(opts.ws_rate * opts.duration_s) + 1, random_phase=True, seed=7)
        worker = WorkerProcess({**spec, "duration_s": opts.duration_s, "drain_s": opts.drain_s}, srv.workdir,
                               srv.place.load)
    try:
        with PROGRESS.step("opening the fan-out sockets"):
            setup = worker.wait_ready() if worker else None
            srv.wait_for_quiet("soak")

        def start() -> float:
            at = time.monotonic() + START_MARGIN_S
            if worker:
                worker.go(at)
            return at

        plan = Plan(
            base_url=srv.proc.base_url, password=srv_password(), admin_email=srv.admin_email,
            writer_email=users.editor_email, subscriber_emails=users.subscriber_emails, rest_projects=rest_projects,
            ws_projects=[p.project_id for p in ws_projects], read_task_ids=read_ids, server_pid=srv.proc.proc.pid,
            server_cpu=min(srv.place.server) if srv.place.server else None,
            pg_data_dir=srv.data_dir, tasks_file=tasks_file, duration_s=opts.duration_s,
            sample_every_s=opts.sample_every_s, rest_rate=opts.rest_rate, rest_clients=opts.rest_clients,
            churn_per_s=opts.churn_per_s,
        )
        say(f"   soak: {opts.duration_s:g} s; fan-out {opts.ws_projects} projects x {opts.ws_subscribers} subscribers "
            f"at {opts.ws_rate:g} ops/s each; REST {opts.rest_rate:g} req/s over {opts.rest_clients} connections; "
            f"{opts.churn_per_s:g} sockets/s churn; a sample every {opts.sample_every_s:g} s")
        with PROGRESS.step("soak", opts.duration_s):
            load = trio.run(Soak(plan, _print_sample, start).run)
        ws_result = None
        if worker:
            with PROGRESS.step("drain, close"):
                ws_result = worker.wait_done(opts.drain_s + 120)
        time.sleep(2.0)  # the churn's last sockets and the REST connections close
        collections["after"] = _collect(srv, tasks_file, "after the load")
    finally:
        if worker:
            worker.kill()
    b, e = collections.get("before"), collections.get("after")
    if b and e:  # which kinds of objects stayed alive
        grown = {k: e["types"].get(k, 0) - b["types"].get(k, 0) for k in set(e["types"]) | set(b["types"])}
        collections["grown_types"] = dict(sorted(((k, v) for k, v in grown.items() if v > 0),
                                                 key=lambda kv: -kv[1])[:GROWN_TYPES_SHOWN])
        say("   objects alive after the load minus before, by type: " + ", ".join(
            f"{k} {v:+,}" for k, v in collections["grown_types"].items()))
    for c in (b, e):
        if c:
            c.pop("types", None)
    out: dict[str, Any] = {**load, "ws_setup": setup, "analysis": analyze(load["samples"], opts.duration_s),
                           "collections": collections}
    if ws_result is not None:
        from loadtest.hdr import Latencies

        lat = Latencies.decode(ws_result.pop("latency_hdr")).as_dict()
        out["ws"] = {"ops": ws_result["ops"], "deliveries": ws_result["deliveries"], "latency_ms": lat,
                     "closed_during_run": ws_result["closed_during_run"], "load_cpu_pct": ws_result["run"]["cpu_pct"]}
        if ws_result["deliveries"]["missing"]:
            warnings.append(f"soak: {ws_result['deliveries']['missing']} fan-out deliveries missing")
    if load["rest"]["errors"]:
        warnings.append(f"soak: REST errors {load['rest']['errors']}")
    if load["rest"]["skipped"]:
        warnings.append(f"soak: {load['rest']['skipped']} REST requests skipped (more than 200 outstanding)")
    return out


def _collect(srv: Server, tasks_file: Path, when: str) -> dict[str, Any] | None:
    """A full garbage collection in the server (:func:`full_collection`), with its RSS before and after."""
    rss_before = srv.rss_kib()
    found = full_collection(tasks_file)
    if found is None:
        say(f"   full collection {when}: no answer from the server")
        return None
    time.sleep(0.5)
    found.update({"rss_kib_before": rss_before, "rss_kib_after": srv.rss_kib()})
    say(f"   full collection {when}: {found['collected']:,} unreachable objects freed in {found['pause_s'] * 1000:.0f} ms; "
        f"{found['objects_after']:,} objects tracked after it; RSS {rss_before:,} -> {found['rss_kib_after']:,} KiB")
    return found


def srv_password() -> str:
    from loadtest.foundation import PASSWORD

    return PASSWORD


def _print_sample(s: dict[str, Any]) -> None:
    rest, cpu = s.get("rest") or {}, s.get("cpu") or {}
    say(f"   t={s['t_s']:6.0f} s  CPU {cpu.get('server_pct', '-')}/{cpu.get('with_pg_pct', '-')}% "
        f"(others {cpu.get('others_pct', '-')}%)  RSS {s.get('rss_kib', 0) / 1024:6.1f} MiB  fds {s.get('open_files')}  "
        f"threads {s.get('threads')}  trio tasks {s.get('trio_tasks')}  sockets {s.get('ws_connections')}  "
        f"actors {s.get('actors_active')}  PG procs {s.get('pg_processes')}  stall {s.get('worst_stall_ms')} ms  "
        f"REST {rest.get('per_s', '-')} req/s p99 {rest.get('p99_ms', '-')} ms errors {rest.get('errors', '-')}")


def run(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    PROGRESS.scenario(SCENARIO)
    prepared = prepare_run()
    if prepared is None:
        return 2
    place, machine = prepared
    nofile = _raise_nofile()
    result: dict[str, Any] = {
        "scenario": SCENARIO, "format": 1, "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine, "software": describe_software(),
        "placement": place.description.replace("wrk, this driver and the login clients",
                                               "wrk, this driver (REST mix, churn, sampler) and the fan-out "
                                               "load process").replace("; startup servers not pinned", ""),
        "password_hashing": "argon2id-fast-insecure (COLLAB_PASSWORD_HASHING; logins are not what this measures)",
        "server_settings": {f"COLLAB_{k.upper()}": v for k, v in SETTINGS.items()},
        "parameters": opts.public(), "mix": MIX, "nofile": nofile,
        "flat_rule": {"warmup_fraction": WARMUP_FRACTION, "fraction": FLAT_FRACTION, "min_kib": FLAT_MIN_KIB},
        "server_cpu": min(place.server) if place.server else None,
    }
    say(f"Collab loadtest: {SCENARIO}{' (QUICK: a short soak)' if opts.quick else ''}")
    say(f"machine : {machine['cpu_model']}, {machine['cores']} cores; loadavg {machine['loadavg_at_start']}; "
        f"busy before start {machine['background_busy_pct']} %"
        + f"; Python speed probe {machine['python_speed_mops']} M loop iterations/s")
    s = result["software"]
    say(f"software: Python {s['python']}; " + ", ".join(f"{k} {v}" for k, v in s["packages"].items()))
    say(f"pinning : {result['placement']}")
    say("server  : python -m loadtest.instrumented_server serve (collab + a trio task counter); "
        + ", ".join(f"{k}={v}" for k, v in result["server_settings"].items()))
    say("params  : " + ", ".join(f"{k}={v}" for k, v in opts.public().items()))
    warnings: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="collab-loadtest-soak-"))
    srv = None
    failed = False
    try:
        say("== soak")
        with PROGRESS.step("starting the server"):
            srv = Server(opts, place, workdir, "soak", warnings, settings=SETTINGS,
                         command=[sys.executable, "-m", "loadtest.instrumented_server"],
                         extra_env={"LOADTEST_TASKS_FILE": str(workdir / "soak" / "trio-tasks.txt")})
        result["server"] = srv.record
        result["baseline_before"] = srv.baseline()
        result.update(run_soak(opts, srv, warnings))
        result["baseline_after"] = srv.baseline()
        result["server"].update(srv.stop())
    except (ServerFailed, WrkFailed, WorkerFailed, httpx.HTTPError) as exc:
        failed = True
        print(f"loadtest: soak: {type(exc).__name__}: {exc}", file=sys.stderr)
        if srv is not None:
            print(srv.proc.log_tail(), file=sys.stderr)
        warnings.append(f"soak failed: {type(exc).__name__}: {str(exc)[:300]}")
    finally:
        if srv is not None:
            srv.kill()
        result["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    result["machine"]["loadavg_at_end"] = load_average()
    result["warnings"] = warnings
    if opts.keep_data or failed:
        say(f"data and server log kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if failed:
        path = report.write_json(result, SCENARIO)
        say(f"results: {report.relative(path)}; docs not touched (the soak failed)")
        return 1
    return report.finish(result, SCENARIO, TITLE, opts.update_docs, warnings)
