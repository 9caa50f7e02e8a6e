"""Tests for collab.storage.local_blobs (and blobs): the content-addressed store and its collection.

Real files in a temp dir (the store's contract is about files: atomic renames,
nothing left behind, nothing lost), no database: "is it referenced" is a
callback here.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from collab.errors import Unavailable
from collab.storage.blobs import BlobMissing, digest_of, key_for, sweep_periodically
from collab.storage.local_blobs import FLUSH_BYTES, READ_CHUNK_BYTES, LocalBlobStore


class Clock:
    def __init__(self) -> None:
        self.now = time.time()  # files get real mtimes; tests age them with os.utime

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> LocalBlobStore:
    s = LocalBlobStore(tmp_path / "attachments", now=clock)
    s.prepare()
    return s


def temp_files(store: LocalBlobStore) -> list[str]:
    return os.listdir(store.root / "tmp")


async def put(store: LocalBlobStore, *chunks: bytes):  # type: ignore[no-untyped-def]
    async with store.upload() as upload:
        for chunk in chunks:
            await upload.write(chunk)
        return await upload.commit()


async def read_all(store: LocalBlobStore, key: str, start: int = 0, stop: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in store.read(key, start, stop)])


def age(store: LocalBlobStore, key: str, clock: Clock, seconds: float) -> None:
    """Make the blob look ``seconds`` old by the store's clock."""
    os.utime(store.path_of(key), (clock.now - seconds, clock.now - seconds))


async def test_put_stores_under_the_content_hash(store: LocalBlobStore) -> None:
    data = os.urandom(3 * FLUSH_BYTES + 123)
    blob = await put(store, data[:1000], data[1000:FLUSH_BYTES * 2], data[FLUSH_BYTES * 2:])
    digest = hashlib.sha256(data).hexdigest()
    assert (blob.key, blob.sha256, blob.size) == (f"sha256/{digest}", digest, len(data))
    assert store.path_of(blob.key) == store.root / "sha256" / digest[:2] / digest
    assert store.path_of(blob.key).read_bytes() == data
    assert await store.size(blob.key) == len(data) and await store.exists(blob.key)
    assert temp_files(store) == []


async def test_identical_content_shares_one_file(store: LocalBlobStore) -> None:
    first = await put(store, b"same bytes")
    second = await put(store, b"same ", b"bytes")
    assert first == second
    assert len(list((store.root / "sha256").rglob("*"))) == 2  # one shard dir, one file
    assert os.listdir(store.pins) == []  # both uploads' pins are gone with their blocks


async def test_empty_blob(store: LocalBlobStore) -> None:
    blob = await put(store)
    assert blob.size == 0 and blob.sha256 == hashlib.sha256(b"").hexdigest()
    assert await read_all(store, blob.key) == b""


async def test_ranges(store: LocalBlobStore) -> None:
    data = os.urandom(READ_CHUNK_BYTES * 2 + 10)
    blob = await put(store, data)
    assert await read_all(store, blob.key) == data
    assert await read_all(store, blob.key, 5, 17) == data[5:17]
    assert await read_all(store, blob.key, READ_CHUNK_BYTES - 1, READ_CHUNK_BYTES * 2 + 1) == \
        data[READ_CHUNK_BYTES - 1:READ_CHUNK_BYTES * 2 + 1]
    assert await read_all(store, blob.key, len(data) - 1) == data[-1:]
    chunks = [c async for c in store.read(blob.key)]
    assert max(map(len, chunks)) <= READ_CHUNK_BYTES


async def test_reading_a_missing_or_short_blob_raises(store: LocalBlobStore) -> None:
    missing = key_for("0" * 64)
    with pytest.raises(BlobMissing):
        await read_all(store, missing)
    assert await store.size(missing) is None and not await store.exists(missing)
    blob = await put(store, b"short")
    with pytest.raises(BlobMissing):
        await read_all(store, blob.key, 0, 10)


async def test_a_failed_upload_leaves_nothing(store: LocalBlobStore) -> None:
    with pytest.raises(RuntimeError):
        async with store.upload() as upload:
            await upload.write(b"x" * (FLUSH_BYTES + 1))
            assert len(temp_files(store)) == 1
            raise RuntimeError("client went away")
    assert temp_files(store) == []
    assert list((store.root / "sha256").iterdir()) == []


async def test_a_cancelled_upload_leaves_nothing(store: LocalBlobStore) -> None:
    with trio.move_on_after(0.05):
        async with store.upload() as upload:
            await upload.write(b"partial")
            await trio.sleep_forever()
    assert temp_files(store) == []


