"""The compose topology without Docker: two `collab serve` nodes behind nginx.

Two real server processes on free ports share this machine's PostgreSQL
(a fresh database of the test's own), its Redis and one data dir, as the
compose nodes share theirs; nginx runs in the foreground with a config
derived from deploy/nginx.conf (:func:`tests.deploy.files.nginx_config_for`:
only the upstream addresses, the listen address and the paths it writes
change). Every node is started exactly as the image starts it: `collab serve`
configured by COLLAB_* variables, trusting the proxy's address for
X-Forwarded-For, with its metrics on a port of its own.

Checked: REST and the WebSocket through nginx on one node (``ip_hash`` pins
the client), X-Forwarded-For and X-Request-ID through the proxy, nginx
spreading requests over both nodes and riding out a killed one, the image's
HEALTHCHECK command against a live node, every metric the dashboard and the
alerts use being exposed, and cross-node delivery (an edit on one node
reaching a socket on the other).
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

import httpx
import pytest
import trio

from tests.deploy.files import exposed_metrics, healthcheck_command, nginx_config_for, referenced_metrics, require_tool
from tests.e2e.test_durability import LISTENING, collab_executable, server_env
from tests.e2e.ws_helpers import Closed, new_project, new_user, open_ws, rest_task
from tests.helpers import bearer

#: Two server processes start side by side on a 2-core machine that other work may share:
#: importing and starting one took 15 s under load here.
TEST_DEADLINE_S = 150
pytestmark = [pytest.mark.slow, pytest.mark.deadline(TEST_DEADLINE_S)]

START_DEADLINE_S = 60
STOP_DEADLINE_S = 10
CROSS_NODE_WAIT_S = 5
METRICS_ON = re.compile(r"metrics on (http://\S+?/metrics)")
PROXY_ADDRESS = "127.0.0.1"


# --- processes -------------------------------------------------------------------------------

@dataclass
class Node:
    """One `collab serve` child process."""

    name: str
    process: trio.Process
    lines: list[str] = field(default_factory=list)
    base_url: str = ""
    metrics_url: str = ""

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)


async def _read_lines(node: Node, stream: trio.abc.ReceiveStream, listening: trio.Event) -> None:
    """Keep the node's stderr drained (the pipe never fills); note its addresses as they are logged."""
    pending = b""
    while chunk := await stream.receive_some(65536):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            line = raw.decode(errors="replace")
            node.lines.append(line)
            if not node.base_url and (match := LISTENING.search(line)):
                node.base_url = match[1]
            if not node.metrics_url and (match := METRICS_ON.search(line)):
                node.metrics_url = match[1]
            if node.base_url and node.metrics_url:
                listening.set()
    listening.set()  # ended: the waiter sees what it has


