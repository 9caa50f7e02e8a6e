from tests.helpers import bearer, signup


async def test_register_login_me(client):
    user, tokens = await signup(client)
    response = await client.get("/api/v1/users/me", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200
    assert response.json()["id"] == user["id"]
