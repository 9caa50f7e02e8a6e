"""The "Soak" section of docs/benchmarks.md, made from one result file of ``loadtest soak``."""

from __future__ import annotations

from typing import Any

from loadtest.charts import available, image
from loadtest.foundation_tables import _context
from loadtest.report import fmt, table

RUN = """Run with:

```
python -m loadtest soak                   # 10 minutes of mixed load; rewrites this section and its chart
python -m loadtest soak --duration 3600   # longer
python -m loadtest soak --quick           # 40 s (what `all --quick` runs); leaves this file alone without --docs
python -m loadtest report loadtest/results/soak-<time>.json   # this section again from a result file
```"""

MAX_SAMPLE_ROWS = 12


def _mib(kib: float | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:,.1f} MiB"


def render(result: dict[str, Any], json_path: str) -> str:
    parts = [_context(result, json_path), RUN, _load(result)]
    if "analysis" in result:
        parts.append(_verdict(result))
        for name, alt in available("soak", result):
            parts.append(image(name, alt))
        parts.append(_rest(result))
        if "ws" in result:
            parts.append(_ws(result))
        parts.append(_baseline(result))
        parts.append(_samples(result))
    if result.get("warnings"):
        parts.append("**Warnings during the run:**\n\n" + "\n".join(f"- {w}" for w in result["warnings"]))
    return "\n\n".join(parts)


def _load(result: dict[str, Any]) -> str:
    p = result["parameters"]
    mix = ", ".join(f"{k} {v}" for k, v in result["mix"].items())
    settings = ", ".join(f"`{k}={v}`" for k, v in result.get("server_settings", {}).items())
    rule = result["flat_rule"]
    return (
        f"**Load**, all at once for {fmt(p['duration_s'], 0)} s on one server: "
        f"(1) fan-out: {p['ws_projects']} projects x {p['ws_subscribers']} subscribers, one editor per project at "
        f"{fmt(p['ws_rate'], 0)} ops/s (a `loadtest/ws_worker.py` process; every acknowledged op must reach every "
        f"subscriber); (2) REST through `collab.client.CollabREST`: {fmt(p['rest_rate'], 0)} requests/s open loop "
        f"over {p['rest_clients']} logged-in connections, drawn with weights {mix} (creates, updates and deletes "
        f"touch the soak's own tasks; a login opens a fresh connection); (3) socket churn: "
        f"{fmt(p['churn_per_s'], 0)} `collab.client` realtime clients per second connect, subscribe (snapshot), "
        "stay 0.5-3 s and close.\n\n"
        f"**Sampled** every {fmt(p['sample_every_s'], 0)} s: the server process's RSS, open files and OS threads "
        "(psutil), its live trio tasks (the server runs as `python -m loadtest.instrumented_server serve`: the "
        "unchanged `collab` CLI plus a trio Instrument counting spawned minus exited tasks), the embedded "
        "PostgreSQL's processes, and from `GET /api/v1/admin/metrics` the sockets, actors and the loop's worst "
        "stall in the window. **Flat**: the least-squares line through the RSS samples after the warm-up (the "
        f"first {fmt(100 * rule['warmup_fraction'], 0)}% of the run) rises by less than "
        f"{fmt(100 * rule['fraction'], 0)}% of the mean RSS (at least {fmt(rule['min_kib'] / 1024, 0)} MiB) over "
        f"that half.\n\nServer settings: {settings}; every other setting is the default (actors idle for 5 "
        "minutes are passivated, as in production)."
    )


