"""/api/v1/auth: register, login, refresh, logout, sessions (API.md "Auth")."""

from __future__ import annotations

from typing import Annotated, Any

import pydantic
from quart import Blueprint, Response

from collab.auth.service import IssuedTokens
from collab.domain.users import User
from collab.errors import RateLimited
from collab.http.context import client_info, current_principal, services
from collab.http.inputs import Body, path_uuid, read_body
from collab.http.responses import created, json_response, no_content
from collab.http.openapi import api
from collab.http.schemas_out import SessionList, Tokens, UserPrivate
from collab.ratelimit import Decision, Policy

blueprint = Blueprint("auth", __name__, url_prefix="/api/v1/auth")

Email = Annotated[str, pydantic.StringConstraints(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]
Username = Annotated[str, pydantic.StringConstraints(min_length=3, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]
Name = Annotated[str, pydantic.StringConstraints(max_length=100)]
# Length is checked by the password policy (8..1024) with its own error kinds;
# this bound only keeps absurd bodies from reaching the hasher.
Password = Annotated[str, pydantic.StringConstraints(max_length=4096, strip_whitespace=False)]
Token = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=4096)]


class RegisterBody(Body):
    email: Email
    username: Username
    password: Password
    first_name: Name | None = None
    last_name: Name | None = None


class LoginBody(Body):
    email: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=254)]
    password: Password


class RefreshBody(Body):
    refresh_token: Token


def token_response(tokens: IssuedTokens, user: User | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "token_type": "Bearer",
        "expires_in": tokens.expires_in,
        "session_id": str(tokens.session_id),
    }
    if user is not None:
        doc["user"] = user.private_view()
    return doc


async def _throttle(checks: list[tuple[str, Policy]]) -> dict[str, str]:
    """Apply each (key, policy) before any hashing; 429 with Retry-After when one is exhausted.

    Returns the RateLimit headers of the tightest policy, for the response."""
    limiter = services().limiter
    tightest: tuple[Decision, Policy] | None = None
    for key, policy in checks:
        decision = await limiter.hit(key, policy)
        if not decision.allowed:
            raise RateLimited("Too many attempts; retry later", headers=decision.headers(policy))
        if tightest is None or decision.remaining < tightest[0].remaining:
            tightest = (decision, policy)
    return tightest[0].headers(tightest[1]) if tightest else {}


def _login_policies(email: str) -> list[tuple[str, Policy]]:
    settings = services().settings
    ip = client_info().ip_address or "unknown"
    per_ip = Policy("login-ip", settings.login_per_ip_per_minute, 60, max(1, settings.login_per_ip_per_minute // 2))
    per_account = Policy("login-account", settings.login_per_account_per_minute, 60,
                         max(1, settings.login_per_account_per_minute // 2))
    return [(f"login:ip:{ip}", per_ip), (f"login:account:{email.strip().lower()}", per_account)]


def _register_policies() -> list[tuple[str, Policy]]:
    settings = services().settings
    ip = client_info().ip_address or "unknown"
    policy = Policy(
        "register-ip", settings.register_per_ip_per_hour, 3600, max(1, settings.register_per_ip_per_hour // 3),
    )
    return [(f"register:ip:{ip}", policy)]


@blueprint.post("/register")
@api(tag="auth", ok=UserPrivate, status=201, body=RegisterBody, errors=(409, 429), auth=False)
async def register() -> Response:
    body = await read_body(RegisterBody)
    limit_headers = await _throttle(_register_policies())
    user = await services().auth.register(
        email=body.email, username=body.username, password=body.password,
        first_name=body.first_name, last_name=body.last_name,
    )
    response = created(user.private_view(), f"/api/v1/users/{user.id}")
    response.headers.update(limit_headers)
    return response


@blueprint.post("/login")
@api(tag="auth", ok=Tokens, body=LoginBody, errors=(401, 403, 429), auth=False)
async def login() -> Response:
    body = await read_body(LoginBody)
    limit_headers = await _throttle(_login_policies(body.email))
    tokens, user = await services().auth.login(email=body.email, password=body.password, client=client_info())
    return json_response(token_response(tokens, user), headers=limit_headers)


@blueprint.post("/refresh")
@api(tag="auth", ok=Tokens, body=RefreshBody, errors=(401,), auth=False)
async def refresh() -> Response:
    body = await read_body(RefreshBody)
    tokens = await services().auth.refresh(body.refresh_token, client=client_info())
    return json_response(token_response(tokens))


@blueprint.post("/logout")
@api(tag="auth", status=204)
async def logout() -> Response:
    principal = await current_principal()
    await services().auth.logout(principal)
    return no_content()


@blueprint.get("/sessions")
@api(tag="auth", ok=SessionList)
async def list_sessions() -> Response:
    principal = await current_principal()
    sessions = await services().auth.list_sessions(principal)
    return json_response({
        "data": [
            {
                "id": str(s.id),
                "current": s.id == principal.session_id,
                "user_agent": s.user_agent,
                "ip_address": s.ip_address,
                "created_at": s.created_at.isoformat(),
                "last_used_at": s.last_used_at.isoformat(),
                "expires_at": s.expires_at.isoformat(),
            }
            for s in sessions
        ]
    })


@blueprint.delete("/sessions/<session_id>")
@api(tag="auth", status=204, errors=(404,))
async def revoke_session(session_id: str) -> Response:
    principal = await current_principal()
    await services().auth.revoke_session(principal, path_uuid(session_id, "session"))
    return no_content()
