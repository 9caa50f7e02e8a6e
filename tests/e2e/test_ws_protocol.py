"""WebSocket protocol v1 at /ws, end to end: handshake, auth, Origin, frames and their errors.

Real server, real sockets (trio_websocket); DESIGN.md §6 is the contract.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import httpx
import pytest

from collab.protocol.server_frames import CloseCode
from tests.conftest import start_server
from tests.e2e.test_log_hygiene import capture_logs, texts_of
from tests.e2e.ws_helpers import create_op, new_project, new_user, open_ws, upgrade_refused, ws_url

# Client-side loggers: trio-websocket logs the URL it connects to (query included).
CLIENT_LOGGERS = ("trio-websocket", "httpx", "httpcore")


# --- authentication -----------------------------------------------------------------------

async def test_auth_by_first_frame_and_welcome_fields(server, client):
    user = await new_user(client)
    async with open_ws(server.base_url) as conn:
        await conn.send({"type": "auth", "token": user.token})
        welcome = await conn.expect("welcome")
    assert welcome["protocol"] == 1
    assert welcome["user"]["id"] == user.id and welcome["user"]["username"] == user.username
    assert "email" not in welcome["user"] and "password_hash" not in welcome["user"]
    uuid.UUID(welcome["session_id"])
    limits = server.settings
    expected = {
        "max_message_bytes": limits.ws_max_message_bytes, "messages_per_s": limits.ws_messages_per_s,
        "idle_timeout_s": limits.ws_idle_timeout_s,
    }
    assert welcome["limits"] | expected == welcome["limits"], welcome["limits"]  # at least these, as configured


async def test_auth_by_authorization_header(server, client):
    user = await new_user(client)
    async with open_ws(server.base_url, user.token, how="header") as conn:
        assert conn.seen[0]["type"] == "welcome" and conn.seen[0]["user"]["id"] == user.id
        pong = await conn.ping("after-header-auth")
        assert pong == {"type": "pong", "id": "after-header-auth"}


async def test_auth_by_query_token_never_reaches_a_log_record(server, client):
    user = await new_user(client)
    signature = user.token.rsplit(".", 1)[1]
    with capture_logs() as captured:
        async with open_ws(server.base_url, user.token, how="query") as conn:
            assert conn.seen[0]["type"] == "welcome" and conn.seen[0]["user"]["id"] == user.id
            pid = await new_project(client, user)
            assert (await conn.subscribe(pid))["type"] == "subscribed"
            await conn.ping()
        # A bad token in the query string is not logged either.
        assert await upgrade_refused(ws_url(server.base_url, token=user.token[:-4] + "AAAA")) == 403
    server_records = [r for r in captured.records if not r.name.startswith(CLIENT_LOGGERS)]
    assert any(r.name == "collab.ws" for r in server_records), "the socket's open/close should be logged"
    for record in server_records:
        for text in texts_of(record):
            assert signature not in text, (record.name, record.getMessage())
            assert "token=" not in text, (record.name, record.getMessage())


@pytest.mark.parametrize("how", ["header", "query"])
async def test_invalid_token_at_upgrade_is_refused_with_403(server, client, how):
    user = await new_user(client)
    forged = user.token[:-6] + ("AAAAAA" if not user.token.endswith("AAAAAA") else "BBBBBB")
    for bad in (forged, "not-a-jwt"):
        if how == "header":
            status = await upgrade_refused(ws_url(server.base_url), [(b"Authorization", f"Bearer {bad}".encode())])
        else:
            status = await upgrade_refused(ws_url(server.base_url, token=bad))
        assert status == 403


async def test_invalid_token_in_auth_frame_closes_4501(server, client):
    async with open_ws(server.base_url) as conn:
        await conn.send({"type": "auth", "token": "not-a-jwt"})
        assert await conn.closed() == CloseCode.UNAUTHENTICATED
    assert not any(f["type"] == "welcome" for f in conn.seen)


async def test_first_frame_other_than_auth_closes_4501(server, client):
    async with open_ws(server.base_url) as conn:
        await conn.send({"type": "ping", "id": "p"})
        assert await conn.closed() == CloseCode.UNAUTHENTICATED
    assert conn.seen == []


async def test_no_auth_frame_in_time_closes_4501(settings):
    async with start_server(settings.replace(ws_auth_timeout_s=0.5)) as running:
        async with open_ws(running.base_url) as conn:
            assert await conn.closed() == CloseCode.UNAUTHENTICATED
        assert conn.seen == []


# --- Origin ----------------------------------------------------------------------------------

async def test_origin_cross_site_refused_same_origin_and_allow_listed_accepted(settings):
    allowed = "https://app.example.com"
    async with start_server(settings.replace(ws_allowed_origins=(allowed,))) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
            user = await new_user(http)
        auth = (b"Authorization", f"Bearer {user.token}".encode())
        url = ws_url(running.base_url)
        own = "http://" + urlsplit(running.base_url).netloc
        for evil in ("https://evil.example", "http://app.example.com", "https://app.example.com.evil.example", "null"):
            assert await upgrade_refused(url, [auth, (b"Origin", evil.encode())]) == 403, evil
        for good in (own, allowed, allowed + "/"):
            origin = [(b"Origin", good.encode())]
            async with open_ws(running.base_url, user.token, how="header", headers=origin) as conn:
                assert conn.seen[0]["type"] == "welcome", good
                await conn.ping()
        # A disallowed Origin is refused before auth is even looked at.
        assert await upgrade_refused(url, [(b"Origin", b"https://evil.example")]) == 403


# --- subscribe ----------------------------------------------------------------------------------

async def test_subscribe_forbidden_for_non_member_and_not_found_for_unknown(server, client):
    owner, stranger = await new_user(client), await new_user(client)
    pid = await new_project(client, owner)
    async with open_ws(server.base_url, stranger.token) as conn:
        await conn.send({"type": "subscribe", "id": "s1", "project_id": pid})
        forbidden = await conn.expect(lambda f: f.get("id") == "s1")
        assert forbidden["type"] == "error" and forbidden["code"] == "forbidden", forbidden
        assert forbidden["retryable"] is False
        await conn.send({"type": "subscribe", "id": "s2", "project_id": str(uuid.uuid4())})
        missing = await conn.expect(lambda f: f.get("id") == "s2")
        assert missing["type"] == "error" and missing["code"] == "not_found", missing
        # Nor may a stranger write into it.
        denied = await conn.op(pid, create_op("intrusion"), "intrude-1")
        assert denied["type"] == "error" and denied["code"] in ("forbidden", "not_found"), denied
        await conn.ping()
        assert not any(f["type"] in ("subscribed", "event") for f in conn.seen), conn.seen
    got = await client.get("/api/v1/tasks", headers=owner.auth, params={"project_id": pid})
    assert got.json()["pagination"]["total"] == 0


async def test_subscribe_answers_with_a_snapshot(server, client):
    owner = await new_user(client)
    pid = await new_project(client, owner, name="Snap")
    async with open_ws(server.base_url, owner.token) as conn:
        done = await conn.op(pid, create_op("first"))
        assert done["type"] == "ack", done
        sub = await conn.subscribe(pid)
    assert sub["type"] == "subscribed" and sub["project_id"] == pid and sub["seq"] == done["seq"]
    assert sub["reset"] is False and "events" not in sub
    snap = sub["snapshot"]
    assert snap["project"]["id"] == pid and snap["project"]["seq"] == sub["seq"]
    assert [m["user_id"] for m in snap["members"]] == [owner.id]
    assert [t["title"] for t in snap["tasks"]] == ["first"]


# --- bad frames ----------------------------------------------------------------------------------

PROJECT = str(uuid.uuid4())
BAD_FRAMES: list[tuple[str, str, str | None]] = [
    # (what, message text, the request id the error must echo)
    ("invalid JSON", '{"type": "ping", "id": ', None),
    ("control characters", "\x00\x01garbage", None),
    ("a JSON array", '[{"type": "ping", "id": "in-array"}]', None),
    ("a JSON string", '"ping"', None),
    ("a JSON number", "42", None),
    ("null", "null", None),
    ("no type", '{"id": "no-type"}', "no-type"),
    ("unknown type", '{"type": "shout", "id": "shout-1"}', "shout-1"),
    ("type of the wrong type", '{"type": 7, "id": "t7"}', "t7"),
    ("wrong field type", '{"type": "subscribe", "id": "wt-1", "project_id": 123}', "wt-1"),
    ("not a uuid", '{"type": "subscribe", "id": "wt-2", "project_id": "nope"}', "wt-2"),
    ("negative since", f'{{"type": "subscribe", "id": "wt-3", "project_id": "{PROJECT}", "since": -1}}', "wt-3"),
    ("missing field", '{"type": "subscribe", "id": "mf-1"}', "mf-1"),
    ("missing op", f'{{"type": "op", "id": "mf-2", "project_id": "{PROJECT}"}}', "mf-2"),
    ("extra field", '{"type": "ping", "id": "xf-1", "surprise": true}', "xf-1"),
    ("deep nesting (arrays)", "[" * 5000 + "]" * 5000, None),
    # not parsed: no id to echo
    ("deep nesting inside a frame", '{"type": "ping", "id": "deep-1", "x": ' + "[" * 5000 + "]" * 5000 + "}", None),
    ("deep nesting (objects)", '{"a":' * 5000 + "1" + "}" * 5000, None),
    ("op with unknown kind",
     f'{{"type": "op", "id": "uk-1", "project_id": "{PROJECT}", "op": {{"kind": "task.explode"}}}}', "uk-1"),
    ("op without kind", f'{{"type": "op", "id": "uk-2", "project_id": "{PROJECT}", "op": {{"fields": {{}}}}}}', "uk-2"),
    ("op with a bad client op id",
     f'{{"type": "op", "id": "has space", "project_id": "{PROJECT}", '
     f'"op": {{"kind": "task.create", "fields": {{"title": "x"}}}}}}', "has space"),
    ("op with wrong field types",
     f'{{"type": "op", "id": "wf-1", "project_id": "{PROJECT}", '
     f'"op": {{"kind": "task.create", "fields": {{"title": 5}}}}}}', "wf-1"),
    ("presence with a bad state",
     f'{{"type": "presence", "project_id": "{PROJECT}", "state": {{"viewing": 1}}}}', None),
    ("auth again", '{"type": "auth", "token": "whatever"}', None),
]


async def test_bad_frames_get_invalid_errors_and_the_socket_stays_usable(server, client):
    user = await new_user(client)
    async with open_ws(server.base_url, user.token) as conn:
        for what, text, request_id in BAD_FRAMES:
            await conn.send(text)
            error = await conn.recv()
            assert error["type"] == "error", (what, error)
            assert error["code"] == "invalid" and error["retryable"] is False, (what, error)
            assert error["id"] == request_id, (what, error)
            assert isinstance(error["message"], str) and "Traceback" not in error["message"], what
            pong = await conn.ping(f"after-{len(conn.seen)}")
            assert pong["type"] == "pong", what
        # Still fully usable: subscribe and write.
        pid = await new_project(client, user)
        assert (await conn.subscribe(pid))["type"] == "subscribed"
        assert (await conn.op(pid, create_op("still here")))["type"] == "ack"


async def test_validation_errors_name_the_field(server, client):
    user = await new_user(client)
    async with open_ws(server.base_url, user.token) as conn:
        await conn.send({"type": "subscribe", "id": "v1", "project_id": 123})
        error = await conn.expect("error", id="v1")
    assert any("project_id" in e["loc"] for e in error["errors"]), error


async def test_many_invalid_frames_in_a_row_close_4500(server, client):
    user = await new_user(client)
    async with open_ws(server.base_url, user.token) as conn:
        for _ in range(25):
            try:
                await conn.send("{not json")
            except Exception:  # noqa: BLE001 - the server may close before we finish
                break
        assert await conn.closed() == CloseCode.BAD_PROTOCOL
    errors = [f for f in conn.seen if f["type"] == "error"]
    assert errors and all(f["code"] == "invalid" for f in errors)


async def test_oversized_message_closes_1009(settings):
    async with start_server(settings.replace(ws_max_message_bytes=2048)) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=15) as http:
            user = await new_user(http)
        async with open_ws(running.base_url, user.token) as conn:
            assert conn.seen[0]["limits"]["max_message_bytes"] == 2048
            await conn.ping()  # a small message is fine
            await conn.send({"type": "ping", "id": "big", "pad": "x" * 4096})
            assert await conn.closed() == CloseCode.MESSAGE_TOO_BIG
        assert not any(f.get("id") == "big" for f in conn.seen)


async def test_ping_gets_pong_with_the_same_id(server, client):
    user = await new_user(client)
    async with open_ws(server.base_url, user.token) as conn:
        for request_id in ("1", "ping-é-✓", "x" * 64):
            await conn.send({"type": "ping", "id": request_id})
            assert await conn.recv() == {"type": "pong", "id": request_id}
        await conn.send({"type": "ping"})
        assert await conn.recv() == {"type": "pong", "id": None}


async def test_unsubscribe_is_confirmed_and_stops_events(server, client):
    user = await new_user(client)
    pid = await new_project(client, user)
    async with open_ws(server.base_url, user.token) as conn:
        await conn.subscribe(pid)
        await conn.send({"type": "unsubscribe", "id": "u1", "project_id": pid})
        done = await conn.expect("unsubscribed", id="u1")
        assert done["project_id"] == pid and done["reason"] == "requested"
        created = await client.post("/api/v1/tasks", headers=user.auth, json={"title": "unseen", "project_id": pid})
        assert created.status_code == 201
        await conn.ping()
        assert conn.events(pid) == []
