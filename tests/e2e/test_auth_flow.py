"""End-to-end: registration, login, refresh rotation, logout, sessions, password
change, admin deactivation and rehash-on-login (API.md "Auth" and "Users")."""

from __future__ import annotations

import uuid

import argon2
import pytest

from collab.auth.passwords import ARGON2_TEST
from tests.helpers import (
    STRONG_PASSWORD, assert_problem, bearer, fetch_value, login, make_admin, register, run_sql, signup,
)

ME = "/api/v1/users/me"
TEST_HASH_PREFIX = f"$argon2id$v=19$m={ARGON2_TEST.memory_kib},t={ARGON2_TEST.time_cost},p={ARGON2_TEST.parallelism}$"


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


async def me_status(client, token: str) -> int:
    return (await client.get(ME, headers=bearer(token))).status_code


# --- register ------------------------------------------------------------------

async def test_register_answers_201_with_location_and_lowercased_email(client):
    tag = unique("")
    body = {
        "email": f"Mixed.Case-{tag}@Example.COM", "username": f"Reg_{tag}", "password": STRONG_PASSWORD,
        "first_name": "Ada", "last_name": "Lovelace",
    }
    response = await client.post("/api/v1/auth/register", json=body)
    assert response.status_code == 201, response.text
    user = response.json()
    assert response.headers["Location"] == f"/api/v1/users/{user['id']}"
    assert user["email"] == f"mixed.case-{tag}@example.com"
    assert user["username"] == f"Reg_{tag}"
    assert (user["first_name"], user["last_name"]) == ("Ada", "Lovelace")
    assert not {k for k in user if "password" in k or "hash" in k}, user
    assert STRONG_PASSWORD not in response.text and "$argon2" not in response.text
    # The Location really names the new user.
    tokens = await login(client, body["email"])
    got = await client.get(response.headers["Location"], headers=bearer(tokens["access_token"]))
    assert got.status_code == 200 and got.json()["id"] == user["id"]


async def test_register_duplicate_email_is_409_conflict_case_insensitively(client):
    user = await register(client)
    again = await client.post("/api/v1/auth/register", json={
        "email": user["email"].upper(), "username": unique("other_"), "password": STRONG_PASSWORD,
    })
    assert_problem(again, 409, "conflict")


async def test_register_duplicate_username_is_409_case_insensitively(client):
    name = unique("CaseUser_")
    await register(client, username=name)
    again = await client.post("/api/v1/auth/register", json={
        "email": f"{unique('x')}@example.com", "username": name.swapcase(), "password": STRONG_PASSWORD,
    })
    assert_problem(again, 409, "conflict")


LOCAL_PART = "similarlocalpart"


@pytest.mark.parametrize(
    ("password", "kind"),
    [
        pytest.param("Ab1!xy", "too_short", id="short"),
        pytest.param("", "too_short", id="empty"),
        pytest.param("qwertyuiop", "too_common", id="common"),
        pytest.param("QwertyUIOP", "too_common", id="common-other-case"),
        pytest.param("aaaaaaaa", "too_common", id="weak-repeated"),
        pytest.param("Zq9#" * 256 + "!", "too_long", id="1025-chars"),
        pytest.param(LOCAL_PART.upper(), "too_similar", id="email-local-part"),
        pytest.param(f"{LOCAL_PART}@example.com", "too_similar", id="whole-email"),
        pytest.param("UserNameLikePw", "too_similar", id="username"),
    ],
)
async def test_register_refuses_weak_passwords_without_echoing_them(client, password, kind):
    assert kind != "too_long" or len(password) == 1025
    response = await client.post("/api/v1/auth/register", json={
        "email": f"{LOCAL_PART}@example.com", "username": "usernamelikepw", "password": password,
    })
    doc = assert_problem(response, 422, "invalid")
    assert doc["errors"][0]["loc"] == ["password"], doc
    assert doc["errors"][0]["type"] == kind, doc
    if password:
        assert password not in response.text
        assert password.lower() not in response.text.lower()
    # Nothing was created: the same email registers fine afterwards.
    ok = await client.post("/api/v1/auth/register", json={
        "email": f"{LOCAL_PART}@example.com", "username": "usernamelikepw", "password": STRONG_PASSWORD,
    })
    assert ok.status_code == 201, ok.text


