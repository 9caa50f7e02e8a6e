"""Phase 3 of the foundation benchmark: a burst of concurrent logins, and the loop's worst stall.

Each round: reset the server's stall window (admin), open one
httpx.AsyncClient per user and warm its connection with GET /api/v1/ping
(so connection setup is not counted), release all logins at once from one
trio.Event, time each POST /api/v1/auth/login, then read
``worst_stall_since_reset_ms``. Before the rounds, the same window is read
over 1 s with no load: the monitor's idle floor. Each round has a deadline.
"""

from __future__ import annotations

import secrets
import time
from contextlib import AsyncExitStack
from typing import Any, Callable

import httpx
import trio
import trio.testing

from loadtest.stats import median, percentile

ROUND_DEADLINE_S = 120.0
IDLE_WINDOW_S = 1.0


def measure_logins(base_url: str, api: httpx.Client, admin_token: str, admin_email: str, password: str, *,
                   users: int, rounds: int, say: Callable[[str], None], warnings: list[str],
                   register: Callable[[httpx.Client, str, str], None]) -> dict[str, Any]:
    say(f"== 3. Login: {users} concurrent logins of distinct users x {rounds} round(s), one AsyncClient per user")
    tag = secrets.token_hex(4)
    emails = [f"lt-login-{tag}-{i}@example.com" for i in range(users)]
    began = time.perf_counter()
    for i, email in enumerate(emails):
        register(api, email, f"lt_login_{tag}_{i}")
    say(f"   registered {users} users in {time.perf_counter() - began:.2f} s (sequential REST)")
    result = trio.run(_rounds, base_url, admin_email, password, emails, rounds, say)
    failures = sum(r["failures"] for r in result["rounds"])
    if failures:
        warnings.append(f"login: {failures} login(s) did not answer 200")
    return result


async def _rounds(base_url: str, admin_email: str, password: str, emails: list[str], rounds: int,
                  say: Callable[[str], None]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as admin:
        response = await admin.post("/api/v1/auth/login", json={"email": admin_email, "password": password})
        response.raise_for_status()
        headers = {"Authorization": f"Bearer {response.json()['access_token']}"}

        async def reset() -> None:
            (await admin.post("/api/v1/admin/metrics/reset", headers=headers)).raise_for_status()

        async def stall_ms() -> float:
            response = await admin.get("/api/v1/admin/metrics", headers=headers)
            response.raise_for_status()
            return float(response.json()["event_loop"]["worst_stall_since_reset_ms"])

        await reset()
        await trio.sleep(IDLE_WINDOW_S)
        idle_stall = await stall_ms()
        say(f"   idle: worst loop stall over {IDLE_WINDOW_S:g} s with no load {idle_stall:.1f} ms")

        all_latencies: list[float] = []
        records = []
        for number in range(1, rounds + 1):
            with trio.fail_after(ROUND_DEADLINE_S):
                latencies, statuses, wall_s = await _one_round(base_url, emails, password, reset)
                stall = await stall_ms()
            ok = [lat for lat, status in zip(latencies, statuses) if status == 200]
            all_latencies += ok
            record = {
                "round": number, "wall_s": round(wall_s, 3), "worst_stall_ms": stall,
                "failures": sum(1 for s in statuses if s != 200), "statuses": sorted(set(statuses)),
                "p50_ms": round(percentile(ok, 50) * 1000, 1) if ok else None,
                "max_ms": round(max(ok) * 1000, 1) if ok else None,
                "latencies_ms": [round(x * 1000, 1) for x in latencies],
            }
            records.append(record)
            say(f"   round {number}: {len(ok)}/{len(emails)} ok in {wall_s:.3f} s; p50 {record['p50_ms']} ms, "
                f"max {record['max_ms']} ms; worst loop stall {stall:.1f} ms")
    summary = {
        "logins": len(all_latencies),
        "p50_ms": round(percentile(all_latencies, 50) * 1000, 1) if all_latencies else None,
        "p95_ms": round(percentile(all_latencies, 95) * 1000, 1) if all_latencies else None,
        "max_ms": round(max(all_latencies) * 1000, 1) if all_latencies else None,
        "worst_stall_ms": max(r["worst_stall_ms"] for r in records),
        "median_round_wall_s": round(median([r["wall_s"] for r in records]), 3),
        "idle_worst_stall_ms": idle_stall,
    }
    say(f"   all rounds: {summary['logins']} logins, p50 {summary['p50_ms']} ms, p95 {summary['p95_ms']} ms, "
        f"max {summary['max_ms']} ms; worst loop stall (max over rounds) {summary['worst_stall_ms']:.1f} ms")
    return {"users": len(emails), "rounds": records, **summary}


async def _one_round(base_url: str, emails: list[str], password: str,
                     reset: Callable[[], Any]) -> tuple[list[float], list[int], float]:
    latencies = [0.0] * len(emails)
    statuses = [0] * len(emails)
    go = trio.Event()
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(httpx.AsyncClient(base_url=base_url, timeout=60.0)) for _ in emails]
        async with trio.open_nursery() as warm:
            for client in clients:
                warm.start_soon(client.get, "/api/v1/ping")
        await reset()

        async def one(i: int) -> None:
            await go.wait()
            began = time.perf_counter()
            response = await clients[i].post("/api/v1/auth/login", json={"email": emails[i], "password": password})
            latencies[i] = time.perf_counter() - began
            statuses[i] = response.status_code

        async with trio.open_nursery() as nursery:
            for i in range(len(emails)):
                nursery.start_soon(one, i)
            await trio.testing.wait_all_tasks_blocked()
            began = time.perf_counter()
            go.set()
        wall_s = time.perf_counter() - began
    return latencies, statuses, wall_s
