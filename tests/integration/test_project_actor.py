"""The project actor and its registry on real PostgreSQL (DESIGN.md §1, §4, §5, §7).

What is checked: group commit with gap-free seqs, domain errors as values, the
seq fence, failed commits, supervision (restart, give up after
``max_restarts``), passivation, unknown projects, shutdown, the bounded inbox
and REST idempotency inside the actor.

How the tests hold an actor still without sleeping: :class:`CommitGate` wraps
``db.run`` so every ``commit_batch`` waits on a trio event the test opens;
:class:`Crasher` swaps the domain ``apply`` the actor calls for one that raises
``RuntimeError``. Every wait is bounded (``wait_until``, ``trio.fail_after``).
"""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Callable

import asyncpg
import pytest
import trio
import trio_asyncio

import collab.actors.project as project_module
from collab.actors.project import Accepted, Idempotency, ProjectActor
from collab.actors.registry import ActorRegistry, RegistryOptions, open_registry
from collab.domain.ops import TaskCreate, TaskUpdate
from collab.domain.users import Principal
from collab.errors import (
    Busy, CollabError, IdempotencyKeyReused, NotFound, Unavailable,
)
from collab.storage import projects as store
from collab.storage import task_commits
from collab.storage.projects import CommitRejected
from collab.storage import users as users_store
from collab.storage.database import Database, PoolOptions, open_database

WAIT_S = 10.0          # bound on every condition we poll for
POLL_S = 0.01
SLOW_ASK_S = 30.0      # for asks that must outlive a held commit
SHORT_ASK_S = 2.0      # ask deadline where a caller may end up answered by its own deadline


# --- setup ----------------------------------------------------------------------------

@dataclass
class Storage:
    db: Database
    owner: Principal
    project_id: uuid.UUID


@dataclass
class World(Storage):
    registry: ActorRegistry

    async def create(self, title: str, *, task_id: uuid.UUID | None = None, **kwargs: Any) -> Accepted:
        op = TaskCreate(task_id or uuid.uuid4(), {"title": title})
        return await self.registry.ask(self.project_id, op, self.owner, **kwargs)

    async def actor(self) -> ProjectActor:
        return await self.registry.read(self.project_id)


@asynccontextmanager
async def storage(database_url: str) -> AsyncIterator[Storage]:
    """The trio-asyncio loop, a small pool, and one user owning one project (seq 1)."""
    async with trio_asyncio.open_loop():
        async with open_database(database_url, PoolOptions(min_size=1, max_size=4), label="t") as db:
            tag = uuid.uuid4().hex[:8]
            user = await db.run(
                users_store.insert_user, email=f"owner-{tag}@example.com", username=f"owner_{tag}",
                password_hash="not-a-real-hash", first_name=None, last_name=None, roles=("manager",),
            )
            project_id = uuid.uuid4()
            await db.run(
                store.create_project, project_id=project_id, owner_id=user.id,
                fields={"name": f"Project {tag}"}, now=datetime.now(timezone.utc),
            )
            owner = Principal(user.id, session_id=uuid.uuid4(), username=user.username, roles=("manager",))
            yield Storage(db, owner, project_id)


@asynccontextmanager
async def world(database_url: str, **options: Any) -> AsyncIterator[World]:
    async with storage(database_url) as s:
        async with open_registry(s.db, RegistryOptions(**options)) as registry:
            yield World(s.db, s.owner, s.project_id, registry)


# --- units of our own (asyncio coroutines run by Database.run) -------------------------

async def _fetch(conn: asyncpg.Connection, sql: str, *args: Any) -> list[asyncpg.Record]:
    return await conn.fetch(sql, *args)


async def _fetchval(conn: asyncpg.Connection, sql: str, *args: Any) -> Any:
    return await conn.fetchval(sql, *args)


async def _execute(conn: asyncpg.Connection, sql: str, *args: Any) -> str:
    return await conn.execute(sql, *args)


