"""HTTP error contract, end to end: problem+json bodies, limits, request ids,
security headers, and keep-alive connections that survive early answers.

Everything runs against a real server on a random port (``server``/``client``
fixtures or ``start_server``). The keep-alive tests speak HTTP/1.1 by hand over
a raw trio TCP stream so that the test, not a client library, decides which
connection each request goes over (STACK.md trap 9).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
import trio
import trio.testing

from tests.conftest import RunningServer, start_server, test_settings

PROBLEM_JSON = "application/problem+json"
SMALL_CAP_BYTES = 2048
RAW_DEADLINE_S = 5
GENERATED_REQUEST_ID = re.compile(r"^[0-9a-f]{16}$")


def assert_problem(response: httpx.Response, status: int, code: str) -> dict:
    """The response is an RFC 9457 problem document with our extension members."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0].strip() == PROBLEM_JSON
    doc = response.json()
    assert doc["status"] == status
    assert doc["code"] == code
    assert doc["type"].endswith("/" + code)
    assert isinstance(doc["title"], str) and doc["title"]
    assert isinstance(doc["detail"], str) and doc["detail"]
    assert isinstance(doc["retryable"], bool)
    assert doc["request_id"] == response.headers["x-request-id"]
    return doc


# --- problem documents -------------------------------------------------------

async def test_unknown_route_is_a_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/no-such-thing")
    doc = assert_problem(response, 404, "not_found")
    assert doc["retryable"] is False


async def test_wrong_method_is_a_405_problem_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/auth/login")
    assert_problem(response, 405, "method_not_allowed")
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert "POST" in allowed
    assert "GET" not in allowed


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/login", content=b'{"email": "a@example.com", "password":',
        headers={"Content-Type": "application/json"},
    )
    assert_problem(response, 400, "malformed_json")


async def test_empty_json_body_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/auth/login", content=b"", headers={"Content-Type": "application/json"})
    assert_problem(response, 400, "malformed_json")


async def test_non_json_content_type_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/login", content=b'{"email": "a@example.com", "password": "x"}',
        headers={"Content-Type": "text/plain"},
    )
    assert_problem(response, 415, "unsupported_media_type")


async def test_json_array_body_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/auth/login", json=[{"email": "a@example.com", "password": "x"}])
    doc = assert_problem(response, 422, "invalid")
    assert [e["loc"] for e in doc["errors"]] == [[]]


async def test_wrong_shape_is_422_listing_every_offending_field(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/auth/login", json={"email": 5, "password": ["not", "a", "string"], "role": "admin"},
    )
    doc = assert_problem(response, 422, "invalid")
    locs = sorted(tuple(e["loc"]) for e in doc["errors"])
    assert locs == [("email",), ("password",), ("role",)]
    for error in doc["errors"]:
        # loc, message and kind only: input values are never echoed (they may be secrets).
        assert set(error) == {"loc", "message", "type"}
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["type"], str) and error["type"]
    assert "extra_forbidden" in {e["type"] for e in doc["errors"]}


async def test_missing_fields_are_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/auth/login", json={})
    doc = assert_problem(response, 422, "invalid")
    assert sorted(tuple(e["loc"]) for e in doc["errors"]) == [("email",), ("password",)]
    assert {e["type"] for e in doc["errors"]} == {"missing"}


# --- body size cap -------------------------------------------------------------

