"""Tests for collab.domain.rules.apply: validation, permissions and merge rules.

Every test builds a project with an owner, a manager, a member and a viewer,
applies ops to a :class:`Draft` of it, and checks the events and the draft.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest

from collab.domain import positions
from collab.domain.model import (
    Draft, Member, Priority, Project, ProjectRole, ProjectState, ProjectStatus, Task, TaskStatus,
)
from collab.domain.ops import (
    Event, MemberAdd, MemberRemove, MemberUpdate, Op, ProjectDelete, ProjectUpdate, TaskAddTags, TaskAssign,
    TaskCreate, TaskDelete, TaskMove, TaskRemoveTags, TaskUpdate,
)
from collab.domain.rules import MAX_TAG_CHARS, MAX_TAGS, MAX_TITLE_CHARS, apply, normalize_tags
from collab.domain.users import Principal
from collab.errors import CollabError, Conflict, Forbidden, NotFound, StaleVersion, ValidationFailed

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)
T1 = T0 + timedelta(hours=1)
T2 = T0 + timedelta(hours=2)
T3 = T0 + timedelta(hours=3)
START_SEQ = 7  # a project with some history: seqs continue from here


# --- builders ------------------------------------------------------------------------

def principal(name: str, *roles: str, user_id: uuid.UUID | None = None) -> Principal:
    return Principal(user_id=user_id or uuid.uuid4(), session_id=uuid.uuid4(), username=name, roles=roles)


@dataclass
class World:
    state: ProjectState
    owner: Principal
    manager: Principal
    member: Principal
    viewer: Principal
    outsider: Principal
    admin: Principal

    def draft(self) -> Draft:
        return Draft(self.state)


def make_world(seq: int = START_SEQ) -> World:
    owner = principal("olivia", "manager")
    manager = principal("mark", "manager")
    member = principal("dev", "developer")
    viewer = principal("vera", "developer")
    outsider = principal("oscar", "developer")
    admin = principal("ada", "admin")
    project = Project(
        id=uuid.uuid4(), name="Apollo", description=None, owner_id=owner.user_id, status=ProjectStatus.ACTIVE,
        priority=Priority.MEDIUM, start_date=None, due_date=None, completed_at=None, created_at=T0, updated_at=T0,
    )
    members = {
        p.user_id: Member(p.user_id, role, p.username, p.username.title(), T0)
        for p, role in (
            (owner, ProjectRole.OWNER), (manager, ProjectRole.MANAGER),
            (member, ProjectRole.MEMBER), (viewer, ProjectRole.VIEWER),
        )
    }
    state = ProjectState(project=project, seq=seq, members=members)
    return World(state, owner, manager, member, viewer, outsider, admin)


def create(draft: Draft, caller: Principal, title: str = "Task", now: datetime = T0, **fields: Any) -> Task:
    task_id = uuid.uuid4()
    apply(draft, TaskCreate(task_id, {"title": title, **fields}), caller, now)
    task = draft.task(task_id)
    assert task is not None
    return task


def snapshot(draft: Draft) -> dict[str, Any]:
    """Everything a draft shows, to compare before and after a failed op."""
    return {
        "seq": draft.seq,
        "deleted": draft.deleted,
        "project": draft.project,
        "tasks": {t.id: t for t in draft.tasks()},
        "members": {m.user_id: m for m in draft.members()},
    }


def column_titles(draft: Draft, status: TaskStatus) -> list[str]:
    return [t.title for t in draft.column(status)]


def assert_consecutive(events: list[Event], first: int) -> None:
    assert [e.seq for e in events] == list(range(first, first + len(events)))


@pytest.fixture
def world() -> World:
    return make_world()


@pytest.fixture
def draft(world: World) -> Draft:
    return world.draft()


# --- task.create -----------------------------------------------------------------------

def test_create_defaults(world: World, draft: Draft) -> None:
    task_id = uuid.uuid4()
    events = apply(draft, TaskCreate(task_id, {"title": "  Write docs  "}), world.member, T0)
    assert len(events) == 1
    event = events[0]
    assert event.kind == "task.created"
    assert event.seq == START_SEQ + 1 == draft.seq
    task = draft.task(task_id)
    assert task is not None
    assert event.after == task
    assert task.title == "Write docs"
    assert task.status == TaskStatus.TODO
    assert task.priority == Priority.MEDIUM
    assert task.version == event.seq
    assert task.created_by == world.member.user_id
    assert task.project_id == world.state.project.id
    assert task.completed_at is None
    assert task.assignee_id is None
    assert task.tags == ()
    assert task.position == positions.FIRST_POSITION
    assert task.created_at == task.updated_at == T0
    assert event.payload["task"]["id"] == str(task_id)
    assert event.payload["task"]["version"] == event.seq


def test_create_appends_to_the_end_of_its_column(world: World, draft: Draft) -> None:
    a = create(draft, world.member, "a")
    b = create(draft, world.member, "b")
    c = create(draft, world.member, "c")
    other = create(draft, world.member, "x", status="in_progress")
    assert a.position < b.position < c.position
    assert b.position == positions.key_between(a.position, None)
    assert column_titles(draft, TaskStatus.TODO) == ["a", "b", "c"]
    # An empty column starts at the first position.
    assert other.position == positions.FIRST_POSITION
    assert [a.version, b.version, c.version, other.version] == [
        START_SEQ + 1, START_SEQ + 2, START_SEQ + 3, START_SEQ + 4,
    ]


def test_create_as_done_sets_completed_at(world: World, draft: Draft) -> None:
    task = create(draft, world.member, "shipped", now=T1, status="done")
    assert task.status == TaskStatus.DONE
    assert task.completed_at == T1
    for status in ("todo", "in_progress", "in_review", "cancelled"):
        assert create(draft, world.member, status, status=status).completed_at is None


def test_create_with_all_fields(world: World, draft: Draft) -> None:
    due = T3 + timedelta(days=3)
    task = create(
        draft, world.member, "full", description="  details ", priority="urgent", due_date=due,
        estimated_hours=5, actual_hours=0, tags=["x"], assignee_id=world.viewer.user_id,
    )
    assert task.description == "details"
    assert task.priority == Priority.URGENT
    assert task.due_date == due
    assert (task.estimated_hours, task.actual_hours) == (5, 0)
    assert task.tags == ("x",)
    assert task.assignee_id == world.viewer.user_id


@pytest.mark.parametrize(
    "fields",
    [
        {},                                    # title missing
        {"title": None},
        {"title": ""},
        {"title": "   "},
        {"title": 42},
        {"title": "x" * (MAX_TITLE_CHARS + 1)},
        {"title": "ok", "status": "doing"},
        {"title": "ok", "priority": "critical"},
        {"title": "ok", "estimated_hours": -1},
        {"title": "ok", "estimated_hours": True},
        {"title": "ok", "actual_hours": 1.5},
        {"title": "ok", "due_date": "2025-01-01"},
        {"title": "ok", "position": "V"},      # not editable
        {"title": "ok", "version": 3},
        {"title": "ok", "created_by": str(uuid.uuid4())},
    ],
)
def test_create_invalid_fields(world: World, draft: Draft, fields: dict[str, Any]) -> None:
    before = snapshot(draft)
    with pytest.raises(ValidationFailed) as caught:
        apply(draft, TaskCreate(uuid.uuid4(), fields), world.member, T0)
    assert caught.value.code == "invalid"
    assert caught.value.errors
    assert snapshot(draft) == before


def test_create_title_at_the_limit_is_accepted(world: World, draft: Draft) -> None:
    assert create(draft, world.member, "x" * MAX_TITLE_CHARS).title == "x" * MAX_TITLE_CHARS


def test_create_title_error_names_the_field(world: World, draft: Draft) -> None:
    with pytest.raises(ValidationFailed) as caught:
        apply(draft, TaskCreate(uuid.uuid4(), {"description": "no title"}), world.member, T0)
    assert caught.value.errors[0].loc == ("title",)


def test_create_normalizes_tags(world: World, draft: Draft) -> None:
    task = create(draft, world.member, tags=["  Bug ", "bug", "UI", "BUG", "ui ", "backend"])
    assert task.tags == ("Bug", "UI", "backend")


def test_create_tags_limit(world: World, draft: Draft) -> None:
    twenty = [f"t{i}" for i in range(MAX_TAGS)]
    assert len(create(draft, world.member, tags=twenty).tags) == MAX_TAGS
    # Duplicates collapse before the limit is checked.
    assert len(create(draft, world.member, tags=twenty + ["T0", " t1 "]).tags) == MAX_TAGS
    with pytest.raises(ValidationFailed):
        create(draft, world.member, tags=twenty + ["one-more"])


@pytest.mark.parametrize(
    "tags", ["bug", ["ok", ""], ["   "], ["x" * (MAX_TAG_CHARS + 1)], [1], [None], {"a": 1}],
)
def test_create_invalid_tags(world: World, draft: Draft, tags: Any) -> None:
    with pytest.raises(ValidationFailed) as caught:
        create(draft, world.member, tags=tags)
    assert caught.value.errors[0].loc == ("tags",)


def test_normalize_tags_keeps_first_spelling_and_order() -> None:
    assert normalize_tags(["b", "A", "a", " B ", "c"]) == ("b", "A", "c")
    assert normalize_tags(()) == ()


def test_create_assignee_must_be_a_member(world: World, draft: Draft) -> None:
    with pytest.raises(ValidationFailed) as caught:
        create(draft, world.member, assignee_id=world.outsider.user_id)
    assert caught.value.errors[0].kind == "not_a_member"
    with pytest.raises(ValidationFailed):
        create(draft, world.member, assignee_id=str(world.member.user_id))  # not a UUID object
    assert create(draft, world.member, assignee_id=world.manager.user_id).assignee_id == world.manager.user_id


def test_create_with_an_existing_id_conflicts(world: World, draft: Draft) -> None:
    task = create(draft, world.member)
    before = snapshot(draft)
    with pytest.raises(Conflict):
        apply(draft, TaskCreate(task.id, {"title": "again"}), world.member, T1)
    assert snapshot(draft) == before


# --- task.update -----------------------------------------------------------------------

def test_update_last_writer_wins(world: World, draft: Draft) -> None:
    task = create(draft, world.member, "v0")
    e1 = apply(draft, TaskUpdate(task.id, {"title": "from member"}), world.member, T1)
    e2 = apply(draft, TaskUpdate(task.id, {"title": "from manager", "priority": "high"}), world.manager, T2)
    after = draft.task(task.id)
    assert after is not None
    assert after.title == "from manager"
    assert after.priority == Priority.HIGH
    assert after.version == e2[0].seq == e1[0].seq + 1 == draft.seq
    assert after.updated_at == T2
    assert after.created_at == T0
    assert e2[0].payload["changes"]["title"] == "from manager"
    assert e2[0].payload["changes"]["priority"] == "high"
    assert "description" not in e2[0].payload["changes"]


def test_noop_update_produces_no_event_and_no_version_bump(world: World, draft: Draft) -> None:
    task = create(draft, world.member, "same", priority="high", tags=["a"])
    seq = draft.seq
    for fields in ({"title": " same "}, {"priority": "high"}, {"tags": [" a", "a"]}, {}, {"status": "todo"}):
        assert apply(draft, TaskUpdate(task.id, fields), world.member, T1) == []
    assert draft.seq == seq
    assert draft.task(task.id) == task


def test_update_clearing_optional_fields(world: World, draft: Draft) -> None:
    task = create(draft, world.member, description="d", estimated_hours=3, assignee_id=world.member.user_id)
    cleared = TaskUpdate(task.id, {"description": "  ", "estimated_hours": None, "assignee_id": None})
    apply(draft, cleared, world.member, T1)
    after = draft.task(task.id)
    assert after is not None
    assert (after.description, after.estimated_hours, after.assignee_id) == (None, None, None)


def test_update_unknown_task_is_not_found(world: World, draft: Draft) -> None:
    with pytest.raises(NotFound):
        apply(draft, TaskUpdate(uuid.uuid4(), {"title": "x"}), world.member, T0)


def test_status_done_sets_and_leaving_clears_completed_at(world: World, draft: Draft) -> None:
    task = create(draft, world.member)
    apply(draft, TaskUpdate(task.id, {"status": "done"}), world.member, T1)
    done = draft.task(task.id)
    assert done is not None and done.status == TaskStatus.DONE and done.completed_at == T1
    apply(draft, TaskUpdate(task.id, {"status": "in_review"}), world.member, T2)
    reopened = draft.task(task.id)
    assert reopened is not None and reopened.completed_at is None
    apply(draft, TaskUpdate(task.id, {"status": "done"}), world.member, T3)
    again = draft.task(task.id)
    assert again is not None and again.completed_at == T3


def test_done_to_done_keeps_the_original_completed_at(world: World, draft: Draft) -> None:
    task = create(draft, world.member, now=T0, status="done")
    assert task.completed_at == T0
    # Sending status done again together with another change keeps completed_at.
    events = apply(draft, TaskUpdate(task.id, {"status": "done", "title": "renamed"}), world.member, T2)
    assert len(events) == 1
    assert "completed_at" not in events[0].payload["changes"]
    after = draft.task(task.id)
    assert after is not None and after.completed_at == T0 and after.title == "renamed"
    # Moving inside the done column keeps it too.
    other = create(draft, world.member, "other", status="done")
    apply(draft, TaskMove(task.id, after=other.id), world.member, T3)
    moved = draft.task(task.id)
    assert moved is not None and moved.completed_at == T0


def test_status_change_by_update_moves_to_the_end_of_the_new_column(world: World, draft: Draft) -> None:
    a = create(draft, world.member, "a")
    create(draft, world.member, "b")
    create(draft, world.member, "p1", status="in_progress")
    p2 = create(draft, world.member, "p2", status="in_progress")
    events = apply(draft, TaskUpdate(a.id, {"status": "in_progress"}), world.member, T1)
    assert column_titles(draft, TaskStatus.IN_PROGRESS) == ["p1", "p2", "a"]
    assert column_titles(draft, TaskStatus.TODO) == ["b"]
    moved = draft.task(a.id)
    assert moved is not None
    assert moved.position == positions.key_between(p2.position, None)
    assert events[0].payload["changes"]["status"] == "in_progress"
    assert events[0].payload["changes"]["position"] == moved.position


def test_update_status_with_if_version(world: World, draft: Draft) -> None:
    task = create(draft, world.member)
    apply(draft, TaskUpdate(task.id, {"status": "in_progress"}, if_version=task.version), world.member, T1)
    after = draft.task(task.id)
    assert after is not None and after.status == TaskStatus.IN_PROGRESS


@pytest.mark.parametrize(
    "make_op",
    [
        lambda task_id, seen: TaskUpdate(task_id, {"title": "mine"}, if_version=seen),
        lambda task_id, seen: TaskMove(task_id, status=TaskStatus.DONE, if_version=seen),
        lambda task_id, seen: TaskAddTags(task_id, ("new",), if_version=seen),
        lambda task_id, seen: TaskRemoveTags(task_id, ("a",), if_version=seen),
        lambda task_id, seen: TaskAssign(task_id, None, if_version=seen),
        lambda task_id, seen: TaskDelete(task_id, if_version=seen),
    ],
)
def test_stale_if_version_is_a_conflict_and_changes_nothing(world: World, draft: Draft, make_op: Any) -> None:
    task = create(draft, world.member, tags=["a"], assignee_id=world.member.user_id)
    apply(draft, TaskUpdate(task.id, {"title": "newer"}), world.manager, T1)  # someone else's newer change
    before = snapshot(draft)
    with pytest.raises(StaleVersion) as caught:
        apply(draft, make_op(task.id, task.version), world.member, T2)
    assert isinstance(caught.value, Conflict)
    assert caught.value.code == "conflict"
    assert caught.value.status == 409
    assert snapshot(draft) == before
    # With the current version the same op goes through.
    current = draft.task(task.id)
    assert current is not None
    events = apply(draft, make_op(task.id, current.version), world.member, T2)
    assert len(events) == 1 and events[0].seq == draft.seq


# --- task.move -------------------------------------------------------------------------

@pytest.fixture
def board(world: World, draft: Draft) -> dict[str, Task]:
    """todo: a b c d; in_progress: p q; done: (empty)."""
    tasks = {name: create(draft, world.member, name) for name in "abcd"}
    tasks |= {name: create(draft, world.member, name, status="in_progress") for name in "pq"}
    return tasks


def move(world: World, draft: Draft, task: Task, **kw: Any) -> list[Event]:
    return apply(draft, TaskMove(task.id, **kw), world.member, T1)


def test_move_after(world: World, draft: Draft, board: dict[str, Task]) -> None:
    move(world, draft, board["d"], after=board["a"].id)
    assert column_titles(draft, TaskStatus.TODO) == ["a", "d", "b", "c"]
    move(world, draft, board["a"], after=board["c"].id)
    assert column_titles(draft, TaskStatus.TODO) == ["d", "b", "c", "a"]


def test_move_before(world: World, draft: Draft, board: dict[str, Task]) -> None:
    move(world, draft, board["c"], before=board["a"].id)
    assert column_titles(draft, TaskStatus.TODO) == ["c", "a", "b", "d"]
    move(world, draft, board["a"], before=board["d"].id)
    assert column_titles(draft, TaskStatus.TODO) == ["c", "b", "a", "d"]


def test_move_between_adjacent_neighbours(world: World, draft: Draft, board: dict[str, Task]) -> None:
    events = move(world, draft, board["a"], after=board["c"].id, before=board["d"].id)
    assert column_titles(draft, TaskStatus.TODO) == ["b", "c", "a", "d"]
    assert len(events) == 1
    assert set(events[0].payload["changes"]) == {"position", "version", "updated_at"}
    # Adjacency ignores the moved task itself: b and a are adjacent once c is taken out.
    move(world, draft, board["c"], after=board["b"].id, before=board["a"].id)
    assert column_titles(draft, TaskStatus.TODO) == ["b", "c", "a", "d"]


def test_move_without_neighbours_goes_to_the_end(world: World, draft: Draft, board: dict[str, Task]) -> None:
    move(world, draft, board["a"])
    assert column_titles(draft, TaskStatus.TODO) == ["b", "c", "d", "a"]


def test_move_across_columns(world: World, draft: Draft, board: dict[str, Task]) -> None:
    events = move(world, draft, board["b"], status=TaskStatus.IN_PROGRESS, after=board["p"].id)
    assert column_titles(draft, TaskStatus.IN_PROGRESS) == ["p", "b", "q"]
    assert column_titles(draft, TaskStatus.TODO) == ["a", "c", "d"]
    assert events[0].payload["changes"]["status"] == "in_progress"
    move(world, draft, board["c"], status=TaskStatus.IN_PROGRESS, before=board["p"].id)
    assert column_titles(draft, TaskStatus.IN_PROGRESS) == ["c", "p", "b", "q"]
    move(world, draft, board["d"], status=TaskStatus.IN_PROGRESS)
    assert column_titles(draft, TaskStatus.IN_PROGRESS) == ["c", "p", "b", "q", "d"]


def test_move_into_done_and_out_again(world: World, draft: Draft, board: dict[str, Task]) -> None:
    move(world, draft, board["a"], status=TaskStatus.DONE)
    done = draft.task(board["a"].id)
    assert done is not None and done.status == TaskStatus.DONE and done.completed_at == T1
    assert done.position == positions.FIRST_POSITION  # the done column was empty
    move(world, draft, board["a"], status=TaskStatus.TODO, before=board["b"].id)
    back = draft.task(board["a"].id)
    assert back is not None and back.completed_at is None
    assert column_titles(draft, TaskStatus.TODO) == ["a", "b", "c", "d"]


@pytest.mark.parametrize("side", ["after", "before"])
def test_move_next_to_itself_is_invalid(world: World, draft: Draft, board: dict[str, Task], side: str) -> None:
    before = snapshot(draft)
    with pytest.raises(ValidationFailed) as caught:
        move(world, draft, board["b"], **{side: board["b"].id})
    assert caught.value.errors[0].loc == (side,)
    assert snapshot(draft) == before


@pytest.mark.parametrize("side", ["after", "before"])
def test_move_next_to_a_task_in_another_column_conflicts(
    world: World, draft: Draft, board: dict[str, Task], side: str,
) -> None:
    before = snapshot(draft)
    with pytest.raises(Conflict) as caught:
        move(world, draft, board["a"], **{side: board["p"].id})
    assert not isinstance(caught.value, StaleVersion)
    # Named target column, neighbour in the source column.
    with pytest.raises(Conflict):
        move(world, draft, board["a"], status=TaskStatus.IN_PROGRESS, **{side: board["b"].id})
    # A neighbour that does not exist at all.
    with pytest.raises(Conflict):
        move(world, draft, board["a"], **{side: uuid.uuid4()})
    assert snapshot(draft) == before


def test_move_with_non_adjacent_neighbours_conflicts(world: World, draft: Draft, board: dict[str, Task]) -> None:
    before = snapshot(draft)
    for after, before_ in (("b", "d"), ("c", "b"), ("b", "b")):
        with pytest.raises(Conflict):
            move(world, draft, board["a"], after=board[after].id, before=board[before_].id)
    assert snapshot(draft) == before


def test_move_unknown_task_is_not_found(world: World, draft: Draft) -> None:
    with pytest.raises(NotFound):
        apply(draft, TaskMove(uuid.uuid4()), world.member, T0)


def test_move_only_rewrites_the_moved_task(world: World, draft: Draft, board: dict[str, Task]) -> None:
    others = {k: draft.task(t.id) for k, t in board.items() if k != "c"}
    move(world, draft, board["c"], before=board["a"].id)
    assert {k: draft.task(t.id) for k, t in board.items() if k != "c"} == others


# --- tags ------------------------------------------------------------------------------

def test_add_tags_set_semantics(world: World, draft: Draft) -> None:
    task = create(draft, world.member, tags=["Bug", "ui"])
    seq = draft.seq
    assert apply(draft, TaskAddTags(task.id, ("bug", " UI ")), world.member, T1) == []
    assert draft.seq == seq and draft.task(task.id) == task
    events = apply(draft, TaskAddTags(task.id, ("BUG", "perf", "Perf")), world.member, T1)
    assert len(events) == 1
    after = draft.task(task.id)
    assert after is not None and after.tags == ("Bug", "ui", "perf")
    assert after.version == events[0].seq
    assert events[0].payload["changes"]["tags"] == ["Bug", "ui", "perf"]


def test_remove_tags_set_semantics(world: World, draft: Draft) -> None:
    task = create(draft, world.member, tags=["Bug", "ui", "perf"])
    seq = draft.seq
    assert apply(draft, TaskRemoveTags(task.id, ("missing",)), world.member, T1) == []
    assert draft.seq == seq
    apply(draft, TaskRemoveTags(task.id, ("BUG", "missing")), world.member, T1)
    after = draft.task(task.id)
    assert after is not None and after.tags == ("ui", "perf")
    apply(draft, TaskRemoveTags(task.id, ("UI", "Perf")), world.member, T2)
    empty = draft.task(task.id)
    assert empty is not None and empty.tags == ()


def test_add_tags_beyond_the_limit_is_invalid(world: World, draft: Draft) -> None:
    task = create(draft, world.member, tags=[f"t{i}" for i in range(MAX_TAGS - 1)])
    apply(draft, TaskAddTags(task.id, ("last",)), world.member, T1)
    before = snapshot(draft)
    with pytest.raises(ValidationFailed):
        apply(draft, TaskAddTags(task.id, ("overflow",)), world.member, T1)
    assert snapshot(draft) == before
    # Re-adding existing tags at the limit is still a no-op, not an error.
    assert apply(draft, TaskAddTags(task.id, ("LAST", "t0")), world.member, T1) == []


def test_add_then_remove_the_same_tags_commute_with_others(world: World, draft: Draft) -> None:
    t1 = create(draft, world.member, "one", tags=["base"])
    t2 = create(draft, world.member, "two", tags=["base"])
    apply(draft, TaskAddTags(t1.id, ("x",)), world.member, T1)
    apply(draft, TaskAddTags(t1.id, ("y",)), world.member, T1)
    apply(draft, TaskAddTags(t2.id, ("y",)), world.member, T1)
    apply(draft, TaskAddTags(t2.id, ("x",)), world.member, T1)
    a, b = draft.task(t1.id), draft.task(t2.id)
    assert a is not None and b is not None
    assert set(a.tags) == set(b.tags) == {"base", "x", "y"}


# --- task.assign -----------------------------------------------------------------------

def test_assign_and_unassign(world: World, draft: Draft) -> None:
    task = create(draft, world.member)
    apply(draft, TaskAssign(task.id, world.viewer.user_id), world.member, T1)
    assigned = draft.task(task.id)
    assert assigned is not None and assigned.assignee_id == world.viewer.user_id
    assert apply(draft, TaskAssign(task.id, world.viewer.user_id), world.member, T1) == []
    apply(draft, TaskAssign(task.id, None), world.member, T2)
    unassigned = draft.task(task.id)
    assert unassigned is not None and unassigned.assignee_id is None


def test_assign_to_a_non_member_is_invalid(world: World, draft: Draft) -> None:
    task = create(draft, world.member)
    before = snapshot(draft)
    with pytest.raises(ValidationFailed):
        apply(draft, TaskAssign(task.id, world.outsider.user_id), world.member, T1)
    assert snapshot(draft) == before


# --- task.delete -----------------------------------------------------------------------

@pytest.mark.parametrize("who", ["creator", "owner", "admin", "manager_creator"])
def test_delete_allowed(world: World, draft: Draft, who: str) -> None:
    creator = world.manager if who == "manager_creator" else world.member
    callers = {"creator": world.member, "owner": world.owner, "admin": world.admin, "manager_creator": world.manager}
    caller = callers[who]
    task = create(draft, creator)
    events = apply(draft, TaskDelete(task.id), caller, T1)
    assert [e.kind for e in events] == ["task.deleted"]
    assert events[0].seq == draft.seq
    assert events[0].after is None
    assert events[0].payload == {"task_id": str(task.id), "title": task.title}
    assert draft.task(task.id) is None
    assert task.id not in {t.id for t in draft.tasks()}
    with pytest.raises(NotFound):
        apply(draft, TaskUpdate(task.id, {"title": "ghost"}), caller, T2)
    with pytest.raises(NotFound):
        apply(draft, TaskDelete(task.id), caller, T2)


@pytest.mark.parametrize("who", ["other_member", "manager", "viewer", "outsider"])
def test_delete_refused(world: World, draft: Draft, who: str) -> None:
    other = principal("dev2", "developer")
    apply(draft, MemberAdd(other.user_id, ProjectRole.MEMBER, "dev2", "Dev Two"), world.owner, T0)
    task = create(draft, world.member)
    caller = {"other_member": other, "manager": world.manager, "viewer": world.viewer, "outsider": world.outsider}[who]
    before = snapshot(draft)
    with pytest.raises(Forbidden):
        apply(draft, TaskDelete(task.id), caller, T1)
    assert snapshot(draft) == before


def test_delete_by_a_globally_read_only_owner_is_refused(world: World) -> None:
    draft = world.draft()
    task = create(draft, world.member)
    read_only_owner = Principal(world.owner.user_id, uuid.uuid4(), world.owner.username, ("viewer",))
    with pytest.raises(Forbidden):
        apply(draft, TaskDelete(task.id), read_only_owner, T1)
    assert draft.task(task.id) == task


def test_delete_by_its_creator_after_demotion_to_project_viewer_is_refused(world: World, draft: Draft) -> None:
    """A project viewer is read-only, even for tasks they created earlier as a member."""
    task = create(draft, world.member)
    apply(draft, MemberUpdate(world.member.user_id, ProjectRole.VIEWER), world.manager, T1)
    with pytest.raises(Forbidden):
        apply(draft, TaskDelete(task.id), world.member, T2)
    assert draft.task(task.id) == task


# --- members ---------------------------------------------------------------------------

@pytest.mark.parametrize("role", [ProjectRole.MEMBER, ProjectRole.VIEWER])
def test_manager_adds_members_and_viewers(world: World, draft: Draft, role: ProjectRole) -> None:
    new = uuid.uuid4()
    events = apply(draft, MemberAdd(new, role, "neo", "Neo"), world.manager, T1)
    assert [e.kind for e in events] == ["member.added"]
    assert events[0].subject_id == new
    assert events[0].payload["member"]["role"] == role.value
    member = draft.member(new)
    assert member is not None and member.role == role and member.joined_at == T1
    assert events[0].after == member


@pytest.mark.parametrize("role", [ProjectRole.MANAGER, ProjectRole.OWNER])
def test_manager_cannot_add_managers_or_owners(world: World, draft: Draft, role: ProjectRole) -> None:
    new = uuid.uuid4()
    with pytest.raises(Forbidden):
        apply(draft, MemberAdd(new, role, "neo", "Neo"), world.manager, T1)
    assert draft.member(new) is None
    # The owner can.
    apply(draft, MemberAdd(new, role, "neo", "Neo"), world.owner, T1)
    added = draft.member(new)
    assert added is not None and added.role == role


@pytest.mark.parametrize("caller", ["member", "viewer", "outsider"])
def test_members_viewers_and_outsiders_cannot_add_members(world: World, draft: Draft, caller: str) -> None:
    with pytest.raises(Forbidden):
        apply(draft, MemberAdd(uuid.uuid4(), ProjectRole.VIEWER, "neo", "Neo"), getattr(world, caller), T1)


def test_adding_an_existing_member_conflicts(world: World, draft: Draft) -> None:
    with pytest.raises(Conflict):
        apply(draft, MemberAdd(world.member.user_id, ProjectRole.VIEWER, "dev", "Dev"), world.owner, T1)
    member = draft.member(world.member.user_id)
    assert member is not None and member.role == ProjectRole.MEMBER


def test_manager_changes_roles_below_manager_only(world: World, draft: Draft) -> None:
    events = apply(draft, MemberUpdate(world.member.user_id, ProjectRole.VIEWER), world.manager, T1)
    assert [e.kind for e in events] == ["member.updated"]
    demoted = draft.member(world.member.user_id)
    assert demoted is not None and demoted.role == ProjectRole.VIEWER and demoted.joined_at == T0
    for target, role in (
        (world.viewer, ProjectRole.MANAGER),   # promote to manager
        (world.viewer, ProjectRole.OWNER),     # promote to owner
        (world.owner, ProjectRole.MEMBER),     # demote an owner
        (world.manager, ProjectRole.MEMBER),   # demote a manager (itself)
    ):
        with pytest.raises(Forbidden):
            apply(draft, MemberUpdate(target.user_id, role), world.manager, T1)


def test_owner_manages_owner_and_manager_roles(world: World, draft: Draft) -> None:
    apply(draft, MemberUpdate(world.manager.user_id, ProjectRole.MEMBER), world.owner, T1)
    apply(draft, MemberUpdate(world.member.user_id, ProjectRole.OWNER), world.owner, T1)
    m1, m2 = draft.member(world.manager.user_id), draft.member(world.member.user_id)
    assert m1 is not None and m1.role == ProjectRole.MEMBER
    assert m2 is not None and m2.role == ProjectRole.OWNER


def test_same_role_update_is_a_noop(world: World, draft: Draft) -> None:
    seq = draft.seq
    assert apply(draft, MemberUpdate(world.member.user_id, ProjectRole.MEMBER), world.owner, T1) == []
    assert draft.seq == seq


def test_update_or_remove_a_non_member_is_not_found(world: World, draft: Draft) -> None:
    with pytest.raises(NotFound):
        apply(draft, MemberUpdate(world.outsider.user_id, ProjectRole.MEMBER), world.owner, T1)
    with pytest.raises(NotFound):
        apply(draft, MemberRemove(world.outsider.user_id), world.owner, T1)


def test_last_owner_cannot_be_demoted_or_removed(world: World, draft: Draft) -> None:
    before = snapshot(draft)
    with pytest.raises(Conflict):
        apply(draft, MemberUpdate(world.owner.user_id, ProjectRole.MANAGER), world.owner, T1)
    with pytest.raises(Conflict):
        apply(draft, MemberRemove(world.owner.user_id), world.owner, T1)       # leaving
    with pytest.raises(Conflict):
        apply(draft, MemberRemove(world.owner.user_id), world.admin, T1)       # removed by an admin
    assert snapshot(draft) == before
    # With a second owner, the first may step down.
    apply(draft, MemberUpdate(world.manager.user_id, ProjectRole.OWNER), world.owner, T1)
    apply(draft, MemberUpdate(world.owner.user_id, ProjectRole.MEMBER), world.owner, T2)
    stepped_down = draft.member(world.owner.user_id)
    assert stepped_down is not None and stepped_down.role == ProjectRole.MEMBER
    with pytest.raises(Conflict):
        apply(draft, MemberRemove(world.manager.user_id), world.manager, T3)


def test_manager_removes_members_but_not_owners_or_managers(world: World, draft: Draft) -> None:
    second_manager = principal("max", "manager")
    apply(draft, MemberAdd(second_manager.user_id, ProjectRole.MANAGER, "max", "Max"), world.owner, T0)
    for target in (world.owner, second_manager):
        with pytest.raises(Forbidden):
            apply(draft, MemberRemove(target.user_id), world.manager, T1)
    events = apply(draft, MemberRemove(world.viewer.user_id), world.manager, T1)
    assert [e.kind for e in events] == ["member.removed"]
    assert events[0].subject_id == world.viewer.user_id
    assert draft.member(world.viewer.user_id) is None


def test_a_member_cannot_remove_others(world: World, draft: Draft) -> None:
    with pytest.raises(Forbidden):
        apply(draft, MemberRemove(world.viewer.user_id), world.member, T1)
    assert draft.member(world.viewer.user_id) is not None


@pytest.mark.parametrize("who", ["member", "viewer", "manager"])
def test_leaving_a_project_yourself_is_allowed(world: World, draft: Draft, who: str) -> None:
    caller = getattr(world, who)
    events = apply(draft, MemberRemove(caller.user_id), caller, T1)
    assert [e.kind for e in events] == ["member.removed"]
    assert draft.member(caller.user_id) is None
    # And once gone, the project is closed to them.
    with pytest.raises(Forbidden):
        apply(draft, TaskCreate(uuid.uuid4(), {"title": "after leaving"}), caller, T2)


def test_removing_a_member_unassigns_their_tasks(world: World, draft: Draft) -> None:
    t1 = create(draft, world.owner, "one", assignee_id=world.member.user_id)
    t2 = create(draft, world.owner, "two", assignee_id=world.member.user_id, status="done")
    t3 = create(draft, world.owner, "three", assignee_id=world.viewer.user_id)
    seq = draft.seq
    events = apply(draft, MemberRemove(world.member.user_id), world.manager, T1)
    assert_consecutive(events, seq + 1)
    assert events[0].kind == "member.removed"
    assert sorted(e.kind for e in events[1:]) == ["task.updated", "task.updated"]
    assert {e.task_id for e in events[1:]} == {t1.id, t2.id}
    for event in events[1:]:
        assert event.payload["changes"]["assignee_id"] is None
        task = draft.task(event.task_id)  # type: ignore[arg-type]
        assert task is not None and task.assignee_id is None and task.version == event.seq
    untouched = draft.task(t3.id)
    assert untouched == t3
    assert draft.seq == events[-1].seq


# --- project ---------------------------------------------------------------------------

def test_project_update_fields(world: World, draft: Draft) -> None:
    events = apply(
        draft,
        ProjectUpdate(
            {"name": " Gemini ", "start_date": date(2025, 1, 1), "due_date": date(2025, 2, 1), "priority": "high"},
        ),
        world.manager, T1,
    )
    assert [e.kind for e in events] == ["project.updated"]
    assert draft.project.name == "Gemini"
    assert draft.project.priority == Priority.HIGH
    assert draft.project.updated_at == T1
    assert events[0].payload["changes"]["name"] == "Gemini"
    assert events[0].after == draft.project


@pytest.mark.parametrize(
    "fields",
    [
        {"start_date": date(2025, 2, 1), "due_date": date(2025, 1, 1)},
        {"name": ""},
        {"name": None},
        {"status": "paused"},
        {"priority": "meh"},
        {"owner_id": str(uuid.uuid4())},
        {"seq": 1},
    ],
)
def test_project_update_invalid(world: World, draft: Draft, fields: dict[str, Any]) -> None:
    before = snapshot(draft)
    with pytest.raises(ValidationFailed):
        apply(draft, ProjectUpdate(fields), world.owner, T1)
    assert snapshot(draft) == before


def test_project_due_date_checked_against_the_existing_start(world: World, draft: Draft) -> None:
    apply(draft, ProjectUpdate({"start_date": date(2025, 3, 1)}), world.owner, T1)
    with pytest.raises(ValidationFailed) as caught:
        apply(draft, ProjectUpdate({"due_date": date(2025, 2, 28)}), world.owner, T2)
    assert caught.value.errors[0].loc == ("due_date",)
    apply(draft, ProjectUpdate({"due_date": date(2025, 3, 1)}), world.owner, T2)  # same day is fine
    assert draft.project.due_date == date(2025, 3, 1)


def test_project_completed_at_follows_status(world: World, draft: Draft) -> None:
    apply(draft, ProjectUpdate({"status": "completed"}), world.owner, T1)
    assert draft.project.status == ProjectStatus.COMPLETED and draft.project.completed_at == T1
    assert apply(draft, ProjectUpdate({"status": "completed"}), world.owner, T2) == []
    assert draft.project.completed_at == T1
    apply(draft, ProjectUpdate({"status": "active"}), world.owner, T3)
    assert draft.project.completed_at is None


def test_project_noop_update_has_no_event(world: World, draft: Draft) -> None:
    seq = draft.seq
    assert apply(draft, ProjectUpdate({"name": "Apollo"}), world.owner, T1) == []
    assert draft.seq == seq and draft.project == world.state.project


def test_project_if_version_is_the_project_seq(world: World, draft: Draft) -> None:
    with pytest.raises(StaleVersion):
        apply(draft, ProjectUpdate({"name": "x"}, if_version=START_SEQ - 1), world.owner, T1)
    apply(draft, ProjectUpdate({"name": "x"}, if_version=START_SEQ), world.owner, T1)
    assert draft.project.name == "x"
    with pytest.raises(StaleVersion):
        apply(draft, ProjectDelete(if_version=START_SEQ), world.owner, T2)
    assert not draft.deleted


@pytest.mark.parametrize("who", ["member", "viewer", "outsider"])
def test_project_update_refused(world: World, draft: Draft, who: str) -> None:
    with pytest.raises(Forbidden):
        apply(draft, ProjectUpdate({"name": "mine"}), getattr(world, who), T1)
    assert draft.project.name == "Apollo"


@pytest.mark.parametrize("who", ["manager", "member", "viewer", "outsider"])
def test_project_delete_refused(world: World, draft: Draft, who: str) -> None:
    with pytest.raises(Forbidden):
        apply(draft, ProjectDelete(), getattr(world, who), T1)
    assert not draft.deleted


@pytest.mark.parametrize("who", ["owner", "admin"])
def test_after_project_delete_every_op_is_not_found(world: World, draft: Draft, who: str) -> None:
    task = create(draft, world.member)
    events = apply(draft, ProjectDelete(), getattr(world, who), T1)
    assert [e.kind for e in events] == ["project.deleted"]
    assert draft.deleted
    seq = draft.seq
    ops: list[Op] = [
        ProjectUpdate({"name": "x"}), ProjectDelete(),
        MemberAdd(uuid.uuid4(), ProjectRole.MEMBER, "n", "N"), MemberUpdate(world.member.user_id, ProjectRole.VIEWER),
        MemberRemove(world.member.user_id),
        TaskCreate(uuid.uuid4(), {"title": "x"}), TaskUpdate(task.id, {"title": "x"}), TaskMove(task.id),
        TaskAddTags(task.id, ("x",)), TaskRemoveTags(task.id, ("x",)), TaskAssign(task.id, None), TaskDelete(task.id),
    ]
    for op in ops:
        with pytest.raises(NotFound):
            apply(draft, op, world.owner, T2)
    assert draft.seq == seq


# --- permissions through apply ------------------------------------------------------------

def _write_ops(task: Task) -> list[Op]:
    return [
        TaskCreate(uuid.uuid4(), {"title": "x"}), TaskUpdate(task.id, {"title": "x"}), TaskMove(task.id),
        TaskAddTags(task.id, ("x",)), TaskRemoveTags(task.id, ("a",)), TaskAssign(task.id, None),
    ]


def test_non_member_is_forbidden(world: World, draft: Draft) -> None:
    task = create(draft, world.member, tags=["a"], assignee_id=world.member.user_id)
    before = snapshot(draft)
    for op in _write_ops(task) + [TaskDelete(task.id), ProjectUpdate({"name": "x"})]:
        with pytest.raises(Forbidden) as caught:
            apply(draft, op, world.outsider, T1)
        assert "not a member" in caught.value.detail
    assert snapshot(draft) == before


def test_project_viewer_cannot_write_tasks(world: World, draft: Draft) -> None:
    task = create(draft, world.member, tags=["a"], assignee_id=world.member.user_id)
    before = snapshot(draft)
    for op in _write_ops(task):
        with pytest.raises(Forbidden):
            apply(draft, op, world.viewer, T1)
    assert snapshot(draft) == before


def test_global_viewer_with_project_role_member_cannot_write(world: World, draft: Draft) -> None:
    task = create(draft, world.member, tags=["a"], assignee_id=world.member.user_id)
    read_only = Principal(world.member.user_id, uuid.uuid4(), "dev", ("viewer",))
    before = snapshot(draft)
    for op in _write_ops(task) + [TaskDelete(task.id)]:
        with pytest.raises(Forbidden):
            apply(draft, op, read_only, T1)
    assert snapshot(draft) == before


def test_global_viewer_with_project_role_owner_cannot_manage(world: World, draft: Draft) -> None:
    read_only_owner = Principal(world.owner.user_id, uuid.uuid4(), "olivia", ("viewer",))
    for op in (ProjectUpdate({"name": "x"}), ProjectDelete(), MemberAdd(uuid.uuid4(), ProjectRole.MEMBER, "n", "N")):
        with pytest.raises(Forbidden):
            apply(draft, op, read_only_owner, T1)
    assert draft.seq == START_SEQ


def test_admin_needs_no_membership(world: World, draft: Draft) -> None:
    task = create(draft, world.admin, "by admin")
    assert task.created_by == world.admin.user_id
    apply(draft, ProjectUpdate({"name": "Renamed"}), world.admin, T1)
    apply(draft, MemberUpdate(world.manager.user_id, ProjectRole.OWNER), world.admin, T1)
    promoted = draft.member(world.manager.user_id)
    assert draft.project.name == "Renamed" and promoted is not None and promoted.role == ProjectRole.OWNER


# --- the draft -------------------------------------------------------------------------

def test_failing_ops_leave_the_draft_unchanged(world: World, draft: Draft) -> None:
    a = create(draft, world.member, "a", tags=["t"], assignee_id=world.member.user_id)
    b = create(draft, world.member, "b")
    p = create(draft, world.member, "p", status="in_progress")
    failing: list[tuple[Op, Principal]] = [
        (TaskCreate(uuid.uuid4(), {"title": ""}), world.member),
        (TaskCreate(a.id, {"title": "dup"}), world.member),
        (TaskUpdate(a.id, {"title": "x", "priority": "nope"}), world.member),   # valid title, invalid priority
        (TaskUpdate(a.id, {"status": "done", "tags": [""]}), world.member),
        (TaskUpdate(a.id, {"title": "x"}, if_version=1), world.member),
        (TaskMove(a.id, after=p.id), world.member),
        (TaskMove(a.id, status=TaskStatus.DONE, after=b.id), world.member),
        (TaskMove(a.id, before=a.id), world.member),
        (TaskAddTags(a.id, tuple(f"n{i}" for i in range(MAX_TAGS))), world.member),
        (TaskAssign(a.id, world.outsider.user_id), world.member),
        (TaskDelete(a.id), world.manager),
        (TaskUpdate(a.id, {"title": "x"}), world.viewer),
        (MemberAdd(world.viewer.user_id, ProjectRole.MEMBER, "v", "V"), world.owner),
        (MemberRemove(world.owner.user_id), world.owner),
        (ProjectUpdate({"name": "ok", "start_date": date(2025, 5, 1), "due_date": date(2025, 4, 1)}), world.owner),
        (ProjectDelete(), world.manager),
    ]
    for op, caller in failing:
        before = snapshot(draft)
        with pytest.raises(CollabError):
            apply(draft, op, caller, T2)
        assert snapshot(draft) == before, op


def test_events_of_a_batch_have_consecutive_seqs(world: World, draft: Draft) -> None:
    t = uuid.uuid4()
    batch: list[tuple[Op, Principal]] = [
        (TaskCreate(t, {"title": "a", "assignee_id": world.member.user_id}), world.member),
        (TaskUpdate(t, {"title": "b"}), world.member),
        (TaskUpdate(t, {"title": "b"}), world.member),  # no-op: no event, no seq
        (TaskAddTags(t, ("x",)), world.member),
        (TaskMove(t, status=TaskStatus.DONE), world.member),
        (ProjectUpdate({"name": "Z"}), world.owner),
        (MemberRemove(world.member.user_id), world.manager),
        (TaskDelete(t), world.owner),
    ]
    events: list[Event] = []
    for op, caller in batch:
        events += apply(draft, op, caller, T1)
    assert_consecutive(events, START_SEQ + 1)
    assert draft.seq == events[-1].seq == START_SEQ + len(events)
    assert len(events) == len(batch)  # one no-op, one extra unassign event


def test_commit_folds_the_draft_into_the_state(world: World) -> None:
    state = world.state
    draft = world.draft()
    keep = create(draft, world.member, "keep")
    gone = create(draft, world.member, "gone")
    apply(draft, TaskDelete(gone.id), world.member, T1)
    apply(draft, MemberRemove(world.viewer.user_id), world.manager, T1)
    newbie = uuid.uuid4()
    apply(draft, MemberAdd(newbie, ProjectRole.MEMBER, "new", "New"), world.manager, T1)
    apply(draft, ProjectUpdate({"name": "Committed"}), world.owner, T1)
    expected = snapshot(draft)
    draft.commit()
    assert state.seq == expected["seq"] == START_SEQ + 6
    assert state.project.name == "Committed"
    assert state.tasks == {keep.id: keep}
    assert world.viewer.user_id not in state.members and newbie in state.members
    assert snapshot(Draft(state)) == expected
    # The committed draft keeps working on top of the new state.
    assert snapshot(draft) == expected


def test_commit_of_project_delete_marks_the_state(world: World) -> None:
    draft = world.draft()
    apply(draft, ProjectDelete(), world.owner, T1)
    draft.commit()
    assert world.state.deleted
    with pytest.raises(NotFound):
        apply(Draft(world.state), TaskCreate(uuid.uuid4(), {"title": "x"}), world.owner, T2)


def test_a_discarded_draft_leaves_the_state_untouched(world: World) -> None:
    state = world.state
    committed = world.draft()
    existing = create(committed, world.member, "existing")
    committed.commit()
    project, members, tasks, seq = state.project, dict(state.members), dict(state.tasks), state.seq

    draft = world.draft()
    create(draft, world.member, "uncommitted")
    apply(draft, TaskUpdate(existing.id, {"title": "changed"}), world.member, T1)
    apply(draft, MemberRemove(world.member.user_id), world.owner, T1)
    apply(draft, ProjectUpdate({"name": "changed"}), world.owner, T1)
    apply(draft, ProjectDelete(), world.owner, T1)
    del draft

    assert (state.project, state.members, state.tasks, state.seq, state.deleted) == (
        project, members, tasks, seq, False,
    )
    fresh = Draft(state)
    assert fresh.task(existing.id) == existing
    assert [t.title for t in fresh.tasks()] == ["existing"]
