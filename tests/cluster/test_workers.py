"""`collab serve --workers N`: one port, N supervised nodes."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import httpx
import pytest
import trio

from tests.cluster.harness import UNLIMITED
from tests.e2e.test_durability import open_collab_server
from tests.helpers import bearer, signup

pytestmark = [pytest.mark.slow, pytest.mark.deadline(120)]

PIDS = re.compile(r"with (\d+) workers \(pids ([\d, ]+)\)")


async def test_workers_share_a_port_and_are_restarted(database_url: str, redis_url: str, tmp_path: Path) -> None:
    env = {"COLLAB_REDIS_URL": redis_url, "COLLAB_WORKERS": "2", "COLLAB_SHUTDOWN_GRACE_S": "2", **UNLIMITED}
    async with open_collab_server(database_url, tmp_path, env) as server:
        match = next(m for line in server.lines if (m := PIDS.search(line)))
        assert match[1] == "2"
        pids = [int(p) for p in match[2].split(", ")]
        async with httpx.AsyncClient(base_url=server.base_url, timeout=20) as http:
            _, tokens = await signup(http)
            auth = bearer(tokens["access_token"])
            project = (await http.post("/api/v1/projects", headers=auth, json={"name": "Workers"})).json()
            for i in range(10):
                made = await http.post(
                    "/api/v1/tasks", headers=auth, json={"project_id": project["id"], "title": f"{i}"},
                )
                assert made.status_code == 201, made.text
            os.kill(pids[0], signal.SIGKILL)
            with trio.fail_after(30):  # the supervisor notices and starts a replacement
                while not any("worker 0" in line and "restarting" in line for line in server.lines):
                    await trio.sleep(0.1)
        # New connections keep being served (by the survivor, then by the replacement too).
        async with httpx.AsyncClient(base_url=server.base_url, timeout=20) as http:
            for _ in range(10):
                listed = await http.get("/api/v1/tasks", headers=auth, params={"project_id": project["id"]})
                assert listed.status_code == 200 and listed.json()["pagination"]["total"] == 10
        server.process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await server.process.wait()
        assert server.process.returncode == 0, server.log
        assert any(line.endswith("collab.workers: stopped") for line in server.lines), server.log


async def test_several_workers_need_redis_and_a_database(tmp_path: Path) -> None:
    from tests.e2e.test_durability import collab_executable

    result = await trio.run_process(
        [collab_executable(), "serve", "--workers", "2", "--data-dir", str(tmp_path)],
        capture_stdout=True, capture_stderr=True, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")},
    )
    assert result.returncode == 2
    assert b"needs COLLAB_REDIS_URL" in result.stderr