async def _start_node(nursery: trio.Nursery, name: str, env: dict[str, str], nodes: list[Node]) -> None:
    """Start a node and wait until it listens; it is in ``nodes`` (to be killed) from the start."""
    process = await trio.lowlevel.open_process(
        [collab_executable(), "serve", "--port", "0"], env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    node = Node(name, process)
    nodes.append(node)
    assert process.stderr is not None
    listening = trio.Event()
    nursery.start_soon(_read_lines, node, process.stderr, listening)
    with trio.fail_after(START_DEADLINE_S):
        await listening.wait()
    assert node.base_url and node.metrics_url, f"{name} did not start:\n" + "\n".join(node.lines)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((PROXY_ADDRESS, 0))
        return int(probe.getsockname()[1])


async def _wait_for_port(port: int, process: trio.Process, log: Path) -> None:
    with trio.fail_after(START_DEADLINE_S):
        while True:
            assert process.returncode is None, "nginx exited:\n" + log.read_text()
            try:
                stream = await trio.open_tcp_stream(PROXY_ADDRESS, port)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            return


@dataclass
class Topology:
    nodes: list[Node]
    proxy_url: str
    nginx_log: Path


@asynccontextmanager
async def open_topology(
    database_url: str, redis_url: str, tmp_path: Path, *, balance: str | None = None,
) -> AsyncIterator[Topology]:
    """Two nodes and nginx in front of them; everything is killed when the block ends."""
    nginx = require_tool("nginx")
    env = server_env(database_url, tmp_path / "data")  # one data dir, as the compose nodes share one volume
    env.update({
        # One process per node here (2 cores for two nodes, nginx and the test); compose runs 2.
        "COLLAB_WORKERS": "1",
        # Rate limits live in the machine's Redis now, shared with every other run: lift the
        # sign-up and login limits (the limits have tests of their own).
        "COLLAB_LOGIN_PER_IP_PER_MINUTE": "1000000", "COLLAB_LOGIN_PER_ACCOUNT_PER_MINUTE": "1000000",
        "COLLAB_REGISTER_PER_IP_PER_HOUR": "1000000",
        "COLLAB_REDIS_URL": redis_url,
        "COLLAB_TRUSTED_PROXIES": f"{PROXY_ADDRESS}/32",
        "COLLAB_METRICS_PORT": "0",
        "COLLAB_METRICS_HOST": "127.0.0.1",
    })
    nodes: list[Node] = []
    nginx_process: trio.Process | None = None
    prefix = tmp_path / "nginx"
    try:
        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as starting:
                for name in ("collab-1", "collab-2"):
                    starting.start_soon(_start_node, nursery, name, env, nodes)
            nodes.sort(key=lambda n: n.name)

            prefix.mkdir()
            port = _free_port()
            config = prefix / "nginx.conf"
            config.write_text(nginx_config_for(
                [f"127.0.0.1:{node.port}" for node in nodes], listen=f"{PROXY_ADDRESS}:{port}", prefix=prefix,
                balance=balance,
            ))
            log = prefix / "output.log"
            with log.open("wb") as output:
                nginx_process = await trio.lowlevel.open_process(
                    [nginx, "-p", str(prefix), "-c", str(config), "-e", str(prefix / "error.log"), "-g", "daemon off;"],
                    stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                )
            await _wait_for_port(port, nginx_process, log)
            yield Topology(nodes, f"http://{PROXY_ADDRESS}:{port}", log)
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(STOP_DEADLINE_S):
            if nginx_process is not None and nginx_process.returncode is None:
                nginx_process.send_signal(signal.SIGQUIT)  # graceful: workers finish, then exit
                await nginx_process.wait()
            for node in nodes:
                node.kill()
                await node.process.wait()
        # Shown by pytest when the test failed.
        for node in nodes:
            print(f"--- {node.name} ({node.base_url}) log, last lines:", *node.lines[-40:], sep="\n")
        if nginx_process is not None:
            print("--- nginx error log:", (prefix / "error.log").read_text()[-4000:], sep="\n")


def client(base_url: str) -> httpx.AsyncClient:
    """An HTTP client that looks, to the nodes, like a host of its own.

    Login and sign-up limits are kept in the machine's Redis, keyed by client
    address, and outlive a test run: a fixed 127.0.0.1 would inherit earlier
    runs' counts. A random address from the documentation range, sent as
    X-Forwarded-For, is what the nodes (trusting 127.0.0.1, the proxy) count.
    """
    address = str(ipaddress.IPv6Address("2001:db8::") + secrets.randbits(64))
    return httpx.AsyncClient(base_url=base_url, timeout=15, headers={"X-Forwarded-For": address})


async def scrape(node: Node) -> str:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(node.metrics_url)
    assert response.status_code == 200, response.text
    return response.text


def requests_counted(exposition: str, route: str) -> float:
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith("collab_http_requests_total{") and f'route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


# --- through nginx -----------------------------------------------------------------------------

async def test_rest_and_websocket_through_nginx(database_url: str, redis_url: str, tmp_path: Path) -> None:
    """The smoke test of issue 9: a WebSocket client through nginx sees an edit made over REST through nginx."""
    async with open_topology(database_url, redis_url, tmp_path, balance="ip_hash") as topology:
        async with client(topology.proxy_url) as http:
            alice, bob = await new_user(http), await new_user(http)
            pid = await new_project(http, alice, (bob, "member"))
            async with open_ws(topology.proxy_url, bob.token) as conn:  # the upgrade goes through nginx
                base = (await conn.subscribe(pid))["seq"]
                task = await rest_task(http, alice, pid, "through nginx")
                event = await conn.expect("event", project_id=pid, seq=base + 1)
                assert event["kind"] == "task.created" and event["actor_id"] == alice.id
                assert task["id"] in str(event["data"]) and task["version"] == base + 1
                # An op over the socket, acknowledged after commit, through the proxy both ways.
                ack = await conn.op(pid, {"kind": "task.update", "task_id": task["id"], "fields": {"title": "renamed"}})
                assert ack["type"] == "ack" and ack["seq"] == base + 2, ack
                got = await http.get(f"/api/v1/tasks/{task['id']}", headers=alice.auth)
                assert got.status_code == 200 and got.json()["title"] == "renamed"


async def test_nginx_passes_the_client_address_and_request_id(
    database_url: str, redis_url: str, tmp_path: Path,
) -> None:
    async with open_topology(database_url, redis_url, tmp_path, balance="ip_hash") as topology:
        async with client(topology.proxy_url) as http:
            user = await new_user(http)
            # nginx appends the peer (127.0.0.1, trusted) to the client's X-Forwarded-For;
            # the node takes the rightmost untrusted hop as the client.
            address = http.headers["X-Forwarded-For"]
            tokens = (await http.post("/api/v1/auth/login",
                                      json={"email": user.email, "password": "correct horse battery staple"})).json()
            sessions = await http.get("/api/v1/auth/sessions", headers=bearer(tokens["access_token"]))
            assert sessions.status_code == 200, sessions.text
            [current] = [s for s in sessions.json()["data"] if s["current"]]
            assert current["ip_address"] == address

            # The client's request id reaches the node (which answers with it) ...
            mine = await http.get("/api/v1/ping", headers={"X-Request-ID": "smoke-request-1"})
            assert mine.headers["X-Request-ID"] == "smoke-request-1"
            # ... and without one, nginx makes one (32 hex digits; a node's own has 16).
            theirs = await http.get("/api/v1/ping")
            assert re.fullmatch(r"[0-9a-f]{32}", theirs.headers["X-Request-ID"]), theirs.headers
            assert theirs.headers["X-Request-ID"] in topology.nginx_log.read_text()

            # Metrics are not served at the public edge.
            assert (await http.get("/metrics")).status_code == 404


async def test_nginx_spreads_requests_over_both_nodes_and_survives_one_dying(
    database_url: str, redis_url: str, tmp_path: Path,
) -> None:
    """deploy/nginx.conf's own balancing (least_conn), unchanged."""
    async with open_topology(database_url, redis_url, tmp_path) as topology:
        first, second = topology.nodes
        async with client(topology.proxy_url) as http:
            for _ in range(20):
                assert (await http.get("/api/v1/ping")).status_code == 200
            served = [requests_counted(await scrape(node), "/api/v1/ping") for node in topology.nodes]
            assert sum(served) == 20 and min(served) > 0, served

            second.kill()
            with trio.fail_after(STOP_DEADLINE_S):
                await second.process.wait()
            statuses = [(await http.get("/api/v1/ping")).status_code for _ in range(10)]
            assert statuses == [200] * 10  # refused connections are retried on the other node
            user = await new_user(http)  # writes too (a POST that never reached a node is safe to retry)
            assert (await http.get("/api/v1/users/me", headers=user.auth)).status_code == 200
        assert requests_counted(await scrape(first), "/api/v1/ping") >= served[0] + 10


async def test_live_nodes_expose_every_metric_the_dashboard_and_alerts_use(
    database_url: str, redis_url: str, tmp_path: Path,
) -> None:
    async with open_topology(database_url, redis_url, tmp_path, balance="ip_hash") as topology:
        async with client(topology.proxy_url) as http:
            alice = await new_user(http)
            pid = await new_project(http, alice)
            async with open_ws(topology.proxy_url, alice.token) as conn:
                await conn.subscribe(pid)
                await rest_task(http, alice, pid, "for the histograms")
                await conn.expect("event", project_id=pid)
                exposed = set()
                for node in topology.nodes:
                    exposed |= exposed_metrics(await scrape(node))
        missing = sorted(referenced_metrics() - exposed)
        assert not missing, f"used by deploy/grafana or deploy/prometheus but not exposed by a node: {missing}"


async def test_the_image_healthcheck_command_against_a_live_node(
    database_url: str, redis_url: str, tmp_path: Path,
) -> None:
    """The Dockerfile's HEALTHCHECK, run as Docker would run it (the interpreter, COLLAB_PORT from the env)."""
    command = healthcheck_command()
    command[0] = sys.executable if command[0] == "python" else command[0]
    async with open_topology(database_url, redis_url, tmp_path) as topology:
        node = topology.nodes[0]
        healthy = await trio.run_process(command, env={**os.environ, "COLLAB_PORT": str(node.port)},
                                         check=False, capture_stderr=True)
        assert healthy.returncode == 0, healthy.stderr
        node.kill()
        with trio.fail_after(STOP_DEADLINE_S):
            await node.process.wait()
        down = await trio.run_process(command, env={**os.environ, "COLLAB_PORT": str(node.port)},
                                      check=False, capture_stderr=True)
        assert down.returncode != 0


# --- across nodes (issue 8) --------------------------------------------------------------------

async def test_an_edit_on_one_node_reaches_a_socket_on_the_other(
    database_url: str, redis_url: str, tmp_path: Path,
) -> None:
    """Bypasses nginx on purpose: REST on collab-1, the WebSocket on collab-2."""
    async with open_topology(database_url, redis_url, tmp_path) as topology:
        writer_node, reader_node = topology.nodes
        async with client(writer_node.base_url) as http:
            alice, bob = await new_user(http), await new_user(http)
            pid = await new_project(http, alice, (bob, "member"))
            # Both nodes sign with the same JWT secret: collab-1's token opens a socket on collab-2.
            async with open_ws(reader_node.base_url, bob.token) as conn:
                base = (await conn.subscribe(pid))["seq"]
                task = await rest_task(http, alice, pid, "made on collab-1")
                try:
                    event = await conn.expect("event", CROSS_NODE_WAIT_S, project_id=pid, seq=base + 1)
                except (trio.TooSlowError, Closed) as exc:
                    pytest.fail(f"collab-2's subscriber did not get collab-1's event: {exc!r}")
                assert event["kind"] == "task.created" and task["id"] in str(event["data"])
