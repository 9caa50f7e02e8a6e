"""The "Summary" section of docs/benchmarks.md: issue 10's targets against one ``all`` run.

:func:`build` reads the results of the scenarios that one ``python -m
loadtest all`` ran and turns them into rows (target, measured, met, goal),
kept in ``loadtest/results/all-<time>.json`` so :func:`render` needs nothing
else (``python -m loadtest report`` regenerates the section from that file).
"""

from __future__ import annotations

from typing import Any

from loadtest.report import fmt, table

W1 = {100: (71.0, 24.0), 500: (210.0, 56.0)}      # subscribers: (target p99 ms, ShareDB p99 ms)
W2 = {1: (670.0, 604.0), 16: (3500.0, None)}      # in flight: (target ops/s, ShareDB ops/s)
W3 = (190.0, 100.0)                               # target p99 ms, ShareDB p99 ms
IDLE_KIB = 30.0
GET_RATIO, POST_RATIO = 0.6, 0.4
SOAK_S = 600.0


def _row(target: str, measured: str, met: bool | None, goal: str = "", goal_met: bool | None = None,
         where: str = "") -> dict[str, Any]:
    return {"target": target, "measured": measured, "met": met, "goal": goal, "goal_met": goal_met, "where": where}


def _ws_rows(ws: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    runs = {r["subscribers"]: r for r in ws.get("fanout", {}).get("runs", [])}
    for n, (limit, sharedb) in W1.items():
        run = runs.get(n)
        if run is None:
            rows.append(_row(f"W1 fan-out, {n} subscribers: p99 <= {limit:g} ms, nothing missing", "not run", None))
            continue
        p99, missing = run["latency_ms"]["p99"], run["deliveries"]["missing"]
        rows.append(_row(f"W1 fan-out, {n} subscribers: p99 <= {limit:g} ms, nothing missing",
                         f"p99 {fmt(p99, 1)} ms (p50 {fmt(run['latency_ms']['p50'], 1)}), {missing:,} missing",
                         p99 is not None and p99 <= limit and missing == 0, f"p99 < {sharedb:g} ms",
                         p99 is not None and p99 < sharedb, "WebSocket fan-out, W1"))
    tp = {r["inflight"]: r for r in ws.get("throughput", {}).get("runs", [])}
    for k, (limit, sharedb) in W2.items():
        run = tp.get(k)
        value = run["acked_ops_per_s"] if run else None
        rows.append(_row(f"W2 durable throughput, {k} in flight: >= {limit:,.0f} acked ops/s",
                         f"{fmt(value, 0)} ops/s (mean commit batch {fmt(run['actors']['mean_batch_size'], 1)})"
                         if run else "not run", value >= limit if value is not None else None,
                         f"> {sharedb:g} ops/s" if sharedb else "", value > sharedb if value is not None and sharedb
                         else None, "WebSocket fan-out, W2"))
    many = ws.get("many")
    if many:
        p99, missing = many["latency_ms"]["p99"], many["deliveries"]["missing"]
        rows.append(_row(f"W3 {many['projects']} projects x {many['subscribers_per_project']} subscribers: "
                         f"p99 <= {W3[0]:g} ms, nothing missing",
                         f"p99 {fmt(p99, 1)} ms (p50 {fmt(many['latency_ms']['p50'], 1)}), {missing:,} missing",
                         p99 is not None and p99 <= W3[0] and missing == 0, f"p99 < {W3[1]:g} ms",
                         p99 is not None and p99 < W3[1], "WebSocket fan-out, W3"))
    idle = ws.get("idle")
    if idle:
        per = idle["kib_per_socket"]
        rows.append(_row(f"RSS per idle socket < {IDLE_KIB:g} KiB", f"{fmt(per, 1)} KiB ({idle['ready']:,} sockets)",
                         per < IDLE_KIB if per is not None else None, where="WebSocket fan-out, idle sockets"))
    return rows


def _tasks_rows(tasks: dict[str, Any]) -> list[dict[str, Any]]:
    summary = tasks.get("single", {}).get("summary")
    if not summary:
        return []
    ping = summary["ping"]["requests_per_s"]
    rows = []
    for key, what, limit in (("get", "authenticated `GET /tasks/{id}`", GET_RATIO),
                             ("post_one", "durable `POST /tasks` (one project)", POST_RATIO),
                             ("post_spread", "durable `POST /tasks` (spread over 50 projects)", POST_RATIO)):
        s = summary.get(key) or {}
        ratio = s.get("ratio_to_ping")
        rows.append(_row(f"{what} >= {limit:g}x the trivial route", f"{fmt(s.get('requests_per_s'), 0)} req/s = "
                         f"{fmt(ratio, 2)}x ping ({fmt(ping, 0)} req/s)", ratio >= limit if ratio is not None else None,
                         where="Projects and tasks"))
    return rows


def _soak_rows(soak: dict[str, Any]) -> list[dict[str, Any]]:
    a = soak.get("analysis")
    if not a:
        return []
    duration = soak["parameters"]["duration_s"]
    rss = a.get("rss_kib") or {}
    flat = a.get("rss_flat")
    measured = (f"{'flat' if flat else 'NOT flat'} over {duration / 60:.1f} min: {fmt(rss.get('fitted_change'), 0)} KiB "
                f"fitted rise after warm-up ({fmt(rss.get('slope_mib_per_hour'), 1)} MiB/h), "
                f"{(rss.get('last') or 0) / 1024:.0f} MiB at the end")
    met = flat if duration >= SOAK_S else (False if flat is False else None)
    if duration < SOAK_S:
        measured += f"; a {SOAK_S / 60:.0f}-minute soak is `python -m loadtest soak`"
    return [_row(f"{SOAK_S / 60:.0f}-minute soak: RSS flat after warm-up", measured, met, where="Soak")]


def build(results: dict[str, dict[str, Any]], paths: dict[str, str], timing: dict[str, Any],
          machine: dict[str, Any], software: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    rows = []
    if "ws" in results:
        rows += _ws_rows(results["ws"])
    if "tasks" in results:
        rows += _tasks_rows(results["tasks"])
    if "soak" in results:
        rows += _soak_rows(results["soak"])
    noise = []
    for name, result in results.items():
        for warning in result.get("warnings", []):
            if "other programs" in warning or "noisy" in warning:
                noise.append(f"{name}: {warning}")
    return {"scenario": "summary", "format": 1, "rows": rows, "results": paths, "timing": timing,
            "machine": machine, "software": software, "parameters": params, "noise": noise}


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**yes**" if ok else "**no**")


def render(summary: dict[str, Any], json_path: str) -> str:
    t, m, s, p = summary["timing"], summary["machine"], summary["software"], summary["parameters"]
    rows = [[r["target"], r["measured"], _met(r["met"]),
             f"{r['goal']}: {_met(r['goal_met'])}" if r["goal"] else "", r["where"]] for r in summary["rows"]]
    scenarios = [[name, fmt(x["wall_s"], 0, " s"), "ok" if x["exit_code"] == 0 else f"**exit {x['exit_code']}**",
                  f"`{summary['results'].get(name, 'no result file')}`"] for name, x in t["scenarios"].items()]
    met = sum(1 for r in summary["rows"] if r["met"])
    quick = ("`--quick`: every workload at full size with short runs (4 s WebSocket runs, 2 s wrk runs, a 40 s "
             "soak), so the figures are noisier than a full run's" if p.get("quick") else "a full run")
    lines = [
        f"Run {t['started_at']} - {t['finished_at']} ({json_path}): `{p['command']}`, {quick}; "
        f"**wall time {t['wall_s'] / 60:.1f} min**.",
        "",
        f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; Python speed probe "
        f"{m.get('python_speed_mops')} M loop iterations/s (the VM's speed varies over the day); load average "
        f"{m.get('loadavg_at_start')} at the start and {m.get('loadavg_at_end')} at the end (the machine is shared "
        f"with other work). Python {s['python']}, trio {s['packages'].get('trio')}, hypercorn "
        f"{s['packages'].get('hypercorn')}, asyncpg {s['packages'].get('asyncpg')}; commit "
        f"{s.get('checkout', {}).get('commit')} with {s.get('checkout', {}).get('uncommitted_server_files')} "
        "uncommitted server files.",
        "",
        f"**{met} of {len(rows)} targets met.** Targets from issue 10 (durable path, one server process, this "
        "2-core machine with the server and its PostgreSQL pinned to one core and the load generator to the "
        "other); the goal column is ShareDB + PostgreSQL's figure on the same workload (STACK.md). Where a target "
        "is not met, \"What limits it\" below says why, with the profile that shows it.",
        "",
        table(["target", "measured", "met", "goal (ahead of ShareDB)", "section"], rows),
        "",
        table(["scenario", "wall time", "status", "result"], scenarios),
    ]
    if summary.get("noise"):
        lines += ["", "Noise reported by the runs (other programs on the cores):", ""]
        lines += [f"- {n}" for n in summary["noise"][:12]]
        if len(summary["noise"]) > 12:
            lines.append(f"- ... and {len(summary['noise']) - 12} more (see the result files)")
    return "\n".join(lines)
