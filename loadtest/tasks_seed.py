"""Data for the tasks benchmark, made through the public REST API with concurrency.

:func:`parallel` sends a list of JSON requests over one httpx.AsyncClient
(trio) with at most ``concurrency`` in flight, under one deadline, and returns
each status and body. The dataset is ``n`` tasks from :func:`task_bodies`:
deterministic (seeded random), with varied titles, descriptions, tags,
statuses, priorities, due dates and estimates, and the word
:data:`SEARCH_WORD` in exactly 1% of them (never anywhere else). Every task
is an ordinary ``POST /api/v1/tasks``, so it goes through the project actor
and is committed before its 201, exactly as a client's would be.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

import httpx
import trio

from loadtest.hdr import Latencies

SEARCH_WORD = "important"  # the word of the seed's search benchmark
STATUSES = {"todo": 35, "in_progress": 25, "in_review": 10, "done": 25, "cancelled": 5}
PRIORITIES = {"low": 25, "medium": 40, "high": 25, "urgent": 10}
VERBS = ("Write", "Review", "Fix", "Refactor", "Design", "Test", "Deploy", "Document", "Plan", "Measure",
         "Migrate", "Update", "Remove", "Investigate", "Prototype", "Automate", "Translate", "Audit")
ADJECTIVES = ("slow", "flaky", "new", "legacy", "mobile", "public", "internal", "nightly", "shared", "broken",
              "quarterly", "onboarding", "billing", "search", "offline", "regional")
NOUNS = ("login page", "invoice export", "release notes", "API client", "dashboard", "backup job", "signup form",
         "payment flow", "email template", "cache layer", "audit log", "settings screen", "data import",
         "user guide", "build pipeline", "report", "webhook", "search index", "test suite", "landing page")
SENTENCES = (
    "Customers on the {adj} plan reported this twice last week.",
    "See the notes from the {adj} review for the details.",
    "Needs a decision from design before we start.",
    "Blocked until the {noun} is merged.",
    "Estimate assumes the {adj} {noun} stays as it is.",
    "Pair with someone from support on this one.",
    "The previous attempt was reverted; read the thread first.",
    "Keep the old behaviour behind a flag for one release.",
    "Check the numbers against last quarter's {noun}.",
    "Nothing urgent, but it keeps coming up in retros.",
)
TAGS = ("backend", "frontend", "bug", "feature", "docs", "ops", "security", "performance", "ux", "api",
        "mobile", "billing", "tech-debt", "q3", "customer")
PARALLEL_REQUEST_TIMEOUT_S = 60.0
CLIENT_KEEPALIVE_S = 2.0


def _pick(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def task_bodies(n: int, project_ids: Sequence[str], shares: Sequence[float], seed: int = 20261126) -> list[dict[str, Any]]:
    """``n`` varied task bodies; task i goes to a project drawn with ``shares`` (weights)."""
    rng = random.Random(seed)
    marked = set(rng.sample(range(n), max(1, n // 100))) if n >= 1 else set()
    now = datetime.now(timezone.utc).replace(microsecond=0)
    bodies = []
    for i in range(n):
        adj, noun = rng.choice(ADJECTIVES), rng.choice(NOUNS)
        title = f"{rng.choice(VERBS)} the {adj} {noun}"
        if rng.random() < 0.3:
            title += f" ({rng.choice(ADJECTIVES)})"
        sentences = [s.format(adj=rng.choice(ADJECTIVES), noun=rng.choice(NOUNS))
                     for s in rng.sample(SENTENCES, rng.randint(0, 3))]
        if i in marked:  # in the title or the description, half each
            if rng.random() < 0.5:
                title = f"{title}: {SEARCH_WORD}"
            else:
                sentences.insert(rng.randrange(len(sentences) + 1), f"This is {SEARCH_WORD} for the launch.")
        body: dict[str, Any] = {
            "project_id": rng.choices(project_ids, weights=shares)[0],
            "title": title,
            "status": _pick(rng, STATUSES),
            "priority": _pick(rng, PRIORITIES),
            "tags": rng.sample(TAGS, rng.choice((0, 1, 1, 2, 2, 3, 4))),
        }
        if sentences:
            body["description"] = " ".join(sentences)
        if rng.random() < 0.6:
            body["due_date"] = (now + timedelta(days=rng.randint(-30, 90))).isoformat()
        if rng.random() < 0.5:
            body["estimated_hours"] = rng.choice((1, 2, 3, 5, 8, 13, 21))
        bodies.append(body)
    return bodies


def describe(bodies: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What the dataset holds (counts by status, priority, project; tasks with the search word)."""
    def count(key: str) -> dict[str, int]:
        return dict(Counter(b[key] for b in bodies).most_common())

    marked = [b for b in bodies if SEARCH_WORD in b["title"] or SEARCH_WORD in b.get("description", "")]
    return {
        "tasks": len(bodies), "by_status": count("status"), "by_priority": count("priority"),
        "tasks_per_project": sorted(Counter(b["project_id"] for b in bodies).values(), reverse=True),
        "with_tags": sum(1 for b in bodies if b["tags"]), "with_description": sum(1 for b in bodies if "description" in b),
        "with_due_date": sum(1 for b in bodies if "due_date" in b),
        "distinct_titles": len({b["title"] for b in bodies}),
        "search_word": SEARCH_WORD, "with_search_word": len(marked),
        "with_search_word_todo_high": sum(1 for b in marked if b["status"] == "todo" and b["priority"] == "high"),
    }


