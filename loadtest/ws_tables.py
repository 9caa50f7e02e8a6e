"""The "WebSocket fan-out" section of docs/benchmarks.md, made from one result file of ``loadtest ws``."""

from __future__ import annotations

from typing import Any

from loadtest.charts import available, image
from loadtest.foundation_tables import _context
from loadtest.report import fmt, table

RUN = """Run with:

```
python -m loadtest ws                  # full run (~4-5 minutes on a quiet machine); rewrites this section
python -m loadtest ws --quick          # same workloads, 4 s runs, 500 idle sockets; leaves this file alone without --docs
python -m loadtest ws --scenarios fanout,throughput,many,idle   # a subset (the default is all four)
python -m loadtest report loadtest/results/ws-<time>.json       # this section again from a result file
```

Each sub-scenario gets its own fresh server process (embedded PostgreSQL), measured first with a brief
wrk run of `GET /api/v1/ping` (the baseline). The load comes from separate load-generator processes
(`loadtest/ws_worker.py`) with lightweight raw trio-websocket clients (`loadtest/ws_clients.py`): a
subscriber authenticates with the first frame, subscribes (snapshot), then only scans each message (one
frame or a JSON array of frames) for the client op ids of the events. An editor sends `task.update` ops
(each changes a task's title, so each commits exactly one `task.updated` event) over its own socket.
**Delivery latency** = the time a subscriber received the event - the time its editor sent the op (both
`time.perf_counter()` in the same load-generator process): it includes the op's durable commit (group
commit in PostgreSQL), the fan-out, and the load generator's own queueing. **Missing** = ops the server
acknowledged that some subscriber had not received when the drain period after the run ended (every
subscriber must see every op's event); resyncs, errors and closes are counted too. **Events per
message**: the server's coalescing (event frames received / WebSocket messages received by the
subscribers). **Server CPU**: the server process alone, and with its embedded PostgreSQL (100% = one
core). **Load CPU**: the load-generator processes (100% = one core: at that point the latencies include
their own queueing). **Others**: what other programs took from the server's core and the load core during
the run (the machine may be shared; before each run the tool waits up to 30 s, 2 s with `--quick`, for
both cores to be quiet). Latency percentiles come from HDR histograms (3 significant digits) merged across
the load-generator processes."""

#: STACK.md, "What the broadcast path can do on this stack (measured)": a minimal hub of the same design.
REFERENCE = {
    "w1_100": ("2.9 / 24", "6.7 / 35", "12.6 / 71", "2.2 / 17"),
    "w1_500": ("15 / 56", "33-50 / 104-125", "90-104 / 170-207", "25 / 83"),
    "w2": ("604 / 136", "929 / 6,102-7,576", "673 / 3,565-4,087", "3,765 / 17,280"),
    "w3": ("2.5 / 100", "1.6 / 88-95", "4.6-8.9 / 105-192", "1.2 / 14"),
}


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**yes**" if ok else "**no**")


def render(result: dict[str, Any], json_path: str) -> str:
    settings = ", ".join(f"`{k}={v}`" for k, v in result.get("server_settings", {}).items())
    parts = [_context(result, json_path), RUN,
             f"Server settings for these runs: {settings} (the load users hold hundreds of sockets each and the "
             "editors send more than the default 50 messages/s; every other limit is the default, e.g. "
             "`COLLAB_WS_MAX_QUEUED_EVENTS=1024`)."]
    parts.append(_targets(result))
    if "fanout" in result:
        parts.append(_fanout(result))
    if "throughput" in result:
        parts.append(_throughput(result))
    if "many" in result:
        parts.append(_many(result))
    if "idle" in result:
        parts.append(_idle(result))
    parts.append(_reading(result))
    parts.append(_baselines(result))
    parts.append(_reference(result))
    again = "the measured" if result["parameters"].get("quick") else "a second"
    if result.get("fanout", {}).get("profiled"):
        parts.append(_profile(result["fanout"]["profiled"], "W1 fan-out", f"{again} W1 run at "
                              f"{result['fanout']['profiled']['subscribers']} subscribers"))
    many = result.get("many", {})
    if many.get("profile", {}).get("available"):
        parts.append(_profile(many, "W3 many projects", f"measured W3 run ({many['projects']} projects x "
                              f"{many['subscribers_per_project']} subscribers)"))
    if result.get("throughput", {}).get("profiled"):
        parts.append(_profile(result["throughput"]["profiled"], "W2 group commit", f"{again} W2 run with "
                              f"{result['throughput']['profiled']['inflight']} ops in flight"))
    if result.get("warnings"):
        parts.append("**Warnings during the run:**\n\n" + "\n".join(f"- {w}" for w in result["warnings"]))
    return "\n\n".join(parts)