async def test_keys_are_checked(store: LocalBlobStore) -> None:
    for bad in ("../../etc/passwd", "sha256/../../x", "sha256/" + "g" * 64, "md5/" + "0" * 32, key_for("A" * 64)):
        with pytest.raises(ValueError):
            store.path_of(bad)
    assert digest_of(key_for("a" * 64)) == "a" * 64


async def test_storage_errors_are_503(tmp_path: Path) -> None:
    s = LocalBlobStore(tmp_path / "nowhere")  # prepare() never ran: no tmp dir
    with pytest.raises(Unavailable):
        async with s.upload():
            pass


# --- deleting ------------------------------------------------------------------------------

async def test_delete_unless(store: LocalBlobStore, clock: Clock) -> None:
    blob = await put(store, b"data")

    async def referenced() -> bool:
        return True

    async def unreferenced() -> bool:
        return False

    assert not await store.delete_unless(blob.key, referenced)
    assert not await store.delete_unless(blob.key, unreferenced, min_age_s=60)  # too young
    age(store, blob.key, clock, 61)
    assert await store.delete_unless(blob.key, unreferenced, min_age_s=60)
    assert not await store.exists(blob.key)
    assert not await store.delete_unless(blob.key, unreferenced)  # already gone


async def test_a_pinned_blob_is_never_deleted(store: LocalBlobStore) -> None:
    async with store.upload() as upload:
        await upload.write(b"pinned")
        blob = await upload.commit()
        assert await store.pinned(blob.key) and len(os.listdir(store.pins)) == 1
        assert not await store.delete_unless(blob.key)  # the row is not committed yet
    assert not await store.pinned(blob.key)
    assert await store.delete_unless(blob.key)  # the block ended: unpinned


async def test_an_identical_upload_racing_a_delete_keeps_its_file(store: LocalBlobStore) -> None:
    """The last row of some content is deleted while an upload of the same content lands.

    The delete checks "still referenced?" under the store's lock; the upload
    must wait for that lock to publish its file, so whichever order they take,
    the upload's file exists afterwards.
    """
    old = await put(store, b"shared content")
    checking = trio.Event()
    release = trio.Event()

    async def slow_unreferenced() -> bool:
        checking.set()
        await release.wait()
        return False  # the old row is gone and the new one is not committed yet

    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.delete_unless, old.key, slow_unreferenced)
        await checking.wait()
        async with store.upload() as upload:
            await upload.write(b"shared content")
            async with trio.open_nursery() as inner:
                inner.start_soon(upload.commit)
                await trio.testing.wait_all_tasks_blocked()
                assert upload.pin is None, "the upload published while the delete held the lock"
                release.set()
            assert upload.pin is not None and await store.pinned(old.key)
            assert await store.exists(old.key), "the upload's file must exist once it is published"
            assert not await store.delete_unless(old.key), "pinned until the row is committed"
    assert await read_all(store, old.key) == b"shared content"


# --- sweeping ------------------------------------------------------------------------------

async def test_sweep_removes_old_unreferenced_blobs_and_temp_files(store: LocalBlobStore, clock: Clock) -> None:
    kept_old = await put(store, b"referenced")
    gone_old = await put(store, b"orphan")
    young = await put(store, b"young orphan")
    stale_temp = store.root / "tmp" / "upload-crashed"
    stale_temp.write_bytes(b"half")
    fresh_temp = store.root / "tmp" / "upload-in-flight"
    fresh_temp.write_bytes(b"half")
    clock.now += 7200  # leftovers are judged by ctime, which only the clock can age
    for blob in (kept_old, gone_old, young):
        age(store, blob.key, clock, 7200)
    age(store, young.key, clock, 10)
    os.utime(fresh_temp, (clock.now, clock.now))
    (store.root / "sha256" / "zz").mkdir()
    (store.root / "sha256" / "zz" / "not-a-blob").write_bytes(b"?")
    asked: list[list[str]] = []

    async def referenced(hashes: list[str]) -> set[str]:
        asked.append(sorted(hashes))
        return {kept_old.sha256} & set(hashes)

    report = await store.sweep(referenced, grace_s=3600, leftover_grace_s=3600)
    assert (report.blobs_removed, report.leftovers_removed, report.blobs_kept) == (1, 1, 1)
    # One batch with the old ones (young ones are not even asked about), then the orphan again
    # just before and just after it is moved aside.
    assert asked == [sorted([kept_old.sha256, gone_old.sha256]), [gone_old.sha256], [gone_old.sha256]]
    assert await store.exists(kept_old.key) and await store.exists(young.key)
    assert not await store.exists(gone_old.key)
    assert temp_files(store) == ["upload-in-flight"]
    assert (store.root / "sha256" / "zz" / "not-a-blob").exists()  # not ours: left alone