def _verdict(result: dict[str, Any]) -> str:
    a = result["analysis"]
    rss = a.get("rss_kib") or {}
    whole = a.get("rss_whole_run") or {}
    flat = a.get("rss_flat")
    rows = [[
        _mib(whole.get("first")), _mib(rss.get("first")), _mib(rss.get("last")), _mib(rss.get("max")),
        f"{fmt(rss.get('fitted_change'), 0)} KiB", f"{fmt(rss.get('allowed_change_kib'), 0)} KiB",
        f"{fmt(rss.get('slope_mib_per_hour'), 1)} MiB/h",
        "n/a" if flat is None else ("**yes**" if flat else "**no**"),
    ]]
    verdict = table(["RSS at start", "after warm-up", "at the end", "max (2nd half)", "fitted rise, 2nd half",
                     "allowed", "slope", "flat"], rows)
    others = []
    for key, label in (("open_files", "open files"), ("threads", "OS threads"), ("trio_tasks", "live trio tasks"),
                       ("ws_connections", "open sockets"), ("actors_active", "project actors"),
                       ("pg_processes", "PostgreSQL processes")):
        t = a.get(key)
        if t:
            others.append([label, fmt(t["first"], 0), fmt(t["last"], 0), f"{fmt(t['min'], 0)} - {fmt(t['max'], 0)}",
                           fmt(t.get("slope_per_hour"), 1)])
    counts = table(["after warm-up", "first", "last", "range", "fitted slope per hour"], others)
    gc_text = ""
    last = result["samples"][-1] if result.get("samples") else {}
    if last.get("gc_collections") is not None:
        first = result["samples"][0]
        passes = [b - a for a, b in zip(first.get("gc_collections") or [0, 0, 0], last["gc_collections"])]
        pause = (last.get("gc_s") or 0) - (first.get("gc_s") or 0)
        span = last["t_s"] - first["t_s"]
        gc_text = (f"\n\nGarbage collector over the run: {passes[0]:,} / {passes[1]:,} / {passes[2]:,} passes of "
                   f"generation 0 / 1 / 2, {pause:.2f} s of pauses ({fmt(100 * pause / span if span else None, 2)}% "
                   "of the wall time).")
    col = result.get("collections") or {}
    b, e = col.get("before"), col.get("after")
    if b and e:
        grown = e["objects_after"] - b["objects_after"]
        gc_text += (f"\n\nA full collection (`gc.collect()` in the server) before the load and after it (both "
                    "with the soak's data loaded and no client connected): "
                    f"{b['collected']:,} and {e['collected']:,} unreachable objects freed (the garbage the "
                    f"collector's raised thresholds had not reached), in {b['pause_s'] * 1000:,.0f} and "
                    f"{e['pause_s'] * 1000:,.0f} ms; **{grown:+,} objects still alive** after the load "
                    f"({b['objects_after']:,} -> {e['objects_after']:,}); RSS after each collection "
                    f"{_mib(b['rss_kib_after'])} and {_mib(e['rss_kib_after'])}. Objects that stay alive are "
                    "the leak indicator; RSS also keeps freed memory that the allocator does not hand back.")
        if col.get("grown_types"):
            gc_text += ("\n\nObjects alive after the load minus before, by type (the largest): " + ", ".join(
                f"`{k}` {v:+,}" for k, v in col["grown_types"].items()) + ".")
    return "### Is it flat?\n\n" + verdict + "\n\n" + counts + gc_text


def _rest(result: dict[str, Any]) -> str:
    rest = result["rest"]
    errors: dict[str, int] = {}
    for key, n in rest["errors"].items():
        kind = key.split(":", 1)[0]
        errors[kind] = errors.get(kind, 0) + n
    rows = []
    for kind, h in rest["by_kind"].items():
        rows.append([kind, f"{h['n']:,}", fmt(h["p50"], 1), fmt(h["p99"], 1), fmt(h["p999"], 1), fmt(h["max"], 0),
                     errors.get(kind, 0)])
    a = rest["all"]
    rows.append(["**all**", f"{a['n']:,}", fmt(a["p50"], 1), fmt(a["p99"], 1), fmt(a["p999"], 1), fmt(a["max"], 0),
                 sum(errors.values())])
    detail = ("" if not rest["errors"] else "\n\nErrors: " + ", ".join(f"{k} x{v}" for k, v in rest["errors"].items()))
    churn = result.get("churn", {})
    churn_text = (f"\n\nSocket churn: {churn.get('subscribed', 0):,} clients subscribed, {churn.get('closed', 0):,} "
                  "closed cleanly" + "".join(f", {k} x{v}" for k, v in churn.items() if k.startswith("failed")) + ".")
    skipped = f" {rest['skipped']:,} due requests were skipped (200 outstanding)." if rest.get("skipped") else ""
    return ("### REST during the soak\n\nLatency from the load generator (HDR histograms, ms), whole run." + skipped
            + "\n\n" + table(["request", "count", "p50", "p99", "p99.9", "max", "errors"], rows) + detail + churn_text)


