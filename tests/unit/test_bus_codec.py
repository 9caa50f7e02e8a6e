"""The cluster codec: what crosses between nodes decodes to exactly what was sent, and nothing else."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timezone

import pytest

from collab.bus import codec
from collab.domain import model, ops
from collab.domain.users import Principal
from collab.errors import Forbidden, ValidationFailed

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def _task() -> model.Task:
    return model.Task(
        id=uuid.uuid4(), project_id=uuid.uuid4(), title="T", description=None, status=model.TaskStatus.IN_REVIEW,
        priority=model.Priority.HIGH, assignee_id=None, created_by=uuid.uuid4(), due_date=NOW, completed_at=None,
        estimated_hours=3, actual_hours=None, tags=("a", "b"), position="a0", version=7, created_at=NOW, updated_at=NOW,
    )


@pytest.mark.parametrize("value", [
    ops.TaskUpdate(uuid.uuid4(), {"status": model.TaskStatus.DONE, "due_date": NOW, "tags": ("x",)}, if_version=3),
    ops.MemberAdd(uuid.uuid4(), model.ProjectRole.VIEWER, "bob", "Bob B"),
    ops.AttachmentAdd(
        model.Attachment(uuid.uuid4(), uuid.uuid4(), "a.pdf", 3, "application/pdf", "h", "h", uuid.uuid4(), NOW),
    ),
    ops.Event(4, "task.updated", uuid.uuid4(), {"changes": {"title": "x"}}, _task(), None),
    Principal(uuid.uuid4(), uuid.uuid4(), "ada", ("admin",)),
    {"nested": [1, "two", None, {"three": date(2026, 1, 2)}]},
])
def test_round_trip(value: object) -> None:
    assert codec.loads(codec.dumps({"v": value}))["v"] == value


def test_enums_keep_their_type() -> None:
    decoded = codec.loads(codec.dumps({"t": _task()}))["t"]
    assert isinstance(decoded.status, model.TaskStatus) and decoded.status.value == "in_review"
    assert decoded.tags == ("a", "b")


def test_errors_round_trip() -> None:
    error = codec.loads(codec.dumps({"e": Forbidden("no")}))["e"]
    assert isinstance(error, Forbidden) and error.detail == "no"
    invalid = codec.loads(codec.dumps({"e": ValidationFailed.single("title", "too long", "string_too_long")}))["e"]
    assert isinstance(invalid, ValidationFailed) and invalid.errors[0].loc == ("title",)


@pytest.mark.parametrize("raw", [
    b'{"v": {"$c": "Popen", "args": "x"}}', b'{"v": {"$x": "SystemExit"}}', b'{"v": {"$e": ["Signals", 9]}}',
    b'{"v": {"unknown": 1}}', b"[1, 2]", b"not json",
])
def test_only_known_types_can_be_built(raw: bytes) -> None:
    with pytest.raises(codec.CodecError):
        codec.loads(raw)


def test_unknown_types_are_not_sent() -> None:
    with pytest.raises(codec.CodecError):
        codec.dumps({"v": object()})
