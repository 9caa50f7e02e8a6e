"""An acknowledged write survives ``kill -9``: real `collab serve` processes on one database.

A 201 means committed (ProjectActor replies only after commit). The test
kills the server with SIGKILL right after the acknowledgements, starts a new
process on the same database and checks that the task is there at the same
version, that the change log has no gap, and that the next write takes the
next seq.

:func:`open_collab_server` is shared with ``test_schemathesis.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

import httpx
import pytest
import trio

from tests.helpers import bearer, signup

START_DEADLINE_S = 30
LISTENING = re.compile(r"listening on (http://[^\s,]+)")
JWT_SECRET = "durability-test-secret-" + "k" * 32


def collab_executable() -> str:
    beside = Path(sys.executable).with_name("collab")
    if beside.exists():
        return str(beside)
    found = shutil.which("collab")
    assert found, "the collab console script is not installed"
    return found


def server_env(database_url: str, data_dir: Path) -> dict[str, str]:
    """Our environment minus every COLLAB_* variable, plus exactly what the server needs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")}
    env.update({
        "COLLAB_DATABASE_URL": database_url,
        "COLLAB_DATA_DIR": str(data_dir),
        "COLLAB_PASSWORD_HASHING": "argon2id-fast-insecure",
        "COLLAB_JWT_SECRET": JWT_SECRET,
        # One test client makes every request: the general REST limits have tests of their own.
        "COLLAB_REST_PER_USER_PER_MINUTE": "10000000", "COLLAB_REST_USER_BURST": "10000000",
        "COLLAB_REST_PER_IP_PER_MINUTE": "10000000", "COLLAB_REST_IP_BURST": "10000000",
    })
    return env


@dataclass
class CollabProcess:
    process: trio.Process
    base_url: str = ""
    lines: list[str] = field(default_factory=list)

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, nothing is flushed."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)


class _Lines:
    def __init__(self, stream: trio.abc.ReceiveStream, sink: list[str]) -> None:
        self._stream, self._sink, self._pending = stream, sink, b""

    async def next(self) -> str | None:
        while b"\n" not in self._pending:
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                if not self._pending:
                    return None
                line, self._pending = self._pending.decode(errors="replace"), b""
                self._sink.append(line)
                return line
            self._pending += chunk
        raw, _, self._pending = self._pending.partition(b"\n")
        line = raw.decode(errors="replace")
        self._sink.append(line)
        return line