# --- targets -----------------------------------------------------------------------------------------

def _fanout_run(result: dict[str, Any], subscribers: int) -> dict[str, Any] | None:
    return next((r for r in result.get("fanout", {}).get("runs", []) if r["subscribers"] == subscribers), None)


def _targets(result: dict[str, Any]) -> str:
    t, goals = result["targets"], result.get("goals", {})
    rows = []

    def goal(text: str, ok: bool | None) -> str:
        return f"{text}: {_met(ok)}"

    fan = result.get("fanout", {}).get("runs", [])
    for n, limit in t["fanout_p99_ms"].items():
        run = _fanout_run(result, int(n))
        p99 = run["latency_ms"]["p99"] if run else None
        missing = run["deliveries"]["missing"] if run else None
        g = goals.get("fanout_p99_ms", {}).get(n) or goals.get("fanout_p99_ms", {}).get(int(n))
        rows.append([f"W1 fan-out, {n} subscribers: delivery p99 <= {fmt(limit, 0)} ms, nothing missing",
                     f"p99 {fmt(p99, 1)} ms, {missing:,} missing" if run else "not run",
                     _met(p99 <= limit and missing == 0 if p99 is not None else None),
                     goal(f"p99 < {fmt(g, 0)} ms", p99 < g if p99 is not None else None) if g else ""])
    if fan:
        missing = sum(r["deliveries"]["missing"] for r in fan)
        expected = sum(r["deliveries"]["expected"] for r in fan)
        rows.append(["W1 fan-out, every level: nothing missing", f"{missing:,} of {expected:,} missing",
                     _met(missing == 0 and not any(r["deliveries"]["trouble_frames"] for r in fan)), ""])
    for k, limit in t["throughput_ops_per_s"].items():
        run = next((r for r in result.get("throughput", {}).get("runs", []) if r["inflight"] == int(k)), None)
        value = run["acked_ops_per_s"] if run else None
        g = goals.get("throughput_ops_per_s", {}).get(k) or goals.get("throughput_ops_per_s", {}).get(int(k))
        rows.append([f"W2 durable throughput, {k} in flight: >= {fmt(limit, 0)} acked ops/s",
                     f"{fmt(value, 0)} ops/s" if run else "not run", _met(value >= limit if value is not None else None),
                     goal(f"> {fmt(g, 0)} ops/s", value > g if value is not None else None) if g else ""])
    many = result.get("many")
    if many:
        p99 = many["latency_ms"]["p99"]
        g = goals.get("many_p99_ms")
        rows.append([f"W3 many projects: delivery p99 <= {fmt(t['many_p99_ms'], 0)} ms, nothing missing",
                     f"p99 {fmt(p99, 1)} ms, {many['deliveries']['missing']:,} of {many['deliveries']['expected']:,} "
                     "missing", _met(p99 is not None and p99 <= t["many_p99_ms"] and many["deliveries"]["missing"] == 0),
                     goal(f"p99 < {fmt(g, 0)} ms", p99 < g if p99 is not None else None) if g else ""])
    idle = result.get("idle")
    if idle:
        per = idle["kib_per_socket"]
        rows.append([f"idle sockets: server RSS < {fmt(t['idle_kib_per_socket'], 0)} KiB per socket",
                     f"{fmt(per, 1)} KiB", _met(per < t["idle_kib_per_socket"] if per is not None else None), ""])
    return ("### Targets\n\nIssue 10's targets (durable path: an ack means committed; one server process) and, "
            "beyond them, the goal of being ahead of ShareDB + PostgreSQL on the same workloads (STACK.md).\n\n"
            + table(["target", "measured", "met", "goal (ahead of ShareDB)"], rows))


# --- sections ----------------------------------------------------------------------------------------------

