"""End-to-end: the caller's profile, other users' views, and user search (API.md "Users")."""

from __future__ import annotations

import uuid

import pytest

from tests.helpers import assert_problem, bearer, login, make_admin, register, signup

ME = "/api/v1/users/me"
PRIVATE_ONLY = {"email", "roles", "is_active", "email_verified", "created_at", "updated_at"}


async def test_get_me_is_the_private_view(client):
    user, tokens = await signup(client, first_name="Grace", last_name="Hopper")
    response = await client.get(ME, headers=bearer(tokens["access_token"]))
    assert response.status_code == 200
    me = response.json()
    assert me["id"] == user["id"] and me["email"] == user["email"] and me["username"] == user["username"]
    assert me["display_name"] == "Grace Hopper"
    assert me["roles"] and me["is_active"] is True
    assert PRIVATE_ONLY <= set(me)
    assert not {k for k in me if "password" in k or "hash" in k}


async def test_patch_me_updates_profile_fields(client):
    _, tokens = await signup(client)
    headers = bearer(tokens["access_token"])
    response = await client.patch(ME, headers=headers, json={
        "first_name": "Katherine", "last_name": "Johnson", "avatar_url": "https://cdn.example.com/a/k.png",
    })
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["first_name"], body["last_name"], body["avatar_url"]) == (
        "Katherine", "Johnson", "https://cdn.example.com/a/k.png",
    )
    # Persisted, and a partial patch leaves the other fields alone.
    response = await client.patch(ME, headers=headers, json={"avatar_url": "http://example.org/me.jpg"})
    assert response.status_code == 200, response.text
    me = (await client.get(ME, headers=headers)).json()
    assert (me["first_name"], me["last_name"], me["avatar_url"]) == ("Katherine", "Johnson", "http://example.org/me.jpg")
    # null clears a field.
    response = await client.patch(ME, headers=headers, json={"avatar_url": None})
    assert response.status_code == 200 and response.json()["avatar_url"] is None


@pytest.mark.parametrize("url", [
    "javascript:alert(1)",
    "JavaScript:alert(document.cookie)",
    "data:text/html,<script>alert(1)</script>",
    "ftp://example.com/a.png",
    "//evil.example.com/a.png",
    "https://",
    "https://exa mple.com/a.png",
])
async def test_patch_me_refuses_non_http_avatar_urls(client, url):
    _, tokens = await signup(client)
    headers = bearer(tokens["access_token"])
    response = await client.patch(ME, headers=headers, json={"avatar_url": url})
    doc = assert_problem(response, 422, "invalid")
    assert [e["loc"] for e in doc["errors"]] == [["avatar_url"]]
    assert (await client.get(ME, headers=headers)).json()["avatar_url"] is None


async def test_patch_me_refuses_mass_assignment(client):
    user, tokens = await signup(client)
    headers = bearer(tokens["access_token"])
    response = await client.patch(ME, headers=headers, json={
        "first_name": "Mallory", "email": "mallory@example.com", "roles": ["admin"],
        "is_active": False, "id": str(uuid.uuid4()),
    })
    doc = assert_problem(response, 422, "invalid")
    listed = {tuple(e["loc"]) for e in doc["errors"]}
    assert {("email",), ("roles",), ("is_active",), ("id",)} <= listed, doc
    assert ("first_name",) not in listed
    me = (await client.get(ME, headers=headers)).json()
    assert (me["id"], me["email"], me["roles"], me["is_active"]) == (user["id"], user["email"], user["roles"], True)
    assert me["first_name"] is None  # the whole patch was refused, not just the bad fields


@pytest.mark.parametrize("field", ["first_name", "last_name"])
async def test_patch_me_with_nul_character_is_422_not_500(client, field):
    """PostgreSQL text cannot hold NUL: it must be refused at the edge, not crash the request."""
    _, tokens = await signup(client)
    headers = bearer(tokens["access_token"])
    response = await client.patch(ME, headers=headers, json={field: "Ada\x00Lovelace"})
    doc = assert_problem(response, 422, "invalid")
    assert [e["loc"] for e in doc["errors"]] == [[field]], doc
    assert (await client.get(ME, headers=headers)).json()[field] is None


@pytest.mark.parametrize("field", ["password", "password_hash", "username", "email_verified", "created_at"])
async def test_patch_me_refuses_each_unknown_field(client, field):
    _, tokens = await signup(client)
    response = await client.patch(ME, headers=bearer(tokens["access_token"]), json={field: "x"})
    doc = assert_problem(response, 422, "invalid")
    assert [e["loc"] for e in doc["errors"]] == [[field]]


async def test_get_other_user_is_public_view_and_self_is_private(client):
    me, tokens = await signup(client)
    other = await register(client, first_name="Alan", last_name="Turing")
    headers = bearer(tokens["access_token"])

    response = await client.get(f"/api/v1/users/{other['id']}", headers=headers)
    assert response.status_code == 200
    public = response.json()
    assert public["id"] == other["id"] and public["username"] == other["username"]
    assert public["display_name"] == "Alan Turing"
    assert "email" not in public and "roles" not in public
    assert not PRIVATE_ONLY & set(public), public
    assert other["email"] not in response.text

    response = await client.get(f"/api/v1/users/{me['id']}", headers=headers)
    assert response.status_code == 200
    own = response.json()
    assert own["email"] == me["email"] and own["roles"] == me["roles"]


