"""The "Projects and tasks" section of docs/benchmarks.md, made from one result file of ``loadtest tasks``."""

from __future__ import annotations

from typing import Any

from loadtest.foundation_tables import _context
from loadtest.report import fmt, table

RUN = """Run with:

```
python -m loadtest tasks            # full run, ~7 minutes; rewrites this section
python -m loadtest tasks --quick    # 1,000 tasks, 2 s runs, 1 round; leaves this file alone without --docs
python -m loadtest report loadtest/results/tasks-<time>.json   # this section again from a result file
```

One server process with `COLLAB_PASSWORD_HASHING=argon2id-fast-insecure` (argon2's cheapest profile: logins
are not what is measured here, and the concurrent-users rows would otherwise measure argon2) and
`COLLAB_ACTOR_IDLE_TIMEOUT_S=3600` (no actor is passivated mid-run, so the actor counters only grow).
Every figure is compared with `GET /api/v1/ping` (no auth, no I/O) measured in the same run, on the same
server. Latencies are wrk's (`--latency`, 1 thread, closed loop: each connection sends its next request
when the previous one is answered, so at N connections latency ~ N / throughput)."""


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**yes**" if ok else "**no**")


def render(result: dict[str, Any], json_path: str) -> str:
    parts = [_context(result, json_path), RUN]
    if "dataset" in result:
        parts.append(_dataset(result))
    parts.append(_targets(result))
    if "single" in result:
        parts.append(_single(result))
    if "lists" in result:
        parts.append(_lists(result))
    if "seed" in result:
        parts.append(_seed(result))
    if (result.get("single") or {}).get("profiled"):
        parts.append(_profile(result["single"]["profiled"]))
    if result.get("warnings"):
        parts.append("**Warnings during the run:**\n\n" + "\n".join(f"- {w}" for w in result["warnings"]))
    return "\n\n".join(parts)


def _dataset(result: dict[str, Any]) -> str:
    d = result["dataset"]
    s = d["seed"]
    statuses = ", ".join(f"{k} {v:,}" for k, v in d["by_status"].items())
    priorities = ", ".join(f"{k} {v:,}" for k, v in d["by_priority"].items())
    users = d.get("users")
    lines = [
        "### Data",
        "",
        f"- **{d['tasks']:,} tasks** in {d['projects']} projects of one user (the \"reader\"): "
        f"{d['listed_project_tasks']:,} in the listed project, the rest spread over the other "
        f"{d['projects'] - 1} ({', '.join(f'{n:,}' for n in d['tasks_per_project'][1:])}).",
        f"- Made by `POST /api/v1/tasks` through the REST API with {s['concurrency']} requests in flight "
        f"(trio + httpx), each committed by its project actor before its 201: **{fmt(s['wall_s'], 1)} s, "
        f"{fmt(s['requests_per_s'], 0)} tasks/s** (p50 {fmt(s['p50_ms'], 1)} ms, p99 {fmt(s['p99_ms'], 1)} ms, "
        f"actors' mean batch {fmt(s['mean_batch_size'], 2)}, loop stall max {fmt(s.get('worst_stall_ms'), 0)} ms, "
        f"driver CPU {fmt(s.get('driver_cpu_pct'), 0)}%; tasks/s in each tenth of the seed: "
        f"{', '.join(fmt(r, 0) for r in s['rate_by_tenth'])}).",
        f"- Varied content (seeded random): {d['distinct_titles']:,} distinct titles, {d['with_description']:,} with "
        f"a description, {d['with_tags']:,} with 1-4 of 15 tags, {d['with_due_date']:,} with a due date; "
        f"statuses {statuses}; priorities {priorities}.",
        f"- The search word `{d['search_word']}` is in exactly {d['with_search_word']} tasks (1%; the search found "
        f"{d['search_check_total']}), {d['with_search_word_todo_high']} of them `todo` + `high`.",
        "- Writes go to fresh projects of another user (the \"writer\"), so they never change what the lists read.",
    ]
    if users:
        lines.append(f"- {users['count']} more users, each a member of the {d['projects']} projects, for the "
                     "concurrent-users rows.")
    return "\n".join(lines)


