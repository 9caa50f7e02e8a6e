"""The "Summary" section of docs/benchmarks.md: issue 10's targets against one ``all`` run.

:func:`build` reads the results of the scenarios that one ``python -m
loadtest all`` ran and turns them into rows (target, measured, met, goal),
kept in ``loadtest/results/all-<time>.json`` so :func:`render` needs nothing
else (``python -m loadtest report`` regenerates the section from that file).

The targets are absolute, and the VM's speed varies over the day. When the run
has a calibration (:mod:`loadtest.calibration`: ``speed_ratio`` = a bare
quart-trio route's req/s on this machine / the reference machine's), the table
gets two more columns for the W1/W2/W3 rows (each carries its numbers in
``scale``): the target scaled to this machine (throughput times the ratio,
latency divided by it; :func:`scaled`) and whether it is met against that.
Without one (older result files) the table is rendered as before.
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
         where: str = "", scale: dict[str, Any] | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"target": target, "measured": measured, "met": met, "goal": goal, "goal_met": goal_met,
                           "where": where}
    if scale is not None:
        row["scale"] = scale
    return row


def _scale(kind: str, limit: float, value: float | None, also: bool = True) -> dict[str, Any]:
    """What :func:`scaled` needs of a row: a ``throughput`` (ops/s, at least) or ``latency`` (p99 ms, at most,
    nothing missing) target's ``limit``, the measured ``value``, and whether its other condition holds
    (nothing missing; True for throughput)."""
    return {"kind": kind, "limit": limit, "value": value, "also": also}


def speed_ratio(calibration: dict[str, Any] | None) -> float | None:
    """The calibration's ratio of this machine's speed to the reference machine's; None without a usable one."""
    ratio = (calibration or {}).get("speed_ratio")
    return float(ratio) if isinstance(ratio, (int, float)) and ratio > 0 else None


def scaled(row: dict[str, Any], ratio: float | None) -> tuple[str, bool | None]:
    """``row``'s target scaled to a machine running at ``ratio`` of the reference speed, and whether the
    measured value meets it: ("", None) for a row without ``scale`` (ratio, RSS and soak targets) or without
    a ratio; met is None when the row was not measured."""
    s = row.get("scale")
    if not s or ratio is None:
        return "", None
    value = s["value"]
    if s["kind"] == "throughput":
        limit = s["limit"] * ratio
        met = None if value is None else bool(value >= limit and s["also"])
        return f">= {limit:,.0f} ops/s", met
    limit = s["limit"] / ratio
    met = None if value is None else bool(value <= limit and s["also"])
    return f"p99 <= {limit:,.{0 if limit >= 10 else 1}f} ms, nothing missing", met  # every latency target says so


def _ws_rows(ws: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    runs = {r["subscribers"]: r for r in ws.get("fanout", {}).get("runs", [])}
    for n, (limit, sharedb) in W1.items():
        run = runs.get(n)
        if run is None:
            rows.append(_row(f"W1 fan-out, {n} subscribers: p99 <= {limit:g} ms, nothing missing", "not run", None,
                             scale=_scale("latency", limit, None)))
            continue
        p99, missing = run["latency_ms"]["p99"], run["deliveries"]["missing"]
        rows.append(_row(f"W1 fan-out, {n} subscribers: p99 <= {limit:g} ms, nothing missing",
                         f"p99 {fmt(p99, 1)} ms (p50 {fmt(run['latency_ms']['p50'], 1)}), {missing:,} missing",
                         p99 is not None and p99 <= limit and missing == 0, f"p99 < {sharedb:g} ms",
                         p99 is not None and p99 < sharedb, "WebSocket fan-out, W1",
                         _scale("latency", limit, p99, missing == 0)))
    tp = {r["inflight"]: r for r in ws.get("throughput", {}).get("runs", [])}
    for k, (limit, sharedb) in W2.items():
        run = tp.get(k)
        value = run["acked_ops_per_s"] if run else None
        rows.append(_row(f"W2 durable throughput, {k} in flight: >= {limit:,.0f} acked ops/s",
                         f"{fmt(value, 0)} ops/s (mean commit batch {fmt(run['actors']['mean_batch_size'], 1)})"
                         if run else "not run", value >= limit if value is not None else None,
                         f"> {sharedb:g} ops/s" if sharedb else "", value > sharedb if value is not None and sharedb
                         else None, "WebSocket fan-out, W2", _scale("throughput", limit, value)))
    many = ws.get("many")
    if many:
        p99, missing = many["latency_ms"]["p99"], many["deliveries"]["missing"]
        rows.append(_row(f"W3 {many['projects']} projects x {many['subscribers_per_project']} subscribers: "
                         f"p99 <= {W3[0]:g} ms, nothing missing",
                         f"p99 {fmt(p99, 1)} ms (p50 {fmt(many['latency_ms']['p50'], 1)}), {missing:,} missing",
                         p99 is not None and p99 <= W3[0] and missing == 0, f"p99 < {W3[1]:g} ms",
                         p99 is not None and p99 < W3[1], "WebSocket fan-out, W3",
                         _scale("latency", W3[0], p99, missing == 0)))
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
            "machine": machine, "software": software, "parameters": params, "noise": noise,
            "calibration": _calibration(results.get("calibration"))}


