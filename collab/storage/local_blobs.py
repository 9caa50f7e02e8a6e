"""The blob store on a local (or shared) filesystem: ``<data dir>/attachments``.

Layout::

    attachments/sha256/ab/abcdef...   a blob, named by the sha256 of its content
    attachments/tmp/upload-*          uploads being written (same filesystem: the rename is atomic)
    attachments/tmp/trash-<digest>-*  a blob being deleted (for microseconds)
    attachments/pins/<digest>.*       one marker per published upload whose row is not committed yet

How it keeps the contract of :class:`collab.storage.blobs.BlobStore`:

- **Writes** buffer at most :data:`FLUSH_BYTES`; hashing and writing run in a
  worker thread, so neither memory nor the event loop depends on the file's
  size. ``commit`` fsyncs the file, creates the pin marker, renames the temp
  file onto the blob's path (a reader never sees half a file; the path gets a
  fresh mtime even when the content was there already) and fsyncs the
  directory. The marker is removed when the upload's ``async with`` ends.
- **Deletes** work across processes sharing the directory (several pods on
  one volume): a blob is renamed into ``tmp/`` first, then the pin markers
  and ``keep()`` are checked again; an upload of the same content that
  published before the rename has its marker (or, once done, its row) seen
  there, and the blob is put back. Pins are checked before the row, and an
  upload removes its pin only after its row is committed, so one of the two
  is always visible. Within a process a lock also serializes publishing and
  deleting.
- **Cancellation**: an upload cancelled or failed before ``commit`` removes
  its temp file on the way out (shielded, with a deadline); one cancelled
  after the rename leaves a published, unreferenced blob, which the sweep
  removes after the grace period. Leftovers of a crash (temp files, pin
  markers, a blob in the trash) are cleaned up by the sweep too; a trashed
  blob is put back rather than lost.
- **Errors**: filesystem failures while uploading become :class:`Unavailable`
  (503, retryable), logged once here.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import tempfile
import time
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import AsyncIterator, Awaitable, Callable, Iterable

import trio

from collab.errors import Unavailable
from collab.storage.blobs import BlobMissing, Referenced, StoredBlob, SweepReport, digest_of, key_for

log = logging.getLogger(__name__)

KIB = 1024
FLUSH_BYTES = 256 * KIB
READ_CHUNK_BYTES = 256 * KIB
CLEANUP_DEADLINE_S = 10.0
_HEX = frozenset("0123456789abcdef")


class LocalBlobStore:
    """Blobs as files under ``root`` (see the module docstring)."""

    def __init__(self, root: Path, *, now: Callable[[], float] = time.time) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.pins = root / "pins"
        self._now = now
        self._lock = trio.Lock()

    def prepare(self) -> None:
        """Create the directories (synchronous: once, at start-up)."""
        for directory in (self.tmp, self.pins, self.root / "sha256"):
            directory.mkdir(parents=True, exist_ok=True)

    def path_of(self, key: str) -> Path:
        digest = digest_of(key)
        return self.root / "sha256" / digest[:2] / digest

    # --- writing ---

    def upload(self) -> "LocalUpload":
        return LocalUpload(self)

    async def _publish(self, temp: Path, key: str) -> Path:
        """Pin ``key``, then move the finished temp file onto it; the pin marker's path."""
        digest = digest_of(key)
        async with self._lock:
            pin = await trio.to_thread.run_sync(_create_pin, self.pins, digest)
            try:
                await trio.to_thread.run_sync(_rename_into_place, temp, self.path_of(key))
            except BaseException:
                await _unlink_shielded(pin)
                raise
        return pin

    async def pinned(self, key: str) -> bool:
        """An upload of this content published it and has not committed its row yet (any process)."""
        prefix = digest_of(key) + "."
        return await trio.to_thread.run_sync(lambda: any(n.startswith(prefix) for n in _names(self.pins)))

    # --- reading ---

    async def size(self, key: str) -> int | None:
        try:
            return (await trio.to_thread.run_sync(os.stat, self.path_of(key))).st_size
        except FileNotFoundError:
            return None

    async def exists(self, key: str) -> bool:
        return await self.size(key) is not None

    async def read(self, key: str, start: int = 0, stop: int | None = None) -> AsyncIterator[bytes]:
        """Bytes ``[start, stop)`` of the blob, in :data:`READ_CHUNK_BYTES` pieces."""
        try:
            fd = await trio.to_thread.run_sync(os.open, self.path_of(key), os.O_RDONLY)
        except FileNotFoundError:
            raise BlobMissing(key) from None
        try:
            position = start
            while stop is None or position < stop:
                want = READ_CHUNK_BYTES if stop is None else min(READ_CHUNK_BYTES, stop - position)
                chunk = await trio.to_thread.run_sync(os.pread, fd, want, position)
                if not chunk:
                    if stop is not None:
                        raise BlobMissing(f"{key} ends at {position}, before {stop}")
                    return
                position += len(chunk)
                yield chunk
        finally:
            os.close(fd)

    # --- deleting ---

    async def delete_unless(
        self, key: str, keep: Callable[[], Awaitable[bool]] | None = None, *, min_age_s: float = 0.0,
    ) -> bool:
        """Delete the blob unless pinned, younger than ``min_age_s``, or ``keep()``; True if removed."""
        digest = digest_of(key)
        final = self.path_of(key)
        async with self._lock:
            try:
                modified = (await trio.to_thread.run_sync(os.stat, final)).st_mtime
            except FileNotFoundError:
                return False
            if min_age_s > 0 and self._now() - modified < min_age_s:
                return False
            if await self.pinned(key) or (keep is not None and await keep()):
                return False
            trash = self.tmp / f"trash-{digest}-{secrets.token_hex(4)}"
            try:
                await trio.to_thread.run_sync(os.rename, final, trash)
            except FileNotFoundError:
                return False
            # Another process may have published the same content just before the rename:
            # its pin (or, once it is done, its row) shows now. Pins first: see the module docstring.
            if await self.pinned(key) or (keep is not None and await keep()):
                with contextlib.suppress(FileNotFoundError):  # unless a sweep already put it back
                    await trio.to_thread.run_sync(os.rename, trash, final)
                return False
            try:
                await trio.to_thread.run_sync(os.unlink, trash)
            except FileNotFoundError:
                return False  # another process's sweep put it back meanwhile
        log.info("removed unreferenced blob %s", key)
        return True

    async def sweep(
        self, referenced: Referenced, grace_s: float, *, leftover_grace_s: float | None = None, batch: int = 500,
    ) -> SweepReport:
        """Remove unreferenced blobs older than ``grace_s``, and leftovers older than ``leftover_grace_s``.

        Leftovers: temp files of unfinished uploads (``leftover_grace_s``,
        default ``grace_s``, must exceed the longest pause of a live upload:
        the transfer timeout), stale pin markers, trashed blobs (put back).
        Candidates are asked about in batches and again, one by one, just
        before they go.
        """
        now = self._now()
        leftover_before = now - (grace_s if leftover_grace_s is None else leftover_grace_s)
        digests, leftovers = await trio.to_thread.run_sync(self._scan, now - grace_s, leftover_before)
        cleaned = 0
        for path in leftovers:
            cleaned += await trio.to_thread.run_sync(self._clean_leftover, path)
        removed = kept = 0
        for start in range(0, len(digests), batch):
            chunk = digests[start:start + batch]
            still = await referenced(chunk)
            for digest in chunk:
                if digest not in still and await self.delete_unless(
                    key_for(digest), partial(_referenced_one, referenced, digest), min_age_s=grace_s,
                ):
                    removed += 1
                else:
                    kept += 1
        if removed or cleaned:
            log.info("blob sweep: removed %d unreferenced blobs and %d leftovers", removed, cleaned)
        return SweepReport(removed, cleaned, kept)

    def _scan(self, blobs_before: float, leftovers_before: float) -> tuple[list[str], list[Path]]:
        """(digests of blobs, leftover paths) last modified before these instants (worker thread)."""
        digests = [
            entry.name
            for shard in _entries(self.root / "sha256") if shard.is_dir(follow_symlinks=False)
            for entry in _entries(Path(shard.path))
            if len(entry.name) == 64 and set(entry.name) <= _HEX and _modified_before(entry, blobs_before)
        ]
        # ctime for leftovers: a trashed blob keeps its old mtime, but the rename into tmp/ sets its ctime.
        leftovers = [Path(e.path) for d in (self.tmp, self.pins) for e in _entries(d)
                     if _modified_before(e, leftovers_before, ctime=True)]
        return digests, leftovers

    def _clean_leftover(self, path: Path) -> int:
        """Remove a stale temp file or pin marker; put a trashed blob back (worker thread)."""
        name = path.name
        try:
            if (name.startswith("trash-") and len(name) > 70
                    and not (final := self.path_of(key_for(name[6:70]))).exists()):
                final.parent.mkdir(parents=True, exist_ok=True)
                os.rename(path, final)  # a crash between trash and unlink: the blob comes back, unreferenced or not
            else:
                os.unlink(path)
        except (FileNotFoundError, ValueError):
            return 0
        return 1