async def sql(db: Database, statement: str, *args: Any) -> str:
    return await db.run(_execute, statement, *args)


async def project_seq(w: Storage) -> int:
    return await w.db.run(_fetchval, "SELECT seq FROM projects WHERE id = $1", w.project_id, transaction=False)


async def events(w: Storage) -> list[asyncpg.Record]:
    return await w.db.run(
        _fetch,
        "SELECT seq, kind, task_id, actor_id, client_op_id FROM project_events WHERE project_id = $1 ORDER BY seq",
        w.project_id, transaction=False,
    )


async def task_exists(w: Storage, task_id: uuid.UUID) -> bool:
    return await w.db.run(_fetchval, "SELECT EXISTS (SELECT 1 FROM tasks WHERE id = $1)", task_id, transaction=False)


# --- waiting and holding, without sleeping and hoping -----------------------------------

async def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll ``predicate`` (bounded); fail the test with ``what`` if it never holds."""
    with trio.move_on_after(timeout_s):
        while not predicate():
            await trio.sleep(POLL_S)
        return
    raise AssertionError(f"timed out waiting until {what}")


class CommitGate:
    """Holds every batch commit (``commit_batch`` or ``commit_task_batch``) until :attr:`opened` is set.

    It wraps ``db.run`` on the trio side, so the hold happens inside the
    actor's shielded commit scope and before any connection is taken.
    """

    def __init__(self, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened = trio.Event()
        self.arrived = 0
        real_run = db.run

        async def run(unit: Any, *args: Any, **kwargs: Any) -> Any:
            if unit in (store.commit_batch, task_commits.commit_task_batch, task_commits.commit_task_batches):
                self.arrived += 1
                await self.opened.wait()
            return await real_run(unit, *args, **kwargs)

        monkeypatch.setattr(db, "run", run)


class Crasher:
    """Makes the actor's ``apply`` raise RuntimeError for the next ``crashes`` ops (``None``: always)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, crashes: int | None = 0) -> None:
        self.remaining = crashes
        self.raised = 0
        real_apply = project_module.apply

        def apply(*args: Any, **kwargs: Any) -> Any:
            if self.remaining is None or self.remaining > 0:
                if self.remaining is not None:
                    self.remaining -= 1
                self.raised += 1
                raise RuntimeError("injected crash")
            return real_apply(*args, **kwargs)

        monkeypatch.setattr(project_module, "apply", apply)


async def ask_into(results: dict[str, Any], name: str, coro_fn: Callable[[], Any]) -> None:
    """Run one ask; store its Accepted or the CollabError it raised under ``name``."""
    try:
        results[name] = await coro_fn()
    except CollabError as error:
        results[name] = error


# --- 1. one command, end to end ------------------------------------------------------------

async def test_task_create_is_committed_with_seq_2_and_its_event(database_url: str) -> None:
    async with world(database_url) as w:
        task_id = uuid.uuid4()
        accepted = await w.create("First task", task_id=task_id, client_op_id="op-1")

        assert isinstance(accepted, Accepted) and not accepted.replayed
        assert accepted.seq == 2
        assert [e.kind for e in accepted.events] == ["task.created"]
        view = accepted.result
        assert view["id"] == str(task_id) and view["title"] == "First task"
        assert view["version"] == 2 and view["status"] == "todo"
        assert view["created_by"] == str(w.owner.user_id) and view["created_by_name"] == w.owner.username

        row = await w.db.run(_fetch, "SELECT title, version, project_id, created_by FROM tasks WHERE id = $1",
                             task_id, transaction=False)
        assert len(row) == 1
        assert (row[0]["title"], row[0]["version"], row[0]["project_id"], row[0]["created_by"]) == (
            "First task", 2, w.project_id, w.owner.user_id)
        log = await events(w)
        assert [(e["seq"], e["kind"]) for e in log] == [(1, "project.created"), (2, "task.created")]
        assert (log[1]["task_id"], log[1]["actor_id"], log[1]["client_op_id"]) == (task_id, w.owner.user_id, "op-1")
        assert await project_seq(w) == 2
        assert (await w.actor()).state.seq == 2


