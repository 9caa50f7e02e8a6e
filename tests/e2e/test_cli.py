"""The `collab` command as operators run it: real subprocesses, real databases.

Contract (collab/cli.py): exit 0 on success and after a graceful SIGINT/SIGTERM
stop, 1 when something outside Collab failed, 2 for invalid configuration or
usage; a failure prints one ``collab: ...`` line and never a traceback.

Every child gets an environment built from ours minus every ``COLLAB_*``
variable, plus what the test sets (always its own ``COLLAB_DATA_DIR``), and
every child runs under a deadline.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio

from collab import __version__
from tests.conftest import start_server, test_settings
from tests.helpers import STRONG_PASSWORD, run_sql

QUICK_DEADLINE_S = 20
DATABASE_DEADLINE_S = 45
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) +\S+")
LISTENING = re.compile(r"listening on (http://[^\s,]+)")


def collab_executable() -> str:
    beside = Path(sys.executable).with_name("collab")
    if beside.exists():
        return str(beside)
    found = shutil.which("collab")
    assert found, "the collab console script is not installed"
    return found


COLLAB = collab_executable()


def collab_env(data_dir: Path, **variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")}
    env["COLLAB_DATA_DIR"] = str(data_dir)
    env.update(variables)
    return env


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str

    def failure_lines(self) -> list[str]:
        """stderr lines that are not log records: what the CLI itself printed."""
        return [line for line in self.stderr.splitlines() if line.strip() and not LOG_LINE.match(line)]


async def run_collab(
    args: list[str], env: dict[str, str], *, stdin: bytes = b"", deadline_s: float = QUICK_DEADLINE_S,
) -> Finished:
    with trio.fail_after(deadline_s):
        done = await trio.run_process(
            [COLLAB, *args], stdin=stdin, capture_stdout=True, capture_stderr=True, check=False, env=env,
        )
    return Finished(done.returncode, done.stdout.decode(), done.stderr.decode())


def assert_one_line_failure(result: Finished, exit_code: int, *fragments: str) -> str:
    """The process failed with ``exit_code`` and said so in exactly one line, no traceback."""
    assert result.returncode == exit_code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.failure_lines()
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith("collab: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


# --- usage and help --------------------------------------------------------------

async def test_version(tmp_path: Path) -> None:
    result = await run_collab(["--version"], collab_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"collab {__version__}"


async def test_no_command_prints_help_and_exits_2(tmp_path: Path) -> None:
    result = await run_collab([], collab_env(tmp_path))
    assert result.returncode == 2
    assert result.stdout.startswith("usage: collab")
    for command in ("serve", "migrate", "user"):
        assert command in result.stdout


async def test_user_without_subcommand_prints_help_and_exits_2(tmp_path: Path) -> None:
    result = await run_collab(["user"], collab_env(tmp_path))
    assert "usage: collab user" in result.stdout
    assert "create" in result.stdout
    assert result.returncode == 2, "a missing subcommand is a usage error (exit 2), like a missing command"


@pytest.mark.parametrize(("args", "options"), [
    (["serve", "--help"], ["--host", "--port", "--no-migrate", "--shutdown-grace-s", "--max-body-bytes",
                           "--database-url", "--redis-url", "--data-dir", "COLLAB_PORT"]),
    (["migrate", "--help"], ["--database-url", "--data-dir", "--log-level", "COLLAB_DATABASE_URL"]),
    (["user", "create", "--help"], ["--email", "--username", "--first-name", "--last-name", "--admin",
                                    "--database-url", "stdin"]),
], ids=["serve", "migrate", "user-create"])
async def test_subcommand_help(tmp_path: Path, args: list[str], options: list[str]) -> None:
    result = await run_collab(args, collab_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: collab {' '.join(args[:-1])}")
    for option in options:
        assert option in result.stdout, option


async def test_unknown_flag_is_a_usage_error(tmp_path: Path) -> None:
    result = await run_collab(["serve", "--no-such-flag"], collab_env(tmp_path))
    assert result.returncode == 2
    assert "--no-such-flag" in result.stderr
    assert "Traceback" not in result.stderr


# --- invalid configuration ---------------------------------------------------------

@pytest.mark.parametrize(("variables", "names"), [
    ({"COLLAB_PORT": "abc"}, ["COLLAB_PORT", "abc"]),
    ({"COLLAB_PORT": "70000"}, ["COLLAB_PORT"]),
    ({"COLLAB_ENV": "production", "COLLAB_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"},
     ["COLLAB_JWT_SECRET", "production"]),
    ({"COLLAB_ENV": "production"}, ["COLLAB_DATABASE_URL"]),
    ({"COLLAB_JWT_SECRET": "too-short"}, ["COLLAB_JWT_SECRET", "32"]),
    ({"COLLAB_DATABASE_URL": "mysql://localhost/x"}, ["COLLAB_DATABASE_URL"]),
    ({"COLLAB_LOG_LEVEL": "LOUD"}, ["COLLAB_LOG_LEVEL"]),
], ids=["port-not-a-number", "port-out-of-range", "production-without-secret", "production-without-database",
        "secret-too-short", "database-url-scheme", "log-level"])
@pytest.mark.parametrize("command", [["serve"], ["migrate"]], ids=["serve", "migrate"])
async def test_invalid_configuration_exits_2_with_one_line(
    tmp_path: Path, command: list[str], variables: dict[str, str], names: list[str],
) -> None:
    result = await run_collab(command, collab_env(tmp_path, **variables))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("collab: configuration error: ")
    for name in names:
        assert name in lines[0], (name, lines[0])
    # The secret's value is never echoed.
    if "COLLAB_JWT_SECRET" in variables:
        assert variables["COLLAB_JWT_SECRET"] not in result.stderr


async def test_invalid_flag_value_exits_2_naming_the_flag(tmp_path: Path) -> None:
    result = await run_collab(["serve", "--port", "http"], collab_env(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--port" in lines[0]


# --- migrate -------------------------------------------------------------------------

async def test_migrate_a_fresh_database_then_up_to_date(tmp_path: Path, empty_database_url: str) -> None:
    env = collab_env(tmp_path, COLLAB_DATABASE_URL=empty_database_url)
    first = await run_collab(["migrate"], env, deadline_s=DATABASE_DEADLINE_S)
    assert first.returncode == 0, first.stderr
    match = re.search(r"applied migrations ([\d, ]+); schema at version (\d+)", first.stdout)
    assert match, first.stdout
    applied = [int(v) for v in match[1].split(",")]
    latest = int(match[2])
    assert applied == list(range(1, latest + 1))
    assert latest >= 1

    second = await run_collab(["migrate"], env, deadline_s=DATABASE_DEADLINE_S)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == f"schema is up to date at version {latest}"


async def test_migrate_refuses_a_newer_schema(tmp_path: Path, database_url: str) -> None:
    await run_sql(database_url, "INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')")
    result = await run_collab(["migrate"], collab_env(tmp_path, COLLAB_DATABASE_URL=database_url),
                              deadline_s=DATABASE_DEADLINE_S)
    assert_one_line_failure(result, 1, "9999", "newer")


# --- user create -----------------------------------------------------------------------

async def test_user_create_admin_then_log_in(tmp_path: Path, database_url: str) -> None:
    env = collab_env(tmp_path / "cli", COLLAB_DATABASE_URL=database_url,
                     COLLAB_PASSWORD_HASHING="argon2id-fast-insecure")
    result = await run_collab(
        ["user", "create", "--email", "a@example.com", "--username", "admin1", "--admin",
         "--first-name", "Ada"],
        env, stdin=(STRONG_PASSWORD + "\n").encode(), deadline_s=DATABASE_DEADLINE_S,
    )
    assert result.returncode == 0, result.stderr
    assert "admin1" in result.stdout and "a@example.com" in result.stdout
    assert STRONG_PASSWORD not in result.stdout + result.stderr

    async with start_server(test_settings(database_url, tmp_path / "server")) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
            response = await http.post(
                "/api/v1/auth/login", json={"email": "a@example.com", "password": STRONG_PASSWORD},
            )
            assert response.status_code == 200, response.text
            user = response.json()["user"]
            assert user["username"] == "admin1"
            assert user["first_name"] == "Ada"
            assert user["roles"] == ["admin"]

            wrong = await http.post(
                "/api/v1/auth/login", json={"email": "a@example.com", "password": STRONG_PASSWORD + "!"},
            )
            assert wrong.status_code == 401


async def test_user_create_without_admin_gets_no_admin_role(tmp_path: Path, database_url: str) -> None:
    env = collab_env(tmp_path, COLLAB_DATABASE_URL=database_url, COLLAB_PASSWORD_HASHING="argon2id-fast-insecure")
    result = await run_collab(
        ["user", "create", "--email", "plain@example.com", "--username", "plain1"],
        env, stdin=(STRONG_PASSWORD + "\n").encode(), deadline_s=DATABASE_DEADLINE_S,
    )
    assert result.returncode == 0, result.stderr
    match = re.search(r"roles=(\S*)", result.stdout)
    assert match, result.stdout
    assert "admin" not in match[1].split(",")


@pytest.mark.parametrize("password", ["password", "short", ""], ids=["common", "short", "empty"])
async def test_user_create_weak_password_fails_in_one_line(tmp_path: Path, database_url: str, password: str) -> None:
    env = collab_env(tmp_path, COLLAB_DATABASE_URL=database_url, COLLAB_PASSWORD_HASHING="argon2id-fast-insecure")
    result = await run_collab(
        ["user", "create", "--email", "weak@example.com", "--username", "weak1", "--admin"],
        env, stdin=(password + "\n").encode(), deadline_s=DATABASE_DEADLINE_S,
    )
    assert result.returncode != 0
    assert_one_line_failure(result, result.returncode, "password")
    assert "created user" not in result.stdout
    # Nothing was created: the same email can be used with a strong password.
    again = await run_collab(
        ["user", "create", "--email", "weak@example.com", "--username", "weak1"],
        env, stdin=(STRONG_PASSWORD + "\n").encode(), deadline_s=DATABASE_DEADLINE_S,
    )
    assert again.returncode == 0, again.stderr


async def test_user_create_duplicate_email_fails_in_one_line(tmp_path: Path, database_url: str) -> None:
    env = collab_env(tmp_path, COLLAB_DATABASE_URL=database_url, COLLAB_PASSWORD_HASHING="argon2id-fast-insecure")
    args = ["user", "create", "--email", "dup@example.com", "--username", "dup01"]
    first = await run_collab(args, env, stdin=(STRONG_PASSWORD + "\n").encode(), deadline_s=DATABASE_DEADLINE_S)
    assert first.returncode == 0, first.stderr
    second = await run_collab([*args[:-1], "dup02"], env, stdin=(STRONG_PASSWORD + "\n").encode(),
                              deadline_s=DATABASE_DEADLINE_S)
    assert_one_line_failure(second, 1, "email")


# --- serve --------------------------------------------------------------------------------

class ServeProcess:
    """A `collab serve` child whose stderr we read line by line (and always drain)."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._pending = b""

    async def read_line(self) -> str | None:
        assert self.process.stderr is not None
        while b"\n" not in self._pending:
            chunk = await self.process.stderr.receive_some(65536)
            if not chunk:
                if self._pending:
                    line, self._pending = self._pending.decode(), b""
                    self.lines.append(line)
                    return line
                return None
            self._pending += chunk
        raw, _, self._pending = self._pending.partition(b"\n")
        line = raw.decode()
        self.lines.append(line)
        return line

    async def wait_listening(self) -> str:
        while (line := await self.read_line()) is not None:
            if match := LISTENING.search(line):
                return match[1]
        raise AssertionError("collab serve ended before listening:\n" + self.stderr)

    async def finish(self) -> Finished:
        """Read stderr to its end and wait for the exit."""
        while await self.read_line() is not None:
            pass
        await self.process.wait()
        return Finished(self.process.returncode, "", self.stderr)

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)


