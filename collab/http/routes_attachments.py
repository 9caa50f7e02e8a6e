"""/api/v1/tasks/{id}/attachments: files on a task (upload, list, download, delete).

- **Upload** (``POST``, multipart/form-data, the file in the field ``file``):
  the caller must be allowed to write the task's project; that is checked
  before a byte of the body is read. The body arrives through
  :mod:`collab.http.upload_body` (bounded buffer, backpressure), is parsed by
  :class:`collab.http.multipart.UploadParser`, its first bytes are sniffed
  (:mod:`collab.http.sniff`) and it is streamed into the blob store, hashed
  on the way (never whole in memory). The row is then an ``attachment.add``
  op through the project actor, so subscribers and the change log see it.
  Limits: ``COLLAB_MAX_UPLOAD_BYTES`` per file (413 ``attachment_too_large``
  the moment one byte too many arrives), ``COLLAB_BODY_TIMEOUT_S`` of
  silence and ``COLLAB_ATTACHMENT_TRANSFER_TIMEOUT_S`` in total (408).
- **List**: any reader of the project, oldest first, paginated, from the
  actor's committed state.
- **Download**: any reader; ``Content-Disposition: attachment`` with the
  RFC 6266 ``filename*``, exact ``Content-Length``, ``nosniff``, a sandboxing
  CSP, the content hash as a strong ``ETag`` (``If-None-Match`` -> 304), and
  single byte ranges (206; ``If-Range``; 416 when unsatisfiable). The file is
  read in chunks from a worker thread as the client takes it.
- **Delete**: the uploader, the project owner or an admin (the actor checks).
  Afterwards the file is removed unless another row still has the same
  content (or an upload of it is in flight); what slips through (rows gone with
  their task, crashes) is left to the periodic sweep (storage/blobs.py).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone
from urllib.parse import quote

import pydantic
import trio
from quart import Blueprint, Response, request
from quart_schema import DataSource, document_request
from quart_schema.pydantic import File
from werkzeug.exceptions import RequestEntityTooLarge

from collab.domain import ops
from collab.domain.model import Attachment
from collab.domain.permissions import Action, require
from collab.domain.views import attachment_payload
from collab.errors import CollabError, NotFound, RequestTimeout, Unavailable
from collab.http.context import services
from collab.http.inputs import path_uuid, read_query
from collab.http.multipart import (
    AttachmentTooLarge, FileData, FileEnded, FileStarted, UploadParser, boundary_of, sanitize_filename,
)
from collab.http.openapi import api
from collab.http.responses import paginated
from collab.http.schemas import Paging
from collab.http.schemas_out import Out, Page
from collab.http.sniff import SNIFF_BYTES, checked_type, sniff
from collab.http.task_access import ReadableTask, readable_task
from collab.http.upload_body import next_chunk
from collab.http.writes import write
from collab.storage import attachments as store
from collab.storage.blobs import BlobMissing, BlobStore, BlobUpload, key_for

log = logging.getLogger(__name__)

blueprint = Blueprint("attachments", __name__, url_prefix="/api/v1/tasks")
UPLOAD_ENDPOINT = "attachments.upload"
DOWNLOAD_CSP = "default-src 'none'; sandbox; frame-ancestors 'none'"


class AttachmentOut(Out):
    """An attachment's metadata (the bytes are at its download URL)."""

    id: uuid.UUID
    task_id: uuid.UUID
    filename: str
    file_size: int
    mime_type: str
    content_hash: str
    uploaded_by: uuid.UUID
    uploaded_by_name: str | None = None
    uploaded_at: datetime


class AttachmentUpload(pydantic.BaseModel):
    file: File


class FileContent(pydantic.RootModel[bytes]):
    """The file's bytes, as uploaded (served with the recorded content type)."""


class RangeNotSatisfiable(CollabError):
    code = "range_not_satisfiable"
    status = 416
    title = "The requested range is outside the file"


def blob_store() -> BlobStore:
    blobs = services().blobs
    if blobs is None:
        raise Unavailable("Attachment storage is not configured on this node")
    return blobs


# --- list ------------------------------------------------------------------------------

