"""JSON responses, encoded once with orjson, and the list envelope of API.md."""

from __future__ import annotations

import math
from typing import Any

import orjson
from quart import Response

JSON = "application/json"


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(orjson.dumps(data), status=status, content_type=JSON)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def created(data: Any, location: str) -> Response:
    """201 with the new resource and where it lives."""
    return json_response(data, 201, {"Location": location})


def no_content() -> Response:
    return Response(b"", status=204)


def paginated(items: list[Any], *, page: int, limit: int, total: int, next_cursor: str | None = None) -> Response:
    """``{"data": [...], "pagination": {page, limit, total, pages, next_cursor}}``."""
    return json_response({
        "data": items,
        "pagination": {
            "page": page,
            "limit": limit,
            "total": total,
            "pages": math.ceil(total / limit) if limit else 0,
            "next_cursor": next_cursor,
        },
    })
