"""Domain rules for comments and attachments: permissions, bounds, events, and the draft's layers."""

from __future__ import annotations

import uuid

import pytest

from collab.domain.model import Attachment, Draft
from collab.domain.notifications import notifications_for
from collab.domain.ops import (
    AttachmentAdd, AttachmentRemove, CommentAdd, CommentDelete, CommentEdit, TaskDelete,
)
from collab.domain.rules import MAX_COMMENT_CHARS, apply
from collab.errors import Conflict, Forbidden, NotFound, ValidationFailed
from tests.unit.test_rules import T0, T1, World, create, make_world


@pytest.fixture
def world() -> World:
    return make_world()


def _attachment(task_id: uuid.UUID, uploader: uuid.UUID) -> Attachment:
    return Attachment(uuid.uuid4(), task_id, "plan.pdf", 1234, "application/pdf", "ab" * 32, "ab" * 32, uploader, T0)


def test_comment_lifecycle_and_events(world: World) -> None:
    draft = world.draft()
    task = create(draft, world.owner)
    cid = uuid.uuid4()
    [added] = apply(draft, CommentAdd(task.id, cid, "  first  "), world.member, T0)
    assert (added.kind, added.task_id, added.subject_id) == ("comment.added", task.id, cid)
    assert added.payload["comment"]["content"] == "first"  # trimmed like other text
    assert apply(draft, CommentEdit(task.id, cid, "first"), world.member, T1) == []  # no change, no event
    [edited] = apply(draft, CommentEdit(task.id, cid, "second"), world.member, T1)
    assert edited.payload["comment"]["updated_at"] == T1.isoformat() and edited.seq == added.seq + 1
    [deleted] = apply(draft, CommentDelete(task.id, cid), world.member, T1)
    assert deleted.payload == {"task_id": str(task.id), "comment_id": str(cid)} and deleted.after is None
    assert draft.comments.get(cid) is None


def test_comment_permissions(world: World) -> None:
    draft = world.draft()
    task = create(draft, world.owner)
    for caller in (world.viewer, world.outsider):
        with pytest.raises(Forbidden):
            apply(draft, CommentAdd(task.id, uuid.uuid4(), "hi"), caller, T0)
    cid = uuid.uuid4()
    apply(draft, CommentAdd(task.id, cid, "mine"), world.member, T0)
    for caller in (world.owner, world.manager, world.admin):
        with pytest.raises(Forbidden):
            apply(draft, CommentEdit(task.id, cid, "not yours"), caller, T1)
    with pytest.raises(Forbidden):
        apply(draft, CommentDelete(task.id, cid), world.manager, T1)
    apply(draft, CommentDelete(task.id, cid), world.owner, T1)  # the project owner moderates


def test_comment_bounds_and_targets(world: World) -> None:
    draft = world.draft()
    task, other = create(draft, world.owner), create(draft, world.owner, "Other")
    with pytest.raises(ValidationFailed):
        apply(draft, CommentAdd(task.id, uuid.uuid4(), " \n "), world.member, T0)
    with pytest.raises(ValidationFailed):
        apply(draft, CommentAdd(task.id, uuid.uuid4(), "x" * (MAX_COMMENT_CHARS + 1)), world.member, T0)
    with pytest.raises(NotFound):
        apply(draft, CommentAdd(uuid.uuid4(), uuid.uuid4(), "x"), world.member, T0)
    cid = uuid.uuid4()
    apply(draft, CommentAdd(task.id, cid, "x"), world.member, T0)
    with pytest.raises(Conflict):
        apply(draft, CommentAdd(task.id, cid, "again"), world.member, T0)
    with pytest.raises(NotFound):  # the comment exists, but on another task
        apply(draft, CommentEdit(other.id, cid, "y"), world.member, T0)


def test_attachments(world: World) -> None:
    draft = world.draft()
    task = create(draft, world.owner)
    with pytest.raises(Forbidden):
        apply(draft, AttachmentAdd(_attachment(task.id, world.viewer.user_id)), world.viewer, T0)
    mine = _attachment(task.id, world.member.user_id)
    [added] = apply(draft, AttachmentAdd(mine), world.member, T0)
    assert added.kind == "attachment.added" and added.payload["attachment"]["filename"] == "plan.pdf"
    with pytest.raises(Forbidden):
        apply(draft, AttachmentRemove(task.id, mine.id), world.manager, T1)
    [removed] = apply(draft, AttachmentRemove(task.id, mine.id), world.member, T1)
    assert removed.payload["content_hash"] == mine.content_hash
    with pytest.raises(NotFound):
        apply(draft, AttachmentRemove(task.id, mine.id), world.admin, T1)


def test_commit_folds_notes_and_a_deleted_task_takes_its_notes(world: World) -> None:
    draft = world.draft()
    keep, doomed = create(draft, world.owner, "Keep"), create(draft, world.owner, "Doomed")
    kept, gone = uuid.uuid4(), uuid.uuid4()
    apply(draft, CommentAdd(keep.id, kept, "stays"), world.member, T0)
    apply(draft, CommentAdd(doomed.id, gone, "goes"), world.member, T0)
    attachment = _attachment(doomed.id, world.member.user_id)
    apply(draft, AttachmentAdd(attachment), world.member, T0)
    assert world.state.comments == {}  # nothing committed yet
    draft.commit()
    assert set(world.state.comments) == {kept, gone} and set(world.state.attachments) == {attachment.id}
    second = Draft(world.state)
    apply(second, TaskDelete(doomed.id), world.owner, T1)
    with pytest.raises(NotFound):
        apply(second, CommentEdit(doomed.id, gone, "x"), world.member, T1)
    second.commit()
    assert set(world.state.comments) == {kept} and world.state.attachments == {}


def test_comment_notifications(world: World) -> None:
    draft = world.draft()
    task = create(draft, world.owner, assignee_id=world.member.user_id)
    events = apply(draft, CommentAdd(task.id, uuid.uuid4(), "@Vera look"), world.manager, T0)
    notes = notifications_for(draft, events, {}, world.manager.user_id, world.manager.username, T0)
    kinds = sorted((n.type, n.user_id) for n in notes)
    assert kinds == sorted([("commented", world.owner.user_id), ("commented", world.member.user_id),
                            ("mentioned", world.viewer.user_id)])
    # A commenter who is the creator and assignee is never notified of their own comment.
    own = apply(draft, CommentAdd(task.id, uuid.uuid4(), "note to self"), world.owner, T0)
    notified = notifications_for(draft, own, {}, world.owner.user_id, "olivia", T0)
    assert [n.user_id for n in notified] == [world.member.user_id]
