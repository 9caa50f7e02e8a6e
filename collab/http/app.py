"""The Quart application: blueprints, limits, hooks and error mapping.

:func:`create_app` is pure wiring; the composition root (:mod:`collab.server`)
builds the services and serves the app with hypercorn.
"""

from __future__ import annotations

from quart_trio import QuartTrio

from collab.http import routes_admin, routes_auth, routes_health, routes_projects, routes_tasks, routes_users
from collab.http.context import AppServices, install_request_hooks
from collab.http.openapi import install_openapi
from collab.http.problems import install_problem_handlers


def create_app(services: AppServices) -> QuartTrio:
    settings = services.settings
    app = QuartTrio("collab")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        BODY_TIMEOUT=settings.body_timeout_s,
        RESPONSE_TIMEOUT=settings.response_timeout_s,
        PROPAGATE_EXCEPTIONS=False,
    )
    app.url_map.strict_slashes = False
    app.extensions["collab"] = services
    install_request_hooks(app)
    install_problem_handlers(app)
    install_openapi(app)
    for module in (routes_health, routes_auth, routes_users, routes_admin, routes_projects, routes_tasks):
        app.register_blueprint(module.blueprint)
    return app