@pytest.mark.parametrize(("field", "value"), [
    ("email", "nul\x00char@example.com"),
    ("first_name", "Ada\x00"),
    ("last_name", "\x00"),
], ids=["email", "first_name", "last_name"])
async def test_register_with_nul_character_is_422_not_500(client, field, value):
    """PostgreSQL text cannot hold NUL: such input must be refused at the edge."""
    body = {
        "email": f"{unique('nul')}@example.com", "username": unique("nul_"), "password": STRONG_PASSWORD, field: value,
    }
    response = await client.post("/api/v1/auth/register", json=body)
    doc = assert_problem(response, 422, "invalid")
    assert doc["errors"][0]["loc"] == [field], doc


# --- login -----------------------------------------------------------------------

async def test_login_returns_bearer_pair_expiring_in_900_and_the_user(client):
    user = await register(client)
    tokens = await login(client, user["email"])
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 900
    assert isinstance(tokens["access_token"], str) and tokens["access_token"].count(".") == 2
    assert isinstance(tokens["refresh_token"], str) and tokens["refresh_token"].count(".") == 2
    assert tokens["access_token"] != tokens["refresh_token"]
    assert tokens["user"]["id"] == user["id"] and tokens["user"]["email"] == user["email"]
    assert not {k for k in tokens["user"] if "password" in k or "hash" in k}
    assert await me_status(client, tokens["access_token"]) == 200


async def test_unknown_email_and_wrong_password_are_indistinguishable(client):
    user = await register(client)
    unknown = await client.post("/api/v1/auth/login", json={
        "email": f"{unique('nobody')}@example.com", "password": STRONG_PASSWORD,
    })
    wrong = await client.post(
        "/api/v1/auth/login", json={"email": user["email"], "password": "not the password at all"},
    )
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.headers["content-type"] == wrong.headers["content-type"]
    a, b = unknown.json(), wrong.json()
    assert a.pop("request_id") != b.pop("request_id")
    assert a == b
    assert a["code"] == "invalid_credentials"
    assert "not the password at all" not in wrong.text


async def test_login_with_nul_in_email_is_refused_not_500(client):
    await register(client)
    response = await client.post(
        "/api/v1/auth/login", json={"email": "a\x00b@example.com", "password": STRONG_PASSWORD},
    )
    assert response.status_code in (401, 422), response.text
    assert response.json()["code"] in ("invalid_credentials", "invalid")


async def test_login_email_is_case_insensitive(client):
    user = await register(client)
    tokens = await login(client, "  " + user["email"].upper() + " ")
    assert tokens["user"]["id"] == user["id"]


async def test_password_whitespace_is_kept_not_stripped(client):
    padded = "  " + STRONG_PASSWORD + "  "
    user = await register(client, password=padded)
    stripped = await client.post("/api/v1/auth/login", json={"email": user["email"], "password": STRONG_PASSWORD})
    assert_problem(stripped, 401, "invalid_credentials")
    tokens = await login(client, user["email"], padded)
    assert tokens["user"]["id"] == user["id"]


# --- refresh -----------------------------------------------------------------------

async def test_refresh_rotates_and_reuse_revokes_the_whole_session(client):
    _, first = await signup(client)
    response = await client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert response.status_code == 200, response.text
    second = response.json()
    assert second["token_type"] == "Bearer" and second["expires_in"] == 900
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert await me_status(client, second["access_token"]) == 200

    reuse = await client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert_problem(reuse, 401, "unauthenticated")
    assert "WWW-Authenticate" in reuse.headers

    # The whole family is gone: the newest refresh token and every access token of the session.
    again = await client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert_problem(again, 401, "unauthenticated")
    assert await me_status(client, second["access_token"]) == 401
    assert await me_status(client, first["access_token"]) == 401


async def test_refresh_with_an_access_token_is_refused(client):
    _, tokens = await signup(client)
    response = await client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["access_token"]})
    assert_problem(response, 401, "unauthenticated")


# --- logout ------------------------------------------------------------------------

async def test_logout_ends_the_session_at_once(client):
    _, tokens = await signup(client)
    assert await me_status(client, tokens["access_token"]) == 200  # now cached as a live principal
    response = await client.post("/api/v1/auth/logout", headers=bearer(tokens["access_token"]))
    assert response.status_code == 204 and response.content == b""
    after = await client.get(ME, headers=bearer(tokens["access_token"]))
    assert_problem(after, 401, "unauthenticated")
    assert "WWW-Authenticate" in after.headers
    refresh = await client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refresh.status_code == 401


# --- sessions ------------------------------------------------------------------------

