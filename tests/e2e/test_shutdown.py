"""Graceful shutdown of a real `collab serve` process under load.

SIGTERM while REST writers and a WebSocket writer are busy:

- ``/ready`` answers 200 before and 503 from the moment shutdown begins,
  while the node still serves during ``COLLAB_SHUTDOWN_DRAIN_S``; new
  WebSockets are refused (503) then;
- open sockets get close 4000 (reconnect);
- the process exits 0 within drain + grace (+ the time to close services);
- every write that was acknowledged (REST 201, WebSocket ack) is in the
  database afterwards, in a gapless change log.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.e2e.test_durability import open_collab_server
from tests.e2e.ws_helpers import Closed, create_op, open_ws, upgrade_refused, ws_url
from tests.helpers import STRONG_PASSWORD, bearer, signup

DRAIN_S = 2.0
GRACE_S = 5.0
CLOSE_MARGIN_S = 10.0  # closing the pool and the actors after the grace period


async def _ready_status(base_url: str) -> int | None:
    try:
        async with httpx.AsyncClient(timeout=2, headers={"Connection": "close"}) as fresh:
            return (await fresh.get(f"{base_url}/ready")).status_code
    except httpx.TransportError:
        return None


@pytest.mark.slow
async def test_sigterm_drains_closes_sockets_and_loses_no_acknowledged_write(database_url: str, tmp_path: Path) -> None:
    env = {"COLLAB_SHUTDOWN_DRAIN_S": str(DRAIN_S), "COLLAB_SHUTDOWN_GRACE_S": str(GRACE_S)}
    acknowledged: set[str] = set()
    ws_acked: set[str] = set()
    async with open_collab_server(database_url, tmp_path / "first", env) as first:
        async with httpx.AsyncClient(base_url=first.base_url, timeout=15) as http:
            user, tokens = await signup(http)
            auth = bearer(tokens["access_token"])
            project = (await http.post("/api/v1/projects", headers=auth, json={"name": "Shutdown"})).json()
            pid = project["id"]
        assert await _ready_status(first.base_url) == 200

        async def rest_writer(n: int) -> None:
            async with httpx.AsyncClient(base_url=first.base_url, timeout=15) as writer:
                for i in range(10_000):
                    try:
                        created = await writer.post("/api/v1/tasks", headers=auth,
                                                    json={"project_id": pid, "title": f"w{n}-{i}"})
                    except httpx.TransportError:
                        return  # the node stopped accepting connections
                    if created.status_code == 201:
                        acknowledged.add(created.json()["id"])
                    elif created.status_code != 503:
                        raise AssertionError(f"unexpected {created.status_code}: {created.text}")

        close_codes: list[int | None] = []

        async def socket_writer() -> None:
            async with open_ws(first.base_url, tokens["access_token"], how="header") as conn:
                await conn.subscribe(pid)
                try:
                    for i in range(10_000):
                        ack = await conn.op(pid, create_op(f"ws-{i}"))
                        if ack["type"] == "ack":
                            ws_acked.add(ack["result"]["id"])
                except Closed as closed:
                    close_codes.append(closed.code)
                except ConnectionClosed as closed:  # the close frame arrived while an op was being sent
                    close_codes.append(closed.reason.code if closed.reason else None)
                else:
                    close_codes.append(conn.close_code)

        statuses: list[int | None] = []
        async with trio.open_nursery() as nursery:
            for n in range(3):
                nursery.start_soon(rest_writer, n)
            nursery.start_soon(socket_writer)
            with trio.fail_after(15):
                while len(acknowledged) < 10 or len(ws_acked) < 3:
                    await trio.sleep(0.05)
            stopped_at = time.monotonic()
            first.process.send_signal(signal.SIGTERM)
            with trio.fail_after(DRAIN_S + 2):
                while (status := await _ready_status(first.base_url)) != 503:
                    statuses.append(status)
                    await trio.sleep(0.05)
            # Still draining: the node answers, but takes no new sockets.
            assert await upgrade_refused(ws_url(first.base_url)) == 503
            with trio.fail_after(DRAIN_S + GRACE_S + CLOSE_MARGIN_S):
                await first.process.wait()
            elapsed = time.monotonic() - stopped_at
        assert first.process.returncode == 0, first.log
        assert elapsed < DRAIN_S + GRACE_S + CLOSE_MARGIN_S
        assert set(statuses) <= {200}, statuses  # 200 until it turned 503, never an error in between
        assert close_codes == [4000], close_codes
        assert any(line.endswith("collab.server: stopped") for line in first.log.splitlines()), first.log

    async with open_collab_server(database_url, tmp_path / "second") as second:
        async with httpx.AsyncClient(base_url=second.base_url, timeout=15) as http:
            login = await http.post("/api/v1/auth/login", json={"email": user["email"], "password": STRONG_PASSWORD})
            auth = bearer(login.json()["access_token"])
            stored: set[str] = set()
            since = 0
            while True:
                page = (await http.get(f"/api/v1/projects/{pid}/changes", headers=auth,
                                       params={"since": since, "limit": 1000})).json()
                seqs = [e["seq"] for e in page["data"]]
                assert seqs == list(range(since + 1, since + 1 + len(seqs))), "the change log has a gap"
                stored |= {e["data"]["task"]["id"] for e in page["data"] if e["kind"] == "task.created"}
                since = page["next_since"]
                if not page["has_more"]:
                    break
    lost = (acknowledged | ws_acked) - stored
    assert not lost, f"{len(lost)} acknowledged writes are missing after the restart"
    assert len(acknowledged) >= 10 and len(ws_acked) >= 3