def _lat(run: dict[str, Any]) -> str:
    lat = run["latency_ms"]
    return f"{fmt(lat['p50'], 1)} / {fmt(lat['p99'], 1)} / {fmt(lat['max'], 0)}"


def _cpu(run: dict[str, Any]) -> str:
    return f"{fmt(run['cpu']['server_process_pct'], 0)} / {fmt(run['cpu']['server_cpu_pct'], 0)}"


def _others(run: dict[str, Any]) -> str:
    cpu = run["cpu"]
    return f"{fmt(cpu.get('other_on_server_core_pct'), 0)} / {fmt(cpu.get('other_on_load_core_pct'), 0)}"


def _missing(run: dict[str, Any]) -> str:
    d = run["deliveries"]
    extra = []
    if d["trouble_frames"]:
        extra.append(", ".join(f"{k} {v}" for k, v in d["trouble_frames"].items()))
    if run.get("closed_during_run"):
        extra.append(f"{sum(run['closed_during_run'].values())} closed")
    return f"{d['missing']:,}" + (f" ({'; '.join(extra)})" if extra else "")


def _fanout(result: dict[str, Any]) -> str:
    f = result["fanout"]
    header = ["subscribers", "ops sent / acked", "deliveries expected", "missing", "delivery p50 / p99 / max ms",
              "events per message", "editor ack p50 / p99 ms", "editor send lag p99 ms", "server CPU % (process / +PG)",
              "load CPU %", "others on server / load core %", "loop stall max ms"]
    rows = []
    for run in f["runs"]:
        ops, d = run["ops"], run["deliveries"]
        rows.append([
            f"**{run['subscribers']}**", f"{ops['sent']:,} / {ops['acked']:,}", f"{d['expected']:,}", _missing(run),
            f"**{_lat(run)}**", fmt(d["events_per_message"], 2),
            f"{fmt(ops['ack_ms']['p50'], 1)} / {fmt(ops['ack_ms']['p99'], 1)}", fmt(ops["send_lag_ms"]["p99"], 1),
            _cpu(run), fmt(run["load_cpu_pct"], 0), _others(run), fmt(run["worst_stall_ms"], 0),
        ])
    intro = (f"W1: one project; one editor sends `task.update` ops at {fmt(f['rate'], 0)} ops/s on a fixed schedule "
             f"(open loop: op n is due at start + n/rate whether or not earlier ops were answered; \"send lag\" is how "
             f"late the load generator got them out) for {fmt(f['duration_s'], 0)} s; N subscribers, each a separate "
             "socket (5 users, N/5 sockets each). One row per N, each on a fresh project of the same server. "
             "\"Editor ack\": send -> `ack` (the op is committed). The drain after each run waits until every "
             "acknowledged op reached every subscriber, at most the configured drain time.")
    charts = [image(name, alt) for name, alt in available("ws", result) if name == "ws-fanout-latency.png"]
    return "### W1: fan-out of one busy project\n\n" + intro + "\n\n" + table(header, rows) + "".join(
        "\n\n" + c for c in charts)


def _throughput(result: dict[str, Any]) -> str:
    t = result["throughput"]
    header = ["ops in flight", "acked ops/s", "ack p50 / p99 ms", "mean commit batch (ops)", "subscribers",
              "delivery p50 / p99 / max ms", "missing", "events per message", "server CPU % (process / +PG)",
              "load CPU %", "others on server / load core %"]
    rows = []
    for run in t["runs"]:
        ops = run["ops"]
        rows.append([run["inflight"], f"**{fmt(run['acked_ops_per_s'], 0)}**",
                     f"{fmt(ops['ack_ms']['p50'], 2)} / {fmt(ops['ack_ms']['p99'], 2)}",
                     fmt(run["actors"]["mean_batch_size"], 2), run["deliveries"]["subscribers"], _lat(run),
                     _missing(run), fmt(run["deliveries"]["events_per_message"], 2), _cpu(run),
                     fmt(run["load_cpu_pct"], 0), _others(run)])
    intro = (f"W2: one project, {t['subscribers']} subscribers; the editor keeps k ops in flight (closed loop: the "
             f"next op goes out when an answer arrives) for {fmt(t['duration_s'], 0)} s. Acked ops/s = `ack` frames "
             "received inside the run window / its length; an ack means the op is committed to PostgreSQL (the "
             "project actor's group commit: \"mean commit batch\" is ops per commit, from the admin metrics).")
    charts = [image(name, alt) for name, alt in available("ws", result) if name == "ws-throughput.png"]
    return "### W2: durable op throughput\n\n" + intro + "\n\n" + table(header, rows) + "".join(
        "\n\n" + c for c in charts)