async def test_sessions_lists_own_sessions_with_current_flag_and_user_agent(client):
    user = await register(client)
    body = {"email": user["email"], "password": STRONG_PASSWORD}
    phone = (await client.post("/api/v1/auth/login", json=body, headers={"User-Agent": "PhoneApp/1.0"})).json()
    laptop = (await client.post("/api/v1/auth/login", json=body, headers={"User-Agent": "LaptopBrowser/2.0"})).json()
    other, _ = await signup(client)  # someone else's session must not be listed

    response = await client.get("/api/v1/auth/sessions", headers=bearer(laptop["access_token"]))
    assert response.status_code == 200, response.text
    sessions = {s["id"]: s for s in response.json()["data"]}
    assert set(sessions) == {phone["session_id"], laptop["session_id"]}
    assert sessions[laptop["session_id"]]["current"] is True
    assert sessions[phone["session_id"]]["current"] is False
    assert sessions[laptop["session_id"]]["user_agent"] == "LaptopBrowser/2.0"
    assert sessions[phone["session_id"]]["user_agent"] == "PhoneApp/1.0"
    for s in sessions.values():
        assert s["ip_address"] == "127.0.0.1"
        assert s["created_at"] and s["last_used_at"] and s["expires_at"]
    assert other["id"] not in response.text


async def test_delete_own_other_session_ends_it(client):
    user, first = await signup(client)
    second = await login(client, user["email"])
    assert await me_status(client, second["access_token"]) == 200
    response = await client.delete(
        f"/api/v1/auth/sessions/{second['session_id']}", headers=bearer(first["access_token"])
    )
    assert response.status_code == 204, response.text
    assert await me_status(client, second["access_token"]) == 401
    assert await me_status(client, first["access_token"]) == 200
    listed = await client.get("/api/v1/auth/sessions", headers=bearer(first["access_token"]))
    assert [s["id"] for s in listed.json()["data"]] == [first["session_id"]]
    # A second delete of the same session finds nothing live.
    again = await client.delete(
        f"/api/v1/auth/sessions/{second['session_id']}", headers=bearer(first["access_token"])
    )
    assert_problem(again, 404, "not_found")


async def test_delete_someone_elses_session_is_404_and_leaves_it_alive(client):
    _, mine = await signup(client)
    _, theirs = await signup(client)
    response = await client.delete(
        f"/api/v1/auth/sessions/{theirs['session_id']}", headers=bearer(mine["access_token"])
    )
    assert_problem(response, 404, "not_found")
    assert await me_status(client, theirs["access_token"]) == 200


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "123", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"])
async def test_delete_session_with_malformed_id_is_404(client, bad_id):
    _, tokens = await signup(client)
    response = await client.delete(f"/api/v1/auth/sessions/{bad_id}", headers=bearer(tokens["access_token"]))
    assert_problem(response, 404, "not_found")
    assert await me_status(client, tokens["access_token"]) == 200


# --- password change -------------------------------------------------------------------

NEW_PASSWORD = "a brand new passphrase 42"


async def test_change_password_with_wrong_current_is_422(client):
    user, tokens = await signup(client)
    response = await client.put("/api/v1/users/me/password", headers=bearer(tokens["access_token"]), json={
        "current_password": "definitely wrong here", "new_password": NEW_PASSWORD,
    })
    doc = assert_problem(response, 422, "invalid")
    assert doc["errors"][0]["loc"] == ["current_password"]
    assert "definitely wrong here" not in response.text and NEW_PASSWORD not in response.text
    # Nothing changed: the old password still logs in.
    await login(client, user["email"])


async def test_change_password_ends_other_sessions_and_keeps_the_current_one(client):
    user, current = await signup(client)
    other = await login(client, user["email"])
    assert await me_status(client, other["access_token"]) == 200  # cached before the change
    response = await client.put("/api/v1/users/me/password", headers=bearer(current["access_token"]), json={
        "current_password": STRONG_PASSWORD, "new_password": NEW_PASSWORD,
    })
    assert response.status_code == 200, response.text
    assert response.json()["other_sessions_ended"] == 1
    assert NEW_PASSWORD not in response.text

    assert await me_status(client, other["access_token"]) == 401
    refresh_other = await client.post("/api/v1/auth/refresh", json={"refresh_token": other["refresh_token"]})
    assert refresh_other.status_code == 401
    assert await me_status(client, current["access_token"]) == 200
    refresh_current = await client.post("/api/v1/auth/refresh", json={"refresh_token": current["refresh_token"]})
    assert refresh_current.status_code == 200, refresh_current.text

    old = await client.post("/api/v1/auth/login", json={"email": user["email"], "password": STRONG_PASSWORD})
    assert_problem(old, 401, "invalid_credentials")
    fresh = await login(client, user["email"], NEW_PASSWORD)
    assert fresh["user"]["id"] == user["id"]


