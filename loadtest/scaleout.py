"""``python -m loadtest scaleout``: the same load against 1 and 2 worker processes (issue 8).

Each run starts ``collab serve --workers N`` (unpinned: the workers may use
every core) on a fresh database of ``--database-url``'s server with
``--redis-url``, and drives it from this process with plain WebSocket clients:

- **many projects:** ``--projects`` projects, each with one editor socket
  keeping ``--inflight`` ``task.create`` ops in flight for ``--duration``
  seconds: acknowledged (= committed) ops per second in total. The kernel
  spreads the sockets over the workers and each project is owned by the
  worker that first needed it, so the work spreads too.
- **forwarding:** one project owned by one worker, and an editor socket
  connected to every worker in turn, one op in flight: ack latency p50/p99
  per worker; the difference between the owner's and another worker's is
  the cost of a forwarded op (Redis there and back, plus the wait for the
  follower to apply the event).

Prints the machine, versions and parameters; writes
``loadtest/results/scaleout-<time>.json``; docs/benchmarks.md is written by
hand from it (section "Scale-out").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import trio
from trio_websocket import open_websocket_url

from loadtest import serverproc
from loadtest.machine import describe_machine

PASSWORD = "correct horse battery staple"
#: One user drives many sockets far beyond a person's pace.
UNTHROTTLED_SOCKETS = {"ws_messages_per_s": "100000", "ws_message_burst": "100000", "ws_max_sockets_per_user": "1000"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a PostgreSQL server where fresh databases may be created")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    parser.add_argument("--projects", type=int, default=20)
    parser.add_argument("--inflight", type=int, default=4)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--forward-ops", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="shorter runs (8 s, 150 forwarded ops)")


def _fresh_database(admin_url: str) -> str:
    name = f"collab_scaleout_{secrets.token_hex(4)}"

    async def create() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


def _drop_database(admin_url: str, url: str) -> None:
    name = url.rpartition("/")[2]

    async def drop() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


class Client:
    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=30)
        self.ws_url = base_url.replace("http://", "ws://") + "/ws"

    async def user(self) -> str:
        tag = secrets.token_hex(5)
        email = f"so-{tag}@example.com"
        made = await self.http.post("/api/v1/auth/register", json={"email": email, "username": f"so_{tag}",
                                                                  "password": PASSWORD})
        made.raise_for_status()
        tokens = await self.http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        tokens.raise_for_status()
        return str(tokens.json()["access_token"])

    async def project(self, token: str, name: str) -> str:
        made = await self.http.post("/api/v1/projects", headers={"Authorization": f"Bearer {token}"},
                                    json={"name": name})
        made.raise_for_status()
        return str(made.json()["id"])


async def _editor(url: str, token: str, project_id: str, inflight: int, until: float, acked: list[float]) -> None:
    async with open_websocket_url(url, message_queue_size=4096) as ws:
        await ws.send_message(orjson.dumps({"type": "auth", "token": token}).decode())
        slots = trio.Semaphore(inflight)
        sent: dict[str, float] = {}

        async def reader() -> None:
            while True:
                message = await ws.get_message()
                decoded = orjson.loads(message)
                for frame in decoded if isinstance(decoded, list) else [decoded]:
                    if frame.get("type") in ("ack", "error") and frame.get("id") in sent:
                        started = sent.pop(frame["id"])
                        if frame["type"] == "ack":
                            acked.append(time.monotonic() - started)
                        slots.release()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            n = 0
            while time.monotonic() < until:
                await slots.acquire()
                op_id = f"op-{secrets.token_hex(6)}-{n}"
                n += 1
                sent[op_id] = time.monotonic()
                await ws.send_message(orjson.dumps({"type": "op", "id": op_id, "project_id": project_id, "op": {
                    "kind": "task.create", "fields": {"title": f"load {n}"}}}).decode())
            with trio.move_on_after(10):
                while sent:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()


async def _many_projects(base_url: str, projects: int, inflight: int, duration: float) -> dict[str, Any]:
    client = Client(base_url)
    token = await client.user()
    ids = [await client.project(token, f"P{i}") for i in range(projects)]
    acked: list[float] = []
    start = time.monotonic()
    async with trio.open_nursery() as nursery:
        for project_id in ids:
            nursery.start_soon(_editor, client.ws_url, token, project_id, inflight, start + duration, acked)
    elapsed = time.monotonic() - start
    await client.http.aclose()
    lat = sorted(acked)
    return {"acked": len(acked), "ops_per_s": round(len(acked) / duration, 1),
            "ack_p50_ms": round(1000 * lat[len(lat) // 2], 2) if lat else None,
            "ack_p99_ms": round(1000 * lat[int(len(lat) * 0.99)], 2) if lat else None, "elapsed_s": round(elapsed, 1)}


async def _acks(ws_url: str, token: str, project_id: str, ops: int) -> list[float]:
    """Ack latencies of ``ops`` task.create ops sent one at a time over one socket."""
    times: list[float] = []
    async with open_websocket_url(ws_url, message_queue_size=4096) as ws:
        await ws.send_message(orjson.dumps({"type": "auth", "token": token}).decode())
        for i in range(ops):
            op_id = f"f-{secrets.token_hex(6)}"
            started = time.monotonic()
            await ws.send_message(orjson.dumps({"type": "op", "id": op_id, "project_id": project_id, "op": {
                "kind": "task.create", "fields": {"title": f"f {i}"}}}).decode())
            while True:
                decoded = orjson.loads(await ws.get_message())
                frames = decoded if isinstance(decoded, list) else [decoded]
                if any(f.get("id") == op_id for f in frames):
                    break
            times.append(time.monotonic() - started)
    return times


def _summary(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {"p50_ms": round(1000 * statistics.median(times), 2), "p99_ms": round(1000 * times[int(len(times) * 0.99) - 1], 2)}


async def _forwarding(owner_url: str, other_url: str, ops: int) -> dict[str, Any]:
    """Ack latency on the owner's node and on another node (which forwards), same project."""
    owner, other = Client(owner_url), Client(other_url)
    token = await owner.user()
    project_id = await owner.project(token, "Forwarding")
    await _acks(owner.ws_url, token, project_id, 20)  # the owner node takes the project; warm-up
    await _acks(other.ws_url, token, project_id, 20)  # the other node follows it; warm-up
    on_owner = await _acks(owner.ws_url, token, project_id, ops)
    forwarded = await _acks(other.ws_url, token, project_id, ops)
    await owner.http.aclose()
    await other.http.aclose()
    result = {"owner": _summary(on_owner), "forwarded": _summary(forwarded)}
    result["extra_p50_ms"] = round(result["forwarded"]["p50_ms"] - result["owner"]["p50_ms"], 2)
    return result


