"""End-to-end: every authenticated route refuses every forged or dead token.

The route list comes from the application itself, so a route added later is
covered without touching this file. Each forged token differs from a token
that would work in exactly one respect (``test_control_token_is_accepted...``
proves the base claims are good), so a missing check shows up as a non-401.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import time
import uuid
import warnings
from typing import Any

import jwt
import pytest
import trio

from collab.http.app import create_app
from collab.http.context import AppServices
from tests.conftest import TEST_JWT_SECRET
from tests.helpers import STRONG_PASSWORD, bearer, login, signup

PUBLIC_PATHS = frozenset({
    "/health", "/api/v1/health", "/api/v1/ping", "/ready",
    "/api/v1/auth/register", "/api/v1/auth/login", "/api/v1/auth/refresh",
    "/openapi.json", "/docs",  # the API description is public by design (collab.http.openapi)
    "/",  # the board's page: static, no data (collab.http.routes_web)
})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_PATH_VARIABLE = re.compile(r"<(?:[^<>:]+:)?[^<>]+>")
_PATH_VARIABLE_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def authenticated_routes(settings: Any) -> list[tuple[str, str]]:
    """(method, concrete path) for every non-public route of the app, ids filled with uuid4."""
    # Only the wiring is needed: every service the dataclass requires may be None.
    required = {
        f.name: None for f in dataclasses.fields(AppServices)
        if f.name != "settings" and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    app = create_app(AppServices(settings=settings, **required))  # type: ignore[arg-type]
    routes: list[tuple[str, str]] = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule.startswith("/static") or rule.rule in PUBLIC_PATHS:
            continue
        if getattr(rule, "websocket", False):
            continue
        path = _PATH_VARIABLE.sub(lambda _: str(uuid.uuid4()), rule.rule)
        for method in sorted(rule.methods - {"OPTIONS"}):
            routes.append((method, path))
    return routes


def b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def sign(claims: dict[str, Any], *, algorithm: str = "HS256", secret: bytes = TEST_JWT_SECRET) -> str:
    with warnings.catch_warnings():
        # Forging HS512 with a 52-byte key is the point, not a mistake.
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(claims, secret, algorithm=algorithm)


def payload_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


async def send(client, method: str, path: str, authorization: str | None):
    headers = {} if authorization is None else {"Authorization": authorization}
    return await client.request(method, path, headers=headers, json={} if method in BODY_METHODS else None)


def unauthenticated_problem(response, method: str) -> str | None:
    """None when ``response`` is a proper 401 ``unauthenticated``; else what is wrong with it."""
    if response.status_code != 401:
        return f"status {response.status_code}: {response.text[:160]}"
    if not response.headers.get("WWW-Authenticate", "").startswith("Bearer"):
        return "no WWW-Authenticate: Bearer header"
    if method == "HEAD":  # HEAD answers carry no body
        return None
    if not response.headers.get("content-type", "").startswith("application/problem+json"):
        return f"content-type {response.headers.get('content-type')}"
    if response.json().get("code") != "unauthenticated":
        return f"code {response.json().get('code')}"
    return None


@pytest.fixture
async def victim(client, server) -> dict[str, Any]:
    """A real user with live sessions, a second user, a dead session, and good base claims."""
    user, tokens = await signup(client)
    other, other_tokens = await signup(client)
    dead = await login(client, user["email"], STRONG_PASSWORD)
    response = await client.post("/api/v1/auth/logout", headers=bearer(dead["access_token"]))
    assert response.status_code == 204
    now = int(time.time())
    base = {
        "iss": server.settings.jwt_issuer, "aud": server.settings.jwt_audience,
        "sub": user["id"], "sid": tokens["session_id"], "jti": uuid.uuid4().hex,
        "typ": "access", "iat": now - 5, "exp": now + 600,
    }
    return {"user": user, "tokens": tokens, "other": other, "other_tokens": other_tokens, "dead": dead, "base": base}


def forged(kind: str, v: dict[str, Any]) -> str | None:
    """The Authorization header value for one attack (None: no header at all)."""
    base = v["base"]
    now = int(time.time())
    if kind == "no-header":
        return None
    if kind == "bearer-empty":
        # httpx refuses to send "Bearer " (trailing whitespace); HTTP parsers strip it anyway,
        # so this is what the server receives. The exact bytes are sent by a raw-socket test below.
        return "Bearer"
    if kind == "basic":
        return "Basic " + base64.b64encode(f"{v['user']['email']}:{STRONG_PASSWORD}".encode()).decode()
    if kind == "alg-none":
        return "Bearer " + b64({"alg": "none", "typ": "JWT"}) + "." + b64(base) + "."
    if kind == "alg-none-with-signature":
        good = sign(base)
        return "Bearer " + b64({"alg": "none", "typ": "JWT"}) + "." + b64(base) + "." + good.split(".")[2]
    if kind == "hs512-right-secret":
        return "Bearer " + sign(base, algorithm="HS512")
    if kind == "wrong-secret":
        return "Bearer " + sign(base, secret=b"another-secret-" + b"y" * 40)
    if kind == "tampered-payload":
        # The victim's real header and signature around the other user's real payload.
        header, _, signature = v["tokens"]["access_token"].split(".")
        other_payload = v["other_tokens"]["access_token"].split(".")[1]
        return f"Bearer {header}.{other_payload}.{signature}"
    if kind == "wrong-iss":
        return "Bearer " + sign({**base, "iss": "someone-else"})
    if kind == "wrong-aud":
        return "Bearer " + sign({**base, "aud": "another-api"})
    if kind == "expired":
        return "Bearer " + sign({**base, "iat": now - 3600, "exp": now - 60})
    if kind == "issued-in-future":
        return "Bearer " + sign({**base, "iat": now + 3600, "exp": now + 7200})
    if kind == "refresh-as-access":
        return "Bearer " + v["tokens"]["refresh_token"]
    if kind == "refresh-typ-claim":
        return "Bearer " + sign({**base, "typ": "refresh", "gen": 0})
    if kind == "unknown-session":
        return "Bearer " + sign({**base, "sid": str(uuid.uuid4())})
    if kind == "session-of-another-user":
        return "Bearer " + sign({**base, "sid": v["other_tokens"]["session_id"]})
    if kind == "logged-out-session":
        return "Bearer " + v["dead"]["access_token"]
    if kind == "garbage":
        return "Bearer not.a-jwt.at-all"
    if kind == "garbage-no-dots":
        return "Bearer " + "A" * 300
    raise AssertionError(kind)


ATTACKS = [
    "no-header", "bearer-empty", "basic", "alg-none", "alg-none-with-signature", "hs512-right-secret",
    "wrong-secret", "tampered-payload", "wrong-iss", "wrong-aud", "expired", "issued-in-future",
    "refresh-as-access", "refresh-typ-claim", "unknown-session", "session-of-another-user",
    "logged-out-session", "garbage", "garbage-no-dots",
]


def test_route_list_is_not_vacuous(settings):
    routes = authenticated_routes(settings)
    assert len(routes) >= 10, routes
    assert ("GET", "/api/v1/users/me") in routes
    assert ("PATCH", "/api/v1/users/me") in routes
    assert ("POST", "/api/v1/auth/logout") in routes
    assert not any(path in PUBLIC_PATHS for _, path in routes)
    assert not any("<" in path for _, path in routes)


async def test_control_token_is_accepted_so_forgeries_differ_in_one_respect(client, victim):
    good = "Bearer " + sign(victim["base"])
    response = await client.get("/api/v1/users/me", headers={"Authorization": good})
    assert response.status_code == 200, response.text
    assert response.json()["id"] == victim["user"]["id"]
    # And the real, untouched tokens still work.
    response = await client.get("/api/v1/users/me", headers=bearer(victim["other_tokens"]["access_token"]))
    assert response.json()["id"] == victim["other"]["id"]


async def test_every_route_accepts_a_valid_token(client, settings):
    """With a good token no authenticated route answers 401 (so the 401s below mean something)."""
    for method, path in authenticated_routes(settings):
        _, tokens = await signup(client)  # a session of its own: logout or password change may end it
        response = await send(client, method, path, "Bearer " + tokens["access_token"])
        assert response.status_code != 401, f"{method} {path} -> {response.status_code} {response.text[:200]}"


def content_length(received: bytes) -> int:
    head = received.partition(b"\r\n\r\n")[0].lower()
    match = re.search(rb"\r\ncontent-length: *(\d+)", head)
    assert match, head
    return int(match.group(1))


async def test_raw_empty_bearer_header_is_401(server):
    """The exact bytes ``Authorization: Bearer `` (which httpx will not send) on a raw connection."""
    host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(
            b"GET /api/v1/users/me HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer \r\nConnection: close\r\n\r\n"
        )
        # Read by Content-Length: hypercorn 0.18 keeps the connection open despite
        # "Connection: close" (pgjones/hypercorn#330), so EOF would only come at its read timeout.
        received = b""
        while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < content_length(received):
            chunk = await stream.receive_some(65536)
            assert chunk, received
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 "), head
    assert b"\r\nwww-authenticate: bearer" in head.lower(), head
    assert json.loads(body)["code"] == "unauthenticated"


@pytest.mark.parametrize("attack", ATTACKS)
async def test_forged_tokens_get_401_on_every_authenticated_route(client, settings, victim, attack):
    routes = authenticated_routes(settings)
    assert ("GET", "/api/v1/users/me") in routes
    authorization = forged(attack, victim)
    wrong = []
    for method, path in routes:
        response = await send(client, method, path, authorization)
        problem = unauthenticated_problem(response, method)
        if problem is not None:
            wrong.append(f"{method} {_PATH_VARIABLE_UUID.sub('<id>', path)}: {problem}")
    assert not wrong, f"{attack}: " + "\n".join(wrong)
    # No forgery changed anything: the victim's real session is alive and untouched.
    me = await client.get("/api/v1/users/me", headers=bearer(victim["tokens"]["access_token"]))
    assert me.status_code == 200 and me.json()["first_name"] == victim["user"]["first_name"]
