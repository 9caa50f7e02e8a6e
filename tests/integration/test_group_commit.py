"""Shared committers (collab/actors/committer.py): many projects' task batches
per statement, with each project's guarantees intact.

Every test runs real project actors on a registry whose task batches go
through a :class:`GroupCommitter`, against a fresh PostgreSQL database.
"""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, AsyncIterator

import pytest
import trio
import trio_asyncio

from collab.actors.committer import GroupCommitter
from collab.actors.project import Accepted
from collab.actors.registry import ActorRegistry, RegistryOptions, open_registry
from collab.domain.ops import TaskCreate
from collab.domain.users import Principal
from collab.errors import CollabError
from collab.storage import projects as store
from collab.storage import task_commits
from collab.storage import users as users_store
from collab.storage.database import Database, PoolOptions, open_database
from collab.storage.projects import CommitRejected, FenceLost
from tests.integration.test_project_actor import ask_into, sql, wait_until


@dataclass
class Shared:
    db: Database
    owner: Principal
    projects: list[uuid.UUID]
    committer: GroupCommitter
    registry: ActorRegistry

    async def create(self, project_id: uuid.UUID, title: str) -> Accepted:
        return await self.registry.ask(project_id, TaskCreate(uuid.uuid4(), {"title": title}), self.owner)

    async def count(self, sql_text: str, *args: Any) -> int:
        return int(await self.db.run(_fetchval, sql_text, *args, transaction=False))


async def _fetchval(conn: Any, sql_text: str, *args: Any) -> Any:
    return await conn.fetchval(sql_text, *args)


@asynccontextmanager
async def shared(
    database_url: str, projects: int, commit_timeout_s: float = 30.0, workers: int = 2,
) -> AsyncIterator[Shared]:
    async with trio_asyncio.open_loop():
        async with open_database(database_url, PoolOptions(min_size=1, max_size=6), label="t") as db:
            tag = uuid.uuid4().hex[:8]
            user = await db.run(
                users_store.insert_user, email=f"owner-{tag}@example.com", username=f"owner_{tag}",
                password_hash="not-a-real-hash", first_name=None, last_name=None, roles=("manager",),
            )
            owner = Principal(user.id, session_id=uuid.uuid4(), username=user.username, roles=("manager",))
            ids = [uuid.uuid4() for _ in range(projects)]
            for project_id in ids:
                await db.run(
                    store.create_project, project_id=project_id, owner_id=user.id,
                    fields={"name": f"Project {project_id.hex[:6]}"}, now=datetime.now(timezone.utc),
                )
            committer = GroupCommitter(db, workers=workers)
            async with trio.open_nursery() as nursery:
                await nursery.start(committer.run)
                options = RegistryOptions(commit_timeout_s=commit_timeout_s)
                async with open_registry(db, options, committer=committer) as registry:
                    yield Shared(db, owner, ids, committer, registry)
                nursery.cancel_scope.cancel()


class StatementGate:
    """Holds every shared statement until :attr:`opened` is set; counts the batches it held."""

    def __init__(self, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened = trio.Event()
        self.batches_seen: list[int] = []
        real_run = db.run

        async def run(unit: Any, *args: Any, **kwargs: Any) -> Any:
            if unit is task_commits.commit_task_batches:
                self.batches_seen.append(len(args[0]))
                await self.opened.wait()
            return await real_run(unit, *args, **kwargs)

        monkeypatch.setattr(db, "run", run)


async def test_many_projects_share_statements_and_every_write_lands(database_url: str) -> None:
    async with shared(database_url, projects=20) as s:
        for project_id in s.projects:  # load the actors first: the writes below then race for committers
            await s.create(project_id, "warm-up")
        before = s.committer.stats.statements
        async with trio.open_nursery() as nursery:
            for project_id in s.projects:
                for n in range(5):
                    nursery.start_soon(s.create, project_id, f"task {n}")
        statements = s.committer.stats.statements - before
        assert s.committer.stats.batches >= 20 + 20
        assert statements < 20 * 5, "batches of different projects should share statements"
        for project_id in s.projects:
            assert await s.count("SELECT count(*) FROM tasks WHERE project_id = $1", project_id) == 6
            assert await s.count("SELECT seq FROM projects WHERE id = $1", project_id) == 7
            assert await s.count(
                "SELECT count(*) FROM project_events WHERE project_id = $1 AND kind = 'task.created'", project_id,
            ) == 6
        figures = s.registry.figures()
        assert figures["shared_commit_statements"] == s.committer.stats.statements
        assert figures["mean_batches_per_statement"] > 1.0


def queued(s: Shared) -> int:
    return s.committer._recv.statistics().current_buffer_used


async def behind_a_held_statement(
    s: Shared, monkeypatch: pytest.MonkeyPatch, titles: dict[uuid.UUID, str], before_release: Any = None,
) -> tuple[StatementGate, dict[str, Any]]:
    """With ONE committer: hold a statement for the first project, queue one write into each
    other project (so they share the next statement), run ``before_release``, release.
    Results by title (an Accepted or the error)."""
    blocker, *others = titles
    gate = StatementGate(s.db, monkeypatch)
    results: dict[str, Any] = {}

    def write(project_id: uuid.UUID) -> Any:
        return lambda: s.create(project_id, titles[project_id])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask_into, results, titles[blocker], write(blocker))
        await wait_until(lambda: len(gate.batches_seen) == 1, "the only committer is held")
        for project_id in others:
            nursery.start_soon(ask_into, results, titles[project_id], write(project_id))
        await wait_until(lambda: queued(s) == len(others), "the other batches wait for the committer")
        if before_release is not None:
            await before_release()
        gate.opened.set()
    return gate, results