def parallel(base_url: str, token: str | None, requests: Sequence[tuple[str, str, Any]], *, concurrency: int,
             deadline_s: float) -> dict[str, Any]:
    """Send ``(method, path, json)`` requests, ``concurrency`` at a time; see the module docstring.

    Returns ``statuses`` (count per code, or per transport error such as
    ``RemoteProtocolError``; ``transport_errors`` lists the first 20 with
    seconds since the start and request index), ``bodies`` (parsed JSON or None, in
    request order), ``wall_s``, ``requests_per_s``, latency p50/p99 and the
    rate in each tenth of the requests (by completion order), and this
    driver's CPU use (100% = one core: then the driver is the limit).
    """
    return trio.run(_parallel, base_url, token, list(requests), concurrency, deadline_s)


async def _parallel(base_url: str, token: str | None, requests: list[tuple[str, str, Any]], concurrency: int,
                    deadline_s: float) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # Close idle connections well before the server does (its keep-alive timeout
    # is 5 s, httpx's default expiry too): otherwise a request now and then goes
    # out on a connection the server is closing, and fails with
    # RemoteProtocolError "Server disconnected without sending a response".
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency,
                          keepalive_expiry=CLIENT_KEEPALIVE_S)
    statuses: list[int | str] = [0] * len(requests)
    errors: list[tuple[float, int, str]] = []
    bodies: list[Any] = [None] * len(requests)
    latencies: list[float] = []
    finished: list[float] = []
    send, receive = trio.open_memory_channel[int](len(requests))
    for index in range(len(requests)):
        send.send_nowait(index)
    send.close()
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits,
                                 timeout=PARALLEL_REQUEST_TIMEOUT_S) as client:

        async def worker() -> None:
            async for index in receive:
                method, path, payload = requests[index]
                began = time.perf_counter()
                try:
                    response = await client.request(method, path, json=payload)
                except httpx.TransportError as exc:  # counted, never retried: the caller decides
                    statuses[index] = type(exc).__name__
                    errors.append((round(time.perf_counter() - start, 3), index, f"{type(exc).__name__}: {exc}"[:200]))
                    continue
                latencies.append(time.perf_counter() - began)
                statuses[index] = response.status_code
                try:
                    bodies[index] = response.json() if response.content else None
                except ValueError:
                    bodies[index] = None
                finished.append(time.perf_counter())

        began = start = time.perf_counter()
        cpu0 = time.process_time()
        with trio.fail_after(deadline_s):
            async with trio.open_nursery() as nursery:
                for _ in range(min(concurrency, len(requests)) or 1):
                    nursery.start_soon(worker)
        wall = time.perf_counter() - began
        cpu = time.process_time() - cpu0
    hist = Latencies().record_many_ms(x * 1000 for x in latencies)
    tenths = []
    if len(finished) >= 10:
        step = len(finished) // 10
        marks = [began] + [finished[min(len(finished), (k + 1) * step) - 1] for k in range(10)]
        tenths = [round(step / (b - a), 1) if b > a else None for a, b in zip(marks, marks[1:])]
    return {
        "requests": len(requests), "concurrency": concurrency, "statuses": dict(Counter(statuses)),
        "wall_s": round(wall, 3), "requests_per_s": round(len(requests) / wall, 1) if wall else None,
        "p50_ms": hist.percentile_ms(50), "p99_ms": hist.percentile_ms(99),
        "transport_errors": errors[:20], "rate_by_tenth": tenths,
        "driver_cpu_pct": round(100 * cpu / wall, 1) if wall else None, "bodies": bodies,
    }
