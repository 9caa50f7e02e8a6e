"""HTTP hygiene, end to end: request ids, CORS, security headers, gzip, the handler deadline."""

from __future__ import annotations

import gzip
import io
import logging
import uuid

import httpx
import orjson
import trio
from quart import Response
from quart_trio import QuartTrio

from collab.config import Settings
from collab.http.middleware import API_CSP, _install_deadline
from collab.http.problems import install_problem_handlers
from collab.logs import JsonFormatter, _ContextFilter, request_id_var
from tests.conftest import start_server
from tests.helpers import bearer, signup

ORIGIN = "https://board.example.com"


async def test_request_id_is_echoed_or_made_and_names_the_problem(client: httpx.AsyncClient) -> None:
    mine = await client.get("/api/v1/ping", headers={"X-Request-ID": "trace-42.a:b"})
    assert mine.headers["X-Request-ID"] == "trace-42.a:b"
    made = await client.get("/api/v1/ping")
    assert len(made.headers["X-Request-ID"]) == 16
    for bad in ("x" * 129, "has space", "quote\"d", "ünï"):
        answer = await client.get("/api/v1/ping", headers={"X-Request-ID": bad.encode("utf-8")})  # type: ignore[dict-item]
        assert answer.headers["X-Request-ID"] != bad and len(answer.headers["X-Request-ID"]) == 16
    problem = await client.get("/api/v1/tasks", headers={"X-Request-ID": "req-for-401"})
    assert problem.status_code == 401 and problem.json()["request_id"] == "req-for-401"