async def _referenced_one(referenced: Referenced, digest: str) -> bool:
    return digest in await referenced([digest])


def _modified_before(entry: os.DirEntry[str], instant: float, *, ctime: bool = False) -> bool:
    try:
        if not entry.is_file(follow_symlinks=False):
            return False
        stat = entry.stat(follow_symlinks=False)
        return (max(stat.st_mtime, stat.st_ctime) if ctime else stat.st_mtime) < instant
    except FileNotFoundError:  # removed while we looked
        return False


def _entries(directory: Path) -> Iterable[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as it:
            return list(it)
    except FileNotFoundError:
        return []


def _names(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


def _create_pin(pins: Path, digest: str) -> Path:
    path = pins / f"{digest}.{secrets.token_hex(8)}"
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return path


def _rename_into_place(temp: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temp, final)
    directory = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


async def _unlink_shielded(path: Path) -> None:
    with trio.move_on_after(CLEANUP_DEADLINE_S) as cleanup:
        cleanup.shield = True
        await trio.to_thread.run_sync(partial(_discard, None, path))


class LocalUpload:
    """One file being written: ``async with store.upload() as up: await up.write(...); blob = await up.commit()``."""

    def __init__(self, store: LocalBlobStore) -> None:
        self._store = store
        self._hash = hashlib.sha256()
        self._buffer = bytearray()
        self._fd: int | None = None
        self.temp_path = Path()
        self.size = 0
        self.pin: Path | None = None
        self._committed: StoredBlob | None = None

    async def __aenter__(self) -> "LocalUpload":
        try:
            self._fd, name = await trio.to_thread.run_sync(
                lambda: tempfile.mkstemp(prefix="upload-", dir=self._store.tmp)
            )
        except OSError as exc:
            raise _storage_error("cannot create a temp file for the upload", exc) from exc
        self.temp_path = Path(name)
        return self

    async def write(self, data: bytes) -> None:
        self._buffer += data
        self.size += len(data)
        if len(self._buffer) >= FLUSH_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        if not self._buffer:
            return
        chunk, self._buffer = bytes(self._buffer), bytearray()
        assert self._fd is not None, "write after commit"
        try:
            await trio.to_thread.run_sync(_hash_and_write, self._hash, self._fd, chunk)
        except OSError as exc:
            raise _storage_error("cannot write the upload", exc) from exc

    async def commit(self) -> StoredBlob:
        """Make the content durable under its hash; pinned until the ``async with`` ends."""
        await self._flush()
        fd, self._fd = self._fd, None
        assert fd is not None, "commit twice"
        try:
            await trio.to_thread.run_sync(_sync_and_close, fd)
            digest = self._hash.hexdigest()
            key = key_for(digest)
            self.pin = await self._store._publish(self.temp_path, key)
        except OSError as exc:
            raise _storage_error("cannot store the upload", exc) from exc
        self._committed = StoredBlob(key, digest, self.size)
        return self._committed

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
    ) -> None:
        if self.pin is not None:
            pin, self.pin = self.pin, None
            await _unlink_shielded(pin)
        if self._committed is None:
            fd, self._fd = self._fd, None
            with trio.move_on_after(CLEANUP_DEADLINE_S) as cleanup:
                cleanup.shield = True
                await trio.to_thread.run_sync(_discard, fd, self.temp_path)


def _hash_and_write(hasher: "hashlib._Hash", fd: int, chunk: bytes) -> None:
    hasher.update(chunk)  # releases the GIL for large buffers
    view = memoryview(chunk)
    while view:
        view = view[os.write(fd, view):]


def _sync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(fd: int | None, path: Path) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        os.unlink(path)
    except (FileNotFoundError, IsADirectoryError):
        pass


def _storage_error(what: str, exc: OSError) -> Unavailable:
    log.error("attachment storage: %s: %s", what, exc)
    return Unavailable("Attachment storage is unavailable; retry later")
