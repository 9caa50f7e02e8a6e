"""Property-based fuzzing of the whole documented API with schemathesis (CLI 4.x).

A real `collab serve` process on the test's own database; one user with a
project and a task (so list and search operations see data). The checks:

- ``not_a_server_error``: no 5xx for any generated request;
- ``response_schema_conformance``: every response matches its documented schema;
- ``negative_data_rejection``: requests that violate the schema are refused (4xx).

Operations that would end the test's own session are excluded (logout,
revoking a session, changing the password, deactivating or re-roling a
user); everything else runs, in all phases. A failure prints schemathesis'
report: each finding comes with a curl command that reproduces it.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx
import pytest
import trio

from tests.e2e.test_durability import open_collab_server
from tests.helpers import bearer, signup

SCHEMATHESIS_DEADLINE_S = 240
SESSION_ENDING = (
    r"^/api/v1/(auth/logout|auth/sessions/\{[^}]+\}|users/me/password|admin/users/\{[^}]+\}/(active|roles))$"
)


def schemathesis_executable() -> str:
    path = Path(sys.executable).with_name("schemathesis")
    assert path.exists(), f"schemathesis is not installed beside {sys.executable}"
    return str(path)


def deadline(seconds: float) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """A longer deadline than conftest's default for this test (it still has one)."""

    def decorate(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            with trio.fail_after(seconds):
                return await fn(*args, **kwargs)

        wrapper._collab_deadline = True  # type: ignore[attr-defined]
        return wrapper

    return decorate


@pytest.mark.slow
@deadline(SCHEMATHESIS_DEADLINE_S + 60)
async def test_schemathesis_finds_no_failures(database_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    async with open_collab_server(database_url, data_dir) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            _user, tokens = await signup(http)
            auth = bearer(tokens["access_token"])
            project = await http.post("/api/v1/projects", headers=auth, json={"name": "Fuzzed"})
            assert project.status_code == 201, project.text
            task = await http.post("/api/v1/tasks", headers=auth, json={
                "title": "Fuzz target", "project_id": project.json()["id"], "tags": ["fuzz"],
            })
            assert task.status_code == 201, task.text

        command = [
            schemathesis_executable(), "run", f"{server.base_url}/openapi.json",
            "--url", server.base_url,
            "-H", f"Authorization: Bearer {tokens['access_token']}",
            "--checks", "not_a_server_error,response_schema_conformance,negative_data_rejection",
            "--max-examples", "20",
            "--workers", "1",
            "--exclude-path-regex", SESSION_ENDING,
            "--request-timeout", "30",
            "--generation-database", "none",
            "--seed", "20261126",  # reproducible in CI; change it locally to explore
            "--no-color",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")}
        with trio.fail_after(SCHEMATHESIS_DEADLINE_S):
            done = await trio.run_process(
                command, cwd=tmp_path, env=env, capture_stdout=True, capture_stderr=True, check=False,
            )
        output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
        if done.returncode != 0:
            print(output)
            server_errors = [line for line in server.lines if " ERROR " in line]
            print("\n--- server errors ---\n" + "\n".join(server_errors[:40]))
        # The run did test the API (not an empty selection or a schema that failed to load).
        assert "Loaded specification" in output, output
        assert "Operations:" in output and "selected" in output, output
        assert done.returncode == 0, "schemathesis found failures (report printed above)"

        # The excluded operations were excluded, so the session is still alive.
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            me = await http.get("/api/v1/users/me", headers=auth)
            assert me.status_code == 200, me.text
