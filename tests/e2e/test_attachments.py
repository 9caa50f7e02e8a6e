"""Attachments end to end: a real server, real multipart uploads, files on disk, real sockets.

The module's server has a small upload limit (:data:`LIMIT`) so that "at the
limit" and "one byte over" are fast; one test runs the real 25 MiB default.
Blob collection runs with no grace and a short interval here, so every test
also exercises the sweep against live uploads.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio

from collab.config import Settings
from tests.conftest import RunningServer, start_server, test_settings
from tests.e2e.ws_helpers import User, new_project, new_user, open_ws, rest_task
from tests.helpers import assert_problem, fetch_value, make_admin

LIMIT = 64 * 1024
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"
BOUNDARY = "collab-e2e-boundary-4f1d"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return test_settings(database_url, tmp_path, max_upload_bytes=LIMIT, attachment_gc_grace_s=0.0,
                         attachment_sweep_interval_s=0.2)


def url(task_id: str, attachment_id: str | None = None) -> str:
    base = f"/api/v1/tasks/{task_id}/attachments"
    return f"{base}/{attachment_id}" if attachment_id else base


async def upload(http: httpx.AsyncClient, user: User, task_id: str, content: bytes, filename: str = "notes.txt",
                 content_type: str | None = "text/plain", **kwargs: Any) -> httpx.Response:
    file = (filename, content, content_type) if content_type else (filename, content)
    kwargs.setdefault("headers", user.auth)
    return await http.post(url(task_id), files={"file": file}, **kwargs)


def raw_multipart(filename: bytes, content: bytes, content_type: bytes = b"application/octet-stream") -> bytes:
    """A form-data body built by hand: the file name's bytes go on the wire exactly as given."""
    return (
        b"--" + BOUNDARY.encode() + b"\r\n"
        + b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        + b"Content-Type: " + content_type + b"\r\n\r\n" + content + b"\r\n--" + BOUNDARY.encode() + b"--\r\n"
    )


async def post_raw(http: httpx.AsyncClient, user: User, task_id: str, body: bytes) -> httpx.Response:
    return await http.post(url(task_id), content=body, headers=user.auth | {
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})


def blob_path(server: RunningServer, content_hash: str) -> Path:
    return server.settings.data_dir / "attachments" / "sha256" / content_hash[:2] / content_hash


def temp_files(server: RunningServer) -> list[str]:
    return os.listdir(server.settings.data_dir / "attachments" / "tmp")


async def eventually_gone(path: Path, timeout_s: float = 10) -> None:
    with trio.fail_after(timeout_s):
        while path.exists():
            await trio.sleep(0.02)


async def setup(http: httpx.AsyncClient, *roles: str) -> tuple[User, list[User], dict[str, Any]]:
    """An owner, one user per role in ``roles`` (members of the project), and a task."""
    owner = await new_user(http)
    others = [await new_user(http) for _ in roles]
    project_id = await new_project(http, owner, *zip(others, roles, strict=True))
    task = await rest_task(http, owner, project_id, "With files")
    return owner, others, task


# --- the happy path ---------------------------------------------------------------------------