async def open_serve(args: list[str], env: dict[str, str]) -> ServeProcess:
    process = await trio.lowlevel.open_process(
        [COLLAB, "serve", *args], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return ServeProcess(process)


async def run_serve(args: list[str], env: dict[str, str]) -> Finished:
    serve = await open_serve(args, env)
    try:
        with trio.fail_after(DATABASE_DEADLINE_S):
            return await serve.finish()
    finally:
        if serve.process.returncode is None:
            serve.process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await serve.process.wait()


def serve_env(tmp_path: Path, database_url: str, **variables: str) -> dict[str, str]:
    return collab_env(tmp_path, COLLAB_DATABASE_URL=database_url,
                      COLLAB_PASSWORD_HASHING="argon2id-fast-insecure", **variables)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_serve_answers_then_stops_cleanly_on_signal(tmp_path: Path, database_url: str, signum: int) -> None:
    serve = await open_serve(["--port", "0"], serve_env(tmp_path, database_url))
    try:
        with trio.fail_after(DATABASE_DEADLINE_S):
            base_url = await serve.wait_listening()
            assert not base_url.endswith(":0"), base_url
            async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
                health = await http.get("/health")
                assert health.status_code == 200, health.text
                assert health.json()["services"]["database"] == "up"
                ping = await http.get("/api/v1/ping")
                assert ping.json() == {"pong": True}

            serve.process.send_signal(signum)
            result = await serve.finish()
    finally:
        if serve.process.returncode is None:
            serve.process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await serve.process.wait()

    assert result.returncode == 0, result.stderr
    assert f"{signal.Signals(signum).name} received" in result.stderr
    assert any(line.endswith("collab.server: stopped") for line in result.stderr.splitlines()), result.stderr
    assert "Traceback" not in result.stderr
    # The migrated database was reused as is (nothing pending), and the secret never reached the log.
    assert "applied migration" not in result.stderr
    assert (tmp_path / "jwt_secret").read_text().strip() not in result.stderr


async def test_serve_refuses_a_newer_schema(tmp_path: Path, database_url: str) -> None:
    await run_sql(database_url, "INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')")
    result = await run_serve(["--port", "0"], serve_env(tmp_path, database_url))
    assert_one_line_failure(result, 1, "newer", "9999")
    assert "listening on" not in result.stderr


async def test_serve_no_migrate_refuses_a_newer_schema(tmp_path: Path, database_url: str) -> None:
    await run_sql(database_url, "INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')")
    result = await run_serve(["--port", "0", "--no-migrate"], serve_env(tmp_path, database_url))
    assert_one_line_failure(result, 1, "newer")


async def test_serve_no_migrate_refuses_a_pending_schema(tmp_path: Path, empty_database_url: str) -> None:
    result = await run_serve(["--port", "0", "--no-migrate"], serve_env(tmp_path, empty_database_url))
    assert_one_line_failure(result, 1, "collab migrate")


async def test_serve_with_unreachable_database_exits_1(tmp_path: Path) -> None:
    env = serve_env(tmp_path, "postgresql://postgres@127.0.0.1:1/x", COLLAB_DB_CONNECT_TIMEOUT_S="2")
    result = await run_serve(["--port", "0"], env)
    assert_one_line_failure(result, 1, "database")
    assert "listening on" not in result.stderr


async def test_serve_on_a_taken_port_exits_1(tmp_path: Path, database_url: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await run_serve(["--port", str(port)], serve_env(tmp_path, database_url))
    line = assert_one_line_failure(result, 1)
    assert "in use" in line.lower() or str(port) in line, line
    assert "listening on" not in result.stderr