@blueprint.get("/<task_id>/attachments")
@api(tag="attachments", ok=Page[AttachmentOut], query=Paging, errors=(403, 404))
async def list_(task_id: str) -> Response:
    found = await readable_task(task_id)
    q = read_query(Paging)
    attachments = sorted(
        (a for a in found.state.attachments.values() if a.task_id == found.task.id),
        key=lambda a: (a.uploaded_at, a.id),
    )
    page = attachments[q.offset:q.offset + q.limit]
    items = [attachment_payload(a) | {"uploaded_by_name": found.name_of(a.uploaded_by)} for a in page]
    return paginated(items, page=q.effective_page, limit=q.limit, total=len(attachments),
                     next_cursor=q.next_cursor(len(attachments)))


# --- upload ------------------------------------------------------------------------------

@blueprint.post("/<task_id>/attachments")
@document_request(AttachmentUpload, source=DataSource.FORM_MULTIPART)
@api(tag="attachments", ok=AttachmentOut, status=201, errors=(400, 403, 404, 408, 409, 413, 415, 422, 503))
async def upload(task_id: str) -> Response:
    found = await readable_task(task_id)
    principal = found.principal
    require(principal, found.state.members.get(principal.user_id), Action.WRITE_TASKS)
    app = services()
    settings = app.settings
    parser = UploadParser(boundary_of(request.headers.get("Content-Type")), max_file_bytes=settings.max_upload_bytes)
    failure: CollabError | None = None
    async with blob_store().upload() as upload_:
        with trio.move_on_after(settings.attachment_transfer_timeout_s) as transfer:
            filename, mime_type = await _receive(parser, upload_, settings.max_upload_bytes, settings.body_timeout_s)
        if transfer.cancelled_caught:
            raise RequestTimeout("The upload did not finish within COLLAB_ATTACHMENT_TRANSFER_TIMEOUT_S")
        blob = await upload_.commit()
        attachment = Attachment(
            id=uuid.uuid4(), task_id=found.task.id, filename=filename, file_size=blob.size, mime_type=mime_type,
            content_hash=blob.sha256, storage_key=blob.key, uploaded_by=principal.user_id,
            uploaded_at=datetime.now(timezone.utc),
        )
        try:
            # The blob stays pinned (safe from deletion) until the row is committed.
            return await write(
                found.state.project.id, lambda p: ops.AttachmentAdd(attachment), success_status=201,
                location=lambda r: f"/api/v1/tasks/{attachment.task_id}/attachments/{attachment.id}",
                request_digest=f"{blob.sha256}\n{filename}\n{mime_type}",
            )
        except CollabError as exc:
            failure = exc
    # Refused for good: nothing will reference the blob (unless another row already does).
    # When the outcome is unknown (busy, unavailable) the op may still commit: the sweep decides later.
    if not failure.retryable:
        await _forget(blob.sha256)
    raise failure


async def _receive(
    parser: UploadParser, sink: BlobUpload, max_file_bytes: int, idle_timeout_s: float,
) -> tuple[str, str]:
    """Stream the file part of the request body into ``sink``: (safe filename, checked content type)."""
    body = request.body
    file = _File(sink)
    try:
        while (chunk := await next_chunk(body, idle_timeout_s=idle_timeout_s)) is not None:
            for event in parser.feed(chunk):
                await file.take(event)
        for event in parser.close():
            await file.take(event)
    except RequestEntityTooLarge:
        raise AttachmentTooLarge(max_file_bytes) from None
    except trio.TooSlowError:
        raise RequestTimeout(f"No part of the upload arrived for {idle_timeout_s:g} s") from None
    assert file.filename is not None and file.mime_type is not None  # the parser saw one whole file
    return file.filename, file.mime_type


class _File:
    """Holds back the first :data:`SNIFF_BYTES` to check the content type, then passes bytes through."""

    def __init__(self, sink: BlobUpload) -> None:
        self.sink = sink
        self.filename: str | None = None
        self.declared: str | None = None
        self.mime_type: str | None = None
        self.head = bytearray()

    async def take(self, event: FileStarted | FileData | FileEnded) -> None:
        if isinstance(event, FileStarted):
            self.filename = sanitize_filename(event.filename)
            self.declared = event.declared_type
        elif isinstance(event, FileData):
            if self.mime_type is not None:
                await self.sink.write(event.data)
                return
            self.head += event.data
            if len(self.head) >= SNIFF_BYTES:
                await self._decide()
        elif self.mime_type is None:  # FileEnded before SNIFF_BYTES: a small file
            await self._decide()

    async def _decide(self) -> None:
        head, self.head = bytes(self.head), bytearray()
        self.mime_type = checked_type(self.declared, sniff(head))
        await self.sink.write(head)


