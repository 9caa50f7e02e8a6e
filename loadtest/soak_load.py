"""The soak's own load and its sampler: one trio run in the driver process, using :mod:`collab.client`.

Three tasks share the run (the WebSocket fan-out of the soak comes from a
:mod:`loadtest.ws_worker` process started beside it):

- **REST mix**, open loop: request k is due at ``start + k / rest_rate``
  whatever happened to earlier ones (at most :data:`MAX_OUTSTANDING` in
  flight; past that a due request is counted as ``skipped`` rather than
  queued, so a slow server shows as skips, not as a hidden backlog). Each
  request is drawn from :data:`MIX` and sent through a
  :class:`collab.client.CollabREST` of a pool (each its own connection and
  login; tokens refresh themselves): reads of tasks, lists, a search,
  creates, updates and deletes of the soak's own tasks, ``/projects``,
  ``/users/me``, and a login on a fresh connection. Latency per kind goes
  into HDR histograms, for the whole run and per sample window.
- **Socket churn**: ``churn_per_s`` times a second, a
  :func:`collab.client.open_realtime` client connects, authenticates,
  subscribes to one of the fan-out projects (snapshot), stays 0.5-3 s and
  closes: the connect/teardown path a leak would most likely hide in.
- **Sampler**, every ``sample_every_s``: the server process's RSS, open
  files, OS threads and CPU (psutil), its live trio tasks and garbage
  collector passes and pause time (from :mod:`loadtest.instrumented_server`),
  the embedded PostgreSQL's backend
  count, and from ``GET /api/v1/admin/metrics`` the sockets,
  subscriptions, actors, database pool and the loop's worst stall in the
  window (reset after each read).

Everything is bounded: the run ends at ``start + duration_s``; requests and
sockets have their own deadlines; the closing phase has one.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import trio

from collab.client import CollabAPIError, CollabClientError, CollabREST, RealtimeOptions, open_realtime
from loadtest.cpu import _core_times, _tree_cpu_s, postmaster_pids
from loadtest.hdr import Latencies
from loadtest.instrumented_server import read_counts

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is a dev dependency
    psutil = None

#: Request kinds and their weights in the REST mix.
#: Creates and deletes balance (a delete waits until 50 of the soak's tasks exist), so the data the server holds
#: stays the same size and a growing RSS means a leak, not more tasks in the actors' state.
MIX = {"get_task": 30, "list_tasks": 20, "search": 5, "create_task": 10, "update_task": 12, "delete_task": 10,
       "list_projects": 5, "me": 6, "login": 2}
MAX_OUTSTANDING = 200
REQUEST_TIMEOUT_S = 30.0
CLOSE_DEADLINE_S = 30.0
STATUSES = ("todo", "in_progress", "in_review", "done", "cancelled")
PRIORITIES = ("low", "medium", "high", "urgent")


@dataclass
class Plan:
    base_url: str
    password: str
    admin_email: str
    writer_email: str
    subscriber_emails: list[str]
    rest_projects: list[str]           # the writer's projects for the REST mix
    ws_projects: list[str]             # the fan-out projects (the churn subscribes to these)
    read_task_ids: list[str]           # seeded tasks the reads rotate over
    server_pid: int
    server_cpu: int | None             # the core the server is pinned to (None: not pinned)
    pg_data_dir: Path | None
    tasks_file: Path | None
    duration_s: float
    sample_every_s: float
    rest_rate: float
    rest_clients: int
    churn_per_s: float
    seed: int = 1


@dataclass
class Window:
    """What the REST mix and the churn did since the last sample."""

    latency: Latencies = field(default_factory=Latencies)
    requests: int = 0
    errors: int = 0
    skipped: int = 0
    sockets: int = 0
    socket_failures: int = 0


class Soak:
    """The REST mix, the socket churn and the sampler of one soak (see the module docstring)."""

    def __init__(self, plan: Plan, on_sample: Callable[[dict[str, Any]], None], start: Callable[[], float]) -> None:
        """``start`` is called once every client is logged in: it starts the rest of the load (the fan-out
        process) and returns the ``time.monotonic()`` instant at which this run starts too."""
        self.plan = plan
        self.on_sample = on_sample
        self.start = start
        self.rng = random.Random(plan.seed)
        self.by_kind: dict[str, Latencies] = {k: Latencies() for k in MIX}
        self.errors: Counter[str] = Counter()
        self.window = Window()
        self.samples: list[dict[str, Any]] = []
        self.created: deque[str] = deque()
        self.outstanding = 0
        self.skipped = 0
        self.churn: Counter[str] = Counter()
        self.kinds = list(MIX)
        self.weights = list(MIX.values())
        self.t0 = 0.0  # trio clock at the start
        self._cpu_prev: tuple[float, dict[int, tuple[float, float]], float | None] | None = None
        self._server_cpu_prev: float | None = None
        self._gc_prev: tuple[float, float] | None = None

    # --- the run ------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        plan = self.plan
        async with CollabREST(plan.base_url, timeout_s=REQUEST_TIMEOUT_S) as admin:
            await admin.login(plan.admin_email, plan.password)
            clients = [CollabREST(plan.base_url, timeout_s=REQUEST_TIMEOUT_S) for _ in range(plan.rest_clients)]
            subscribers = [CollabREST(plan.base_url, timeout_s=REQUEST_TIMEOUT_S) for _ in plan.subscriber_emails]
            try:
                for c in clients:
                    await c.login(plan.writer_email, plan.password)
                for c, email in zip(subscribers, plan.subscriber_emails):
                    await c.login(email, plan.password)
                self.t0 = trio.current_time() + (self.start() - time.monotonic())
                await trio.sleep_until(self.t0)
                end = self.t0 + plan.duration_s
                await self._sample(admin, first=True)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._rest_mix, clients, end, nursery)
                    nursery.start_soon(self._churn, subscribers, end, nursery)
                    await self._sampler(admin, end)
                    nursery.cancel_scope.deadline = trio.current_time() + CLOSE_DEADLINE_S
            finally:
                with trio.move_on_after(10) as scope:
                    scope.shield = True
                    for c in clients + subscribers:
                        await c.aclose()
        return {
            "rest": {"by_kind": {k: h.as_dict() for k, h in self.by_kind.items()},
                     "all": _total(self.by_kind.values()).as_dict(),
                     "errors": dict(self.errors), "skipped": self.skipped},
            "churn": dict(self.churn),
            "samples": self.samples,
        }

    # --- REST ---------------------------------------------------------------------------------

    async def _rest_mix(self, clients: list[CollabREST], end: float, nursery: trio.Nursery) -> None:
        rate = self.plan.rest_rate
        for k in itertools.count():
            due = self.t0 + k / rate
            if due >= end:
                return
            await trio.sleep_until(due)
            if self.outstanding >= MAX_OUTSTANDING:
                self.skipped += 1
                self.window.skipped += 1
                continue
            kind = self.rng.choices(self.kinds, self.weights)[0]
            self.outstanding += 1
            nursery.start_soon(self._request, kind, clients[k % len(clients)])

    async def _request(self, kind: str, client: CollabREST) -> None:
        began = time.perf_counter()
        ok = True
        try:
            with trio.fail_after(REQUEST_TIMEOUT_S + 5):
                await self._call(kind, client)
        except CollabAPIError as exc:
            ok = False
            self.errors[f"{kind}: {exc.status} {exc.code}"] += 1
        except (CollabClientError, trio.TooSlowError) as exc:
            ok = False
            self.errors[f"{kind}: {type(exc).__name__}"] += 1
        finally:
            self.outstanding -= 1
        ms = (time.perf_counter() - began) * 1000
        self.by_kind[kind].record_ms(ms)  # ~40 req/s: recording inline costs nothing that matters
        self.window.latency.record_ms(ms)
        self.window.requests += 1
        self.window.errors += 0 if ok else 1

    async def _call(self, kind: str, client: CollabREST) -> None:
        plan, rng = self.plan, self.rng
        if kind == "get_task":
            pool = plan.read_task_ids if (not self.created or rng.random() < 0.5) else self.created
            await client.get_task(pool[rng.randrange(len(pool))])
        elif kind == "list_tasks":
            await client.list_tasks(project_id=rng.choice(plan.rest_projects), limit=20)
        elif kind == "search":
            await client.list_tasks(search="soak", status="todo", priority="high")
        elif kind == "create_task":
            n = rng.randrange(1_000_000)
            task = await client.create_task(
                rng.choice(plan.rest_projects), f"soak task {n}" + (" soak" if n % 10 == 0 else ""),
                status=STATUSES[n % len(STATUSES)], priority=PRIORITIES[n % len(PRIORITIES)],
                description="Made by the soak. " * rng.randint(0, 4))
            self.created.append(task["id"])
        elif kind == "update_task":
            if len(self.created) < 10:
                await client.me()
                return
            # From the newer half: the deletes take the oldest, so an update rarely meets a deleted task.
            task_id = self.created[rng.randrange(len(self.created) // 2, len(self.created))]
            await client.update_task(task_id, title=f"soak update {rng.randrange(1_000_000)}")
        elif kind == "delete_task":
            if len(self.created) < 50:
                await client.me()
                return
            await client.delete_task(self.created.popleft())
        elif kind == "list_projects":
            await client.request("GET", "/projects")
        elif kind == "me":
            await client.me()
        else:  # login on a fresh connection, as a new browser tab would
            async with CollabREST(plan.base_url, timeout_s=REQUEST_TIMEOUT_S) as fresh:
                await fresh.login(plan.writer_email, plan.password)

    # --- socket churn ------------------------------------------------------------------------------

    async def _churn(self, subscribers: list[CollabREST], end: float, nursery: trio.Nursery) -> None:
        if self.plan.churn_per_s <= 0 or not self.plan.ws_projects:
            return
        for k in itertools.count():
            due = self.t0 + k / self.plan.churn_per_s
            if due >= end:
                return
            await trio.sleep_until(due)
            nursery.start_soon(self._socket, subscribers[k % len(subscribers)], self.rng.choice(self.plan.ws_projects),
                               self.rng.uniform(0.5, 3.0))

    async def _socket(self, rest: CollabREST, project_id: str, hold_s: float) -> None:
        options = RealtimeOptions(first_connect_timeout_s=15, max_reconnect_attempts=0, request_timeout_s=15)
        try:
            with trio.fail_after(40):
                async with open_realtime(rest.ws_url, rest.fresh_access_token, options) as rt:
                    await rt.subscribe(project_id, timeout_s=15)
                    self.churn["subscribed"] += 1
                    await trio.sleep(hold_s)
            self.churn["closed"] += 1
            self.window.sockets += 1
        except (CollabClientError, trio.TooSlowError, OSError) as exc:
            self.churn[f"failed: {type(exc).__name__}"] += 1
            self.window.socket_failures += 1

    # --- sampler ------------------------------------------------------------------------------------

    async def _sampler(self, admin: CollabREST, end: float) -> None:
        every = self.plan.sample_every_s
        for k in itertools.count(1):
            due = self.t0 + k * every
            if due > end + 1e-6:
                return
            await trio.sleep_until(due)
            await self._sample(admin)

    async def _sample(self, admin: CollabREST, first: bool = False) -> None:
        plan = self.plan
        sample: dict[str, Any] = {"t_s": round(trio.current_time() - self.t0, 2)}
        sample.update(_process_figures(plan.server_pid))
        sample["cpu"] = self._cpu(sample.get("cpu_s"))
        if plan.pg_data_dir is not None:
            sample["pg_processes"] = _pg_processes(plan.pg_data_dir)
        counts = read_counts(plan.tasks_file) if plan.tasks_file else None
        sample["trio_tasks"] = counts["live"] if counts else None
        sample["trio_tasks_spawned"] = counts["spawned"] if counts else None
        sample["gc_collections"] = counts["gc_collections"] if counts else None
        sample["gc_s"] = counts["gc_s"] if counts else None
        if counts and self._gc_prev is not None and sample["t_s"] > self._gc_prev[0]:
            sample["gc_pct"] = round(100 * (counts["gc_s"] - self._gc_prev[1]) / (sample["t_s"] - self._gc_prev[0]), 2)
        if counts:
            self._gc_prev = (sample["t_s"], counts["gc_s"])
        try:
            with trio.fail_after(10):
                m = await admin.request("GET", "/admin/metrics")
                await admin.request("POST", "/admin/metrics/reset")
            ws, actors = m.get("websockets", {}), m.get("actors", {})
            sample.update({"ws_connections": ws.get("connections"), "ws_subscriptions": ws.get("subscriptions"),
                           "actors_active": actors.get("active"), "db_pool": m.get("database_pool"),
                           "worst_stall_ms": m.get("event_loop", {}).get("worst_stall_since_reset_ms")})
        except (CollabClientError, trio.TooSlowError) as exc:
            sample["metrics_error"] = type(exc).__name__
        w, self.window = self.window, Window()
        if not first:
            sample["rest"] = {"requests": w.requests, "errors": w.errors, "skipped": w.skipped,
                              "per_s": round(w.requests / plan.sample_every_s, 1),
                              "p50_ms": w.latency.percentile_ms(50), "p99_ms": w.latency.percentile_ms(99)}
            sample["churn"] = {"sockets": w.sockets, "failures": w.socket_failures}
        self.samples.append(sample)
        self.on_sample(sample)


    def _cpu(self, server_cpu_s: float | None) -> dict[str, Any] | None:
        """Since the previous sample: the server's CPU %, with its PostgreSQL, and what others took from its core."""
        plan = self.plan
        now, cores = time.monotonic(), _core_times()
        pids = [plan.server_pid] + (postmaster_pids(plan.pg_data_dir) if plan.pg_data_dir else [])
        tree = _tree_cpu_s(pids)
        prev, self._cpu_prev = self._cpu_prev, (now, cores, tree)
        if prev is None or server_cpu_s is None:
            self._server_cpu_prev = server_cpu_s
            return None
        wall = now - prev[0]
        out: dict[str, Any] = {"server_pct": round(100 * (server_cpu_s - self._server_cpu_prev) / wall, 1)}
        self._server_cpu_prev = server_cpu_s
        if tree is not None and prev[2] is not None:
            out["with_pg_pct"] = round(100 * (tree - prev[2]) / wall, 1)
        if plan.server_cpu is not None and plan.server_cpu in cores and plan.server_cpu in prev[1]:
            (b1, t1), (b0, t0) = cores[plan.server_cpu], prev[1][plan.server_cpu]
            if t1 > t0:
                busy = 100 * (b1 - b0) / (t1 - t0)
                out["server_core_busy_pct"] = round(busy, 1)
                if "with_pg_pct" in out:
                    out["others_pct"] = round(max(0.0, busy - out["with_pg_pct"]), 1)
        return out


def _total(parts: Any) -> Latencies:
    total = Latencies()
    for part in parts:
        total.add(part)
    return total


def _process_figures(pid: int) -> dict[str, Any]:
    if psutil is None:
        return {}
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            cpu = proc.cpu_times()
            return {"rss_kib": proc.memory_info().rss // 1024, "open_files": proc.num_fds(),
                    "threads": proc.num_threads(), "cpu_s": round(cpu.user + cpu.system, 2)}
    except psutil.Error:
        return {}


def _pg_processes(data_dir: Path) -> int | None:
    if psutil is None:
        return None
    total = 0
    for pid in postmaster_pids(data_dir):
        try:
            total += 1 + len(psutil.Process(pid).children())
        except psutil.Error:
            continue
    return total
