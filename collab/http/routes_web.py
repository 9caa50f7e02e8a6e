"""The browser board: ``/`` (the page) and ``/static/<path>`` (its modules, styles, icons).

Owns: serving the files of the ``collab.web`` package, read once into memory
(a few dozen kilobytes) with a content hash each. Guarantees:

- The files are read once in production and on every request otherwise, so
  an edit shows up on reload while developing.
- Only files that exist in the package, under a safe relative path (no
  ``..``, no hidden files, no backslashes, no absolute paths) and with a
  known extension, are served; anything else is a 404 problem document.
- Every answer carries the right ``Content-Type`` (JavaScript modules need a
  JavaScript type under ``nosniff``), a strong ``ETag`` made of the version
  and the content hash, and ``Cache-Control: no-cache`` for the page, modules
  and styles: browsers keep a copy and revalidate it (a 304 without a body),
  so a new release is picked up at once. Icons may be kept for a day.
- The page and its assets carry a strict Content-Security-Policy: scripts and
  styles only from this origin (no inline code at all), connections only to
  this origin (HTTP and its WebSocket), images from this origin or ``data:``,
  no framing, no plugins.

No token is needed: the files hold no data. The client signs in through the
public REST API (docs/board.md).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import PurePosixPath

from quart import Blueprint, Response, request
from quart_schema import hide

from collab import __version__
from collab.errors import NotFound
from collab.http.context import services

blueprint = Blueprint("web", __name__)

#: Extensions served, with their content type.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
INDEX = "index.html"
#: Icons change rarely and browsers ask for the favicon on every navigation: a day without asking.
IMAGE_CACHE = "public, max-age=86400"
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")
#: A Host header we are willing to repeat in the policy (host[:port], IPv6 in brackets).
_HOST = re.compile(r"^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$")


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


@lru_cache(maxsize=1)
def assets() -> dict[str, Asset]:
    """Every servable file of the package by its relative path, read once."""
    return load_assets()


def current_assets() -> dict[str, Asset]:
    """Read once in production; read afresh on each request elsewhere (edit, reload, see it)."""
    settings = services().settings
    return assets() if settings.env == "production" else load_assets()


def load_assets() -> dict[str, Asset]:
    found: dict[str, Asset] = {}
    root = resources.files("collab.web")

    def walk(node: Traversable, prefix: str) -> None:
        for child in node.iterdir():
            name = child.name
            if not _SEGMENT.match(name):
                continue
            path = f"{prefix}{name}"
            if child.is_dir():
                walk(child, path + "/")
                continue
            content_type = CONTENT_TYPES.get(PurePosixPath(name).suffix.lower())
            if content_type is None:
                continue
            body = child.read_bytes()
            digest = hashlib.sha256(body).hexdigest()[:20]
            found[path] = Asset(body, content_type, f'"{__version__}-{digest}"')

    walk(root, "")
    return found


def safe_asset_path(path: str) -> str | None:
    """``path`` as a key of :func:`assets` if it is a plain relative path, else None."""
    if not path or len(path) > 400 or "\\" in path or "\x00" in path or path.startswith("/"):
        return None
    parts = path.split("/")
    if not all(_SEGMENT.match(part) for part in parts):
        return None  # rejects "", ".", "..", hidden files and odd characters
    return "/".join(parts)


def content_security_policy(host: str | None) -> str:
    """The page's policy; ``connect-src`` names this origin's WebSocket exactly when the Host is sane."""
    connect = "'self'"
    if host and _HOST.match(host):
        connect += f" ws://{host} wss://{host}"
    return "; ".join((
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        f"connect-src {connect}",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ))


def _serve(name: str) -> Response:
    asset = current_assets().get(name)
    if asset is None:
        raise NotFound("No such file")
    headers = {
        "ETag": asset.etag,
        "Cache-Control": "no-cache" if asset.content_type.startswith(("text/", "application/")) else IMAGE_CACHE,
        "Content-Security-Policy": content_security_policy(request.host),
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
    }
    if _matches(request.headers.get("If-None-Match"), asset.etag):
        return Response(b"", status=304, headers=headers)
    return Response(asset.body, status=200, content_type=asset.content_type, headers=headers)


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    candidates = {part.strip().removeprefix("W/") for part in if_none_match.split(",")}
    return etag in candidates or "*" in candidates


@blueprint.get("/")
@hide  # a page, not an API operation: kept out of /openapi.json
async def index() -> Response:
    """The board's single page (routing happens in the URL fragment)."""
    return _serve(INDEX)


@blueprint.get("/static/<path:filename>")
@hide
async def static(filename: str) -> Response:
    """A module, stylesheet or icon of the board."""
    name = safe_asset_path(filename)
    if name is None or name == INDEX:
        raise NotFound("No such file")
    return _serve(name)