def _ws(result: dict[str, Any]) -> str:
    ws = result["ws"]
    ops, d, lat = ws["ops"], ws["deliveries"], ws["latency_ms"]
    row = [f"{ops['sent']:,} / {ops['acked']:,}", f"{d['expected']:,}", f"{d['missing']:,}",
           f"{fmt(lat['p50'], 1)} / {fmt(lat['p99'], 1)} / {fmt(lat['p999'], 1)} / {fmt(lat['max'], 0)}",
           f"{fmt(ops['ack_ms']['p50'], 1)} / {fmt(ops['ack_ms']['p99'], 1)}",
           sum(ws["closed_during_run"].values()) if ws.get("closed_during_run") else 0, fmt(ws.get("load_cpu_pct"), 0)]
    return ("### Fan-out during the soak\n\n" +
            table(["ops sent / acked", "deliveries expected", "missing", "delivery p50 / p99 / p99.9 / max ms",
                   "editor ack p50 / p99 ms", "sockets closed by the server", "load process CPU %"], [row]))


def _baseline(result: dict[str, Any]) -> str:
    before, after = result.get("baseline_before"), result.get("baseline_after")
    if not before or not after:
        return ""
    ratio = after["requests_per_s"] / before["requests_per_s"] if before["requests_per_s"] else None
    rows = [["before the soak", fmt(before["requests_per_s"], 0), f"{fmt(before['p50_ms'], 2)} / {fmt(before['p99_ms'], 2)}"],
            ["after the soak", fmt(after["requests_per_s"], 0), f"{fmt(after['p50_ms'], 2)} / {fmt(after['p99_ms'], 2)}"]]
    return ("### Baseline: the same server before and after\n\nwrk, 50 connections, `GET /api/v1/ping` for "
            f"{fmt(before['duration_s'], 0)} s. After / before: **{fmt(ratio, 2)}x** (a server that degraded "
            "under the soak would answer the trivial route slower afterwards).\n\n"
            + table(["when", "ping req/s", "p50 / p99 ms"], rows))


def _samples(result: dict[str, Any]) -> str:
    samples = result["samples"]
    step = max(1, -(-len(samples) // MAX_SAMPLE_ROWS))
    picked = samples[::step]
    if picked[-1] is not samples[-1]:
        picked.append(samples[-1])
    rows = []
    for s in picked:
        rest, cpu = s.get("rest") or {}, s.get("cpu") or {}
        rows.append([fmt(s["t_s"], 0), _mib(s.get("rss_kib")), s.get("open_files"), s.get("threads"),
                     s.get("trio_tasks"), s.get("ws_connections"), s.get("actors_active"), s.get("pg_processes"),
                     f"{fmt(cpu.get('server_pct'), 0)} / {fmt(cpu.get('with_pg_pct'), 0)}", fmt(cpu.get("others_pct"), 0),
                     fmt(s.get("gc_pct"), 1),
                     fmt(s.get("worst_stall_ms"), 0), fmt(rest.get("per_s"), 1), fmt(rest.get("p99_ms"), 1),
                     rest.get("errors", "")])
    return ("### Samples\n\nEvery " + (f"{step}th " if step > 1 else "") + "sample. Figures of a sample's window "
            "(since the previous sample): server CPU % (the process / with its PostgreSQL; 100% = one core), "
            "others % (what other programs took from the server's core), the share of wall time the garbage "
            "collector paused the server, the worst event-loop stall, REST "
            "throughput, p99 and errors.\n\n"
            + table(["t s", "RSS", "open files", "threads", "trio tasks", "sockets", "actors", "PG procs",
                     "server CPU % (process / +PG)", "others %", "GC pause %", "stall ms", "REST req/s", "REST p99 ms",
                     "REST errors"], rows))