async def test_upload_list_download(server: RunningServer, client: httpx.AsyncClient) -> None:
    owner, (member, viewer), task = await setup(client, "member", "viewer")
    content = "Zürich, 1843: the Analytical Engine.\n".encode() * 50
    created = await upload(client, member, task["id"], content, "Résumé – Ada.txt", "text/plain; charset=utf-8")
    assert created.status_code == 201, created.text
    body = created.json()
    digest = hashlib.sha256(content).hexdigest()
    assert body | {"id": "x", "uploaded_at": "x"} == {
        "id": "x", "task_id": task["id"], "filename": "Résumé – Ada.txt", "file_size": len(content),
        "mime_type": "text/plain", "content_hash": digest, "uploaded_by": member.id, "uploaded_at": "x",
    } | ({"uploaded_by_name": member.username} if "uploaded_by_name" in body else {})
    assert created.headers["Location"] == url(task["id"], body["id"])
    assert blob_path(server, digest).read_bytes() == content  # content-addressed, in the data dir
    assert temp_files(server) == []
    assert os.listdir(server.settings.data_dir / "attachments" / "pins") == []  # unpinned once the row committed

    listed = await client.get(url(task["id"]), headers=viewer.auth)
    assert listed.status_code == 200, listed.text
    assert listed.json()["pagination"]["total"] == 1
    (item,) = listed.json()["data"]
    assert item["id"] == body["id"] and item["uploaded_by_name"] == member.username

    got = await client.get(url(task["id"], body["id"]), headers=viewer.auth)
    assert got.status_code == 200, got.text
    assert got.content == content
    assert got.headers["Content-Length"] == str(len(content))
    assert got.headers["Content-Type"] == "text/plain"
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert got.headers["Content-Disposition"] == (
        "attachment; filename=\"R_sum_ _ Ada.txt\"; filename*=UTF-8''" + quote("Résumé – Ada.txt", safe="")
    )
    assert got.headers["ETag"] == f'"{digest}"' and got.headers["Accept-Ranges"] == "bytes"
    assert "sandbox" in got.headers["Content-Security-Policy"]
    assert "Content-Encoding" not in got.headers
    again = await client.get(url(task["id"], body["id"]), headers=viewer.auth | {"If-None-Match": f'"{digest}"'})
    assert again.status_code == 304 and again.content == b""


async def test_binary_download_is_byte_exact(client: httpx.AsyncClient) -> None:
    owner, _, task = await setup(client)
    content = PNG + os.urandom(40_000)
    created = await upload(client, owner, task["id"], content, "photo.png", "image/png")
    assert created.status_code == 201, created.text
    got = await client.get(url(task["id"], created.json()["id"]), headers=owner.auth)
    assert got.content == content and got.headers["Content-Type"] == "image/png"
    assert int(got.headers["Content-Length"]) == len(content)
    head = await client.head(url(task["id"], created.json()["id"]), headers=owner.auth)
    assert head.status_code == 200 and head.content == b"" and head.headers["Content-Length"] == str(len(content))


async def test_range_requests(client: httpx.AsyncClient) -> None:
    owner, _, task = await setup(client)
    content = bytes(range(256)) * 100
    aid = (await upload(client, owner, task["id"], content, "data.bin", None)).json()["id"]
    where = url(task["id"], aid)
    n = len(content)
    etag = f'"{hashlib.sha256(content).hexdigest()}"'
    for header, start, stop in (("bytes=0-9", 0, 10), ("bytes=100-", 100, n), ("bytes=-5", n - 5, n),
                                (f"bytes=10-{n + 500}", 10, n)):
        got = await client.get(where, headers=owner.auth | {"Range": header})
        assert got.status_code == 206, (header, got.text)
        assert got.content == content[start:stop]
        assert got.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{n}"
        assert got.headers["Content-Length"] == str(stop - start)
    unsatisfiable = await client.get(where, headers=owner.auth | {"Range": f"bytes={n}-"})
    assert_problem(unsatisfiable, 416, "range_not_satisfiable")
    assert unsatisfiable.headers["Content-Range"] == f"bytes */{n}"
    for headers in ({"Range": "bytes=0-1,5-6"}, {"Range": "items=0-1"}, {"Range": "nonsense"},
                    {"Range": "bytes=0-9", "If-Range": '"someone-elses-version"'}):
        whole = await client.get(where, headers=owner.auth | headers)
        assert whole.status_code == 200 and whole.content == content, headers
    matching = await client.get(where, headers=owner.auth | {"Range": "bytes=0-9", "If-Range": etag})
    assert matching.status_code == 206 and matching.content == content[:10]


# --- limits -------------------------------------------------------------------------------------