# --- 2. group commit -------------------------------------------------------------------------

async def test_concurrent_asks_are_group_committed_with_gap_free_seqs(database_url: str) -> None:
    n = 50
    async with world(database_url, max_batch=64) as w:
        results: dict[str, Any] = {}
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(ask_into, results, f"t{i}", lambda i=i: w.create(f"Task {i}"))

        failures = {k: v for k, v in results.items() if not isinstance(v, Accepted)}
        assert failures == {}
        assert sorted(r.seq for r in results.values()) == list(range(2, n + 2))
        for r in results.values():  # each reply is its own event and view
            assert [e.seq for e in r.events] == [r.seq] and r.result["version"] == r.seq

        log = await events(w)
        assert [e["seq"] for e in log] == list(range(1, n + 2))
        assert sum(e["kind"] == "task.created" for e in log) == n
        assert await project_seq(w) == n + 1

        stats = (await w.actor()).stats
        assert stats.commands == n and stats.events == n
        assert stats.batches < n and stats.mean_batch_size > 1, stats


# --- 3. domain errors are values ----------------------------------------------------------

async def test_domain_error_is_raised_to_its_caller_and_the_actor_keeps_serving(database_url: str) -> None:
    async with world(database_url) as w:
        first = await w.create("Before")
        actor = await w.actor()

        with pytest.raises(NotFound):
            await w.registry.ask(w.project_id, TaskUpdate(uuid.uuid4(), {"title": "x"}), w.owner)

        after = await w.create("After")
        assert (first.seq, after.seq) == (2, 3)
        assert await w.actor() is actor, "a domain error must not restart the actor"
        assert [e["seq"] for e in await events(w)] == [1, 2, 3]


async def test_batch_with_a_failing_op_commits_only_the_good_ones(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with world(database_url, commit_timeout_s=SLOW_ASK_S) as w:
        gate = CommitGate(w.db, monkeypatch)
        results: dict[str, Any] = {}
        good_b, good_c = uuid.uuid4(), uuid.uuid4()
        missing = TaskUpdate(uuid.uuid4(), {"title": "nobody"})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask_into, results, "a", lambda: w.create("A"))
            await wait_until(lambda: gate.arrived == 1, "batch [a] is committing")
            # Queue, in this order, behind the held commit: they become ONE batch.
            nursery.start_soon(ask_into, results, "bad", lambda: w.registry.ask(w.project_id, missing, w.owner))
            await wait_until(lambda: w.registry.inbox_depth(w.project_id) == 1, "bad is queued")
            nursery.start_soon(ask_into, results, "b", lambda: w.create("B", task_id=good_b))
            await wait_until(lambda: w.registry.inbox_depth(w.project_id) == 2, "b is queued")
            nursery.start_soon(ask_into, results, "c", lambda: w.create("C", task_id=good_c))
            await wait_until(lambda: w.registry.inbox_depth(w.project_id) == 3, "c is queued")
            gate.opened.set()

        assert isinstance(results["bad"], NotFound)
        assert [results[k].seq for k in ("a", "b", "c")] == [2, 3, 4]
        stats = (await w.actor()).stats
        assert (stats.batches, stats.last_batch_size, stats.failed_commits) == (2, 3, 0)
        assert [(e["seq"], e["task_id"]) for e in (await events(w))[2:]] == [(3, good_b), (4, good_c)]
        assert await project_seq(w) == 4


# --- 4. the fence ------------------------------------------------------------------------------