async def test_admin_sees_the_private_view_of_others(client, server):
    admin, _ = await signup(client)
    await make_admin(server.settings.database_url, admin["id"])
    tokens = await login(client, admin["email"])
    other = await register(client)
    response = await client.get(f"/api/v1/users/{other['id']}", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200
    assert response.json()["email"] == other["email"]


@pytest.mark.parametrize("user_id", [str(uuid.uuid4()), "not-a-uuid", "12345", "me2"])
async def test_get_unknown_or_malformed_user_is_404(client, user_id):
    _, tokens = await signup(client)
    response = await client.get(f"/api/v1/users/{user_id}", headers=bearer(tokens["access_token"]))
    assert_problem(response, 404, "not_found")


# --- search ------------------------------------------------------------------------

async def search(client, token: str, **params) -> dict:
    response = await client.get("/api/v1/users", headers=bearer(token), params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def make_target(client) -> dict:
    """A user whose email, username and names share no prefix."""
    tag = uuid.uuid4().hex[:8]
    return await register(
        client, email=f"zed.mailbox.{tag}@example.com", username=f"quokka_{tag}",
        first_name="Wilhelmina", last_name="Vandersloot",
    )


async def test_search_by_username_prefix_and_by_exact_email(client):
    target = await make_target(client)
    _, tokens = await signup(client)
    token = tokens["access_token"]

    found = await search(client, token, q=target["username"][:9].upper())
    assert [u["id"] for u in found["data"]] == [target["id"]]
    assert "email" not in found["data"][0] and "roles" not in found["data"][0]  # public view

    found = await search(client, token, q=target["email"])
    assert [u["id"] for u in found["data"]] == [target["id"]]
    found = await search(client, token, q=target["email"].upper())
    assert [u["id"] for u in found["data"]] == [target["id"]]

    found = await search(client, token, q="wilhelm")
    assert [u["id"] for u in found["data"]] == [target["id"]]


async def test_search_does_not_match_email_prefix_for_non_admins(client, server):
    target = await make_target(client)
    email_prefix = target["email"].split("@")[0]  # "zed.mailbox.<tag>": matches nothing but the email
    _, tokens = await signup(client)
    for q in (email_prefix, "zed.", target["email"][:-1]):
        found = await search(client, tokens["access_token"], q=q)
        assert found["data"] == [] and found["pagination"]["total"] == 0, (q, found)

    admin, _ = await signup(client)
    await make_admin(server.settings.database_url, admin["id"])
    admin_tokens = await login(client, admin["email"])
    for q in (email_prefix, "zed."):
        found = await search(client, admin_tokens["access_token"], q=q)
        assert [u["id"] for u in found["data"]] == [target["id"]], (q, found)
        assert found["data"][0]["email"] == target["email"]  # admins get the private view


async def test_search_treats_like_wildcards_literally(client):
    await make_target(client)
    _, tokens = await signup(client)
    for q in ("%", "_", "%@example.com", "z%"):
        found = await search(client, tokens["access_token"], q=q)
        assert found["data"] == [] and found["pagination"]["total"] == 0, (q, found)


async def test_search_pagination(client):
    tag = uuid.uuid4().hex[:6]
    ids = []
    for i in range(5):
        ids.append((await register(client, username=f"pager{tag}_{i}"))["id"])
    _, tokens = await signup(client)
    token = tokens["access_token"]

    first = await search(client, token, q=f"pager{tag}", limit=2, page=1)
    assert set(first["pagination"]) == {"page", "limit", "total", "pages", "next_cursor"}
    assert first["pagination"]["page"] == 1 and first["pagination"]["limit"] == 2
    assert first["pagination"]["total"] == 5 and first["pagination"]["pages"] == 3
    assert len(first["data"]) == 2

    pages = [first] + [await search(client, token, q=f"pager{tag}", limit=2, page=p) for p in (2, 3)]
    assert [len(p["data"]) for p in pages] == [2, 2, 1]
    seen = [u["id"] for p in pages for u in p["data"]]
    assert sorted(seen) == sorted(ids) and len(set(seen)) == 5

    beyond = await search(client, token, q=f"pager{tag}", limit=2, page=4)
    assert beyond["data"] == [] and beyond["pagination"]["total"] == 5

    everyone = await search(client, token, limit=100)
    assert everyone["pagination"]["total"] == 6 and everyone["pagination"]["limit"] == 100


@pytest.mark.parametrize(("param", "value"), [
    ("limit", "101"), ("limit", "0"), ("limit", "-1"), ("limit", "ten"), ("page", "0"), ("page", "-3"), ("page", "x"),
])
async def test_search_rejects_bad_pagination(client, param, value):
    _, tokens = await signup(client)
    response = await client.get("/api/v1/users", headers=bearer(tokens["access_token"]), params={param: value})
    doc = assert_problem(response, 422, "invalid")
    assert ["query", param] in [e["loc"] for e in doc["errors"]], doc


async def test_search_with_nul_character_is_not_a_server_error(client):
    await make_target(client)
    _, tokens = await signup(client)
    response = await client.get("/api/v1/users", headers=bearer(tokens["access_token"]), params={"q": "quokka\x00"})
    # No stored value can contain NUL: either refuse the query (422) or find nothing.
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        assert response.json()["data"] == []
    else:
        assert ["query", "q"] in [e["loc"] for e in response.json()["errors"]]


async def test_search_hides_deactivated_users_from_non_admins(client, server):
    target = await make_target(client)
    admin, _ = await signup(client)
    await make_admin(server.settings.database_url, admin["id"])
    admin_tokens = await login(client, admin["email"])
    response = await client.put(
        f"/api/v1/admin/users/{target['id']}/active", headers=bearer(admin_tokens["access_token"]),
        json={"is_active": False},
    )
    assert response.status_code == 200
    _, tokens = await signup(client)
    assert (await search(client, tokens["access_token"], q=target["username"]))["data"] == []
    found = await search(client, admin_tokens["access_token"], q=target["username"])
    assert [u["id"] for u in found["data"]] == [target["id"]]
