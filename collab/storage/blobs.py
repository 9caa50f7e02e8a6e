"""Attachment files: the blob store interface, and the periodic collection of unreferenced blobs.

:class:`BlobStore` is what the HTTP layer uses; :class:`collab.storage.local_blobs.LocalBlobStore`
keeps blobs under ``<data dir>/attachments`` (an object store can implement
the same protocol later). A blob's key is ``sha256/<hex digest of its
content>``, so identical uploads share one blob.

The contract every implementation keeps:

- :meth:`BlobStore.upload` streams: ``write`` any number of chunks (memory
  bounded whatever the size), ``commit`` makes the content durable under its
  key and returns a :class:`StoredBlob`; leaving the ``async with`` without a
  commit (error, cancellation) leaves nothing behind.
- A committed blob is **pinned** until its ``async with`` block ends, that
  is until the caller has committed the row that references it; no
  deletion removes a pinned blob, in this process or another one sharing the
  store.
- :meth:`BlobStore.delete_unless` removes a blob unless it is pinned,
  younger than ``min_age_s``, or ``keep()`` (the caller's "is a row still
  pointing at it?") says so, and an upload of the same content racing the
  deletion keeps its file.
- :meth:`BlobStore.read` yields a byte range in chunks; :class:`BlobMissing`
  when the blob is gone or shorter than asked.

:func:`sweep_periodically` runs :meth:`BlobStore.sweep` at start-up and then
every ``interval_s``: blobs no row references, older than ``grace_s``, go,
and so do leftovers of uploads that never finished. A failed sweep is logged
and retried at the next interval.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from types import TracebackType
from typing import AsyncIterator, Awaitable, Callable, Protocol

import trio

log = logging.getLogger(__name__)

_KEY = re.compile(r"^sha256/([0-9a-f]{64})$")

#: ``referenced(hashes)``: which of these content hashes some row still points at.
Referenced = Callable[[list[str]], Awaitable[set[str]]]


class BlobMissing(Exception):
    """A key names no stored blob (or the blob is shorter than a row says)."""


@dataclass(frozen=True, slots=True)
class StoredBlob:
    key: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class SweepReport:
    blobs_removed: int
    leftovers_removed: int
    blobs_kept: int


def key_for(sha256_hex: str) -> str:
    return f"sha256/{sha256_hex}"


def digest_of(key: str) -> str:
    """The content hash inside a key; ValueError for a key no store makes (so never a path)."""
    match = _KEY.match(key)
    if match is None:
        raise ValueError(f"not a blob key: {key[:80]!r}")
    return match[1]


class BlobUpload(Protocol):
    async def write(self, data: bytes) -> None: ...
    async def commit(self) -> StoredBlob: ...
    async def __aenter__(self) -> "BlobUpload": ...
    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None, /,
    ) -> None: ...


class BlobStore(Protocol):
    """Where attachment contents live (see the module docstring for the contract)."""

    def upload(self) -> BlobUpload: ...
    def read(self, key: str, start: int = 0, stop: int | None = None) -> AsyncIterator[bytes]: ...
    async def size(self, key: str) -> int | None: ...
    async def exists(self, key: str) -> bool: ...
    async def delete_unless(
        self, key: str, keep: Callable[[], Awaitable[bool]] | None = None, *, min_age_s: float = 0.0,
    ) -> bool: ...
    async def sweep(
        self, referenced: Referenced, grace_s: float, *, leftover_grace_s: float | None = None,
    ) -> SweepReport: ...


async def sweep_periodically(
    store: BlobStore, referenced: Referenced, *, interval_s: float, grace_s: float,
    leftover_grace_s: float | None = None, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Sweep now, then every ``interval_s``, until cancelled."""
    task_status.started()
    while True:
        try:
            await store.sweep(referenced, grace_s, leftover_grace_s=leftover_grace_s)
        except Exception as exc:  # noqa: BLE001 - a background chore: log, try again later
            log.warning("blob sweep failed: %s", exc, exc_info=exc)
        await trio.sleep(interval_s)