async def test_fence_lost_fails_the_batch_retryably_and_the_actor_reloads(database_url: str) -> None:
    async with world(database_url) as w:
        await w.create("Before the fence")
        actor = await w.actor()
        assert await sql(w.db, "UPDATE projects SET seq = seq + 5 WHERE id = $1", w.project_id) == "UPDATE 1"

        lost = uuid.uuid4()
        with pytest.raises(CollabError) as caught:
            await w.create("Loses the fence", task_id=lost)
        assert caught.value.retryable and isinstance(caught.value, (Busy, Unavailable)), caught.value

        # The callers are answered first, then the actor reloads (the retry queues behind it).
        await wait_until(lambda: actor.state.seq == 7, "the actor reloaded the seq from PostgreSQL")
        assert actor.stats.failed_commits == 1
        assert not await task_exists(w, lost)
        assert [e["seq"] for e in await events(w)] == [1, 2], "the failed batch wrote no event"

        accepted = await w.create("After the fence")
        assert accepted.seq == 8
        assert await project_seq(w) == 8
        assert await w.actor() is actor, "a lost fence is a failed commit, not a crash"
        assert lost not in actor.state.tasks


# --- 5. a commit that PostgreSQL rejects -------------------------------------------------------

async def test_commit_rejected_by_a_constraint_fails_the_batch_and_reloads(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A title the domain accepts but a CHECK constraint rejects: the commit fails.

    Expected: the actor answers the offending command itself with a
    non-retryable error (a retry would be refused the same way), drops the
    draft, reloads the state from PostgreSQL, and lives on.
    """
    async with world(database_url, commit_timeout_s=SLOW_ASK_S, ask_timeout_s=SHORT_ASK_S) as w:
        await sql(w.db, "ALTER TABLE tasks ADD CONSTRAINT t_no_poison CHECK (title <> 'poison')")
        await w.create("Fine")
        actor = await w.actor()
        gate = CommitGate(w.db, monkeypatch)
        results: dict[str, Any] = {}
        good, poison = uuid.uuid4(), uuid.uuid4()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask_into, results, "good", lambda: w.create("good", task_id=good))
            await wait_until(lambda: gate.arrived == 1, "the good task's batch is committing")
            nursery.start_soon(ask_into, results, "poison", lambda: w.create("poison", task_id=poison))
            await wait_until(lambda: w.registry.inbox_depth(w.project_id) == 1, "poison is queued")
            # Behind the actor's back while it holds its commit: the reload must show this.
            await sql(w.db, "UPDATE projects SET name = 'Renamed in SQL' WHERE id = $1", w.project_id)
            gate.opened.set()

        assert isinstance(results["good"], Accepted) and results["good"].seq == 3
        error = results["poison"]
        assert isinstance(error, CommitRejected) and not error.retryable, error
        assert not await task_exists(w, poison)
        assert [e["seq"] for e in await events(w)] == [1, 2, 3]
        assert await project_seq(w) == 3

        now = await w.actor()
        assert now.state.seq == 3 and poison not in now.state.tasks
        assert now.state.project.name == "Renamed in SQL", "the state was reloaded from PostgreSQL"
        assert (await w.create("Next")).seq == 4
        assert now is actor and actor.stats.failed_commits == 1, "a rejected commit crashed the actor"


# --- 6. supervision ----------------------------------------------------------------------------

async def test_crash_restarts_the_actor_from_postgresql(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with world(database_url, ask_timeout_s=SHORT_ASK_S) as w:
        before = await w.create("Before the crash")
        actor = await w.actor()
        crasher = Crasher(monkeypatch, crashes=1)

        crashed = uuid.uuid4()
        with pytest.raises(CollabError) as caught:
            await w.create("Crashes", task_id=crashed)
        assert caught.value.retryable, caught.value
        assert crasher.raised == 1

        after = await w.create("After the crash")
        assert (before.seq, after.seq) == (2, 3)
        restarted = await w.actor()
        assert restarted is not actor, "the supervisor replaced the crashed actor"
        assert restarted.state.seq == 3 and crashed not in restarted.state.tasks
        assert not await task_exists(w, crashed)
        assert [e["seq"] for e in await events(w)] == [1, 2, 3]


async def test_crash_answers_the_in_flight_batch_at_once(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """STYLE.md "Actors" 5: no caller waits for a dead actor, including the batch that crashed it.

    The caller must get the supervisor's retryable Unavailable, not a Busy from
    its own ask deadline (``Busy`` is what ``ask`` raises when the deadline passes).
    """
    async with world(database_url, ask_timeout_s=SHORT_ASK_S) as w:
        await w.create("Warm up")
        Crasher(monkeypatch, crashes=1)
        with pytest.raises(CollabError) as caught:
            await w.create("Crashes")
        assert caught.value.retryable
        assert isinstance(caught.value, Unavailable), (
            f"the crashed batch's caller waited for its deadline: {caught.value!r}"
        )


async def test_more_crashes_than_max_restarts_fail_queued_callers(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    queued = 5
    options = dict(max_batch=1, max_restarts=2, restart_window_s=60.0, ask_timeout_s=SHORT_ASK_S,
                   commit_timeout_s=SLOW_ASK_S)
    async with world(database_url, **options) as w:
        gate = CommitGate(w.db, monkeypatch)
        results: dict[str, Any] = {}
        with trio.fail_after(WAIT_S * 2):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask_into, results, "held", lambda: w.create("Held", timeout_s=SLOW_ASK_S))
                await wait_until(lambda: gate.arrived == 1, "the first batch is committing")
                for i in range(queued):
                    nursery.start_soon(ask_into, results, f"q{i}", lambda i=i: w.create(f"Queued {i}"))
                await wait_until(lambda: w.registry.inbox_depth(w.project_id) == queued, "all are queued")
                crasher = Crasher(monkeypatch, crashes=None)
                gate.opened.set()

        assert isinstance(results["held"], Accepted) and results["held"].seq == 2
        errors = [results[f"q{i}"] for i in range(queued)]
        assert all(isinstance(e, CollabError) and e.retryable for e in errors), errors
        assert crasher.raised == options["max_restarts"] + 1
        # The commands never reached apply were failed by the supervisor, not by their deadline.
        assert sum(isinstance(e, Unavailable) for e in errors) >= queued - crasher.raised, errors
        assert w.registry.active == 0, "the given-up slot is dropped"

        crasher.remaining = 0  # stop crashing
        assert (await w.create("A fresh start")).seq == 3
        assert [e["seq"] for e in await events(w)] == [1, 2, 3]


# --- 7. passivation ----------------------------------------------------------------------------

async def test_idle_actor_passivates_and_restarts_from_postgresql(database_url: str) -> None:
    async with world(database_url, idle_timeout_s=0.2) as w:
        first_id = uuid.uuid4()
        first = await w.create("Before passivation", task_id=first_id)
        assert first.seq == 2
        await wait_until(lambda: w.registry.active == 0, "the idle actor passivated")

        # A change behind the (stopped) actor's back: the next actor must load it.
        await sql(w.db, "UPDATE tasks SET title = 'Edited in SQL' WHERE id = $1", first_id)
        second = await w.create("After passivation")
        assert second.seq == 3, "seq continues with no gap"
        state = (await w.actor()).state
        assert state.tasks[first_id].title == "Edited in SQL"
        assert [e["seq"] for e in await events(w)] == [1, 2, 3]


# --- 8. unknown project ------------------------------------------------------------------------

async def test_unknown_project_is_not_found_and_leaves_no_actor(database_url: str) -> None:
    async with world(database_url) as w:
        nowhere = uuid.uuid4()
        with pytest.raises(NotFound):
            await w.registry.ask(nowhere, TaskCreate(uuid.uuid4(), {"title": "x"}), w.owner)
        with pytest.raises(NotFound):
            await w.registry.read(nowhere)
        await wait_until(lambda: w.registry.active == 0, "no actor is left for the unknown project")
        assert await w.db.run(_fetchval, "SELECT count(*) FROM project_events WHERE project_id = $1",
                              nowhere, transaction=False) == 0


# --- 9. shutdown ---------------------------------------------------------------------------------

async def test_shutdown_with_asks_in_flight_answers_everyone_and_loses_nothing(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 20
    async with storage(database_url) as s:
        task_ids = [uuid.uuid4() for _ in range(n)]
        results: dict[str, Any] = {}
        with trio.fail_after(WAIT_S * 2):
            async with trio.open_nursery() as callers:
                async with open_registry(s.db, RegistryOptions(max_batch=4, commit_timeout_s=SLOW_ASK_S)) as registry:
                    gate = CommitGate(s.db, monkeypatch)
                    for i, task_id in enumerate(task_ids):
                        op = TaskCreate(task_id, {"title": f"Shutdown {i}"})
                        callers.start_soon(ask_into, results, str(task_id),
                                           lambda op=op: registry.ask(s.project_id, op, s.owner))

                    def all_in() -> bool:
                        actors = registry.actors()
                        return (gate.arrived == 1 and len(actors) == 1
                                and registry.inbox_depth(s.project_id) + actors[0].stats.last_batch_size == n)

                    await wait_until(all_in, "one batch is committing and the rest are queued")
                    gate.opened.set()  # the commit runs during shutdown, under its shield
                # open_registry has exited: every actor is gone.

        assert len(results) == n
        accepted = {k: v for k, v in results.items() if isinstance(v, Accepted)}
        failed = {k: v for k, v in results.items() if not isinstance(v, Accepted)}
        assert 1 <= len(accepted) <= 4 and len(failed) == n - len(accepted)
        assert all(isinstance(e, CollabError) and e.retryable for e in failed.values()), failed
        assert sorted(a.seq for a in accepted.values()) == list(range(2, 2 + len(accepted)))

        log = await events(s)
        assert {str(e["task_id"]) for e in log[1:]} == set(accepted), "every ack is durable, nothing else is"
        for task_id in task_ids:
            assert await task_exists(s, task_id) == (str(task_id) in accepted)
        assert await project_seq(s) == 1 + len(accepted)


# --- 10. the bounded inbox -----------------------------------------------------------------------

async def test_full_inbox_answers_busy_and_held_commands_complete(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with world(database_url, inbox_size=1, ask_timeout_s=0.5, commit_timeout_s=SLOW_ASK_S) as w:
        await w.actor()  # loaded before the gate goes in
        gate = CommitGate(w.db, monkeypatch)
        results: dict[str, Any] = {}
        extra_ids = [uuid.uuid4(), uuid.uuid4()]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask_into, results, "held", lambda: w.create("Held", timeout_s=SLOW_ASK_S))
            await wait_until(lambda: gate.arrived == 1, "the first command is committing")
            nursery.start_soon(ask_into, results, "queued", lambda: w.create("Queued", timeout_s=SLOW_ASK_S))
            await wait_until(lambda: w.registry.inbox_depth(w.project_id) == 1, "the inbox is full")
            async with trio.open_nursery() as extra:
                for i, task_id in enumerate(extra_ids):
                    extra.start_soon(ask_into, results, f"extra{i}", lambda t=task_id: w.create("Extra", task_id=t))
            # Both extra asks are over (their 0.5 s deadline passed); the held ones are still waiting.
            assert "held" not in results and "queued" not in results
            gate.opened.set()

        for name in ("extra0", "extra1"):
            assert isinstance(results[name], Busy) and results[name].retryable, results[name]
        assert (results["held"].seq, results["queued"].seq) == (2, 3)
        for task_id in extra_ids:
            assert not await task_exists(w, task_id)
        assert await project_seq(w) == 3


# --- 11. idempotency inside the actor ------------------------------------------------------------

async def test_idempotent_retry_replays_and_a_changed_request_is_refused(database_url: str) -> None:
    async with world(database_url) as w:
        key = Idempotency("key-1", "hash-a", 201)
        first = await w.create("Once", idempotency=key)
        retry = await w.create("Once", idempotency=key)  # a retry gets a new task id, as REST makes one

        assert not first.replayed and retry.replayed
        assert retry.result == first.result and retry.seq == first.seq == 2 and retry.events == ()
        assert [e["seq"] for e in await events(w)] == [1, 2]
        assert await project_seq(w) == 2

        with pytest.raises(IdempotencyKeyReused):
            await w.create("Something else", idempotency=Idempotency("key-1", "hash-b", 201))
        assert await project_seq(w) == 2

        rows = await w.db.run(
            _fetch, "SELECT request_hash, status, response FROM idempotency_keys WHERE user_id = $1 AND key = $2",
            w.owner.user_id, "key-1", transaction=False,
        )
        assert [(r["request_hash"], r["status"], r["response"]) for r in rows] == [("hash-a", 201, first.result)]


async def test_idempotent_retry_in_the_same_batch_is_applied_once(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests with one Idempotency-Key can both miss the stored key (REST
    looks it up before asking) and land in one batch: only one may be applied."""
    async with world(database_url, commit_timeout_s=SLOW_ASK_S) as w:
        gate = CommitGate(w.db, monkeypatch)
        key = Idempotency("key-2", "hash-a", 201)
        results: dict[str, Any] = {}
        ids = {"r1": uuid.uuid4(), "r2": uuid.uuid4()}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask_into, results, "other", lambda: w.create("Other"))
            await wait_until(lambda: gate.arrived == 1, "a batch is committing")
            for depth, name in enumerate(("r1", "r2"), start=1):
                nursery.start_soon(
                    ask_into, results, name, lambda n=name: w.create("Once", task_id=ids[n], idempotency=key),
                )
                await wait_until(lambda d=depth: w.registry.inbox_depth(w.project_id) == d, f"{name} is queued")
            gate.opened.set()

        r1, r2 = results["r1"], results["r2"]
        assert isinstance(r1, Accepted) and isinstance(r2, Accepted), (r1, r2)
        assert sorted([r1.replayed, r2.replayed]) == [False, True], "exactly one of the two is applied"
        assert r1.result == r2.result
        created = [await task_exists(w, i) for i in ids.values()]
        assert created.count(True) == 1, "the key's request was applied twice"
        assert await project_seq(w) == 3