async def test_exactly_the_limit_and_one_byte_over(server: RunningServer, client: httpx.AsyncClient) -> None:
    owner, _, task = await setup(client)
    at_limit = await upload(client, owner, task["id"], b"a" * LIMIT)
    assert at_limit.status_code == 201, at_limit.text
    assert at_limit.json()["file_size"] == LIMIT
    over = await upload(client, owner, task["id"], b"b" * (LIMIT + 1))
    doc = assert_problem(over, 413, "attachment_too_large")
    assert doc["max_bytes"] == LIMIT
    assert temp_files(server) == []
    assert not blob_path(server, hashlib.sha256(b"b" * (LIMIT + 1)).hexdigest()).exists()
    # The rest of that body was read: the same keep-alive connection serves the next request.
    assert "close" not in over.headers.get("Connection", "").lower()
    listed = await client.get(url(task["id"]), headers=owner.auth)
    assert listed.json()["pagination"]["total"] == 1


async def test_the_limit_holds_while_streaming(server: RunningServer) -> None:
    """A chunked body (no Content-Length) far over the limit is refused at the limit, not read to the end."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=15) as http:
        owner, _, task = await setup(http)
    total = 50 * LIMIT
    sent = 0
    received = b""
    with trio.fail_after(20):
        stream = await open_raw(server, "POST", url(task["id"]), {
            "Authorization": owner.auth["Authorization"], "Transfer-Encoding": "chunked",
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        try:
            head = raw_multipart(b"big.bin", b"")[:-len(BOUNDARY) - 8]  # the part's head, no end
            await stream.send_all(b"%x\r\n%s\r\n" % (len(head), head))

            async def send_filler() -> None:
                nonlocal sent
                chunk = b"z" * 8192
                try:
                    while sent < total:
                        await stream.send_all(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        sent += len(chunk)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the server answered and closed

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_filler)
                try:
                    while b"}" not in received:
                        chunk = await stream.receive_some(65536)
                        if not chunk:
                            break
                        received += chunk
                except trio.BrokenResourceError:
                    pass
                nursery.cancel_scope.cancel()
        finally:
            await stream.aclose()
    assert received.startswith(b"HTTP/1.1 413"), received[:300]
    assert b'"code":"attachment_too_large"' in received
    assert sent < total, "the server read the whole body instead of stopping at the limit"
    assert temp_files(server) == []


async def open_raw(server: RunningServer, method: str, target: str, headers: dict[str, str]) -> trio.SocketStream:
    """A TCP connection with a request head sent (the body is the caller's)."""
    host, port = server.base_url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"] + [f"{k}: {v}" for k, v in headers.items()]
    await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
    return stream


async def test_declared_length_over_the_limit_is_refused_at_once(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=15) as http:
        owner, _, task = await setup(http)
    received = b""
    with trio.fail_after(10):
        stream = await open_raw(server, "POST", url(task["id"]), {
            "Authorization": owner.auth["Authorization"], "Content-Length": str(100 * LIMIT),
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        try:
            await stream.send_all(raw_multipart(b"x.bin", b"x")[:200])
            while b"}" not in received:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                received += chunk
        finally:
            await stream.aclose()
    assert received.startswith(b"HTTP/1.1 413"), received[:200]
    assert b'"code":"attachment_too_large"' in received
    assert b"connection: close" in received.lower()


async def test_the_default_limit_is_25_mib(database_url: str, tmp_path: Path) -> None:
    limit = 25 * 1024 * 1024
    assert Settings().max_upload_bytes == limit
    async with start_server(test_settings(database_url, tmp_path)) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=30) as http:
            owner, _, task = await setup(http)
            exact = await upload(http, owner, task["id"], b"\x00" * limit, "zeros.bin", "application/octet-stream")
            assert exact.status_code == 201, exact.text
            assert exact.json()["file_size"] == limit
            over = await upload(http, owner, task["id"], b"\x00" * (limit + 1), "zeros.bin", "application/octet-stream")
            assert_problem(over, 413, "attachment_too_large")


# --- what is stored -----------------------------------------------------------------------------

async def test_filenames_are_sanitized(server: RunningServer, client: httpx.AsyncClient) -> None:
    owner, _, task = await setup(client)
    cases = [
        (b"../../etc/passwd", "passwd"),
        (b"C:\\Users\\ada\\..\\secret\\plan.txt", "plan.txt"),
        (b"bad\x01na\x7fme\x1b[31m\tred.txt", "badname[31mred.txt"),
        (b".hidden", "hidden"),
        ("evil\u202egnp.exe".encode(), "evilgnp.exe"),
        (b"/", "attachment"),
        ("a".encode() * 300 + b".txt", "a" * 251 + ".txt"),
    ]
    for raw, expected in cases:
        response = await post_raw(client, owner, task["id"], raw_multipart(raw, b"plain text", b"text/plain"))
        assert response.status_code == 201, (raw, response.text)
        assert response.json()["filename"] == expected, raw
        got = await client.get(url(task["id"], response.json()["id"]), headers=owner.auth)
        assert f"filename*=UTF-8''{quote(expected, safe='')}" in got.headers["Content-Disposition"]
    stored = await fetch_value(server.settings.database_url, "SELECT count(*) FROM task_attachments")
    assert stored == len(cases)
    assert sorted(p.name for p in (server.settings.data_dir / "attachments").iterdir()) == ["pins", "sha256", "tmp"]


async def test_content_type_is_checked_against_the_content(server: RunningServer, client: httpx.AsyncClient) -> None:
    owner, _, task = await setup(client)
    png_as_html = await upload(client, owner, task["id"], PNG, "page.html", "text/html")
    assert_problem(png_as_html, 415, "content_type_mismatch")
    html_as_png = await upload(client, owner, task["id"], HTML, "cat.png", "image/png")
    doc = assert_problem(html_as_png, 415, "content_type_mismatch")
    assert "image/png" in doc["detail"] and "text/html" in doc["detail"]
    assert temp_files(server) == []
    for content in (PNG, HTML):
        assert not blob_path(server, hashlib.sha256(content).hexdigest()).exists()

    unknown = await upload(client, owner, task["id"], HTML, "page.weird", "application/x-made-up")
    assert unknown.status_code == 201 and unknown.json()["mime_type"] == "application/octet-stream"
    missing = await upload(client, owner, task["id"], b"no type", "plain", None)
    assert missing.status_code == 201 and missing.json()["mime_type"] == "application/octet-stream"
    served = await client.get(url(task["id"], unknown.json()["id"]), headers=owner.auth)
    assert served.headers["Content-Type"] == "application/octet-stream"
    assert served.headers["Content-Disposition"].startswith("attachment;")


async def test_bad_bodies(client: httpx.AsyncClient) -> None:
    owner, _, task = await setup(client)
    as_json = await client.post(url(task["id"]), headers=owner.auth, json={"file": "no"})
    assert_problem(as_json, 415, "unsupported_media_type")
    no_boundary = await client.post(url(task["id"]), headers=owner.auth | {"Content-Type": "multipart/form-data"},
                                    content=b"x")
    assert_problem(no_boundary, 400, "malformed_multipart")
    truncated = await post_raw(client, owner, task["id"], raw_multipart(b"a.txt", b"text")[:-10])
    assert_problem(truncated, 400, "malformed_multipart")
    other_field = await client.post(url(task["id"]), headers=owner.auth, files={"document": ("a.txt", b"x")})
    doc = assert_problem(other_field, 422, "invalid")
    assert doc["errors"][0]["type"] == "extra_forbidden"
    no_file = await client.post(url(task["id"]), headers=owner.auth | {
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}, content=f"--{BOUNDARY}--\r\n".encode())
    assert assert_problem(no_file, 422, "invalid")["errors"][0]["loc"] == ["file"]
    two = await client.post(url(task["id"]), headers=owner.auth,
                            files=[("file", ("a.txt", b"a", "text/plain")), ("file", ("b.txt", b"b", "text/plain"))])
    assert assert_problem(two, 422, "invalid")["errors"][0]["type"] == "too_many_files"
    assert (await client.get(url(task["id"]), headers=owner.auth)).json()["pagination"]["total"] == 0


# --- who may do what ------------------------------------------------------------------------------

async def test_readers_and_outsiders(client: httpx.AsyncClient, database_url: str) -> None:
    owner, (viewer,), task = await setup(client, "viewer")
    outsider, admin = await new_user(client), await new_user(client)
    await make_admin(database_url, admin.id)
    aid = (await upload(client, owner, task["id"], b"secret plans")).json()["id"]
    for reader in (owner, viewer, admin):
        assert (await client.get(url(task["id"], aid), headers=reader.auth)).content == b"secret plans"
        assert (await client.get(url(task["id"]), headers=reader.auth)).status_code == 200
    assert_problem(await client.get(url(task["id"], aid), headers=outsider.auth), 403, "forbidden")
    assert_problem(await client.get(url(task["id"]), headers=outsider.auth), 403, "forbidden")
    assert_problem(await client.get(url(task["id"], aid)), 401, "unauthenticated")
    assert_problem(await client.get(url(str(uuid.uuid4()), aid), headers=owner.auth), 404, "not_found")
    assert_problem(await client.get(url(task["id"], str(uuid.uuid4())), headers=owner.auth), 404, "not_found")
    assert_problem(await client.get(url(task["id"], "not-a-uuid"), headers=owner.auth), 404, "not_found")
    other_task = await rest_task(client, owner, task["project_id"], "Another")
    assert_problem(await client.get(url(other_task["id"], aid), headers=owner.auth), 404, "not_found")


async def test_viewers_and_outsiders_cannot_upload_and_the_connection_survives(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=15) as http:
        owner, (viewer,), task = await setup(http, "viewer")
        outsider = await new_user(http)
        big = b"v" * (LIMIT - 10)  # a body well over the app-wide cap of other routes' bodies would be too
        for who in (viewer, outsider):
            refused = await upload(http, who, task["id"], big)
            assert_problem(refused, 403, "forbidden")
            # Refused before reading, then drained: this keep-alive connection is still good (STACK.md trap 9).
            assert "close" not in refused.headers.get("Connection", "").lower()
            assert (await http.get("/api/v1/ping")).status_code == 200
        assert_problem(await upload(http, owner, str(uuid.uuid4()), b"x"), 404, "not_found")
        assert_problem(await http.post(url(task["id"]), files={"file": ("a", b"x")}), 401, "unauthenticated")
        assert temp_files(server) == []


async def test_who_may_delete(server: RunningServer, client: httpx.AsyncClient, database_url: str) -> None:
    owner, (uploader, other_member, viewer), task = await setup(client, "member", "member", "viewer")
    admin = await new_user(client)
    await make_admin(database_url, admin.id)

    async def new_attachment(content: bytes) -> str:
        response = await upload(client, uploader, task["id"], content)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    first, second, third = [await new_attachment(f"file {i}".encode()) for i in range(3)]
    for refused in (other_member, viewer):
        assert_problem(await client.delete(url(task["id"], first), headers=refused.auth), 403, "forbidden")
    for allowed, aid in ((uploader, first), (owner, second), (admin, third)):
        response = await client.delete(url(task["id"], aid), headers=allowed.auth)
        assert response.status_code == 204, response.text
        assert_problem(await client.get(url(task["id"], aid), headers=owner.auth), 404, "not_found")
        content = f"file {[first, second, third].index(aid)}".encode()
        assert not blob_path(server, hashlib.sha256(content).hexdigest()).exists()
    assert_problem(await client.delete(url(task["id"], first), headers=owner.auth), 404, "not_found")


async def test_shared_content_is_kept_until_the_last_row_goes(server: RunningServer, client: httpx.AsyncClient) -> None:
    owner, _, task = await setup(client)
    other_task = await rest_task(client, owner, task["project_id"], "Also has it")
    content = b"the same bytes twice"
    path = blob_path(server, hashlib.sha256(content).hexdigest())
    one = (await upload(client, owner, task["id"], content, "one.txt")).json()
    two = (await upload(client, owner, other_task["id"], content, "two.txt")).json()
    assert one["content_hash"] == two["content_hash"] and path.exists()
    assert (await client.delete(url(task["id"], one["id"]), headers=owner.auth)).status_code == 204
    assert path.read_bytes() == content, "another row still points at this file"
    await trio.sleep(0.5)  # a couple of sweeps (no grace in this module) must keep it too
    assert (await client.get(url(other_task["id"], two["id"]), headers=owner.auth)).content == content
    assert (await client.delete(url(other_task["id"], two["id"]), headers=owner.auth)).status_code == 204
    assert not path.exists()


async def test_a_deleted_tasks_files_are_swept(server: RunningServer, client: httpx.AsyncClient) -> None:
    owner, _, task = await setup(client)
    content = b"goes with its task"
    assert (await upload(client, owner, task["id"], content)).status_code == 201
    path = blob_path(server, hashlib.sha256(content).hexdigest())
    assert path.exists()
    assert (await client.delete(f"/api/v1/tasks/{task['id']}", headers=owner.auth)).status_code == 204
    await eventually_gone(path)  # rows went by cascade; the periodic sweep removes the file


# --- realtime ---------------------------------------------------------------------------------------

async def test_subscribers_see_attachments_come_and_go(server: RunningServer, client: httpx.AsyncClient) -> None:
    owner, (member,), task = await setup(client, "member")
    async with open_ws(server.base_url, member.token) as conn:
        assert (await conn.subscribe(task["project_id"]))["type"] == "subscribed"
        created = (await upload(client, owner, task["id"], b"live file", "live.txt")).json()
        added = await conn.expect("event", project_id=task["project_id"], kind="attachment.added")
        assert added["data"]["attachment"]["id"] == created["id"]
        assert added["data"]["attachment"]["filename"] == "live.txt"
        assert (await client.delete(url(task["id"], created["id"]), headers=owner.auth)).status_code == 204
        removed = await conn.expect("event", project_id=task["project_id"], kind="attachment.removed")
        assert removed["data"]["attachment_id"] == created["id"]
    log = (await client.get(f"/api/v1/projects/{task['project_id']}/changes", headers=owner.auth)).json()
    assert [e["kind"] for e in log["data"] if e["kind"].startswith("attachment.")] == [
        "attachment.added", "attachment.removed"]


async def test_an_idempotent_retry_adds_nothing(server: RunningServer, client: httpx.AsyncClient) -> None:
    owner, _, task = await setup(client)
    key = {"Idempotency-Key": f"upload-{uuid.uuid4()}"}
    first = await upload(client, owner, task["id"], b"once only", headers=owner.auth | key)
    again = await upload(client, owner, task["id"], b"once only", headers=owner.auth | key)
    assert first.status_code == again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true" and again.json()["id"] == first.json()["id"]
    assert (await client.get(url(task["id"]), headers=owner.auth)).json()["pagination"]["total"] == 1
    assert blob_path(server, hashlib.sha256(b"once only").hexdigest()).exists()


async def test_the_same_key_with_another_file_is_refused(client: httpx.AsyncClient) -> None:
    owner, _, task = await setup(client)
    key = {"Idempotency-Key": f"upload-{uuid.uuid4()}"}
    first = await upload(client, owner, task["id"], b"first file", headers=owner.auth | key)
    assert first.status_code == 201, first.text
    other = await upload(client, owner, task["id"], b"another file", headers=owner.auth | key)
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused", other.text
    assert (await client.get(url(task["id"]), headers=owner.auth)).json()["pagination"]["total"] == 1
