"""The seed's "concurrent users" benchmark: N users each log in, then list tasks and projects.

As in the seed (``bench_concurrent_users``), one iteration releases ``N``
users at once; each has a fresh client (so a fresh connection, as the seed's
``Client::new()`` per user), and runs ``POST /auth/login`` ->
``GET /tasks`` -> ``GET /projects`` with the token it got. Iterations repeat
until ``duration_s`` has passed (at least one, at most ``max_iterations``),
each under its own deadline. Reported: requests/s over the iterations' wall
time, per-step and per-user (all three steps) latency percentiles, failures,
and the driver's own CPU use (it shares its core with nothing else, but one
Python process can be the bottleneck at 100 users).
"""

from __future__ import annotations

import ssl
import time
from typing import Any, Callable, Sequence

import httpx
import trio
import trio.testing

from loadtest.hdr import Latencies
from loadtest.stats import median

STEPS = ("login", "tasks", "projects")
ITERATION_DEADLINE_S = 120.0


def measure_users(base_url: str, emails: Sequence[str], password: str, levels: Sequence[int], *, duration_s: float,
                  max_iterations: int, say: Callable[[str], None]) -> list[dict[str, Any]]:
    return trio.run(_levels, base_url, list(emails), password, list(levels), duration_s, max_iterations, say)


async def _levels(base_url: str, emails: list[str], password: str, levels: list[int], duration_s: float,
                  max_iterations: int, say: Callable[[str], None]) -> list[dict[str, Any]]:
    # One TLS context for every client: httpx would otherwise load the CA
    # bundle per client (milliseconds each), which is driver cost, not server cost.
    tls = ssl.create_default_context()
    results = []
    for users in levels:
        if users > len(emails):
            raise ValueError(f"{users} users wanted, {len(emails)} registered")
        samples: dict[str, list[float]] = {step: [] for step in (*STEPS, "user")}
        failures: dict[str, int] = {}
        walls: list[float] = []
        cpu0 = time.process_time()
        began = time.perf_counter()
        while len(walls) < max_iterations and (not walls or time.perf_counter() - began < duration_s):
            with trio.fail_after(ITERATION_DEADLINE_S):
                walls.append(await _iteration(base_url, emails[:users], password, tls, samples, failures))
        cpu_s = time.process_time() - cpu0
        wall = sum(walls)
        requests = len(samples["login"]) + len(samples["tasks"]) + len(samples["projects"])
        record: dict[str, Any] = {
            "users": users, "iterations": len(walls), "requests": requests,
            "requests_per_s": round(requests / wall, 1) if wall else None,
            "users_per_s": round(users * len(walls) / wall, 1) if wall else None,
            "iteration_wall_ms": {"p50": round(median(walls) * 1000, 1), "max": round(max(walls) * 1000, 1)},
            "failures": failures, "driver_cpu_pct": round(100 * cpu_s / max(wall, 1e-9), 1),
        }
        for step, values in samples.items():
            hist = Latencies().record_many_ms(v * 1000 for v in values)
            record[step] = {"p50_ms": hist.percentile_ms(50), "p99_ms": hist.percentile_ms(99), "count": len(values),
                            "hdr": hist.encode() if values else None}
        results.append(record)
        say(f"   users={users:<3} {len(walls)} iteration(s): {record['requests_per_s']:8,.1f} req/s, "
            f"per user p50 {record['user']['p50_ms']} ms p99 {record['user']['p99_ms']} ms "
            f"(login p50 {record['login']['p50_ms']}, tasks p50 {record['tasks']['p50_ms']}, "
            f"projects p50 {record['projects']['p50_ms']}); failures {failures or 0}; "
            f"driver CPU {record['driver_cpu_pct']}%")
    return results


async def _iteration(base_url: str, emails: list[str], password: str, tls: ssl.SSLContext,
                     samples: dict[str, list[float]], failures: dict[str, int]) -> float:
    go = trio.Event()

    def fail(step: str, what: str) -> None:
        key = f"{step}: {what}"
        failures[key] = failures.get(key, 0) + 1

    async def user(email: str) -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=60.0, verify=tls) as client:
            await go.wait()
            began = time.perf_counter()
            try:
                t0 = time.perf_counter()
                response = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
                samples["login"].append(time.perf_counter() - t0)
                if response.status_code != 200:
                    fail("login", str(response.status_code))
                    return
                headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
                for step, path in (("tasks", "/api/v1/tasks"), ("projects", "/api/v1/projects")):
                    t0 = time.perf_counter()
                    response = await client.get(path, headers=headers)
                    samples[step].append(time.perf_counter() - t0)
                    if response.status_code != 200:
                        fail(step, str(response.status_code))
            except httpx.HTTPError as exc:
                fail("transport", type(exc).__name__)
                return
            samples["user"].append(time.perf_counter() - began)

    async with trio.open_nursery() as nursery:
        for email in emails:
            nursery.start_soon(user, email)
        await trio.testing.wait_all_tasks_blocked()
        began = time.perf_counter()
        go.set()
    return time.perf_counter() - began