@pytest.fixture
async def small_cap_server(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    async with start_server(test_settings(database_url, tmp_path, max_body_bytes=SMALL_CAP_BYTES)) as running:
        yield running


def oversized_login_body() -> bytes:
    body = orjson.dumps({"email": "a@example.com", "password": "p" * (2 * SMALL_CAP_BYTES)})
    assert len(body) > SMALL_CAP_BYTES
    return body


async def test_body_over_the_cap_is_413_and_the_server_keeps_serving(small_cap_server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=small_cap_server.base_url, timeout=15) as http:
        response = await http.post(
            "/api/v1/auth/login", content=oversized_login_body(), headers={"Content-Type": "application/json"},
        )
        assert_problem(response, 413, "payload_too_large")
        assert response.headers["connection"].lower() == "close"

        after = await http.get("/api/v1/ping")
        assert after.status_code == 200
        assert after.json() == {"pong": True}


async def test_body_just_under_the_cap_is_read(small_cap_server: RunningServer) -> None:
    body = orjson.dumps({"email": "nobody@example.com", "password": "p" * (SMALL_CAP_BYTES - 100)})
    assert len(body) <= SMALL_CAP_BYTES
    async with httpx.AsyncClient(base_url=small_cap_server.base_url, timeout=15) as http:
        response = await http.post("/api/v1/auth/login", content=body, headers={"Content-Type": "application/json"})
    # Read and validated, then refused for what it says, not for its size.
    assert response.status_code in (401, 422), response.text
    assert response.json()["code"] != "payload_too_large"


# --- request ids -----------------------------------------------------------------

async def test_client_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    request_id = "client-req_42.abc:7"
    ok = await client.get("/api/v1/ping", headers={"X-Request-ID": request_id})
    assert ok.status_code == 200
    assert ok.headers["x-request-id"] == request_id

    missing = await client.get("/api/v1/nope", headers={"X-Request-ID": request_id})
    doc = assert_problem(missing, 404, "not_found")
    assert doc["request_id"] == request_id


@pytest.mark.parametrize("bad_id", ["x" * 300, "has spaces in it", "semi;colon", ""])
async def test_invalid_request_id_is_replaced(client: httpx.AsyncClient, bad_id: str) -> None:
    response = await client.get("/api/v1/nope", headers={"X-Request-ID": bad_id})
    doc = assert_problem(response, 404, "not_found")
    generated = response.headers["x-request-id"]
    assert generated != bad_id
    assert GENERATED_REQUEST_ID.match(generated), generated
    assert doc["request_id"] == generated


async def test_request_ids_are_generated_per_request(client: httpx.AsyncClient) -> None:
    first = await client.get("/api/v1/ping")
    second = await client.get("/api/v1/ping")
    ids = {first.headers["x-request-id"], second.headers["x-request-id"]}
    assert len(ids) == 2
    assert all(GENERATED_REQUEST_ID.match(i) for i in ids)


# --- headers ------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [("GET", "/api/v1/ping"), ("GET", "/nope"), ("GET", "/api/v1/auth/login")])
async def test_security_headers_and_no_server_header(client: httpx.AsyncClient, method: str, path: str) -> None:
    response = await client.request(method, path)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "server" not in response.headers


# --- keep-alive (STACK.md trap 9), raw HTTP/1.1 ------------------------------------------

@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return orjson.loads(self.body)


@dataclass
class RawConnection:
    """One HTTP/1.1 connection we write by hand and parse ourselves."""

    stream: trio.SocketStream
    host: str
    buffer: bytearray = field(default_factory=bytearray)

    @classmethod
    async def open(cls, base_url: str) -> "RawConnection":
        parts = urlsplit(base_url)
        assert parts.hostname is not None and parts.port is not None
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        return cls(stream, f"{parts.hostname}:{parts.port}")

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    def head(self, method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _fill(self) -> bool:
        chunk = await self.stream.receive_some(65536)
        self.buffer += chunk
        return bool(chunk)

    async def read_response(self) -> RawResponse:
        while b"\r\n\r\n" not in self.buffer:
            if not await self._fill():
                raise AssertionError(f"connection closed before a response head; got {bytes(self.buffer)!r}")
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        self.buffer = bytearray(rest)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        version, status, *_ = status_line.split(" ")
        assert version == "HTTP/1.1", status_line
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._read_chunked()
        else:
            length = int(headers.get("content-length", "0"))
            while len(self.buffer) < length:
                if not await self._fill():
                    raise AssertionError("connection closed in the middle of a response body")
            body, self.buffer = bytes(self.buffer[:length]), self.buffer[length:]
        return RawResponse(int(status), headers, body)

    async def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            while b"\r\n" not in self.buffer:
                if not await self._fill():
                    raise AssertionError("connection closed in a chunked body")
            size_line, _, rest = bytes(self.buffer).partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                if not await self._fill():
                    raise AssertionError("connection closed in a chunk")
                _, _, rest = bytes(self.buffer).partition(b"\r\n")
            body += rest[:size]
            self.buffer = bytearray(rest[size + 2:])
            if size == 0:
                return bytes(body)

    async def assert_closed_by_peer(self) -> None:
        """The server closes the connection: EOF (or a reset) with nothing more to read."""
        assert not self.buffer, bytes(self.buffer)
        try:
            leftover = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            return
        assert leftover == b"", leftover

    async def aclose(self) -> None:
        await self.stream.aclose()


async def test_early_401_with_a_body_keeps_the_connection_usable(server: RunningServer) -> None:
    body = orjson.dumps({"all": "sessions", "padding": "z" * 512})
    with trio.fail_after(RAW_DEADLINE_S):
        conn = await RawConnection.open(server.base_url)
        try:
            await conn.send(conn.head("POST", "/api/v1/auth/logout", {
                "Content-Type": "application/json", "Content-Length": str(len(body)),
            }))
            # Let the server see the head (and answer, if it answers early) before the body arrives.
            await trio.testing.wait_all_tasks_blocked(cushion=0.002)
            await conn.send(body)
            first = await conn.read_response()
            assert first.status == 401
            assert first.headers["content-type"].startswith(PROBLEM_JSON)
            assert first.json()["code"] == "unauthenticated"  # type: ignore[index]
            assert first.headers["www-authenticate"].startswith("Bearer")
            assert first.headers.get("connection", "").lower() != "close"

            await conn.send(conn.head("GET", "/api/v1/ping"))
            second = await conn.read_response()
            assert second.status == 200
            assert second.json() == {"pong": True}
        finally:
            await conn.aclose()


async def test_early_401_with_a_chunked_body_keeps_the_connection_usable(server: RunningServer) -> None:
    payload = orjson.dumps({"padding": "z" * 300})
    with trio.fail_after(RAW_DEADLINE_S):
        conn = await RawConnection.open(server.base_url)
        try:
            await conn.send(conn.head("POST", "/api/v1/auth/logout", {
                "Content-Type": "application/json", "Transfer-Encoding": "chunked",
            }))
            await trio.testing.wait_all_tasks_blocked(cushion=0.002)
            await conn.send(b"%x\r\n%s\r\n" % (len(payload), payload))
            await trio.testing.wait_all_tasks_blocked(cushion=0.002)
            await conn.send(b"0\r\n\r\n")
            first = await conn.read_response()
            assert first.status == 401

            await conn.send(conn.head("GET", "/api/v1/ping"))
            second = await conn.read_response()
            assert second.status == 200
            assert second.json() == {"pong": True}
        finally:
            await conn.aclose()


async def test_declared_length_over_the_cap_is_413_and_closes(small_cap_server: RunningServer) -> None:
    declared = 10 * SMALL_CAP_BYTES
    with trio.fail_after(RAW_DEADLINE_S):
        conn = await RawConnection.open(small_cap_server.base_url)
        try:
            await conn.send(conn.head("POST", "/api/v1/auth/login", {
                "Content-Type": "application/json", "Content-Length": str(declared),
            }) + b'{"email": "a@example.com", "password": "')
            response = await conn.read_response()
            assert response.status == 413
            assert response.json()["code"] == "payload_too_large"  # type: ignore[index]
            # The server promises not to reuse a connection whose body it did not read.
            assert response.headers["connection"].lower() == "close"
            await conn.assert_closed_by_peer()
        finally:
            await conn.aclose()

        # ... and a new connection is served.
        fresh = await RawConnection.open(small_cap_server.base_url)
        try:
            await fresh.send(fresh.head("GET", "/api/v1/ping"))
            after = await fresh.read_response()
            assert after.status == 200
            assert after.json() == {"pong": True}
        finally:
            await fresh.aclose()


async def test_chunked_body_over_the_cap_is_413_and_closes(small_cap_server: RunningServer) -> None:
    chunk = b"x" * 1024
    with trio.fail_after(RAW_DEADLINE_S):
        conn = await RawConnection.open(small_cap_server.base_url)
        try:
            await conn.send(conn.head("POST", "/api/v1/auth/login", {
                "Content-Type": "application/json", "Transfer-Encoding": "chunked",
            }) + (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 3 + b"0\r\n\r\n")
            response = await conn.read_response()
            assert response.status == 413
            assert response.json()["code"] == "payload_too_large"  # type: ignore[index]
            assert response.headers["connection"].lower() == "close"
            await conn.assert_closed_by_peer()
        finally:
            await conn.aclose()
