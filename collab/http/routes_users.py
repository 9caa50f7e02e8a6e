"""/api/v1/users: the caller's profile and password, and finding other users.

Other users are shown in their public view (no email, no roles); the caller
and admins see the private view. Search matches username and name prefixes;
email matches only exactly, except for admins (prefix), so that a signed-in
user can find a colleague by address without being able to enumerate them.
"""

from __future__ import annotations

from typing import Annotated

import pydantic
from quart import Blueprint, Response

from collab.http.context import current_principal, services
from collab.http.inputs import Body, path_uuid, read_body, read_query
from collab.http.responses import json_response, paginated
from collab.http.routes_auth import Name, Password

blueprint = Blueprint("users", __name__, url_prefix="/api/v1/users")

MAX_PAGE_SIZE = 100


class ProfilePatch(Body):
    first_name: Name | None = None
    last_name: Name | None = None
    avatar_url: Annotated[str, pydantic.StringConstraints(max_length=2048, pattern=r"^https?://\S+$")] | None = None


class PasswordChange(Body):
    current_password: Password
    new_password: Password


class Page(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    page: Annotated[int, pydantic.Field(ge=1, le=100_000)] = 1
    limit: Annotated[int, pydantic.Field(ge=1, le=MAX_PAGE_SIZE)] = 20

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit


class UserSearch(Page):
    q: Annotated[str, pydantic.StringConstraints(max_length=254, strip_whitespace=True)] | None = None


@blueprint.get("/me")
async def me() -> Response:
    principal = await current_principal()
    user = await services().auth.get_user(principal.user_id)
    return json_response(user.private_view())


@blueprint.patch("/me")
async def update_me() -> Response:
    principal = await current_principal()
    body = await read_body(ProfilePatch)
    user = await services().auth.update_profile(principal, body.model_dump(exclude_unset=True))
    return json_response(user.private_view())


@blueprint.put("/me/password")
async def change_password() -> Response:
    principal = await current_principal()
    body = await read_body(PasswordChange)
    ended = await services().auth.change_password(principal, body.current_password, body.new_password)
    return json_response({"changed": True, "other_sessions_ended": ended})


@blueprint.get("/")
async def search() -> Response:
    principal = await current_principal()
    query = read_query(UserSearch)
    users, total = await services().auth.search_users(principal, query=query.q, limit=query.limit, offset=query.offset)
    views = [u.private_view() if principal.may_view_private(u.id) else u.public_view() for u in users]
    return paginated(views, page=query.page, limit=query.limit, total=total)


@blueprint.get("/<user_id>")
async def get_user(user_id: str) -> Response:
    principal = await current_principal()
    user = await services().auth.get_user(path_uuid(user_id, "user"))
    return json_response(user.private_view() if principal.may_view_private(user.id) else user.public_view())
