"""The users, projects and tasks of the tasks benchmark, made through the REST API.

- a "reader" (registered, role manager) owns :data:`SEED_PROJECTS` projects
  holding the seeded tasks: half of them in the first ("listed") project, the
  other half spread over the other nine; the list and search runs read as
  the reader, who sees exactly the seeded tasks;
- a "writer" owns the fresh projects the write runs post into, so writes
  never change what the lists read;
- for the concurrent-users scenario, N registered users, each added as a
  member of every seeded project (so their task list spans all the tasks).
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import httpx

from loadtest.foundation import PASSWORD, register
from loadtest.serverproc import ServerFailed
from loadtest.tasks_seed import describe, parallel, task_bodies

if TYPE_CHECKING:
    from loadtest.tasks_bench import Bench

SEED_PROJECTS = 10
LISTED_SHARE = 0.5
SAMPLE_IDS = 100
COLUMN_CAPACITY = 2_500  # a column refuses its 2,561st task appended at the end (409)
SEED_DEADLINE_S = 900.0
SETUP_DEADLINE_S = 300.0
SETUP_CONCURRENCY = 20


@dataclass
class Dataset:
    reader: str
    writer: str
    project_ids: list[str]
    listed_project: str
    listed_project_tasks: int
    sample_task_ids: list[str]
    description: dict[str, Any]
    report: dict[str, Any]
    user_emails: list[str] = field(default_factory=list)


def _require(result: dict[str, Any], expected: int, what: str, tolerance: float = 0.0) -> None:
    bad = {code: n for code, n in result["statuses"].items() if code != expected}
    if sum(bad.values()) > tolerance * result["requests"]:
        raise ServerFailed(f"{what}: {sum(bad.values())} of {result['requests']} requests did not answer "
                           f"{expected} (statuses {result['statuses']}; first transport errors "
                           f"{result['transport_errors'][:3]})")


def writer_projects(api: httpx.Client, token: str, n: int, name: str) -> list[str]:
    """``n`` fresh projects of the caller (names ``name-1``...)."""
    done = parallel(str(api.base_url), token, [("POST", "/api/v1/projects", {"name": f"{name}-{i}"})
                                               for i in range(1, n + 1)],
                    concurrency=min(n, SETUP_CONCURRENCY), deadline_s=SETUP_DEADLINE_S)
    _require(done, 201, f"creating {n} project(s)")
    return [body["id"] for body in done["bodies"]]


def make_dataset(bench: "Bench", say: Callable[[str], None]) -> Dataset:
    opts, api = bench.opts, bench.api
    tag = secrets.token_hex(4)
    reader, writer = f"lt-reader-{tag}@example.com", f"lt-writer-{tag}@example.com"
    register(api, reader, f"lt_reader_{tag}")
    register(api, writer, f"lt_writer_{tag}")
    projects = writer_projects(api, bench.token(reader), SEED_PROJECTS, f"seeded-{tag}")
    others = SEED_PROJECTS - 1
    shares = [LISTED_SHARE] + [(1 - LISTED_SHARE) / others] * others
    bodies = task_bodies(opts.tasks, projects, shares)
    columns = Counter((b["project_id"], b["status"]) for b in bodies)
    if max(columns.values()) > COLUMN_CAPACITY:
        raise ServerFailed(f"--tasks {opts.tasks} would put {max(columns.values())} tasks in one column of the listed "
                           f"project; the server refuses more than ~2,560 (see loadtest/README.md)")
    description = describe(bodies)
    say(f"== seeding {opts.tasks:,} tasks: POST /api/v1/tasks through the REST API, {opts.seed_concurrency} in flight, "
        f"into {SEED_PROJECTS} projects (tasks per project {description['tasks_per_project']})")
    bench.api.post("/api/v1/admin/metrics/reset", headers={"Authorization": f"Bearer {bench.token(bench.admin_email)}"})
    before = bench.metrics()["actors"]
    seeded = parallel(str(api.base_url), bench.token(reader), [("POST", "/api/v1/tasks", b) for b in bodies],
                      concurrency=opts.seed_concurrency, deadline_s=SEED_DEADLINE_S)
    metrics = bench.metrics()
    after = metrics["actors"]
    seeded["worst_stall_ms"] = metrics["event_loop"]["worst_stall_since_reset_ms"]
    _require(seeded, 201, "seeding tasks")
    ids = [body["id"] for body in seeded.pop("bodies")]
    batches = after["batches"] - before["batches"]
    seeded["mean_batch_size"] = round((after["commands"] - before["commands"]) / batches, 2) if batches else None
    say(f"   {len(ids):,} tasks in {seeded['wall_s']:.1f} s = {seeded['requests_per_s']:,.0f} tasks/s "
        f"(p50 {seeded['p50_ms']} ms, p99 {seeded['p99_ms']} ms; actors' mean batch {seeded['mean_batch_size']}; "
        f"loop stall max {seeded['worst_stall_ms']:.0f} ms; driver CPU {seeded['driver_cpu_pct']}%); "
        f"tasks/s by tenth of the seed {seeded['rate_by_tenth']}")
    step = max(1, len(ids) // SAMPLE_IDS)
    sample = ids[::step][:SAMPLE_IDS]
    # The search must find exactly the tasks made with the word.
    check = bench.check(f"/api/v1/tasks?search={description['search_word']}&limit=1", reader)
    if check["total"] != description["with_search_word"]:
        bench.warnings.append(f"search for {description['search_word']!r} found {check['total']} tasks, "
                              f"{description['with_search_word']} were seeded with it")
    listed_tasks = description["tasks_per_project"][0]
    report = {"method": f"POST /api/v1/tasks through the REST API (trio + httpx, {opts.seed_concurrency} in flight); "
                        "each task committed by its project actor before its 201",
              **description, "projects": SEED_PROJECTS, "listed_project_share": LISTED_SHARE,
              "listed_project_tasks": listed_tasks, "seed": seeded, "search_check_total": check["total"]}
    return Dataset(reader, writer, projects, projects[0], listed_tasks, sample, description, report)


def make_users(bench: "Bench", data: Dataset, n: int, say: Callable[[str], None]) -> dict[str, Any]:
    """Register ``n`` users and add each to every seeded project (as the reader, their owner)."""
    tag = secrets.token_hex(4)
    emails = [f"lt-user-{tag}-{i}@example.com" for i in range(n)]
    base = str(bench.api.base_url)
    began = time.perf_counter()
    registered = parallel(base, None, [("POST", "/api/v1/auth/register", {"email": e, "username": f"lt_user_{tag}_{i}",
                                                                          "password": PASSWORD})
                                       for i, e in enumerate(emails)],
                          concurrency=SETUP_CONCURRENCY, deadline_s=SETUP_DEADLINE_S)
    _require(registered, 201, "registering users")
    user_ids = [body["id"] for body in registered["bodies"]]
    adds = [("POST", f"/api/v1/projects/{p}/members", {"user_id": u, "role": "member"})
            for p in data.project_ids for u in user_ids]
    added = parallel(base, bench.token(data.reader), adds, concurrency=SETUP_CONCURRENCY, deadline_s=SETUP_DEADLINE_S)
    _require(added, 201, "adding members")
    wall = round(time.perf_counter() - began, 2)
    say(f"== {n} users registered and added to the {len(data.project_ids)} seeded projects "
        f"({len(adds)} member adds) in {wall} s")
    data.user_emails = emails
    return {"count": n, "member_adds": len(adds), "setup_s": wall}