#: What the summary keeps of a calibration result (see :func:`loadtest.calibration.measure`).
CALIBRATION_KEYS = ("command", "pinning", "wrk", "repetitions", "requests_per_s", "median_requests_per_s", "p50_ms",
                    "p99_ms", "reference_requests_per_s", "reference", "speed_ratio")


def _calibration(result: dict[str, Any] | None) -> dict[str, Any] | None:
    return {k: result.get(k) for k in CALIBRATION_KEYS} if result else None


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**yes**" if ok else "**no**")


def targets_table(rows: list[dict[str, Any]], ratio: float | None) -> tuple[list[str], list[list[str]]]:
    """The header and cells of the targets table; with a ``ratio``, the scaled target and its met flag after
    "met" (empty cells for the rows that do not scale), without one the table of before calibrations."""
    header = ["target", "measured", "met"]
    if ratio is not None:
        header += ["scaled to this machine", "met when scaled"]
    cells = []
    for r in rows:
        row = [r["target"], r["measured"], _met(r["met"])]
        if ratio is not None:
            target, ok = scaled(r, ratio)
            row += [target, _met(ok) if target else ""]
        cells.append(row + [f"{r['goal']}: {_met(r['goal_met'])}" if r["goal"] else "", r["where"]])
    return header + ["goal (ahead of ShareDB)", "section"], cells


def calibration_text(calibration: dict[str, Any] | None, timing: dict[str, Any]) -> str | None:
    """The paragraph under the machine line; None for a run made before calibrations existed."""
    ratio = speed_ratio(calibration)
    if calibration is None:
        run = timing.get("scenarios", {}).get("calibration")
        if run is None:
            return None
        return (f"Calibration: not measured in this run (the calibration scenario exited with {run['exit_code']}); "
                "the targets are not scaled to this machine's speed.")
    if ratio is None:
        return (f"Calibration: no usable figure (median {fmt(calibration.get('median_requests_per_s'), 0)} req/s); "
                "the targets are not scaled to this machine's speed.")
    runs = ", ".join(fmt(r, 0) for r in calibration.get("requests_per_s") or [])
    reference = calibration.get("reference_requests_per_s") or 0
    return (f"Calibration: a bare quart-trio hello-world route (`GET /ping` of loadtest/calibration_app.py under "
            f"`python -m hypercorn -k trio`, on the server's core, wrk with "
            f"{(calibration.get('wrk') or {}).get('connections', 50)} connections) served "
            f"**{fmt(calibration.get('median_requests_per_s'), 0)} req/s** (median of "
            f"{calibration.get('repetitions')}: {runs}; p99 {fmt(calibration.get('p99_ms'), 1)} ms) in this run; "
            f"the session that measured the targets saw ~{reference:,.0f} req/s for the same kind of route (STACK.md, "
            f"trap 2): this machine ran at **~{round(100 * ratio)}%** of that speed. The targets are absolute; the "
            f"column \"scaled to this machine\" shows each W1/W2/W3 target scaled by that ratio (throughput times "
            f"{ratio:.3g}, latency divided by it): what this machine would have to reach for the same code to meet "
            "the target on the reference machine, if the server slowed down as much as the bare route did. A guide, "
            "not a measurement.")


def render(summary: dict[str, Any], json_path: str) -> str:
    t, m, s, p = summary["timing"], summary["machine"], summary["software"], summary["parameters"]
    ratio = speed_ratio(summary.get("calibration"))
    header, rows = targets_table(summary["rows"], ratio)
    calibration = calibration_text(summary.get("calibration"), t)
    scenarios = [[name, fmt(x["wall_s"], 0, " s"), "ok" if x["exit_code"] == 0 else f"**exit {x['exit_code']}**",
                  f"`{summary['results'].get(name, 'no result file')}`"] for name, x in t["scenarios"].items()]
    met = sum(1 for r in summary["rows"] if r["met"])
    if ratio is not None:
        scalable = [r for r in summary["rows"] if r.get("scale")]
        met_scaled = sum(1 for r in scalable if scaled(r, ratio)[1])
        headline_scaled = (f" **{met_scaled} of the {len(scalable)} W1/W2/W3 targets met when scaled to this "
                           "machine's speed.**")
    else:
        headline_scaled = ""
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
        *(["", calibration] if calibration else []),
        "",
        f"**{met} of {len(rows)} targets met.**{headline_scaled} Targets from issue 10 (durable path, one server "
        "process, this 2-core machine with the server and its PostgreSQL pinned to one core and the load generator "
        "to the other); the goal column is ShareDB + PostgreSQL's figure on the same workload (STACK.md). Where a "
        "target is not met, \"What limits it\" below says why, with the profile that shows it.",
        "",
        table(header, rows),
        "",
        table(["scenario", "wall time", "status", "result"], scenarios),
    ]
    if summary.get("noise"):
        lines += ["", "Noise reported by the runs (other programs on the cores):", ""]
        lines += [f"- {n}" for n in summary["noise"][:12]]
        if len(summary["noise"]) > 12:
            lines.append(f"- ... and {len(summary['noise']) - 12} more (see the result files)")
    return "\n".join(lines)
