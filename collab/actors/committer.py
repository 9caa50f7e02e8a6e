"""Committers: how project actors' task batches reach PostgreSQL.

A project actor commits each batch before it answers (group commit within
the project). With hundreds of busy projects, one statement per project per
batch makes the database round trip the bottleneck: every project pays a
pool checkout, a bridge hop to asyncio and a round trip of its own.
:class:`GroupCommitter` runs a few shared committer tasks instead; each takes
every task batch queued at that moment, from any number of projects, and
writes them as ONE fenced statement (:func:`task_commits.commit_task_batches`).
While one committer waits on PostgreSQL, the next collects the batches that
arrive meanwhile, so the number of statements per second stays near what
the database answers, whatever the number of projects (STACK.md, "Shared
committers").

Guarantees, the same as a direct commit:
- :meth:`Committer.commit` returns only after the batch is durable, or raises:
  :class:`FenceLost` for a project whose fence did not hold (only that
  project's batch is not written), :class:`CommitRejected` when PostgreSQL
  refuses this project's data (a statement refused as a whole is retried
  project by project, so one project's bad data never fails another's
  batch), :class:`Unavailable` when the database is unreachable.
- A caller that stops waiting (its deadline) leaves its batch out if no
  committer took it yet. A batch already taken may still commit; the actor
  then reloads with a new ownership epoch, so that statement either committed
  before the reload (which sees it) or is fenced out: memory and PostgreSQL
  agree either way.
- Order within a project is the actor's: it has one commit in flight at a time.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Protocol

import trio

from collab.errors import CollabError, Unavailable
from collab.storage.database import Database, UnitRunner
from collab.storage.projects import CommitRejected, FenceLost
from collab.storage.task_commits import TaskBatch, commit_task_batch, commit_task_batches

log = logging.getLogger(__name__)


class Committer(Protocol):
    async def commit(self, batch: TaskBatch) -> None:
        """Write one project's task batch; return once it is durable."""


class DirectCommitter:
    """Each batch as its own statement, on the caller's task (tests, tools)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def commit(self, batch: TaskBatch) -> None:
        await self._db.run(commit_task_batch, batch, transaction=False)


@dataclass(eq=False)
class _Job:
    batch: TaskBatch
    done: trio.Event = field(default_factory=trio.Event)
    error: CollabError | None = None
    abandoned: bool = False

    def finish(self, error: CollabError | None) -> None:
        self.error = error
        self.done.set()


@dataclass
class CommitterStats:
    statements: int = 0   # statements written (one per shared commit)
    batches: int = 0      # project batches they carried
    retried_alone: int = 0  # batches rewritten one by one after a refused statement

    @property
    def mean_batches_per_statement(self) -> float:
        return self.batches / self.statements if self.statements else 0.0


class GroupCommitter:
    """``workers`` shared committer tasks; start with ``nursery.start(committer.run)``."""

    def __init__(self, db: UnitRunner, *, workers: int = 2, max_batches: int = 128) -> None:
        self._db = db
        self._workers = workers
        self._max_batches = max_batches
        # Unbounded on purpose: each project actor has at most one batch queued here.
        self._send, self._recv = trio.open_memory_channel[_Job](math.inf)
        self.stats = CommitterStats()

    async def commit(self, batch: TaskBatch) -> None:
        job = _Job(batch)
        self._send.send_nowait(job)
        try:
            await job.done.wait()
        finally:
            job.abandoned = not job.done.is_set()
        if job.error is not None:
            raise job.error

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the committers until cancelled."""
        async with trio.open_nursery() as nursery:
            for number in range(self._workers):
                nursery.start_soon(self._work, name=f"committer-{number}")
            task_status.started()

    async def _work(self) -> None:
        while True:
            jobs = [await self._recv.receive()]
            while len(jobs) < self._max_batches:
                try:
                    jobs.append(self._recv.receive_nowait())
                except trio.WouldBlock:
                    break
            live = [job for job in jobs if not job.abandoned]
            if not live:
                continue
            try:
                await self._write(live)
            except Exception:  # noqa: BLE001 - a bug here must not leave actors waiting forever
                log.exception("shared commit of %d batches failed", len(live))
                for job in live:
                    if not job.done.is_set():
                        job.finish(Unavailable("The commit failed; retry"))

    async def _write(self, jobs: list[_Job]) -> None:
        try:
            committed = await self._db.run(commit_task_batches, [job.batch for job in jobs], transaction=False)
        except CommitRejected as refused:
            if len(jobs) == 1:
                jobs[0].finish(refused)
                return
            self.stats.retried_alone += len(jobs)
            for job in jobs:  # find the project whose data PostgreSQL refuses
                await self._write([job])
            return
        except CollabError as error:
            for job in jobs:
                job.finish(error)
            return
        self.stats.statements += 1
        self.stats.batches += len(jobs)
        for job in jobs:
            job.finish(None if job.batch.project_id in committed else FenceLost())
