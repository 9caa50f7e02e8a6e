"""Op ids older than the actor's in-memory window (collab/actors/op_ids.py).

The window keeps only recent op ids; an older resend is caught by the
change log's unique constraint at commit, looked up, and answered as
already applied, alone or in a batch with new ops. New ops never cost a
lookup, however long the project's history.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import trio

from collab.actors.op_ids import OpIds
from collab.actors.project import Accepted
from collab.domain.ops import TaskUpdate
from collab.storage import changelog
from tests.integration.test_project_actor import (
    CommitGate, ask_into, events, project_seq, wait_until, world, World,
)

WINDOW = 2


async def shrink_window(w: World) -> None:
    actor = await w.actor()
    actor.op_ids = OpIds(WINDOW)
    await actor.op_ids.load(w.db, w.project_id)


def count_lookups(w: World, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts ``find_op_ids`` queries (one entry per query)."""
    calls: list[int] = []
    real_run = w.db.run

    async def run(unit: Any, *args: Any, **kwargs: Any) -> Any:
        if unit is changelog.find_op_ids:
            calls.append(len(args[1]))
        return await real_run(unit, *args, **kwargs)

    monkeypatch.setattr(w.db, "run", run)
    return calls


async def test_an_old_resend_is_answered_with_its_first_seq(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with world(database_url) as w:
        first_id = uuid.uuid4()
        first = await w.create("First", task_id=first_id, client_op_id="op-1")
        for n in range(2, 6):
            await w.create(f"Task {n}", client_op_id=f"op-{n}")
        await shrink_window(w)
        lookups = count_lookups(w, monkeypatch)
        seq_before = await project_seq(w)

        again = await w.create("First", task_id=first_id, client_op_id="op-1")

        assert isinstance(again, Accepted) and again.replayed and again.seq == first.seq
        assert again.result["id"] == str(first_id)
        assert await project_seq(w) == seq_before, "the resend wrote nothing"
        assert lookups == [1], "one lookup, after the rules refused the create (its task exists)"
        actor = await w.actor()
        assert actor.state is not None and actor.state.seq == seq_before


async def test_an_old_update_resend_is_caught_by_the_change_log(
    database_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Applied again, the resend would undo a later change; the op id's unique constraint stops it."""
    async with world(database_url) as w:
        task_id = uuid.uuid4()
        await w.create("Task", task_id=task_id, client_op_id="op-create")
        update = TaskUpdate(task_id, {"title": "Renamed"})
        first = await w.registry.ask(w.project_id, update, w.owner, client_op_id="op-update")
        await w.registry.ask(w.project_id, TaskUpdate(task_id, {"title": "Later"}), w.owner, client_op_id="op-later")
        for n in range(3):
            await w.create(f"Filler {n}", client_op_id=f"filler-{n}")
        await shrink_window(w)
        lookups = count_lookups(w, monkeypatch)
        seq_before = await project_seq(w)

        again = await w.registry.ask(w.project_id, update, w.owner, client_op_id="op-update")

        assert isinstance(first, Accepted) and isinstance(again, Accepted)
        assert again.replayed and again.seq == first.seq
        assert await project_seq(w) == seq_before
        assert lookups == [1]
        actor = await w.actor()
        assert actor.state is not None and actor.state.tasks[task_id].title == "Later"
        assert isinstance(await w.create("After", client_op_id="after"), Accepted), "the actor goes on"


async def test_new_ops_never_look_up_old_ids(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with world(database_url) as w:
        for n in range(5):
            await w.create(f"Task {n}", client_op_id=f"op-{n}")
        await shrink_window(w)
        lookups = count_lookups(w, monkeypatch)
        for n in range(5, 15):
            assert isinstance(await w.create(f"Task {n}", client_op_id=f"op-{n}"), Accepted)
        assert lookups == []
        assert len((await w.actor()).op_ids) == WINDOW


async def test_an_old_resend_in_a_batch_with_new_ops(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with world(database_url, commit_timeout_s=30.0) as w:
        old_id = uuid.uuid4()
        old = await w.create("Old", task_id=old_id, client_op_id="op-old")
        for n in range(3):
            await w.create(f"Filler {n}", client_op_id=f"filler-{n}")
        await shrink_window(w)
        gate = CommitGate(w.db, monkeypatch)
        results: dict[str, Any] = {}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask_into, results, "holder", lambda: w.create("Holder", client_op_id="holder"))
            await wait_until(lambda: gate.arrived == 1, "the holder's batch is committing")
            nursery.start_soon(ask_into, results, "old", lambda: w.create("Old", task_id=old_id, client_op_id="op-old"))
            await wait_until(lambda: w.registry.inbox_depth(w.project_id) == 1, "the old resend is queued")
            nursery.start_soon(ask_into, results, "new", lambda: w.registry.ask(
                w.project_id, TaskUpdate(old_id, {"title": "Renamed"}), w.owner, client_op_id="op-new",
            ))
            await wait_until(lambda: w.registry.inbox_depth(w.project_id) == 2, "the new op is queued")
            gate.opened.set()

        assert isinstance(results["old"], Accepted) and results["old"].replayed
        assert results["old"].seq == old.seq
        new = results["new"]
        assert isinstance(new, Accepted) and not new.replayed and new.result["title"] == "Renamed"
        kinds = [e["kind"] for e in await events(w)]
        assert kinds.count("task.created") == 5, "Old, three fillers and the holder: the resend created nothing"
        assert kinds[-1] == "task.updated"
