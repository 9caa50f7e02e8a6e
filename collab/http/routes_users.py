"""/api/v1/users: the caller's profile and password, and finding other users.

Other users are shown in their public view (no email, no roles); the caller
and admins see the private view. Search matches username and name prefixes;
email matches only exactly, except for admins (prefix), so that a signed-in
user can find a colleague by address without being able to enumerate them.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

import pydantic
from quart import Blueprint, Response

from collab.http.context import current_principal, services
from collab.http.inputs import Body, path_uuid, read_body, read_query
from collab.http.responses import json_response, paginated
from collab.http.routes_auth import Name, Password
from collab.http.schemas import Paging
from collab.http.openapi import api
from collab.http.schemas_out import Page, PasswordChanged, UserAny, UserPrivate

blueprint = Blueprint("users", __name__, url_prefix="/api/v1/users")

def _web_url(value: str) -> str:
    """An http(s) URL with a host that parses (no javascript:, no broken IPv6 literals)."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValueError("must be a valid http(s) URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be a valid http(s) URL")
    return value


AvatarUrl = Annotated[
    str, pydantic.StringConstraints(max_length=2048, pattern=r"^https?://\S+$"), pydantic.AfterValidator(_web_url),
]


class ProfilePatch(Body):
    first_name: Name | None = None
    last_name: Name | None = None
    avatar_url: AvatarUrl | None = None


class PasswordChange(Body):
    current_password: Password
    new_password: Password


class UserSearch(Paging):
    q: Annotated[str, pydantic.StringConstraints(max_length=254, strip_whitespace=True)] | None = None


@blueprint.get("/me")
@api(tag="users", ok=UserPrivate)
async def me() -> Response:
    principal = await current_principal()
    user = await services().auth.get_user(principal.user_id)
    return json_response(user.private_view())


@blueprint.patch("/me")
@api(tag="users", ok=UserPrivate, body=ProfilePatch)
async def update_me() -> Response:
    principal = await current_principal()
    body = await read_body(ProfilePatch)
    user = await services().auth.update_profile(principal, body.model_dump(exclude_unset=True))
    return json_response(user.private_view())


@blueprint.put("/me/password")
@api(tag="users", ok=PasswordChanged, body=PasswordChange)
async def change_password() -> Response:
    principal = await current_principal()
    body = await read_body(PasswordChange)
    ended = await services().auth.change_password(principal, body.current_password, body.new_password)
    return json_response({"changed": True, "other_sessions_ended": ended})


@blueprint.get("")
@api(tag="users", ok=Page[UserAny], query=UserSearch)
async def search() -> Response:
    principal = await current_principal()
    query = read_query(UserSearch)
    users, total = await services().auth.search_users(principal, query=query.q, limit=query.limit, offset=query.offset)
    views = [u.private_view() if principal.may_view_private(u.id) else u.public_view() for u in users]
    return paginated(
        views, page=query.effective_page, limit=query.limit, total=total, next_cursor=query.next_cursor(total),
    )


@blueprint.get("/<user_id>")
@api(tag="users", ok=UserAny, errors=(404,))
async def get_user(user_id: str) -> Response:
    principal = await current_principal()
    user = await services().auth.get_user(path_uuid(user_id, "user"))
    return json_response(user.private_view() if principal.may_view_private(user.id) else user.public_view())
