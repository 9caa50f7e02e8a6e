"""The Quart application: blueprints, limits, hooks and error mapping.

:func:`create_app` is pure wiring; the composition root (:mod:`collab.server`)
builds the services and serves the app with hypercorn.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import trio
from quart_trio import QuartTrio

from collab.http import routes_comments
from collab.http import routes_attachments
from collab.http import routes_web
from collab.http import (
    routes_admin, routes_auth, routes_health, routes_notifications, routes_projects, routes_tasks, routes_users,
)
from collab.http.context import AppServices, install_request_hooks
from collab.http.middleware import install_middleware
from collab.http.multipart import MULTIPART_OVERHEAD_BYTES
from collab.http.openapi import install_openapi
from collab.http.problems import install_problem_handlers
from collab.http.upload_body import stream_bodies_of
from collab.http.ws_endpoint import route_websockets


def create_app(services: AppServices) -> QuartTrio:
    settings = services.settings
    # No implicit /static route: the board's files are served by routes_web (CSP, ETags, content types).
    app = QuartTrio("collab", static_folder=None)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        BODY_TIMEOUT=settings.body_timeout_s,
        RESPONSE_TIMEOUT=settings.response_timeout_s,
        PROPAGATE_EXCEPTIONS=False,
    )
    app.url_map.strict_slashes = False
    app.extensions["collab"] = services
    install_request_hooks(app)
    install_middleware(app, settings)  # after the request hooks: auth, rate limits, CORS, CSP, gzip, deadline
    # File uploads: streamed with backpressure under their own limit, not MAX_CONTENT_LENGTH (upload_body.py).
    stream_bodies_of(app, {routes_attachments.UPLOAD_ENDPOINT: settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES},
                     drain_deadline_s=settings.body_timeout_s)
    install_problem_handlers(app)
    install_openapi(app)
    for module in (
        routes_health, routes_auth, routes_users, routes_admin, routes_projects, routes_tasks, routes_notifications,
        routes_comments, routes_attachments, routes_web,
    ):
        app.register_blueprint(module.blueprint)
    # Our ASGI wrappers take plain dict scopes, not Quart's TypedDicts: the same objects at run time.
    app.asgi_app = route_websockets(FinishLastSend(app.asgi_app), services)  # type: ignore[method-assign, assignment]
    return app


class FinishLastSend:
    """Let the final send of a response finish, within a deadline.

    With an unread request body (a 413), hypercorn closes the ``Connection:
    close`` socket inside the last ``send``; closing reports a disconnect, on
    which quart-trio cancels the handler's nursery, including that very send,
    so the socket stayed open until the body timeout. Shielding the last send
    (bounded by ``deadline_s``) lets the close complete.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], deadline_s: float = 5.0) -> None:
        self.app = app
        self.deadline_s = deadline_s

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_last_shielded(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.move_on_after(self.deadline_s) as scope_:
                    scope_.shield = True
                    await send(message)
                return
            await send(message)

        await self.app(scope, receive, send_last_shielded)