def _many(result: dict[str, Any]) -> str:
    m = result["many"]
    ops, d, lat = m["ops"], m["deliveries"], m["latency_ms"]
    header = ["projects x subscribers", "sockets", "load processes", "ops acked in the window (per s)",
              "commits (mean ops per commit)", "deliveries expected",
              "missing", "delivery p50 / p90 / p99 / max ms", "events per message", "editor ack p50 / p99 ms",
              "server CPU % (process / +PG)", "load CPU %", "others on server / load core %", "server RSS before / end",
              "loop stall max ms"]
    row = [f"{m['projects']} x {m['subscribers_per_project']}", f"{m['sockets']:,}", m["workers"],
           f"{ops['acked_in_window']:,} ({fmt(ops['acked_in_window'] / m['duration_s'], 0)})",
           f"{m['actors']['batches']:,} ({fmt(m['actors']['mean_batch_size'], 2)})", f"{d['expected']:,}", _missing(m),
           f"**{fmt(lat['p50'], 1)} / {fmt(lat['p90'], 1)} / {fmt(lat['p99'], 1)} / {fmt(lat['max'], 0)}**",
           fmt(d["events_per_message"], 2), f"{fmt(ops['ack_ms']['p50'], 1)} / {fmt(ops['ack_ms']['p99'], 1)}",
           _cpu(m), fmt(m["load_cpu_pct"], 0), _others(m),
           f"{fmt((m['rss_kib_before'] or 0) / 1024, 0)} / {fmt((m['rss_kib_end'] or 0) / 1024, 0)} MiB",
           fmt(m["worst_stall_ms"], 0)]
    intro = (f"W3: {m['projects']} projects, each with its own editor at {fmt(m['rate'], 0)} ops/s (fixed schedule, "
             f"random phase) and {m['subscribers_per_project']} subscribers, for {fmt(m['duration_s'], 0)} s. "
             f"Offered: {fmt(m['projects'] * m['rate'], 0)} ops/s in all. Ops acked in the window: acks received "
             "before the editors stopped; commits: the actors' batches over the run and its drain (admin metrics). "
             "Server RSS: before the run (every socket open) and at the end of the run window."
             + (" With several load processes, the editor ack p50 is the processes' median and p99 their worst."
                if m["workers"] > 1 else ""))
    return "### W3: many projects\n\n" + intro + "\n\n" + table(header, [row])


def _idle(result: dict[str, Any]) -> str:
    i = result["idle"]
    row = [f"{i['sockets']:,}", f"{i['ready']:,}", fmt(i["setup_s"], 1, " s"),
           f"{fmt(i['handshake_ms_p50'], 1)} / {fmt(i['handshake_ms_max'], 0)}",
           f"{fmt(i['rss_kib_before'] / 1024, 1)} MiB", f"{fmt(i['rss_kib_open'] / 1024, 1)} MiB",
           f"**{fmt(i['kib_per_socket'], 1)}**", f"{fmt(i['rss_kib_after_close'] / 1024, 1)} MiB",
           fmt(i["server_fds_open"], 0)]
    intro = (f"{i['sockets']:,} sockets authenticate (first frame), subscribe ({i['projects']} projects, up to 20 "
             "sockets each) and stay idle. RSS of the server process (not its PostgreSQL): before = after a warm-up "
             "(one socket per project, opened and closed, so code paths and the projects' actors exist), open = "
             "3 s after the last socket subscribed; per socket = (open - before) / sockets connected; after close "
             "= 2 s after all sockets closed (what the process gives back).")
    return ("### Idle sockets\n\n" + intro + "\n\n" +
            table(["sockets", "connected", "connect + subscribe all", "handshake p50 / max ms (auth+subscribe)",
                   "RSS before", "RSS open", "KiB per socket", "RSS after close", "server fds open"], [row]))


