"""The board's page and files (collab/http/routes_web.py) from a real server."""

from __future__ import annotations

import re

import httpx

from collab.http.routes_web import assets, content_security_policy, safe_asset_path

PAGE_MODULES = {"app.js", "api.js", "auth.js", "board.js", "boardstate.js", "card.js", "dom.js",
                "notifications.js", "projects.js", "realtime.js", "replica.js", "session.js", "ui.js"}


async def test_the_page_is_served_without_a_token_under_a_strict_policy(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="/static/app.js">' in response.text
    assert "<script>" not in response.text and "style=" not in response.text  # nothing inline
    policy = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["img-src"] == "'self' data:"
    assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
    host = httpx.URL(str(client.base_url)).netloc.decode()
    assert policy["connect-src"] == f"'self' ws://{host} wss://{host}"
    assert "unsafe-inline" not in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"


async def test_modules_and_styles_have_their_types_and_revalidate_by_etag(client: httpx.AsyncClient) -> None:
    for name, kind in (("app.js", "text/javascript; charset=utf-8"), ("app.css", "text/css; charset=utf-8"),
                       ("favicon.svg", "image/svg+xml")):
        response = await client.get(f"/static/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"] == kind
        etag = response.headers["etag"]
        assert re.fullmatch(r'"[0-9.]+-[0-9a-f]{20}"', etag), etag
        again = await client.get(f"/static/{name}", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag
        changed = await client.get(f"/static/{name}", headers={"If-None-Match": '"0.0.0-stale"'})
        assert changed.status_code == 200 and changed.content == response.content


async def test_every_module_the_page_imports_is_served(client: httpx.AsyncClient) -> None:
    assert PAGE_MODULES <= set(assets())
    for name in PAGE_MODULES:
        body = (await client.get(f"/static/{name}")).text
        for imported in re.findall(r"from '\./([a-z]+\.js)'", body):
            assert imported in PAGE_MODULES, f"{name} imports {imported}"
        assert not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write", body), (
            f"{name} must build DOM with textContent/createElement"
        )


async def test_only_package_files_are_served(client: httpx.AsyncClient) -> None:
    for path in ("/static/../cli.py", "/static/%2e%2e/cli.py", "/static/..%2fcli.py", "/static/__init__.py",
                 "/static/.hidden.js", "/static/missing.js", "/static/index.html", "/static/app.js/",
                 "/static/app.js%00.css", "/static//etc/passwd", "/static/a\\b.js"):
        response = await client.get(path, follow_redirects=True)  # Werkzeug merges "//" with a 308 first
        assert response.status_code == 404, (path, response.status_code)
        assert response.headers["content-type"].startswith("application/problem+json"), path


def test_safe_paths() -> None:
    assert safe_asset_path("app.js") == "app.js"
    assert safe_asset_path("img/logo.svg") == "img/logo.svg"
    for bad in (
        "", "/app.js", "../app.js", "a/../b.js", "./app.js", ".env", "a//b.js", "a\\b.js", "x\x00.js", "a" * 500,
    ):
        assert safe_asset_path(bad) is None, bad


def test_the_policy_never_repeats_a_hostile_host() -> None:
    policy = content_security_policy("example.com:8000")
    assert "connect-src 'self' ws://example.com:8000 wss://example.com:8000" in policy
    for host in ("evil.com; script-src *", "a b", "", None, "x'y"):
        policy = content_security_policy(host)
        assert "connect-src 'self';" in policy and "*" not in policy