async def test_a_lost_fence_fails_only_its_project(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with shared(database_url, projects=3, workers=1) as s:
        blocker, moved, kept = s.projects
        for project_id in s.projects:
            await s.create(project_id, "first")

        async def move_the_seq() -> None:  # another writer, before the shared statement runs
            await sql(s.db, "UPDATE projects SET seq = seq + 10 WHERE id = $1", moved)

        gate, results = await behind_a_held_statement(
            s, monkeypatch, {blocker: "blocker", moved: "lost", kept: "kept"}, move_the_seq,
        )
        assert gate.batches_seen == [1, 2], "the two batches shared one statement"
        assert isinstance(results["lost"], FenceLost), results["lost"]
        assert isinstance(results["kept"], Accepted), results["kept"]
        assert isinstance(results["blocker"], Accepted), results["blocker"]
        assert await s.count("SELECT count(*) FROM tasks WHERE project_id = $1 AND title = 'lost'", moved) == 0
        assert await s.count("SELECT count(*) FROM tasks WHERE project_id = $1 AND title = 'kept'", kept) == 1


async def test_refused_data_fails_only_its_project(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One project's poison sinks the shared statement; each project is then retried alone."""
    async with shared(database_url, projects=3, workers=1) as s:
        await sql(s.db, "ALTER TABLE tasks ADD CONSTRAINT t_no_poison CHECK (title <> 'poison')")
        blocker, poisoned, healthy = s.projects
        for project_id in s.projects:
            await s.create(project_id, "first")
        gate, results = await behind_a_held_statement(
            s, monkeypatch, {blocker: "blocker", poisoned: "poison", healthy: "healthy"},
        )
        assert gate.batches_seen == [1, 2, 1, 1], "shared, refused, then each project alone"
        assert isinstance(results["poison"], CommitRejected) and not results["poison"].retryable
        assert isinstance(results["healthy"], Accepted), results["healthy"]
        assert isinstance(results["blocker"], Accepted), results["blocker"]
        assert s.committer.stats.retried_alone == 2
        assert await s.count("SELECT count(*) FROM tasks WHERE title = 'poison'") == 0
        assert await s.count("SELECT count(*) FROM tasks WHERE project_id = $1", healthy) == 2


async def test_a_batch_still_queued_when_its_actor_gives_up_is_not_written(
    database_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the commit deadline a batch still queued is left out; the actor reloads and goes on."""
    async with shared(database_url, projects=3, commit_timeout_s=0.5) as s:
        first, second, third = s.projects
        for project_id in s.projects:
            await s.create(project_id, "first")
        gate = StatementGate(s.db, monkeypatch)
        results: dict[str, Any] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask_into, results, "sent-1", lambda: s.create(first, "sent 1"))
            nursery.start_soon(ask_into, results, "sent-2", lambda: s.create(second, "sent 2"))
            await wait_until(lambda: len(gate.batches_seen) == 2, "both committers hold a statement")
            nursery.start_soon(ask_into, results, "queued", lambda: s.create(third, "queued"))
            await wait_until(lambda: "queued" in results, "the queued batch's actor gave up")
            gate.opened.set()
        for name in ("sent-1", "sent-2", "queued"):
            assert isinstance(results[name], CollabError) and results[name].retryable, results[name]
        await wait_until(lambda: queued(s) == 0, "the queue is empty")
        assert await s.count("SELECT count(*) FROM tasks WHERE title = 'queued'") == 0
        # A batch already handed to a committer when its actor gave up may land or not: the actor
        # reloads with a new ownership epoch, so the statement either committed before the reload
        # (which then sees it) or is fenced out. Either way memory and PostgreSQL agree.
        for project_id in s.projects:
            assert isinstance(await s.create(project_id, "after"), Accepted)
            actor = await s.registry.read(project_id)
            assert actor.state is not None
            in_memory = sorted(t.title for t in actor.state.tasks.values())
            stored = await s.db.run(_titles, project_id, transaction=False)
            assert in_memory == stored
            assert actor.state.seq == await s.count("SELECT seq FROM projects WHERE id = $1", project_id)


async def _titles(conn: Any, project_id: uuid.UUID) -> list[str]:
    return [r["title"] for r in await conn.fetch("SELECT title FROM tasks WHERE project_id = $1 ORDER BY title",
                                                  project_id)]