def _runs(result: dict[str, Any]) -> list[dict[str, Any]]:
    runs = list(result.get("fanout", {}).get("runs", [])) + list(result.get("throughput", {}).get("runs", []))
    return runs + ([result["many"]] if "many" in result else [])


def _reading(result: dict[str, Any]) -> str:
    """Observations computed from this result (so they stay true when the section is regenerated)."""
    notes = []
    runs = _runs(result)
    saturated = [r for r in runs if (r["cpu"].get("server_cpu_pct") or 0) >= 90]
    if saturated:
        notes.append("The server's core was saturated (server process + its PostgreSQL >= 90% of CPU "
                     f"{result.get('server_cpu')}) in: " + "; ".join(
                         f"{r['label']} ({_cpu(r)}%)" for r in saturated) + ". These runs are bound by the "
                     "server's one core, which the embedded PostgreSQL shares.")
    if runs:
        worst = max(runs, key=lambda r: r["load_cpu_pct"] or 0)
        busy = (worst["load_cpu_pct"] or 0) >= 90
        notes.append(f"The load generator peaked at {fmt(worst['load_cpu_pct'], 0)}% of its core ({worst['label']}, "
                     f"{worst['workers']} process(es)): "
                     + ("saturated, so part of those latencies is its own queueing." if busy else
                        "below saturation; its queueing is a small part of the latencies."))
    fan = result.get("fanout", {}).get("runs", [])
    if fan:
        notes.append("Coalescing (events per message) by subscribers: " + ", ".join(
            f"{r['subscribers']}: {fmt(r['deliveries']['events_per_message'], 2)}" for r in fan)
            + ". Editor ack p50 / delivery p50 ms by subscribers: " + ", ".join(
                f"{r['subscribers']}: {fmt(r['ops']['ack_ms']['p50'], 1)} / {fmt(r['latency_ms']['p50'], 1)}" for r in fan)
            + ": subscribers get an event about when the editor gets its ack, so the time goes into getting "
              "each op committed and answered on a loop that is also busy with the fan-out, not into a "
              "subscriber backlog after it.")
    one = next((r for r in result.get("throughput", {}).get("runs", []) if r["inflight"] == 1), None)
    if one and one["acked_ops_per_s"]:
        per_op = one["cpu"]["server_process_pct"] * 10 / one["acked_ops_per_s"]
        with_pg = one["cpu"]["server_cpu_pct"] * 10 / one["acked_ops_per_s"]
        notes.append(f"W2 with 1 op in flight: {fmt(one['acked_ops_per_s'], 0)} ops/s at {fmt(one['ops']['ack_ms']['p50'], 2)} "
                     f"ms per op, one commit per op; about {fmt(per_op, 1)} ms of server-process CPU per op "
                     f"({fmt(with_pg, 1)} ms with PostgreSQL)"
                     + (f"; the commit itself (request to durable, as the actor sees it) took "
                        f"{fmt(one['actors']['mean_commit_ms'], 2)} ms on average"
                        if one["actors"].get("mean_commit_ms") is not None else "") + ".")
    many = result.get("many")
    if many:
        offered = many["projects"] * many["rate"]
        got = many["ops"]["acked_in_window"] / many["duration_s"]
        notes.append(f"W3 offered {fmt(offered, 0)} ops/s spread over {many['projects']} projects and acked "
                     f"{fmt(got, 0)} ops/s in the window"
                     + (" (below the offered rate: queues grew for the whole run)" if got < 0.97 * offered else "")
                     + f"; {fmt(many['actors']['mean_batch_size'], 2)} ops per project batch on average"
                     + (f", {fmt(many['actors']['batches_per_statement'], 2)} project batches per shared statement "
                        f"({many['actors']['statements']:,} statements)" if many["actors"].get("statements") else "")
                     + (f", {fmt(many['actors']['mean_commit_ms'], 1)} ms from a batch's commit request to durable"
                        if many["actors"].get("mean_commit_ms") is not None else "") + ".")
    prof = result.get("fanout", {}).get("profiled", {}).get("profile", {})
    if prof.get("available") and prof.get("inclusive_areas_pct"):
        top = prof["self_by_package_pct"][:3]
        areas = prof["inclusive_areas_pct"][:3]
        notes.append(f"Profile at {result['fanout']['profiled']['subscribers']} subscribers: innermost frames in "
                     + ", ".join(f"{k} {v}%" for k, v in top) + "; the largest areas (inclusive) "
                     + ", ".join(f"{k} {v}%" for k, v in areas) + " (see the profiles below).")
    return "### Reading the results\n\n" + "\n".join(f"- {n}" for n in notes) if notes else ""