def _targets(result: dict[str, Any]) -> str:
    t = result["targets"]
    rows = []
    single = result.get("single", {}).get("summary")
    if single:
        for key, label, target in (("get", "`GET /api/v1/tasks/{id}`", t["get_ratio"]),
                                   ("post_one", "`POST /api/v1/tasks`, 1 project", t["post_ratio"]),
                                   ("post_spread", "`POST /api/v1/tasks`, 50 projects", t["post_ratio"])):
            r = single[key]["ratio_to_ping"]
            rows.append([label, f"{fmt(single[key]['requests_per_s'], 0)} req/s = **{fmt(r, 2)}x** ping "
                                f"({fmt(single['ping']['requests_per_s'], 0)} req/s)", f">= {target}x ping",
                         _met(None if r is None else r >= target)])
    lists = result.get("lists", {}).get("summary")
    if lists:
        for key, label in (("list20", "project's tasks, `limit=20`"), ("list100", "project's tasks, `limit=100`"),
                           ("search", "search + status + priority")):
            p99 = lists[key]["p99_ms"]
            rows.append([label, f"p99 **{fmt(p99, 1)} ms** (worst run)", f"p99 < {t['list_p99_ms']:g} ms",
                         _met(p99 < t["list_p99_ms"])])
    if not rows:
        return "### Targets\n\nNo targeted phase in this run."
    c1 = result.get("single", {}).get("connections")
    c2 = result.get("lists", {}).get("connections")
    return (f"### Targets\n\nRead and write routes at {c1} connections; lists and search at {c2} connections, "
            "on the seeded tasks.\n\n" + table(["measure", "result", "target", "met"], rows))


def _run_rows(runs: list[dict[str, Any]], first: str) -> list[list[Any]]:
    rows = []
    for r in runs:
        bad = {k: v for k, v in r.get("statuses", {}).items() if not k.startswith("2")}
        batch = r.get("actors", {}).get("mean_batch_size") if "actors" in r else None
        rows.append([r[first] if first in r else r["label"], r.get("round", ""), fmt(r["requests_per_s"], 0),
                     fmt(r["p50_ms"], 2), fmt(r["p99_ms"], 2),
                     ", ".join(f"{k}: {v}" for k, v in bad.items()) or sum(r["errors"].values()),
                     fmt(batch, 2) if "actors" in r else "", fmt(r["worst_stall_ms"], 0),
                     fmt(r["cpu"]["server_cpu_pct"], 0), fmt(r["cpu"].get("other_on_server_core_pct"), 0)])
    return rows


HEADER = ["request", "round", "req/s", "p50 ms", "p99 ms", "errors / non-2xx", "actors' mean batch",
          "loop stall max ms", "server CPU %", "others on server core %"]


def _single(result: dict[str, Any]) -> str:
    s = result["single"]
    intro = (f"wrk at {s['connections']} connections, {result['parameters']['duration_s']:g} s per run, in rounds of "
             "ping, read, write (1 project), write (50 projects). **Read**: `GET /api/v1/tasks/{id}` as a member, "
             "rotating over 100 seeded task ids (served from the project actor's memory, no query). **Write**: "
             "`POST /api/v1/tasks` `{project_id, title, priority, status}`, answered after the project actor's "
             "group commit; into one fresh project, or round-robin over 50 fresh projects; the status rotates over "
             "the five columns. **Actors' mean batch**: commands / batches from the deltas of `actors.commands` and "
             "`actors.batches` (`GET /api/v1/admin/metrics`) over the run. Server CPU includes its embedded "
             "PostgreSQL (100% = one core); \"others\" is what other programs took from the server's core (the "
             "machine is shared). A write run starts on empty projects and grows them by the tasks it creates.")
    names = {"ping": "ping", "get": "read", "post_one": "write, 1 project", "post_spread": "write, 50 projects"}
    summary = table(["request", "req/s (mean)", "ratio to ping", "p50 ms (mean)", "p99 ms (mean)", "actors' mean batch",
                     "tasks created per run"],
                    [[names.get(key, key), fmt(v["requests_per_s"], 0), f"**{fmt(v['ratio_to_ping'], 2)}**",
                      fmt(v["p50_ms"], 2), fmt(v["p99_ms"], 2),
                      fmt(v.get("mean_batch_size"), 2) if "mean_batch_size" in v else "",
                      f"{v['created_per_run']:,}" if "created_per_run" in v else ""]
                     for key, v in s["summary"].items()])
    return "### Task reads and writes\n\n" + intro + "\n\n" + table(HEADER, _run_rows(s["runs"], "label")) + \
        "\n\n" + summary


def _lists(result: dict[str, Any]) -> str:
    s = result["lists"]
    d = result.get("dataset", {})
    intro = (f"wrk at {s['connections']} connections as the reader, {result['parameters']['duration_s']:g} s per run. "
             f"**project's tasks**: `GET /api/v1/tasks?project_id=<p>&limit=20` (and `limit=100`), the listed project "
             f"holding {s['listed_project_tasks']:,} tasks, default sort (newest first), with the total count. "
             f"**search**: `GET /api/v1/tasks?search={d.get('search_word', '?')}&status=todo&priority=high` over all "
             f"{d.get('tasks', 0):,} tasks (PostgreSQL full text, GIN index). Rows = tasks in the page / total.")
    rows = _run_rows(s["runs"], "label")
    for row, run in zip(rows, s["runs"]):
        row.insert(1, f"{run['rows']} / {run['total']:,}" if "rows" in run else "")
    header = HEADER[:1] + ["rows / total"] + HEADER[1:6] + HEADER[7:]
    rows = [row[:7] + row[8:] for row in rows]
    return "### Lists and search\n\n" + intro + "\n\n" + table(header, rows)