async def test_every_log_line_of_a_request_carries_its_id_as_json(client: httpx.AsyncClient) -> None:
    """JSON lines (the production format) through the same filter the queue handler uses."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        _, tokens = await signup(client)
        rid = "logged-" + uuid.uuid4().hex[:8]
        response = await client.post(
            "/api/v1/auth/logout", headers=bearer(tokens["access_token"]) | {"X-Request-ID": rid},
        )
        assert response.status_code == 204
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    server_lines = [d for d in lines if d["logger"].startswith("collab")]
    access = [d for d in server_lines if d["logger"] == "collab.access" and d.get("request_id") == rid]
    assert len(access) == 1, server_lines
    assert access[0]["route"] == "/api/v1/auth/logout" and access[0]["status"] == 204
    assert access[0]["method"] == "POST" and access[0]["user_id"] and access[0]["duration_ms"] >= 0
    assert request_id_var.get() is None  # the test's own context was never touched


async def test_access_log_errors_only_or_off(settings: Settings) -> None:
    """COLLAB_ACCESS_LOG=errors logs only statuses >= 400; off logs none; metrics count them all."""
    class Keep(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    for policy, expected in (("errors", {404}), ("off", set())):
        handler = Keep()
        access = logging.getLogger("collab.access")
        previous = access.level
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        try:
            async with start_server(settings.replace(access_log=policy)) as running:
                async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
                    assert (await http.get("/api/v1/ping")).status_code == 200
                    assert (await http.get("/api/v1/no-such-route")).status_code == 404
        finally:
            access.removeHandler(handler)
            access.setLevel(previous)
        assert {getattr(r, "status", None) for r in handler.records} == expected, (policy, handler.records)


async def test_cors_preflight_for_an_allowed_origin(settings: Settings) -> None:
    async with start_server(settings.replace(cors_origins=(ORIGIN,))) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
            preflight = await http.options("/api/v1/tasks", headers={
                "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
            })
            assert preflight.status_code == 200, preflight.text  # no token asked of a preflight
            assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
            assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
            allowed = {h.strip().lower() for h in preflight.headers["Access-Control-Allow-Headers"].split(",")}
            assert {"authorization", "content-type", "idempotency-key"} <= allowed
            assert preflight.headers["Access-Control-Max-Age"] == "600"
            assert "Access-Control-Allow-Credentials" not in preflight.headers or \
                preflight.headers["Access-Control-Allow-Credentials"] == "false"
            # The actual request: errors are readable cross-origin too, with the headers a client needs.
            actual = await http.get("/api/v1/tasks", headers={"Origin": ORIGIN})
            assert actual.status_code == 401
            assert actual.headers["Access-Control-Allow-Origin"] == ORIGIN
            exposed = {h.strip().lower() for h in actual.headers["Access-Control-Expose-Headers"].split(",")}
            assert {"x-request-id", "retry-after", "ratelimit", "etag"} <= exposed
            assert "Origin" in actual.headers["Vary"]


async def test_cors_refuses_other_origins(settings: Settings) -> None:
    async with start_server(settings.replace(cors_origins=(ORIGIN,))) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
            for origin in ("https://evil.example.com", ORIGIN + ".evil.com", "null"):
                preflight = await http.options("/api/v1/tasks", headers={
                    "Origin": origin, "Access-Control-Request-Method": "DELETE",
                })
                assert "Access-Control-Allow-Origin" not in preflight.headers, origin
                assert "Access-Control-Allow-Methods" not in preflight.headers, origin
                simple = await http.get("/api/v1/ping", headers={"Origin": origin})
                assert "Access-Control-Allow-Origin" not in simple.headers, origin


async def test_no_cors_without_a_configured_origin(client: httpx.AsyncClient) -> None:
    preflight = await client.options(
        "/api/v1/tasks", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"},
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers


async def test_security_headers(client: httpx.AsyncClient) -> None:
    api = await client.get("/api/v1/ping")
    assert api.headers["Content-Security-Policy"] == API_CSP
    assert api.headers["X-Content-Type-Options"] == "nosniff"
    assert api.headers["X-Frame-Options"] == "DENY"
    assert api.headers["Referrer-Policy"] == "no-referrer"
    docs = await client.get("/docs")
    policy = docs.headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]  # the inline script goes by hash
    assert "'sha256-" in policy and "frame-ancestors 'none'" in policy


async def test_large_json_lists_are_gzipped_when_accepted(settings: Settings) -> None:
    async with start_server(settings.replace(gzip_min_bytes=2048)) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
            _, tokens = await signup(http)
            auth = bearer(tokens["access_token"])
            for i in range(12):
                assert (await http.post("/api/v1/projects", headers=auth,
                                        json={"name": f"Project {i}", "description": "d" * 200})).status_code == 201
            plain = await http.get("/api/v1/projects?limit=100", headers=auth | {"Accept-Encoding": "identity"})
            assert "Content-Encoding" not in plain.headers and "Accept-Encoding" in plain.headers["Vary"]
            packed = await http.get("/api/v1/projects?limit=100", headers=auth | {"Accept-Encoding": "gzip"})
            assert packed.headers["Content-Encoding"] == "gzip"
            assert int(packed.headers["Content-Length"]) < len(plain.content) / 3
            assert packed.json() == plain.json()  # httpx decodes it
            small = await http.get("/api/v1/ping", headers={"Accept-Encoding": "gzip"})
            assert "Content-Encoding" not in small.headers
            one = (await http.get("/api/v1/projects", headers=auth)).json()["data"][0]["id"]
            tagged = await http.get(f"/api/v1/projects/{one}", headers=auth | {"Accept-Encoding": "gzip"})
            assert "ETag" in tagged.headers and "Content-Encoding" not in tagged.headers


async def test_a_handler_past_its_deadline_answers_503() -> None:
    app = QuartTrio("deadline")
    install_problem_handlers(app)
    _install_deadline(app, 1.0, 0.0)

    @app.get("/slow")
    async def slow() -> Response:
        await trio.sleep(30)
        return Response("late")

    @app.get("/quick")
    async def quick() -> Response:
        return Response("fine")

    client = app.test_client()
    with trio.fail_after(10):
        answer = await client.get("/slow")
    assert answer.status_code == 503
    assert (await answer.get_json())["code"] == "unavailable"
    assert (await client.get("/quick")).status_code == 200


def test_gzip_round_trip_is_stable() -> None:
    from collab.http.middleware import _gzip

    data = b'{"data": []}' * 100
    assert gzip.decompress(_gzip(data)) == data and _gzip(data) == _gzip(data)
