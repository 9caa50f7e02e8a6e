"""Prometheus metrics, end to end: who may scrape, what is there, and that it moves with traffic."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from collab.config import Settings
from tests.conftest import start_server
from tests.e2e.ws_helpers import create_op, open_ws
from tests.helpers import assert_problem, bearer, login, make_admin, register, signup

SCRAPE_TOKEN = "scrape-token-" + "s" * 24


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_who_may_scrape_the_main_port(settings: Settings) -> None:
    async with start_server(settings.replace(metrics_token=SCRAPE_TOKEN)) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
            assert_problem(await http.get("/metrics"), 401, "unauthenticated")
            assert_problem(await http.get("/metrics", headers=bearer("wrong-" + SCRAPE_TOKEN)), 401, "unauthenticated")
            _, tokens = await signup(http)
            assert_problem(await http.get("/metrics", headers=bearer(tokens["access_token"])), 403, "forbidden")
            scraped = await http.get("/metrics", headers=bearer(SCRAPE_TOKEN))
            assert scraped.status_code == 200, scraped.text
            assert scraped.headers["content-type"].startswith("text/plain")
            assert "collab_http_requests_total" in scraped.text
            admin = await register(http)
            await make_admin(running.settings.database_url, admin["id"])
            admin_tokens = await login(http, admin["email"])
            assert (await http.get("/metrics", headers=bearer(admin_tokens["access_token"]))).status_code == 200


async def test_metrics_move_with_traffic_and_hold_no_user_data(settings: Settings) -> None:
    async with start_server(settings.replace(metrics_token=SCRAPE_TOKEN)) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
            scrape = bearer(SCRAPE_TOKEN)
            before = samples((await http.get("/metrics", headers=scrape)).text)
            user, tokens = await signup(http)
            auth = bearer(tokens["access_token"])
            project = (await http.post("/api/v1/projects", headers=auth, json={"name": "Measured"})).json()
            for i in range(3):
                created = await http.post(
                    "/api/v1/tasks", headers=auth, json={"project_id": project["id"], "title": f"T{i}"},
                )
                assert created.status_code == 201, created.text
            assert (await http.get(f"/api/v1/projects/{project['id']}", headers=auth)).status_code == 200
            async with open_ws(running.base_url, tokens["access_token"], how="header") as conn:
                await conn.subscribe(project["id"])
                ack = await conn.op(project["id"], create_op("over the socket"))
                assert ack["type"] == "ack", ack
                during = samples((await http.get("/metrics", headers=scrape)).text)
            after_text = (await http.get("/metrics", headers=scrape)).text
            after = samples(after_text)

    created_route = {"route": "/api/v1/tasks", "method": "POST", "status": "201"}
    assert value(after, "collab_http_requests_total", **created_route) - \
        value(before, "collab_http_requests_total", **created_route) == 3
    # Route templates, never raw paths: the project id is not a label.
    assert value(
        after, "collab_http_requests_total", route="/api/v1/projects/<project_id>", method="GET", status="200",
    ) >= 1
    assert value(after, "collab_http_request_duration_seconds_count", route="/api/v1/tasks", method="POST") >= 3
    # A batch (and a commit) per write at least: 3 tasks over REST, 1 over the socket.
    assert value(after, "collab_actor_batch_size_count") - value(before, "collab_actor_batch_size_count") >= 4
    assert value(after, "collab_actor_commit_seconds_count") >= 4
    assert value(after, "collab_actors_active") >= 1
    assert value(during, "collab_ws_connections") == 1 and value(after, "collab_ws_connections") == 0
    assert value(during, "collab_ws_subscriptions") == 1
    assert value(after, "collab_ws_frames_received_total") - value(before, "collab_ws_frames_received_total") >= 2
    assert value(after, "collab_ws_frames_sent_total") > value(before, "collab_ws_frames_sent_total")
    assert value(after, "collab_ratelimit_decisions_total", policy="rest-user", decision="allowed") >= 5
    assert value(after, "collab_ratelimit_decisions_total", policy="ws-messages", decision="allowed") >= 2
    assert value(after, "collab_ratelimit_backend", backend="memory") == 1
    assert ("collab_db_pool_connections", (("state", "in_use"),)) in after
    assert value(after, "collab_db_pool_max") == settings.db_pool_max
    assert value(after, "collab_ready") == 1
    assert "process_cpu_seconds_total" in after_text
    for private in (user["id"], user["email"], user["username"], project["id"], tokens["access_token"]):
        assert private not in after_text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_the_metrics_port_serves_metrics_only_without_auth(settings: Settings, tmp_path: Path) -> None:
    port = _free_port()
    async with start_server(settings.replace(metrics_port=port, metrics_host="127.0.0.1")) as running:
        async with httpx.AsyncClient(timeout=15) as http:
            scraped = await http.get(f"http://127.0.0.1:{port}/metrics")
            assert scraped.status_code == 200
            assert scraped.headers["content-type"].startswith("text/plain")
            assert "collab_ws_connections" in scraped.text
            assert (await http.get(f"http://127.0.0.1:{port}/api/v1/ping")).status_code == 404
            # The main port still wants a token.
            assert (await http.get(f"{running.base_url}/metrics")).status_code == 401


async def test_admin_metrics_show_the_garbage_collector(settings: Settings) -> None:
    async with start_server(settings.replace(gc_sweep_interval_s=0.2)) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
            admin = await register(http)
            await make_admin(running.settings.database_url, admin["id"])
            tokens = await login(http, admin["email"])
            figures: dict = {}
            for _ in range(50):  # the sweeper runs every 0.2 s: wait (bounded) for its first sweeps
                figures = (await http.get("/api/v1/admin/metrics", headers=bearer(tokens["access_token"]))).json()
                if figures["garbage_collector"]["sweeps"] >= 2:
                    break
                await trio.sleep(0.1)
            collector = figures["garbage_collector"]
            assert collector["sweep_interval_s"] == 0.2 and collector["sweeps"] >= 2
            assert collector["worst_sweep_pause_ms"] >= 0 and len(collector["collections"]) == 3