def run(args: argparse.Namespace) -> int:
    duration = 8.0 if args.quick else args.duration
    forward_ops = 150 if args.quick else args.forward_ops
    machine = describe_machine()
    print(f"machine: {json.dumps(machine)}")
    print(f"parameters: workers={args.workers} projects={args.projects} inflight={args.inflight} "
          f"duration={duration}s forward_ops={forward_ops}")
    results: dict[str, Any] = {"scenario": "scaleout", "machine": machine, "runs": {}}
    for workers in [int(w) for w in args.workers.split(",")]:
        database_url = _fresh_database(args.database_url)
        workdir = Path(f"/tmp/collab-scaleout-{secrets.token_hex(3)}")
        workdir.mkdir()
        env = serverproc.collab_env({"database_url": database_url, "redis_url": args.redis_url,
                                     "workers": str(workers), "data_dir": str(workdir), "log_level": "WARNING",
                                     "password_hashing": "argon2id-fast-insecure", **UNTHROTTLED_SOCKETS})
        server = serverproc.ServerProcess(env, log_path=workdir / "server.log", data_dir=None)
        try:
            server.start()
            server.wait_healthy(120)
            time.sleep(2 * workers)  # every worker up (the supervisor answers as soon as one is)
            many = trio.run(_many_projects, server.base_url, args.projects, args.inflight, duration)
        finally:
            server.stop()
            _drop_database(args.database_url, database_url)
        results["runs"][str(workers)] = {"many_projects": many}
        print(f"workers={workers}: {json.dumps(results['runs'][str(workers)])}")
    # Forwarding: two single-worker nodes on their own ports (so we know which one owns the project).
    database_url = _fresh_database(args.database_url)
    nodes = []
    secret = secrets.token_hex(32)  # both nodes must accept each other's tokens
    try:
        for i in range(2):
            workdir = Path(f"/tmp/collab-scaleout-{secrets.token_hex(3)}")
            workdir.mkdir()
            env = serverproc.collab_env({"database_url": database_url, "redis_url": args.redis_url, "workers": "1",
                                         "jwt_secret": secret,
                                         "data_dir": str(workdir), "log_level": "WARNING",
                                         "password_hashing": "argon2id-fast-insecure", **UNTHROTTLED_SOCKETS})
            node = serverproc.ServerProcess(env, log_path=workdir / "server.log", data_dir=None)
            node.start()
            nodes.append(node)
        for node in nodes:
            node.wait_healthy(120)
        results["forwarding"] = trio.run(_forwarding, nodes[0].base_url, nodes[1].base_url, forward_ops)
        print(f"forwarding: {json.dumps(results['forwarding'])}")
    finally:
        for node in nodes:
            node.stop()
        _drop_database(args.database_url, database_url)
    out = Path("loadtest/results") / f"scaleout-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0