async def test_sweep_batches_its_questions(store: LocalBlobStore, clock: Clock) -> None:
    blobs = [await put(store, f"blob {i}".encode()) for i in range(7)]
    for blob in blobs:
        age(store, blob.key, clock, 100)
    sizes: list[int] = []

    async def referenced(hashes: list[str]) -> set[str]:
        sizes.append(len(hashes))
        return set()

    report = await store.sweep(referenced, grace_s=10, batch=3)
    # 3 batches, then each orphan asked again before and after it is moved aside
    assert sorted(sizes) == [1] * 15 + [3, 3] and report.blobs_removed == 7


async def test_sweep_keeps_a_blob_whose_row_landed_after_the_batch_question(store: LocalBlobStore) -> None:
    """With no grace at all: the batch says "orphan", then an upload of the same content is
    published and its row committed (unpinned) before the sweep removes it; the re-check keeps it."""
    blob = await put(store, b"about to be referenced")
    rows: set[str] = set()

    async def referenced(hashes: list[str]) -> set[str]:
        if len(rows) == 0 and len(hashes) > 0:
            answer: set[str] = set()
            await put(store, b"about to be referenced")  # published, pinned, unpinned
            rows.add(blob.sha256)                        # ... its row committed
            return answer
        return rows & set(hashes)

    report = await store.sweep(referenced, grace_s=0)
    assert report.blobs_removed == 0 and await store.exists(blob.key)


async def test_leftovers_have_their_own_grace(store: LocalBlobStore, clock: Clock) -> None:
    live = store.root / "tmp" / "upload-slow-client"
    live.write_bytes(b"x")
    clock.now += 120

    async def nothing(hashes: list[str]) -> set[str]:
        return set()

    assert (await store.sweep(nothing, grace_s=0, leftover_grace_s=600)).leftovers_removed == 0
    assert (await store.sweep(nothing, grace_s=0, leftover_grace_s=60)).leftovers_removed == 1
    assert not live.exists()


async def test_crash_leftovers_are_cleaned_and_trashed_blobs_come_back(store: LocalBlobStore, clock: Clock) -> None:
    blob = await put(store, b"caught mid-delete")
    trash = store.tmp / f"trash-{blob.sha256}-deadbeef"
    os.rename(store.path_of(blob.key), trash)  # a process died between its two renames
    stale_pin = store.pins / f"{'e' * 64}.0123456789abcdef"
    stale_pin.write_bytes(b"")
    clock.now += 3600

    async def everything(hashes: list[str]) -> set[str]:
        return set(hashes)

    report = await store.sweep(everything, grace_s=10, leftover_grace_s=600)
    assert report.leftovers_removed == 2
    assert await read_all(store, blob.key) == b"caught mid-delete"
    assert not trash.exists() and not stale_pin.exists()


async def test_another_process_publishing_during_a_delete_keeps_its_file(store: LocalBlobStore) -> None:
    """No shared lock across processes: the other one's pin marker, created before its rename,
    is what the delete sees after moving the blob aside; the blob goes back."""
    blob = await put(store, b"shared across pods")
    other_pin = store.pins / f"{blob.sha256}.otherprocess0001"

    async def unreferenced_while_the_other_process_publishes() -> bool:
        if not other_pin.exists():  # first check: before the rename; the other process pins and publishes now
            other_pin.write_bytes(b"")
            (store.tmp / "theirs").write_bytes(b"shared across pods")
            os.replace(store.tmp / "theirs", store.path_of(blob.key))
        return False

    assert not await store.delete_unless(blob.key, unreferenced_while_the_other_process_publishes)
    assert await read_all(store, blob.key) == b"shared across pods"
    assert os.listdir(store.tmp) == []


async def test_sweep_periodically_runs_at_start_and_survives_failures(store: LocalBlobStore, clock: Clock) -> None:
    orphan = await put(store, b"orphan")
    age(store, orphan.key, clock, 100)
    calls = 0

    async def flaky(hashes: list[str]) -> set[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Unavailable("database down")
        return set()

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: sweep_periodically(
                store, flaky, interval_s=0.01, grace_s=10, task_status=task_status))
            with trio.fail_after(5):
                while await store.exists(orphan.key):
                    await trio.sleep(0.005)
            scope.cancel()
    assert calls >= 2