def _seed(result: dict[str, Any]) -> str:
    s = result["seed"]
    dur = result["parameters"]["duration_s"]
    creation = table(["concurrent requests", "req/s", "p50 ms", "p99 ms", "errors / non-2xx", "actors' mean batch",
                      "loop stall max ms", "server CPU %", "others on server core %"],
                     [row[:1] + row[2:] for row in _run_rows(s["creation"], "level")])
    listing = [row[:1] + row[2:6] + row[7:] for row in _run_rows(s["listing"] + [s["search"]], "page_size")]
    for row, run in zip(listing, s["listing"] + [s["search"]]):
        row[0] = f"`limit={run['page_size']}`" if "page_size" in run else "search + status + priority"
        row.insert(1, f"{run['rows']} / {run['total']:,}")
    listing_table = table(["request", "rows / total", "req/s", "p50 ms", "p99 ms", "errors / non-2xx",
                           "loop stall max ms", "server CPU %", "others on server core %"], listing)
    users = table(["users", "iterations", "req/s", "user p50 ms", "user p99 ms", "login p50 / p99", "tasks p50 / p99",
                   "projects p50 / p99", "failures", "driver CPU %"],
                  [[u["users"], u["iterations"], fmt(u["requests_per_s"], 0), fmt(u["user"]["p50_ms"], 0),
                    fmt(u["user"]["p99_ms"], 0), f"{fmt(u['login']['p50_ms'], 0)} / {fmt(u['login']['p99_ms'], 0)}",
                    f"{fmt(u['tasks']['p50_ms'], 0)} / {fmt(u['tasks']['p99_ms'], 0)}",
                    f"{fmt(u['projects']['p50_ms'], 0)} / {fmt(u['projects']['p99_ms'], 0)}",
                    sum(u["failures"].values()) if u["failures"] else 0, fmt(u["driver_cpu_pct"], 0)]
                   for u in s["users"]])
    return "\n\n".join([
        "### The seed's benchmarks",
        "The four benchmarks of the seed (`benches/api_benchmarks.rs` in its API spec), no targets. wrk for the "
        f"single-route ones ({dur:g} s per run), a trio + httpx driver for the multi-step one.",
        "**Task creation** at N concurrent requests: wrk with N connections posting "
        "`{project_id, title, priority, status}` into one fresh project per level (the seed sends N at once and "
        "waits for all; wrk keeps N in flight).\n\n" + creation,
        f"**Listing and search** as the reader (member of the seeded projects), {s['read_connections']} "
        "connection(s) (the seed sends one request at a time): `GET /api/v1/tasks?limit=<n>&page=1` over all the "
        "seeded tasks, and the seed's search `search=important&status=todo&priority=high`.\n\n" + listing_table,
        "**Concurrent users**: N users released at once, each with a fresh client (a new connection, as the seed's "
        "`Client::new()`), `POST /auth/login` -> `GET /tasks` -> `GET /projects` (20 per page, all seeded projects "
        "visible); iterations repeat for ~" f"{result['parameters']['user_duration_s']:g} s. req/s = the three "
        "requests of every user over the iterations' wall time; user = all three steps. Driver CPU above ~90% means "
        "the Python driver, not the server, was the limit.\n\n" + users,
    ])


def _profile(run: dict[str, Any]) -> str:
    prof = run.get("profile") or {}
    if not prof.get("available"):
        return f"### Server profile: POST /api/v1/tasks\n\nNo profile: {prof.get('note')}."
    batch = (run.get("actors") or {}).get("mean_batch_size")
    intro = (f"py-spy (`record --nonblocking`, {prof['rate_hz']} Hz, idle samples excluded, so 100% = the server "
             f"process's busy time) over a repeat of the write run into one project: wrk at {run['connections']} "
             f"connections for {fmt(run['duration_s'], 0)} s ({prof['samples']:,} samples; that run: "
             f"{fmt(run['requests_per_s'], 0)} req/s, p99 {fmt(run['p99_ms'], 1)} ms, actors' mean batch "
             f"{fmt(batch, 1)}, server CPU {fmt(run['cpu']['server_cpu_pct'], 0)}% with PostgreSQL). Collapsed "
             f"stacks: `{prof.get('collapsed_stacks')}` (not in git).")
    areas = table(["area (inclusive: any frame of the stack)", "% of samples"], prof["inclusive_areas_pct"])
    packages = table(["package of the innermost frame (self)", "% of samples"], prof["self_by_package_pct"])
    functions = table(["innermost function (self)", "% of samples"], prof["top_functions_self_pct"])
    return ("### Server profile: POST /api/v1/tasks\n\n" + intro + "\n\n" + areas + "\n\n" + packages + "\n\n"
            + functions)