@asynccontextmanager
async def open_collab_server(
    database_url: str, data_dir: Path, env: dict[str, str] | None = None,
) -> AsyncIterator[CollabProcess]:
    """`collab serve --port 0` as a child process; yields once it listens, kills it on exit.

    ``env`` adds or overrides ``COLLAB_*`` variables of :func:`server_env`.

    Its stderr is read to the end by a task of this block, so the pipe never
    fills whatever the log volume.
    """
    process = await trio.lowlevel.open_process(
        [collab_executable(), "serve", "--port", "0"], env=server_env(database_url, data_dir) | (env or {}),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    server = CollabProcess(process)
    assert process.stderr is not None
    lines = _Lines(process.stderr, server.lines)
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(START_DEADLINE_S):
                while (line := await lines.next()) is not None:
                    if match := LISTENING.search(line):
                        server.base_url = match[1]
                        break
                else:
                    raise AssertionError("collab serve ended before listening:\n" + server.log)

            async def drain() -> None:
                while await lines.next() is not None:
                    pass

            nursery.start_soon(drain)
            yield server
            server.kill()
    finally:
        server.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await process.wait()


@pytest.mark.slow
async def test_acknowledged_writes_survive_kill_9(database_url: str, tmp_path: Path) -> None:
    async with open_collab_server(database_url, tmp_path) as first:
        async with httpx.AsyncClient(base_url=first.base_url, timeout=10) as http:
            user, tokens = await signup(http)
            auth = bearer(tokens["access_token"])
            project = await http.post("/api/v1/projects", headers=auth, json={"name": "Durable"})
            assert project.status_code == 201, project.text
            pid = project.json()["id"]
            created = await http.post("/api/v1/tasks", headers=auth, json={
                "title": "Survives", "project_id": pid, "tags": ["durable"], "description": "acknowledged",
            })
            assert created.status_code == 201, created.text
            status = await http.put(
                f"/api/v1/tasks/{created.json()['id']}/status", headers=auth, json={"status": "done"},
            )
            assert status.status_code == 200, status.text
        first.kill()  # right after the acknowledgements: no graceful stop, no flush
        with trio.fail_after(10):
            await first.process.wait()
        assert first.process.returncode == -signal.SIGKILL
    acknowledged = status.json()
    assert acknowledged["version"] == 3  # project.created = 1, task.created = 2, task.updated = 3

    async with open_collab_server(database_url, tmp_path) as second:
        assert not any(line.endswith("collab.server: stopped") for line in first.log.splitlines()), first.log
        async with httpx.AsyncClient(base_url=second.base_url, timeout=10) as http:
            tokens = (await http.post("/api/v1/auth/login", json={
                "email": user["email"], "password": "correct horse battery staple",
            })).json()
            auth = bearer(tokens["access_token"])
            tid = acknowledged["id"]

            again = await http.get(f"/api/v1/tasks/{tid}", headers=auth)
            assert again.status_code == 200, again.text
            assert again.headers["ETag"] == f'"{acknowledged["version"]}"'
            survived = again.json()
            for name in ("title", "description", "tags", "status", "completed_at", "position", "version", "created_by"):
                assert survived[name] == acknowledged[name], name
            listed = (await http.get("/api/v1/tasks", headers=auth, params={"project_id": pid})).json()
            assert [t["id"] for t in listed["data"]] == [tid]

            before = (await http.get(f"/api/v1/projects/{pid}/changes", headers=auth, params={"since": 0})).json()
            assert [e["seq"] for e in before["data"]] == [1, 2, 3]
            assert [e["kind"] for e in before["data"]] == ["project.created", "task.created", "task.updated"]
            assert before["seq"] == 3

            update = await http.put(f"/api/v1/tasks/{tid}", headers=auth | {"If-Match": again.headers["ETag"]},
                                    json={"title": "Survived"})
            assert update.status_code == 200, update.text
            assert update.json()["version"] == 4
            after = (await http.get(f"/api/v1/projects/{pid}/changes", headers=auth, params={"since": 0})).json()
            assert [e["seq"] for e in after["data"]] == [1, 2, 3, 4]
            assert after["data"][:3] == before["data"]
            assert after["data"][3]["kind"] == "task.updated" and after["seq"] == 4
            project_now = (await http.get(f"/api/v1/projects/{pid}", headers=auth)).json()
            assert project_now["seq"] == 4 and project_now["task_count"] == 1


@pytest.mark.slow
async def test_idempotency_key_survives_kill_9(database_url: str, tmp_path: Path) -> None:
    """A retry after a crash (the client never saw the answer) replays the first outcome."""
    body = {"title": "Retried after crash"}
    async with open_collab_server(database_url, tmp_path) as first:
        async with httpx.AsyncClient(base_url=first.base_url, timeout=10) as http:
            user, tokens = await signup(http)
            auth = bearer(tokens["access_token"])
            pid = (await http.post("/api/v1/projects", headers=auth, json={"name": "Retries"})).json()["id"]
            created = await http.post("/api/v1/tasks", headers=auth | {"Idempotency-Key": "crash-1"},
                                      json=body | {"project_id": pid})
            assert created.status_code == 201, created.text
        first.kill()

    async with open_collab_server(database_url, tmp_path) as second:
        async with httpx.AsyncClient(base_url=second.base_url, timeout=10) as http:
            tokens = (await http.post("/api/v1/auth/login", json={
                "email": user["email"], "password": "correct horse battery staple",
            })).json()
            auth = bearer(tokens["access_token"])
            retried = await http.post("/api/v1/tasks", headers=auth | {"Idempotency-Key": "crash-1"},
                                      json=body | {"project_id": pid})
            assert retried.status_code == 201, retried.text
            assert retried.headers.get("Idempotent-Replayed") == "true"
            assert retried.json() == created.json()
            listed = (await http.get("/api/v1/tasks", headers=auth, params={"project_id": pid})).json()
            assert listed["pagination"]["total"] == 1
