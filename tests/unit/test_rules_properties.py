"""Property tests for collab.domain.rules: random op sequences keep the invariants.

Random batches of task and member ops are applied through ``Draft`` + ``apply``
by random callers (some of them not allowed to); failures must be
:class:`CollabError` and leave the draft untouched, and after every step the
invariants below hold. Tag merge rules (add/remove) are checked on their own.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from collab.domain import positions
from collab.domain.model import Draft, ProjectRole, Task, TaskStatus
from collab.domain.ops import (
    Event, MemberAdd, MemberRemove, MemberUpdate, Op, TaskAddTags, TaskAssign, TaskCreate, TaskDelete, TaskMove,
    TaskRemoveTags, TaskUpdate,
)
from collab.domain.rules import MAX_TAGS, apply, normalize_tags
from collab.domain.users import Principal
from collab.errors import CollabError, ValidationFailed
from tests.unit.test_rules import START_SEQ, T0, World, make_world, principal, snapshot

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)
STEPS = 40

statuses = st.sampled_from(list(TaskStatus))
#: Mostly a tiny alphabet, so tags collide case-insensitively; sometimes anything.
tag = st.one_of(
    st.text(alphabet="abAB xX-", min_size=1, max_size=4),
    st.text(min_size=1, max_size=8),
)
tag_lists = st.lists(tag, max_size=6)
#: Tag lists that are valid on their own (non-empty after strip, short enough).
valid_tags = st.lists(st.text(alphabet="abcdeABCDE ", min_size=1, max_size=3).filter(str.strip), max_size=8)


# --- invariants ----------------------------------------------------------------------

def check_invariants(draft: Draft, last_event_seq: dict[uuid.UUID, int]) -> None:
    tasks = list(draft.tasks())
    assert len({t.id for t in tasks}) == len(tasks)
    for task in tasks:
        assert task.version <= draft.seq
        assert task.version == last_event_seq[task.id], task
        assert (task.completed_at is not None) == (task.status == TaskStatus.DONE), task
        lowered = [t.lower() for t in task.tags]
        assert len(set(lowered)) == len(lowered), task.tags
        assert len(task.tags) <= MAX_TAGS
        assert all(t and t == t.strip() for t in task.tags)
        if task.assignee_id is not None:
            assert draft.member(task.assignee_id) is not None, "assignee is not a member"
    for status in TaskStatus:
        column = [t.position for t in draft.column(status)]
        assert len(set(column)) == len(column), f"duplicate positions in {status.value}"
        assert all(positions.is_valid(p) for p in column)
        assert column == sorted(column)
    owners = [m for m in draft.members() if m.role == ProjectRole.OWNER]
    assert owners, "a project needs at least one owner"


def check_events(events: list[Event], seq_before: int, draft: Draft, last_event_seq: dict[uuid.UUID, int]) -> None:
    assert [e.seq for e in events] == list(range(seq_before + 1, seq_before + 1 + len(events)))
    assert draft.seq == seq_before + len(events)
    final: dict[uuid.UUID, Event] = {}
    for e in events:
        if e.task_id is not None:
            final[e.task_id] = e
            if isinstance(e.after, Task):
                assert e.after.version == e.seq
                assert e.payload.get("task", e.payload.get("changes", {})).get("version") == e.seq
    for task_id, e in final.items():
        assert draft.task(task_id) == e.after  # None after task.deleted
        if e.after is None:
            last_event_seq.pop(task_id, None)
        else:
            last_event_seq[task_id] = e.seq


# --- random ops ----------------------------------------------------------------------

class Scenario:
    def __init__(self) -> None:
        self.world: World = make_world()
        self.draft = self.world.draft()
        extra = [principal(f"extra{i}", "developer") for i in range(2)]
        self.people: list[Principal] = [
            self.world.owner, self.world.manager, self.world.member, self.world.viewer, self.world.admin, *extra,
        ]
        self.known_tasks: list[uuid.UUID] = []  # ever created (some deleted), to hit not_found too
        self.last_event_seq: dict[uuid.UUID, int] = {}

    def pick_task(self, data: st.DataObject) -> uuid.UUID:
        """Mostly a live task; sometimes a deleted or never-created one (not_found)."""
        # Creation order, not set or uuid order: the same draws must pick the same task.
        live = [t for t in self.known_tasks if self.draft.task(t) is not None]
        roll = data.draw(st.integers(0, 19))
        if live and roll < 17:
            return data.draw(st.sampled_from(live))
        if self.known_tasks and roll < 19:
            return data.draw(st.sampled_from(self.known_tasks))
        return uuid.uuid4()

    def pick_person(self, data: st.DataObject) -> Principal:
        return data.draw(st.sampled_from(self.people))

    def pick_caller(self, data: st.DataObject) -> Principal:
        """Mostly someone who may write; sometimes anyone (forbidden paths)."""
        if data.draw(st.integers(0, 3)) == 0:
            return self.pick_person(data)
        return data.draw(st.sampled_from([self.world.owner, self.world.member, self.world.admin]))

    def pick_version(self, data: st.DataObject, task_id: uuid.UUID) -> int | None:
        choice = data.draw(st.sampled_from(["none", "none", "current", "stale"]))
        task = self.draft.task(task_id)
        if choice == "none" or task is None:
            return None
        return task.version if choice == "current" else task.version - 1

    def pick_neighbour(self, data: st.DataObject, status: TaskStatus) -> uuid.UUID | None:
        column = [t.id for t in self.draft.column(status)]
        if data.draw(st.booleans()) or not column:
            return None
        if data.draw(st.integers(0, 9)) == 0:
            return self.pick_task(data)  # likely in another column: a conflict
        return data.draw(st.sampled_from(column))

    def draw_op(self, data: st.DataObject) -> tuple[Op, Principal]:
        kind = data.draw(st.sampled_from([
            "create", "create", "create", "move", "move", "move", "move", "status", "status", "update",
            "add_tags", "add_tags", "remove_tags", "assign", "assign", "delete", "member",
        ]))
        if kind == "member":
            kind = data.draw(st.sampled_from(["member_add", "member_remove", "member_update"]))
        caller = self.pick_caller(data)
        if kind == "create":
            fields: dict[str, Any] = {"title": data.draw(st.sampled_from(["t", "t", "t", " spaced ", "", "x" * 201]))}
            if data.draw(st.booleans()):
                fields["status"] = data.draw(statuses).value
            if data.draw(st.booleans()):
                fields["tags"] = data.draw(tag_lists)
            if data.draw(st.integers(0, 3)) == 0:
                fields["assignee_id"] = self.pick_person(data).user_id
            task_id = uuid.uuid4()
            self.known_tasks.append(task_id)
            return TaskCreate(task_id, fields), caller
        if kind.startswith("member_"):
            who = self.pick_person(data).user_id
            role = data.draw(st.sampled_from(list(ProjectRole)))
            if kind == "member_add":
                return MemberAdd(who, role, "someone", "Someone"), caller
            if kind == "member_update":
                return MemberUpdate(who, role), caller
            return MemberRemove(who), caller
        task_id = self.pick_task(data)
        version = self.pick_version(data, task_id)
        task = self.draft.task(task_id)
        if kind == "move":
            status = data.draw(st.one_of(st.none(), statuses))
            target = status or (task.status if task else TaskStatus.TODO)
            after, before = self.pick_neighbour(data, target), self.pick_neighbour(data, target)
            if after is not None and before is None and data.draw(st.booleans()):
                # Ask for the gap right after ``after``, which is adjacent by construction.
                ids = [t.id for t in self.draft.column(target) if t.id != task_id]
                if after in ids and ids.index(after) + 1 < len(ids):
                    before = ids[ids.index(after) + 1]
            return TaskMove(task_id, status=status, after=after, before=before, if_version=version), caller
        if kind == "status":
            return TaskUpdate(task_id, {"status": data.draw(statuses).value}, if_version=version), caller
        if kind == "update":
            fields = data.draw(st.fixed_dictionaries({}, optional={
                "title": st.sampled_from(["renamed", "t", ""]),
                "priority": st.sampled_from(["low", "high", "bogus"]),
                "status": statuses.map(lambda s: s.value),
                "tags": tag_lists,
                "due_date": st.sampled_from([None, T0 + timedelta(days=2)]),
            }))
            return TaskUpdate(task_id, fields, if_version=version), caller
        if kind == "add_tags":
            return TaskAddTags(task_id, tuple(data.draw(tag_lists)), if_version=version), caller
        if kind == "remove_tags":
            tags = list(data.draw(tag_lists))
            if task is not None and task.tags and data.draw(st.booleans()):
                tags.append(data.draw(st.sampled_from(task.tags)).swapcase())
            return TaskRemoveTags(task_id, tuple(tags), if_version=version), caller
        if kind == "assign":
            assignee = data.draw(st.one_of(st.none(), st.sampled_from(self.people).map(lambda p: p.user_id)))
            return TaskAssign(task_id, assignee, if_version=version), caller
        return TaskDelete(task_id, if_version=version), caller


@PROPERTY_SETTINGS
@given(st.data())
def test_random_op_sequences_keep_the_invariants(data: st.DataObject) -> None:
    sc = Scenario()
    draft = sc.draft
    check_invariants(draft, sc.last_event_seq)
    applied = 0
    history: list[int] = []
    for step in range(data.draw(st.integers(1, STEPS), label="steps")):
        op, caller = sc.draw_op(data)
        before = snapshot(draft)
        try:
            events = apply(draft, op, caller, T0 + timedelta(minutes=step))
        except CollabError as exc:
            event(f"{op.kind}: {exc.code}")
            assert snapshot(draft) == before, f"failed {op!r} changed the draft"
            continue
        event(f"{op.kind}: {'applied' if events else 'no-op'}")
        check_events(events, before["seq"], draft, sc.last_event_seq)
        history += [e.seq for e in events]
        applied += len(events)
        check_invariants(draft, sc.last_event_seq)
        if data.draw(st.integers(0, 4), label="commit?") == 0:
            draft.commit()
            assert snapshot(Draft(sc.world.state)) == snapshot(draft)
            draft = sc.draft = Draft(sc.world.state)
    assert history == list(range(START_SEQ + 1, START_SEQ + 1 + applied))
    assert draft.seq == START_SEQ + applied


# --- tag merge rules --------------------------------------------------------------------

def _task_with_tags(tags: list[str]) -> tuple[World, Draft, uuid.UUID]:
    world = make_world()
    draft = world.draft()
    task_id = uuid.uuid4()
    apply(draft, TaskCreate(task_id, {"title": "t", "tags": tags}), world.member, T0)
    return world, draft, task_id


def _tags(draft: Draft, task_id: uuid.UUID) -> tuple[str, ...]:
    task = draft.task(task_id)
    assert task is not None
    return task.tags


@PROPERTY_SETTINGS
@given(valid_tags, valid_tags)
def test_add_then_remove_leaves_no_trace_of_the_tags(start: list[str], xs: list[str]) -> None:
    world, draft, task_id = _task_with_tags(start)
    try:
        apply(draft, TaskAddTags(task_id, tuple(xs)), world.member, T0)
    except ValidationFailed:
        assume(False)  # too many tags together; not what this property is about
    apply(draft, TaskRemoveTags(task_id, tuple(xs)), world.member, T0)
    gone = {x.strip().lower() for x in xs}
    remaining = _tags(draft, task_id)
    assert not gone & {t.lower() for t in remaining}
    # Everything else is still there, in its original order and spelling.
    assert remaining == tuple(t for t in normalize_tags(start) if t.lower() not in gone)


@PROPERTY_SETTINGS
@given(valid_tags, valid_tags, valid_tags)
def test_independent_add_tags_commute(start: list[str], xs: list[str], ys: list[str]) -> None:
    assume(len({t.strip().lower() for t in start + xs + ys}) <= MAX_TAGS)
    world1, draft1, task1 = _task_with_tags(start)
    world2, draft2, task2 = _task_with_tags(start)
    apply(draft1, TaskAddTags(task1, tuple(xs)), world1.member, T0)
    apply(draft1, TaskAddTags(task1, tuple(ys)), world1.member, T0)
    apply(draft2, TaskAddTags(task2, tuple(ys)), world2.member, T0)
    apply(draft2, TaskAddTags(task2, tuple(xs)), world2.member, T0)
    one, two = _tags(draft1, task1), _tags(draft2, task2)
    assert {t.lower() for t in one} == {t.lower() for t in two} == {t.strip().lower() for t in start + xs + ys}
    lower_x = {t.strip().lower() for t in xs}
    lower_y = {t.strip().lower() for t in ys}
    lower_start = {t.strip().lower() for t in start}
    if not (lower_x & lower_y) - lower_start:
        # No tag is spelled by both sides: the spellings agree too.
        assert set(one) == set(two)


@PROPERTY_SETTINGS
@given(valid_tags, valid_tags, valid_tags)
def test_remove_tags_commute(start: list[str], xs: list[str], ys: list[str]) -> None:
    world1, draft1, task1 = _task_with_tags(start[:MAX_TAGS])
    world2, draft2, task2 = _task_with_tags(start[:MAX_TAGS])
    apply(draft1, TaskRemoveTags(task1, tuple(xs)), world1.member, T0)
    apply(draft1, TaskRemoveTags(task1, tuple(ys)), world1.member, T0)
    apply(draft2, TaskRemoveTags(task2, tuple(ys)), world2.member, T0)
    apply(draft2, TaskRemoveTags(task2, tuple(xs)), world2.member, T0)
    assert _tags(draft1, task1) == _tags(draft2, task2)
    assert not {t.strip().lower() for t in xs + ys} & {t.lower() for t in _tags(draft1, task1)}
