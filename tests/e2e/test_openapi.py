"""The OpenAPI document (/openapi.json) against the app and against real responses.

(a) every route the app registers is documented with its methods, and nothing
    documented is missing from the app;
(b) every documented operation lists its problem responses (401 for the
    authenticated ones, 4xx for bodies, queries and path ids), and the
    security it declares is what the server enforces;
(c) real responses validate against the documented schemas (JSON Schema
    2020-12, formats included) and against the pydantic models of
    ``collab.http.schemas_out`` (``extra="forbid"`` catches drift both ways).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pydantic
import pytest
from quart_trio import QuartTrio

from collab.http import schemas_out as out
from collab.http.app import create_app
from collab.http.context import AppServices
from collab.http.openapi import api
from tests.conftest import test_settings
from tests.helpers import bearer, signup

HTTP_METHODS = {"get", "put", "post", "delete", "patch"}
SKIPPED_ENDPOINTS = {"openapi", "swagger_ui", "web.index", "web.static"}  # web.*: the board's page and files
SKIPPED_PATHS = {"/openapi.json", "/docs"}
PUBLIC_OPERATIONS = {
    ("post", "/api/v1/auth/register"), ("post", "/api/v1/auth/login"), ("post", "/api/v1/auth/refresh"),
    ("get", "/health"), ("get", "/api/v1/health"), ("get", "/api/v1/ping"), ("get", "/ready"),
}


def offline_app(tmp_path: Path) -> QuartTrio:
    """The app as wired for serving, without any backing service (routes and docs only)."""
    return create_app(AppServices(settings=test_settings(None, tmp_path), db=None, auth=None, registry=None, hub=None))  # type: ignore[arg-type]


def app_operations(app: QuartTrio) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every route, HEAD and OPTIONS aside."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in SKIPPED_ENDPOINTS or rule.rule in SKIPPED_PATHS:
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                found.add((method.lower(), path))
    return found


def documented_operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def is_documented(operation: dict[str, Any] | None) -> bool:
    """Documented by ``collab.http.openapi.api``: a tag, a declared security and a success response.

    quart-schema lists every route in ``paths``, even one nobody documented
    (with ``responses: {}``), so presence alone proves nothing.
    """
    return (
        operation is not None and bool(operation.get("tags")) and "security" in operation
        and any(status.startswith("2") for status in operation.get("responses", {}))
    )


def undocumented(app: QuartTrio, doc: dict[str, Any]) -> list[tuple[str, str]]:
    documented = documented_operations(doc)
    return sorted(op for op in app_operations(app) if not is_documented(documented.get(op)))


async def offline_document(app: QuartTrio) -> dict[str, Any]:
    response = await app.test_client().get("/openapi.json")
    assert response.status_code == 200
    return await response.get_json()


@pytest.fixture
async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


# --- (a) routes ----------------------------------------------------------------------

async def test_document_is_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    assert document["info"]["title"] == "Collab"
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
    }
    ids = [op.get("operationId") for op in documented_operations(document).values()]
    assert None not in ids and len(ids) == len(set(ids)), "every operation needs a unique operationId"


async def test_every_route_is_documented(document: dict[str, Any], tmp_path: Path) -> None:
    app = offline_app(tmp_path)
    operations = app_operations(app)
    assert ("get", "/api/v1/tasks/{task_id}") in operations and len(operations) > 30
    assert undocumented(app, document) == []
    phantom = sorted(set(documented_operations(document)) - operations)
    assert phantom == [], f"documented but not served: {phantom}"


async def test_a_route_without_docs_fails_the_check(tmp_path: Path) -> None:
    """The check above can fail: an undocumented route shows up, a documented one does not."""
    app = offline_app(tmp_path)

    @app.route("/api/v1/undocumented/<thing_id>", methods=["GET", "DELETE"])
    async def sneaky(thing_id: str) -> str:
        return thing_id

    @app.route("/api/v1/documented", methods=["POST"])
    @api(tag="test", status=204)
    async def documented() -> str:
        return ""

    doc = await offline_document(app)
    assert undocumented(app, doc) == [
        ("delete", "/api/v1/undocumented/{thing_id}"), ("get", "/api/v1/undocumented/{thing_id}"),
    ]


# --- (b) error responses and security -------------------------------------------------

def _problem_schema(doc: dict[str, Any], response: dict[str, Any]) -> dict[str, Any] | None:
    for media in response.get("content", {}).values():
        schema = media.get("schema", {})
        return resolve(doc, schema)
    return None


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


async def test_every_operation_documents_its_problems(document: dict[str, Any]) -> None:
    missing: list[str] = []
    for (method, path), operation in documented_operations(document).items():
        responses = operation["responses"]
        authenticated = operation.get("security") not in (None, [])
        expected: set[str] = set()
        if authenticated:
            expected.add("401")
        if "requestBody" in operation:
            expected |= {"400", "413", "415", "422"}
        if any(p["in"] == "query" for p in operation.get("parameters", [])):
            expected.add("422")
        if any(p["in"] == "path" for p in operation.get("parameters", [])):
            expected.add("404")
        if absent := sorted(expected - set(responses)):
            missing.append(f"{method.upper()} {path}: {absent}")
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                schema = _problem_schema(document, response)
                if schema is None or schema.get("title") != "Problem":
                    missing.append(f"{method.upper()} {path} {status}: not a Problem")
        if not any(s.startswith("2") for s in responses):
            missing.append(f"{method.upper()} {path}: no success response")
    assert missing == []


async def test_documented_security_is_enforced(client: httpx.AsyncClient, document: dict[str, Any]) -> None:
    """Authenticated operations answer 401 without a token; the public ones do not ask for one."""
    public = set()
    for (method, path), operation in documented_operations(document).items():
        if operation.get("security") in (None, []):
            public.add((method, path))
            continue
        url = re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path)
        response = await client.request(method.upper(), url, json={} if method != "get" else None)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "unauthenticated"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert public == PUBLIC_OPERATIONS
    ping = await client.get("/api/v1/ping")
    assert ping.status_code == 200


async def test_documented_media_types_match_the_responses(document: dict[str, Any]) -> None:
    """Problems are served as application/problem+json and 204s carry no body: the document must say so.

    Today every problem response is documented under ``application/json``
    and every 204 with an ``application/json`` body (the ``Empty`` model).
    """
    wrong: list[str] = []
    for (method, path), operation in documented_operations(document).items():
        for status, response in operation["responses"].items():
            media = set(response.get("content", {}))
            if status == "204" and media:
                wrong.append(f"{method.upper()} {path} 204 documents a body as {sorted(media)}")
            if status.startswith(("4", "5")) and media != {"application/problem+json"}:
                wrong.append(f"{method.upper()} {path} {status} documented as {sorted(media)}")
    assert wrong == [], f"{len(wrong)} mismatches, e.g. {wrong[:4]}"


async def test_docs_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text and "swagger" in response.text.lower()


# --- (c) real responses against the documented schemas --------------------------------

class Checker:
    """Validates real responses against the document's schema for (method, path, status)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.checked: list[str] = []

    def schema(self, method: str, path: str, status: int) -> dict[str, Any]:
        operation = self.doc["paths"][path][method]
        response = operation["responses"].get(str(status))
        assert response is not None, f"{method.upper()} {path} answered {status}, which is not documented"
        (media,) = response["content"].values()
        return {**media["schema"], "components": self.doc["components"]}

    def check(
        self, response: httpx.Response, method: str, path: str, status: int, model: type[pydantic.BaseModel] | Any,
    ) -> dict[str, Any]:
        assert response.status_code == status, response.text
        body = response.json()
        validator = jsonschema_rs.Draft202012Validator(self.schema(method, path, status), validate_formats=True)
        errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(body)]
        assert errors == [], f"{method.upper()} {path} {status} does not match its documented schema: {errors}"
        pydantic.TypeAdapter(model).validate_python(body, strict=False)
        self.checked.append(f"{method} {path} {status}")
        return body