def _baselines(result: dict[str, Any]) -> str:
    rows = []
    for name in ("fanout", "throughput", "many", "idle"):
        if name in result:
            b, s = result[name]["baseline"], result[name]["server"]
            rows.append([name, f"{fmt(b['requests_per_s'], 0)}", f"{fmt(b['p50_ms'], 2)} / {fmt(b['p99_ms'], 2)}",
                         sum(b["errors"].values()), fmt(s["ready_s"], 2, " s"),
                         f"{s.get('exit_code')} in {fmt(s.get('stop_s'), 2, ' s')}"])
    return ("### Baselines and servers\n\nwrk, 1 thread, 50 connections, `GET /api/v1/ping` (no auth, no I/O) on each "
            "fresh server before its WebSocket load: the same server's plain HTTP capacity.\n\n" +
            table(["server for", "ping req/s", "p50 / p99 ms", "errors", "healthy after", "exit on SIGTERM"], rows))


def _reference(result: dict[str, Any]) -> str:
    w100, w500 = _fanout_run(result, 100), _fanout_run(result, 500)
    tp = {r["inflight"]: r["acked_ops_per_s"] for r in result.get("throughput", {}).get("runs", [])}
    many = result.get("many")

    def pair(run: dict[str, Any] | None) -> str:
        return f"{fmt(run['latency_ms']['p50'], 1)} / {fmt(run['latency_ms']['p99'], 0)}" if run else "not run"

    rows = [
        ["W1 100 subs p50/p99 ms", pair(w100), *REFERENCE["w1_100"]],
        ["W1 500 subs p50/p99 ms", pair(w500), *REFERENCE["w1_500"]],
        ["W2 acked ops/s, 1 / 16 in flight", f"{fmt(tp.get(1), 0)} / {fmt(tp.get(16), 0)}" if tp else "not run",
         *REFERENCE["w2"]],
        ["W3 p50/p99 ms", pair(many), *REFERENCE["w3"]],
    ]
    return ("### Compared with the reference figures\n\nThe other columns are from STACK.md (\"What the broadcast path "
            "can do on this stack\"): a minimal hub of the same design measured on this machine under the same "
            "workloads, with the load generator on the same 2 cores; repeats near saturation varied 1.5-4x there.\n\n"
            + table(["workload", "Collab, this run", "ShareDB + PostgreSQL (Node)", "our design, in memory, best",
                     "our design, durable, best", "our design on uvicorn (asyncio)"], rows))


def _profile(run: dict[str, Any], what: str, which: str) -> str:
    prof = run["profile"]
    if not prof.get("available"):
        return f"### Server profile: {what}\n\nNo profile: {prof.get('note')}."
    extra = (f"acked {fmt(run['acked_ops_per_s'], 0)} ops/s" if "acked_ops_per_s" in run else
             f"delivery p50 / p99 / max {_lat(run)} ms, missing {_missing(run)}")
    intro = (f"py-spy (`record --nonblocking`, {prof['rate_hz']} Hz, idle samples excluded, so 100% = the server "
             f"process's busy time) over {which} ({prof['samples']:,} samples; that run: {extra}, server CPU "
             f"{_cpu(run)}%). Collapsed stacks: `{prof.get('collapsed_stacks')}` (not in git). Inclusive shares are "
             "lower bounds: a non-blocking sample sometimes catches a partial stack. Under trio, a send is a chain "
             "of task switches (wake event, flush clock, hypercorn's send lock and shielded cancel scope, the "
             "socket send), which is why trio's own scheduler code is a large package.")
    areas = table(["area (inclusive: any frame of the stack)", "% of samples"], prof["inclusive_areas_pct"])
    packages = table(["package of the innermost frame (self)", "% of samples"], prof["self_by_package_pct"])
    functions = table(["innermost function (self)", "% of samples"], prof["top_functions_self_pct"])
    return (f"### Server profile: {what}\n\n" + intro + "\n\n" + areas + "\n\n" + packages + "\n\n"
            + functions)
