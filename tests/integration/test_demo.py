"""``collab serve --demo`` seeding (collab/demo.py) on real PostgreSQL, through the real services."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import trio_asyncio

from collab.auth.service import ClientInfo
from collab.config import ConfigError
from collab.demo import ALICE, BOB, DEMO_PASSWORD, PROJECT_ID, TASKS, principal_for, seed_demo, serve_demo
from collab.domain import ops
from collab.domain.model import TaskStatus
from collab.server import open_services
from collab.storage import changelog
from tests.conftest import test_settings


async def test_seeding_twice_adds_nothing(database_url: str, tmp_path: Path) -> None:
    settings = test_settings(database_url, tmp_path)
    async with trio_asyncio.open_loop():
        async with open_services(settings) as services:
            first = await seed_demo(services)
            assert first.created_users == [ALICE.email, BOB.email]
            assert first.project_created and first.tasks_created == len(TASKS)
            state = (await services.registry.read(PROJECT_ID)).state
            assert state is not None
            alice, bob = first.users["alice"], first.users["bob"]
            assert {m.username: m.role.value for m in state.members.values()} == {"alice": "owner", "bob": "member"}
            tasks = list(state.tasks.values())
            assert len(tasks) == len(TASKS)
            # Every column has cards, with tags, priorities, due dates and both assignees.
            assert set(Counter(t.status for t in tasks)) == set(TaskStatus)
            assert all(t.tags for t in tasks)
            assert {t.priority.value for t in tasks} == {"low", "medium", "high", "urgent"}
            assert sum(t.due_date is not None for t in tasks) >= len(TASKS) // 2
            assert {t.assignee_id for t in tasks} == {alice.id, bob.id, None}
            assert {t.created_by for t in tasks} == {alice.id, bob.id}
            seq = state.seq

            # A second run (as a restart with --demo does) changes nothing.
            second = await seed_demo(services)
            assert not second.created_users and not second.project_created and second.tasks_created == 0
            assert second.users["alice"].id == alice.id
            assert state.seq == seq and len(state.tasks) == len(TASKS)

            # Made through the actor: the change log has every event, in order, without gaps.
            events = await services.db.run(changelog.events_since, PROJECT_ID, 0, 1000, transaction=False)
            assert [e["seq"] for e in events] == list(range(1, seq + 1))
            assert Counter(e["kind"] for e in events)["task.created"] == len(TASKS)

            # The accounts were made through the auth service: the printed password signs in.
            tokens, user = await services.auth.login(
                email=BOB.email, password=DEMO_PASSWORD, client=ClientInfo(user_agent="test", ip_address="127.0.0.1"),
            )
            assert tokens.access_token and user.id == bob.id


async def test_a_used_project_gets_no_new_cards(database_url: str, tmp_path: Path) -> None:
    """Cards people deleted do not come back when the server is started with --demo again."""
    settings = test_settings(database_url, tmp_path)
    async with trio_asyncio.open_loop():
        async with open_services(settings) as services:
            report = await seed_demo(services)
            state = (await services.registry.read(PROJECT_ID)).state
            assert state is not None
            alice = report.users["alice"]
            for task_id in list(state.tasks):
                await services.registry.ask(PROJECT_ID, ops.TaskDelete(task_id), principal_for(alice))
            assert not state.tasks
            again = await seed_demo(services)
            assert again.tasks_created == 0 and not state.tasks


async def test_demo_is_refused_in_production(tmp_path: Path) -> None:
    settings = test_settings(None, tmp_path).replace(env="production", database_url="postgresql://nowhere/x")
    with pytest.raises(ConfigError, match="refused"):
        await serve_demo(settings)


async def test_a_deleted_demo_project_is_made_afresh_once(database_url: str, tmp_path: Path) -> None:
    """--demo seeds at start: after someone deleted the project, the next start makes it again, once."""
    settings = test_settings(database_url, tmp_path)
    async with trio_asyncio.open_loop():
        async with open_services(settings) as services:
            report = await seed_demo(services)
            await services.registry.ask(PROJECT_ID, ops.ProjectDelete(), principal_for(report.users["alice"]))
    for made in (True, False):  # two restarts
        async with trio_asyncio.open_loop():
            async with open_services(settings) as services:
                again = await seed_demo(services)
                assert again.project_created is made and again.tasks_created == (len(TASKS) if made else 0)
                state = (await services.registry.read(PROJECT_ID)).state
                assert state is not None and len(state.tasks) == len(TASKS) and len(state.members) == 2