async def test_a_refused_command_does_not_sink_its_batch(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Good and poisoned commands in one batch: the good ones commit, only the poison fails."""
    async with world(database_url, commit_timeout_s=SLOW_ASK_S, ask_timeout_s=SHORT_ASK_S) as w:
        await sql(w.db, "ALTER TABLE tasks ADD CONSTRAINT t_no_poison CHECK (title <> 'poison')")
        await w.create("Fine")
        gate = CommitGate(w.db, monkeypatch)
        results: dict[str, Any] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask_into, results, "first", lambda: w.create("first"))
            await wait_until(lambda: gate.arrived == 1, "the first batch is committing")
            nursery.start_soon(ask_into, results, "before", lambda: w.create("before"))
            await wait_until(lambda: w.registry.inbox_depth(w.project_id) == 1, "before is queued")
            nursery.start_soon(ask_into, results, "poison", lambda: w.create("poison"))
            await wait_until(lambda: w.registry.inbox_depth(w.project_id) == 2, "poison is queued")
            nursery.start_soon(ask_into, results, "after", lambda: w.create("after"))
            await wait_until(lambda: w.registry.inbox_depth(w.project_id) == 3, "after is queued")
            gate.opened.set()

        assert isinstance(results["first"], Accepted)
        assert isinstance(results["before"], Accepted) and isinstance(results["after"], Accepted)
        assert isinstance(results["poison"], CommitRejected) and not results["poison"].retryable
        seqs = [e["seq"] for e in await events(w)]
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) == 5  # created, Fine, first, before, after