async def test_change_password_applies_the_policy_to_the_new_password(client):
    user, tokens = await signup(client)
    response = await client.put("/api/v1/users/me/password", headers=bearer(tokens["access_token"]), json={
        "current_password": STRONG_PASSWORD, "new_password": "qwertyuiop",
    })
    doc = assert_problem(response, 422, "invalid")
    # The offending field of this body is new_password (API.md: errors list the offending fields).
    assert doc["errors"][0]["loc"] == ["new_password"], doc
    assert "qwertyuiop" not in response.text
    await login(client, user["email"])


# --- admin ---------------------------------------------------------------------------------

async def admin_tokens(client, server) -> dict:
    admin, _ = await signup(client)
    await make_admin(server.settings.database_url, admin["id"])
    # A fresh login is a fresh session, so its principal is read with the new role.
    return await login(client, admin["email"])


async def test_admin_deactivation_ends_sessions_and_blocks_login(client, server):
    admin = await admin_tokens(client, server)
    target, target_tokens = await signup(client)
    second = await login(client, target["email"])
    assert await me_status(client, target_tokens["access_token"]) == 200  # cached

    response = await client.put(
        f"/api/v1/admin/users/{target['id']}/active", headers=bearer(admin["access_token"]), json={"is_active": False},
    )
    assert response.status_code == 200, response.text
    assert response.json()["is_active"] is False

    assert await me_status(client, target_tokens["access_token"]) == 401
    assert await me_status(client, second["access_token"]) == 401
    refresh = await client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert refresh.status_code == 401
    blocked = await client.post("/api/v1/auth/login", json={"email": target["email"], "password": STRONG_PASSWORD})
    assert_problem(blocked, 403, "forbidden")
    # A wrong password for a deactivated account says no more than for any account.
    wrong = await client.post("/api/v1/auth/login", json={"email": target["email"], "password": "wrong wrong wrong"})
    assert_problem(wrong, 401, "invalid_credentials")

    # Reactivated, the user can log in again.
    back = await client.put(
        f"/api/v1/admin/users/{target['id']}/active", headers=bearer(admin["access_token"]), json={"is_active": True},
    )
    assert back.status_code == 200 and back.json()["is_active"] is True
    await login(client, target["email"])


async def test_admin_cannot_deactivate_themself(client, server):
    admin = await admin_tokens(client, server)
    response = await client.put(
        f"/api/v1/admin/users/{admin['user']['id']}/active", headers=bearer(admin["access_token"]),
        json={"is_active": False},
    )
    assert_problem(response, 403, "forbidden")
    assert await me_status(client, admin["access_token"]) == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/admin/users", None),
        ("PUT", "/api/v1/admin/users/{id}/active", {"is_active": False}),
        ("PUT", "/api/v1/admin/users/{id}/roles", {"roles": ["viewer"]}),
        ("GET", "/api/v1/admin/metrics", None),
        ("POST", "/api/v1/admin/metrics/reset", {}),
    ],
)
async def test_non_admin_gets_403_on_admin_routes(client, method, path, body):
    victim, victim_tokens = await signup(client)
    _, tokens = await signup(client)
    response = await client.request(
        method, path.format(id=victim["id"]), headers=bearer(tokens["access_token"]), json=body,
    )
    assert_problem(response, 403, "forbidden")
    # The victim is untouched.
    me = await client.get(ME, headers=bearer(victim_tokens["access_token"]))
    assert me.status_code == 200 and me.json()["roles"] == victim["roles"]


# --- rehash on login ------------------------------------------------------------------------

async def test_login_rehashes_a_hash_made_with_other_parameters(client, server):
    db = server.settings.database_url
    user = await register(client)
    old_hash = argon2.PasswordHasher(time_cost=1, memory_cost=16, parallelism=1).hash(STRONG_PASSWORD)
    assert not old_hash.startswith(TEST_HASH_PREFIX)
    await run_sql(db, f"UPDATE users SET password_hash = '{old_hash}' WHERE id = '{uuid.UUID(user['id'])}'")
    assert await fetch_value(db, "SELECT password_hash FROM users WHERE id = $1", uuid.UUID(user["id"])) == old_hash

    tokens = await login(client, user["email"])
    assert tokens["user"]["id"] == user["id"]

    stored = await fetch_value(db, "SELECT password_hash FROM users WHERE id = $1", uuid.UUID(user["id"]))
    assert stored != old_hash
    assert stored.startswith(TEST_HASH_PREFIX), stored
    assert argon2.PasswordHasher().verify(stored, STRONG_PASSWORD)
    # The new hash works, and a login with current parameters leaves it alone.
    await login(client, user["email"])
    assert await fetch_value(db, "SELECT password_hash FROM users WHERE id = $1", uuid.UUID(user["id"])) == stored
