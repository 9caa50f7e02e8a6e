"""Tests for collab.domain.permissions: global role x project role x creator."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from collab.domain.model import Member, ProjectRole
from collab.domain.permissions import (
    ROLE_RANK, Action, allowed, is_read_only, may_create_projects, may_delete_task, require,
)
from collab.domain.users import Principal
from collab.errors import Forbidden

T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)
WRITES = [a for a in Action if a != Action.READ]

#: What each project role may do for a caller whose global role can write.
EXPECTED: dict[ProjectRole, set[Action]] = {
    ProjectRole.OWNER: set(Action),
    ProjectRole.MANAGER: {Action.READ, Action.UPDATE_PROJECT, Action.MANAGE_MEMBERS, Action.WRITE_TASKS},
    ProjectRole.MEMBER: {Action.READ, Action.WRITE_TASKS},
    ProjectRole.VIEWER: {Action.READ},
}


def caller(*roles: str) -> Principal:
    return Principal(user_id=uuid.uuid4(), session_id=uuid.uuid4(), username="u", roles=roles)


def member_of(who: Principal, role: ProjectRole) -> Member:
    return Member(who.user_id, role, who.username, who.username, T0)


@pytest.mark.parametrize("global_role", ["manager", "developer"])
@pytest.mark.parametrize("project_role", list(ProjectRole))
@pytest.mark.parametrize("action", list(Action))
def test_matrix_for_writing_global_roles(global_role: str, project_role: ProjectRole, action: Action) -> None:
    who = caller(global_role)
    assert allowed(who, member_of(who, project_role), action) == (action in EXPECTED[project_role])


@pytest.mark.parametrize("roles", [("viewer",), ()])
@pytest.mark.parametrize("project_role", list(ProjectRole))
def test_read_only_global_roles_may_only_read(roles: tuple[str, ...], project_role: ProjectRole) -> None:
    who = caller(*roles)
    member = member_of(who, project_role)
    assert allowed(who, member, Action.READ)
    for action in WRITES:
        assert not allowed(who, member, action), action


@pytest.mark.parametrize("action", list(Action))
def test_admin_may_do_everything_without_membership(action: Action) -> None:
    admin = caller("admin")
    assert allowed(admin, None, action)
    assert allowed(admin, member_of(admin, ProjectRole.VIEWER), action)
    require(admin, None, action)  # no exception; the allowed() asserts above carry the check


@pytest.mark.parametrize("roles", [("manager",), ("developer",), ("viewer",)])
@pytest.mark.parametrize("action", list(Action))
def test_non_members_may_do_nothing(roles: tuple[str, ...], action: Action) -> None:
    who = caller(*roles)
    assert not allowed(who, None, action)
    with pytest.raises(Forbidden) as caught:
        require(who, None, action)
    assert "not a member" in caught.value.detail


def test_require_names_the_action_for_members() -> None:
    who = caller("developer")
    with pytest.raises(Forbidden) as caught:
        require(who, member_of(who, ProjectRole.MEMBER), Action.DELETE_PROJECT)
    assert "delete_project" in caught.value.detail
    assert caught.value.code == "forbidden" and caught.value.status == 403


def test_is_read_only() -> None:
    assert is_read_only(caller("viewer"))
    assert is_read_only(caller())
    assert not is_read_only(caller("developer"))
    assert not is_read_only(caller("manager"))
    assert not is_read_only(caller("admin"))
    assert not is_read_only(caller("viewer", "developer"))


def test_may_create_projects() -> None:
    assert may_create_projects(caller("admin"))
    assert may_create_projects(caller("manager"))
    assert not may_create_projects(caller("developer"))
    assert not may_create_projects(caller("viewer"))


def test_role_rank_orders_project_roles() -> None:
    ranked = sorted(ProjectRole, key=ROLE_RANK.__getitem__)
    assert ranked == [ProjectRole.VIEWER, ProjectRole.MEMBER, ProjectRole.MANAGER, ProjectRole.OWNER]


# --- deleting a task: its creator, the project owner, or an admin (API.md) -------------------

@pytest.mark.parametrize("project_role", [ProjectRole.OWNER, ProjectRole.MANAGER, ProjectRole.MEMBER])
def test_creator_may_delete(project_role: ProjectRole) -> None:
    who = caller("developer")
    assert may_delete_task(who, member_of(who, project_role), who.user_id)


def test_owner_may_delete_anyones_task() -> None:
    who = caller("manager")
    assert may_delete_task(who, member_of(who, ProjectRole.OWNER), uuid.uuid4())


def test_admin_may_delete_without_membership() -> None:
    assert may_delete_task(caller("admin"), None, uuid.uuid4())


@pytest.mark.parametrize("project_role", [ProjectRole.MANAGER, ProjectRole.MEMBER, ProjectRole.VIEWER])
def test_others_may_not_delete(project_role: ProjectRole) -> None:
    who = caller("manager")
    assert not may_delete_task(who, member_of(who, project_role), uuid.uuid4())


def test_non_member_creator_may_not_delete() -> None:
    who = caller("developer")
    assert not may_delete_task(who, None, who.user_id)


@pytest.mark.parametrize("project_role", [ProjectRole.OWNER, ProjectRole.MEMBER])
def test_globally_read_only_creator_or_owner_may_not_delete(project_role: ProjectRole) -> None:
    who = caller("viewer")
    assert not may_delete_task(who, member_of(who, project_role), who.user_id)


def test_project_viewer_may_not_delete_even_their_own_task() -> None:
    """The viewer project role is read-only (READ only in the matrix), creator or not."""
    who = caller("developer")
    assert not may_delete_task(who, member_of(who, ProjectRole.VIEWER), who.user_id)
