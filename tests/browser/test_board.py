"""The board in a real browser: Debian's chromium driven by playwright-core.

A real ``collab serve --demo`` process (on this test's own database) serves
the board; ``node board_driver.mjs`` opens it as alice and bob in two
browser contexts and checks, among others, that a card dragged in one
appears moved in the other within a second, that a REST edit shows up on
both boards, that an injected ``<img onerror>`` title stays text, and that
the board recovers (and loses no edit made meanwhile) when the server
restarts on the same port and database. This test runs the server; the
driver asks for the restart on its stdout (JSON lines) and is answered on
its stdin.

Needs node, chromium (``/usr/bin/chromium`` or ``CHROMIUM_PATH``) and
``npm ci`` in tests/browser. Missing tools skip the test, except in CI
(``CI=true``), where they fail it. On failure the driver saves a screenshot
of each page; the directory is printed and named in the failure message.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest

from collab.demo import ALICE, DEMO_PASSWORD, PROJECT_ID, TASKS
from tests.e2e.test_durability import collab_executable, server_env

HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
TEST_DEADLINE_S = 240
START_DEADLINE_S = 60
STOP_DEADLINE_S = 20


def missing_tooling() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not Path(CHROMIUM).exists():
        return f"there is no chromium at {CHROMIUM} (apt-get install chromium)"
    if not (HERE / "node_modules" / "playwright-core" / "package.json").exists():
        return "playwright-core is not installed (run `npm ci` in tests/browser)"
    return None


@pytest.fixture
def browser_tooling() -> None:
    missing = missing_tooling()
    if missing is None:
        return
    if IN_CI:
        pytest.fail(f"the browser test must run in CI, but {missing}")
    pytest.skip(f"browser test skipped: {missing}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Reader:
    """Collects a pipe's lines in a thread (so it never fills) and hands them out."""

    def __init__(self, stream: IO[str], sink: list[str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.sink = sink
        self.thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.thread.start()

    def _run(self, stream: IO[str]) -> None:
        for line in stream:
            self.sink.append(line.rstrip("\n"))
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next(self, deadline: float) -> str | None:
        """The next line, None at the end; TimeoutError past ``deadline`` (time.monotonic)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        try:
            return self.lines.get(timeout=remaining)
        except queue.Empty:
            raise TimeoutError from None


class DemoServer:
    """``collab serve --demo`` on a fixed port, started and stopped (SIGTERM) on request."""

    def __init__(self, database_url: str, data_dir: Path, port: int) -> None:
        self.env = server_env(database_url, data_dir)
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[str] | None = None
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.banners: list[str] = []
        self._readers: list[_Reader] = []

    def start(self) -> None:
        self.process = subprocess.Popen(
            [collab_executable(), "serve", "--demo", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        out, err = _Reader(self.process.stdout, self.stdout), _Reader(self.process.stderr, self.stderr)
        self._readers = [out, err]
        deadline = time.monotonic() + START_DEADLINE_S
        try:
            banner: list[str] = []
            while not any("Move a card" in line for line in banner):  # its last line; printed once the port accepts
                line = out.next(deadline)
                if line is None:
                    raise AssertionError("collab serve --demo ended before its banner:\n" + self.log())
                banner.append(line)
            self.banners.append("\n".join(banner))
        except TimeoutError:
            raise AssertionError(
                f"collab serve --demo did not print its banner in {START_DEADLINE_S} s:\n" + self.log()
            ) from None

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        self.process = None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_DEADLINE_S)
        for reader in self._readers:
            reader.thread.join(timeout=5)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()

    def log(self, last: int = 60) -> str:
        return "\n".join(self.stdout[-last:] + ["--- stderr ---"] + self.stderr[-last:])


def run_driver(server: DemoServer, artifacts: Path) -> tuple[dict[str, Any], list[str], list[str]]:
    """Run the driver to its result, serving its stop/start requests; (result, steps, stderr)."""
    env = dict(os.environ)
    env.update({
        "BASE_URL": server.base_url, "ARTIFACTS_DIR": str(artifacts), "PROJECT_ID": str(PROJECT_ID),
        "DEMO_PASSWORD": DEMO_PASSWORD, "CHROMIUM_PATH": CHROMIUM,
    })
    driver = subprocess.Popen(
        ["node", str(HERE / "board_driver.mjs")], cwd=HERE, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert driver.stdin is not None and driver.stdout is not None and driver.stderr is not None
    stdout: list[str] = []
    stderr: list[str] = []
    out, err = _Reader(driver.stdout, stdout), _Reader(driver.stderr, stderr)
    steps: list[str] = []
    result: dict[str, Any] | None = None
    deadline = time.monotonic() + TEST_DEADLINE_S
    try:
        while result is None:
            line = out.next(deadline)
            if line is None:
                break
            try:
                message = json.loads(line)
            except ValueError:
                steps.append(f"(driver) {line}")
                continue
            event = message.get("event")
            if event == "step":
                steps.append(message["name"])
                print(message["name"], flush=True)
            elif event in ("stop-server", "start-server"):
                began = time.monotonic()
                server.stop() if event == "stop-server" else server.start()
                steps.append(f"(pytest: {event} took {time.monotonic() - began:.1f} s)")
                print(steps[-1], flush=True)
                driver.stdin.write("stopped\n" if event == "stop-server" else "started\n")
                driver.stdin.flush()
            elif event == "result":
                result = message
    except TimeoutError:
        steps.append(f"(the driver gave no result within {TEST_DEADLINE_S} s)")
    finally:
        if driver.poll() is None:
            try:
                driver.wait(timeout=15)
            except subprocess.TimeoutExpired:
                driver.kill()
                driver.wait(timeout=15)
        for reader in (out, err):
            reader.thread.join(timeout=5)
        for stream in (driver.stdin, driver.stdout, driver.stderr):
            stream.close()
    return result or {"ok": False, "error": "no result from the driver", "checks": []}, steps, stderr


@pytest.mark.slow
def test_board_in_two_browsers(browser_tooling: None, database_url: str, tmp_path: Path) -> None:
    artifacts = Path(os.environ.get("COLLAB_BROWSER_ARTIFACTS") or tmp_path / "artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    print(f"browser test artifacts (screenshots on failure): {artifacts}")
    server = DemoServer(database_url, tmp_path / "data", free_port())
    server.start()
    try:
        first_banner = server.banners[0]
        assert ALICE.email in first_banner and DEMO_PASSWORD in first_banner, first_banner
        assert f"{server.base_url}/" in first_banner, first_banner
        assert f"{len(TASKS)} tasks" in first_banner, first_banner
        result, steps, driver_stderr = run_driver(server, artifacts)
    finally:
        server.stop()

    report = "\n".join(
        [f"artifacts: {artifacts}", "steps:", *(f"  {s}" for s in steps),
         f"error: {result.get('error')}", f"screenshots: {result.get('screenshots')}",
         f"page problems: {result.get('problems')}", "driver stderr:", *driver_stderr[-30:],
         "server log:", server.log(40)]
    )
    assert result.get("ok") is True, report
    names = [check["name"] for check in result["checks"]]
    assert any("within a second" in name for name in names), report
    assert any("after the restart" in name for name in names), report
    # The restart ran --demo again on the same database: nothing was added twice.
    assert len(server.banners) == 2, report
    assert "already in place, nothing added" in server.banners[1], server.banners[1]