# --- download ------------------------------------------------------------------------------

def _attachment(found: ReadableTask, attachment_id: str) -> Attachment:
    aid = path_uuid(attachment_id, "attachment")
    attachment = found.state.attachments.get(aid)
    if attachment is None or attachment.task_id != found.task.id:
        raise NotFound("No such attachment")
    return attachment


@blueprint.get("/<task_id>/attachments/<attachment_id>")
@api(tag="attachments", ok=FileContent, errors=(403, 404, 416))
async def download(task_id: str, attachment_id: str) -> Response:
    found = await readable_task(task_id)
    attachment = _attachment(found, attachment_id)
    etag = f'"{attachment.content_hash}"'
    if _matches(request.headers.get("If-None-Match"), etag):
        return Response(b"", status=304, headers={"ETag": etag})
    size = attachment.file_size
    start, stop = _byte_range(size, etag)
    blobs = blob_store()
    if await blobs.size(attachment.storage_key) != size:
        log.error("attachment %s: its blob %s is missing or has the wrong size", attachment.id, attachment.storage_key)
        raise NotFound("The file of this attachment is missing")
    partial = (start, stop) != (0, size)
    # HEAD: the same headers, and no reading of the file (hypercorn would drop the bytes anyway).
    body = b"" if request.method == "HEAD" else _stream(blobs.read(attachment.storage_key, start, stop), attachment.id)
    response = Response(body, status=206 if partial else 200)
    headers = response.headers
    headers["Content-Type"] = attachment.mime_type
    headers["Content-Length"] = str(stop - start)
    headers["Content-Disposition"] = content_disposition(attachment.filename)
    headers["Accept-Ranges"] = "bytes"
    headers["ETag"] = etag
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Content-Security-Policy"] = DOWNLOAD_CSP
    headers["Cross-Origin-Resource-Policy"] = "same-origin"
    if partial:
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    response.timeout = services().settings.attachment_transfer_timeout_s  # instead of COLLAB_RESPONSE_TIMEOUT_S
    return response


async def _stream(chunks, attachment_id: uuid.UUID):  # type: ignore[no-untyped-def]
    """The blob's chunks; a blob that vanishes mid-way ends the response early (logged)."""
    try:
        async for chunk in chunks:
            yield chunk
    except BlobMissing:
        log.error("attachment %s: its blob vanished during a download", attachment_id)
        raise


def _matches(header: str | None, etag: str) -> bool:
    if header is None:
        return False
    return header.strip() == "*" or any(part.strip().removeprefix("W/") == etag for part in header.split(","))


def _byte_range(size: int, etag: str) -> tuple[int, int]:
    """[start, stop) to send: the whole file unless one satisfiable byte range was asked for."""
    wanted = request.range
    if wanted is None or wanted.units != "bytes" or len(wanted.ranges) != 1:
        return 0, size  # no Range, one we do not parse, or several: the whole file (RFC 9110 allows it)
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:
        return 0, size  # the client's copy is another version: send it all
    found = wanted.range_for_length(size)
    if found is None:
        raise RangeNotSatisfiable(f"The file has {size} bytes", headers={"Content-Range": f"bytes */{size}"})
    return found


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback name and the exact name as RFC 5987 ``filename*``."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


# --- delete ------------------------------------------------------------------------------

@blueprint.delete("/<task_id>/attachments/<attachment_id>")
@api(tag="attachments", status=204, errors=(403, 404, 409, 503))
async def delete(task_id: str, attachment_id: str) -> Response:
    tid = path_uuid(task_id, "task")
    aid = path_uuid(attachment_id, "attachment")
    registry = services().registry
    project_id = await registry.project_of_task(tid)
    state = (await registry.read(project_id)).state
    known = state.attachments.get(aid) if state is not None else None
    response = await write(project_id, lambda p: ops.AttachmentRemove(tid, aid), success_status=204)
    if known is not None and known.task_id == tid:
        await _forget(known.content_hash)
    return response


async def _forget(content_hash: str) -> None:
    """Remove a blob that no row references any more (the sweep retries what fails here)."""
    app = services()

    async def still_referenced() -> bool:
        return await app.db.run(store.is_referenced, content_hash, transaction=False)

    try:
        await blob_store().delete_unless(key_for(content_hash), still_referenced)
    except CollabError as exc:
        log.warning("could not remove the blob %s now (%s); the sweep will", content_hash, exc.code)