async def test_real_responses_match_the_documented_schemas(client: httpx.AsyncClient, document: dict[str, Any]) -> None:
    c = Checker(document)
    registered = await client.post("/api/v1/auth/register", json={
        "email": f"doc-{uuid.uuid4().hex[:8]}@example.com", "username": f"doc_{uuid.uuid4().hex[:8]}",
        "password": "correct horse battery staple", "first_name": "Ada",
    })
    user = c.check(registered, "post", "/api/v1/auth/register", 201, out.UserPrivate)
    login = await client.post(
        "/api/v1/auth/login", json={"email": user["email"], "password": "correct horse battery staple"},
    )
    tokens = c.check(login, "post", "/api/v1/auth/login", 200, out.Tokens)
    auth = bearer(tokens["access_token"])
    c.check(await client.get("/api/v1/users/me", headers=auth), "get", "/api/v1/users/me", 200, out.UserPrivate)
    other, _ = await signup(client)

    project = c.check(
        await client.post("/api/v1/projects", headers=auth, json={"name": "Documented", "start_date": "2030-01-01"}),
        "post", "/api/v1/projects", 201, out.Project,
    )
    pid = project["id"]
    c.check(
        await client.get(f"/api/v1/projects/{pid}", headers=auth), "get", "/api/v1/projects/{project_id}", 200,
        out.Project,
    )
    c.check(await client.get("/api/v1/projects", headers=auth), "get", "/api/v1/projects", 200, out.Page[out.Project])
    c.check(
        await client.post(
            f"/api/v1/projects/{pid}/members", headers=auth, json={"user_id": other["id"], "role": "member"},
        ),
        "post", "/api/v1/projects/{project_id}/members", 201, out.Member,
    )
    c.check(await client.get(f"/api/v1/projects/{pid}/members", headers=auth),
            "get", "/api/v1/projects/{project_id}/members", 200, out.MemberList)
    c.check(await client.patch(f"/api/v1/projects/{pid}", headers=auth, json={"priority": "high"}),
            "patch", "/api/v1/projects/{project_id}", 200, out.Project)

    task = c.check(
        await client.post("/api/v1/tasks", headers=auth, json={
            "title": "Documented task", "project_id": pid, "tags": ["doc"], "assignee_id": other["id"],
            "due_date": "2030-02-01T09:30:00+00:00", "estimated_hours": 3,
        }),
        "post", "/api/v1/tasks", 201, out.Task,
    )
    tid = task["id"]
    c.check(await client.get(f"/api/v1/tasks/{tid}", headers=auth), "get", "/api/v1/tasks/{task_id}", 200, out.Task)
    c.check(await client.put(f"/api/v1/tasks/{tid}", headers=auth, json={"actual_hours": 1}),
            "put", "/api/v1/tasks/{task_id}", 200, out.Task)
    c.check(await client.put(f"/api/v1/tasks/{tid}/status", headers=auth, json={"status": "done"}),
            "put", "/api/v1/tasks/{task_id}/status", 200, out.Task)
    c.check(await client.put(f"/api/v1/tasks/{tid}/assign", headers=auth, json={"assignee_id": None}),
            "put", "/api/v1/tasks/{task_id}/assign", 200, out.Task)
    c.check(await client.post(f"/api/v1/tasks/{tid}/move", headers=auth, json={"status": "todo"}),
            "post", "/api/v1/tasks/{task_id}/move", 200, out.Task)
    c.check(await client.get("/api/v1/tasks", headers=auth, params={"project_id": pid}),
            "get", "/api/v1/tasks", 200, out.Page[out.Task])
    c.check(await client.get("/api/v1/tasks/search", headers=auth, params={"search": "documented"}),
            "get", "/api/v1/tasks/search", 200, out.Page[out.Task])
    changes = c.check(await client.get(f"/api/v1/projects/{pid}/changes", headers=auth),
                      "get", "/api/v1/projects/{project_id}/changes", 200, out.Changes)
    assert len(changes["data"]) >= 7

    not_found = c.check(await client.get(f"/api/v1/tasks/{uuid.uuid4()}", headers=auth),
                        "get", "/api/v1/tasks/{task_id}", 404, out.Problem)
    assert not_found["code"] == "not_found"
    invalid = c.check(await client.post("/api/v1/tasks", headers=auth, json={"project_id": pid, "priority": "soon"}),
                      "post", "/api/v1/tasks", 422, out.Problem)
    assert invalid["code"] == "invalid" and {e["loc"][-1] for e in invalid["errors"]} == {"title", "priority"}
    stranger = bearer((await signup(client))[1]["access_token"])
    forbidden = c.check(await client.delete(f"/api/v1/projects/{pid}", headers=stranger),
                        "delete", "/api/v1/projects/{project_id}", 403, out.Problem)
    assert forbidden["code"] == "forbidden"
    unauthenticated = c.check(await client.get("/api/v1/tasks"), "get", "/api/v1/tasks", 401, out.Problem)
    assert unauthenticated["code"] == "unauthenticated"
    stale = c.check(await client.put(f"/api/v1/tasks/{tid}", headers=auth | {"If-Match": '"1"'}, json={"title": "x"}),
                    "put", "/api/v1/tasks/{task_id}", 412, out.Problem)
    assert stale["code"] == "precondition_failed"
    assert len(c.checked) == 23


async def test_schema_drift_is_caught(document: dict[str, Any]) -> None:
    """The validation in (c) can fail: an extra field or a missing one is refused by both validators."""
    c = Checker(document)
    good = {
        "id": str(uuid.uuid4()), "username": "u", "first_name": None, "last_name": None, "display_name": "u",
        "avatar_url": None, "email": "u@example.com", "roles": ["developer"], "is_active": True,
        "email_verified": False, "created_at": "2030-01-01T00:00:00+00:00", "updated_at": "2030-01-01T00:00:00+00:00",
    }
    validator = jsonschema_rs.Draft202012Validator(c.schema("get", "/api/v1/users/me", 200), validate_formats=True)
    assert validator.is_valid(good)
    out.UserPrivate.model_validate(good)
    for bad in (good | {"password_hash": "x"}, {k: v for k, v in good.items() if k != "email"},
                good | {"created_at": "2030-01-01T00:00:00"}):
        assert not validator.is_valid(bad)
    with pytest.raises(pydantic.ValidationError):
        out.UserPrivate.model_validate(good | {"password_hash": "x"})
