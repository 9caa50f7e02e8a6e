"""The "Foundation" section of docs/benchmarks.md, made from one result file."""

from __future__ import annotations

from typing import Any

from loadtest.report import fmt, table

KINDS = {"first_start": "first start (fresh data dir: initdb)", "restart": "restart (same data dir)"}


def render(result: dict[str, Any], json_path: str) -> str:
    parts = [_context(result, json_path)]
    if "startup" in result:
        parts.append(_startup(result["startup"]))
    if "throughput" in result:
        parts.append(_throughput(result))
    if "login" in result:
        parts.append(_login(result))
    if result.get("warnings"):
        parts.append("**Warnings during the run:**\n\n" + "\n".join(f"- {w}" for w in result["warnings"]))
    return "\n\n".join(parts)


def _context(result: dict[str, Any], json_path: str) -> str:
    m, s, p = result["machine"], result["software"], result["parameters"]
    pk = s["packages"]
    quick = (" **Quick run (`--quick`): shorter runs than the full one, so noisier figures; the parameters are "
             "listed in the JSON.**" if p.get("quick") else "")
    busy = ", ".join(f"CPU {k} {v}%" for k, v in m.get("background_busy_pct", {}).items())
    return "\n".join([
        f"Run {result['started_at']} ({json_path}).{quick}",
        "",
        f"- Machine: {m['cpu_model']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['os']}; "
        f"load average at start {m['loadavg_at_start']}, cores busy in the second before: {busy}"
        + (f"; Python speed probe {m['python_speed_mops']} M loop iterations/s (the VM's speed varies: compare "
           "runs by it)." if m.get("python_speed_mops") else "."),
        f"- Software: Python {s['python']}, collab {pk.get('collab')}, trio {pk.get('trio')}, quart {pk.get('quart')}, "
        f"quart-trio {pk.get('quart-trio')}, hypercorn {pk.get('hypercorn')}, asyncpg {pk.get('asyncpg')}, "
        f"trio-asyncio {pk.get('trio-asyncio')}, httpx {pk.get('httpx')}, argon2-cffi {pk.get('argon2-cffi')}; "
        f"{s.get('embedded_postgres')} (pgserver {pk.get('pgserver')}); {s.get('wrk')}.",
        f"- Code: commit {s.get('checkout', {}).get('commit')}, {s.get('checkout', {}).get('uncommitted_server_files')} "
        "server files with uncommitted changes.",
        f"- Database: {p['database']}. Server log level: {p['server_log_level']}. "
        f"Password hashing: {result.get('password_hashing')}.",
        f"- CPU placement: {result['placement']}.",
    ])


def _startup(startup: dict[str, Any]) -> str:
    reps = max(len(startup[k]["ready_s"]) for k in KINDS)
    header = ["start", *[f"run {i}" for i in range(1, reps + 1)], "median", "exit codes", "stop after SIGTERM (max)"]
    rows = []
    for kind, label in KINDS.items():
        runs = [r for r in startup["runs"] if r["kind"] == kind]
        rows.append([
            label, *[fmt(v, 2, " s") for v in startup[kind]["ready_s"]], f"**{fmt(startup[kind]['median_s'], 2, ' s')}**",
            ", ".join(str(r["exit_code"]) for r in runs), fmt(max(r["stop_s"] for r in runs), 2, " s"),
        ])
    return ("### Startup\n\nTime from launching `collab serve` (embedded PostgreSQL) to the first 200 from "
            "`GET /health`; each server stopped with SIGTERM.\n\n" + table(header, rows))


def _throughput(result: dict[str, Any]) -> str:
    p = result["parameters"]
    header = ["connections", "route", "run", "req/s", "p50 ms", "p99 ms", "errors", "loop stall max ms",
              "server CPU %", "others on server core %"]
    rows, ratios = [], []
    for level in result["throughput"]["levels"]:
        for run in level["runs"]:
            rows.append([
                level["connections"], f"`{run['url_path']}`", run["run"], fmt(run["requests_per_s"], 0),
                fmt(run["p50_ms"], 2), fmt(run["p99_ms"], 2), sum(run["errors"].values()),
                fmt(run["worst_stall_ms"], 1), fmt(run["cpu"]["server_cpu_pct"], 0),
                fmt(run["cpu"].get("other_on_server_core_pct"), 0),
            ])
        mean = level["mean_requests_per_s"]
        ratios.append([level["connections"], fmt(mean["ping"], 0), fmt(mean["me"], 0),
                       ", ".join(f"{r:.2f}" for r in level["ratio_me_ping_by_run"]), f"**{level['ratio_me_ping']:.2f}**"])
    intro = (f"wrk, 1 thread, `--latency`, {p['duration_s']:g} s per run after a {p['warmup_s']:g} s warm-up per "
             "route; runs alternate ping, me, ping, me to show the noise. `/api/v1/ping`: no auth, no I/O (the "
             "baseline). `/api/v1/users/me`: bearer token (JWT + cached session) and one database read. "
             "Server CPU includes its embedded PostgreSQL (100% = one core); \"others\" is what other programs "
             "took from the server's core during the run (the machine is shared).")
    ratio_table = table(["connections", "ping req/s (mean)", "me req/s (mean)", "me/ping by run", "me/ping"], ratios)
    return "### Throughput\n\n" + intro + "\n\n" + table(header, rows) + "\n\n" + ratio_table


def _login(result: dict[str, Any]) -> str:
    login = result["login"]
    summary = table(
        ["logins", "p50 ms", "p95 ms", "max ms", "loop stall max ms (over rounds)", "idle stall ms", "round wall (median)"],
        [[login["logins"], fmt(login["p50_ms"], 0), fmt(login["p95_ms"], 0), fmt(login["max_ms"], 0),
          f"**{fmt(login['worst_stall_ms'], 1)}**", fmt(login["idle_worst_stall_ms"], 1),
          fmt(login["median_round_wall_s"], 2, " s")]],
    )
    rounds = table(
        ["round", "wall s", "p50 ms", "max ms", "loop stall ms", "failures"],
        [[r["round"], fmt(r["wall_s"], 2), fmt(r["p50_ms"], 0), fmt(r["max_ms"], 0), fmt(r["worst_stall_ms"], 1),
          r["failures"]] for r in login["rounds"]],
    )
    intro = (f"{login['users']} distinct users log in at the same moment (trio, one httpx.AsyncClient each, "
             f"connections opened beforehand), {len(login['rounds'])} rounds. The loop stall is the server's "
             "`worst_stall_since_reset_ms` (admin metrics, reset before each round); the idle figure is the same "
             "window over 1 s with no load.")
    return "### Login\n\n" + intro + "\n\n" + summary + "\n\n" + rounds
