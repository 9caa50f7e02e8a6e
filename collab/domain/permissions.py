"""Who may do what: global role x project role x who created the task.

Global roles (seed): admin may do everything; manager may create projects;
developer and manager may write tasks in projects they belong to; viewer is
read-only everywhere, whatever its project role. Inside a project:
owner > manager > member > viewer. The matrix file
``docs/authorization.md`` states the same rules per route, and a test checks
the routes against it.
"""

from __future__ import annotations

import enum

from collab.domain.model import Member, ProjectRole
from collab.domain.users import Principal
from collab.errors import Forbidden


class Action(str, enum.Enum):
    READ = "read"                      # see the project, its members and tasks
    UPDATE_PROJECT = "update_project"  # project.update
    DELETE_PROJECT = "delete_project"  # project.delete
    MANAGE_MEMBERS = "manage_members"  # member.add / update / remove
    WRITE_TASKS = "write_tasks"        # task.create / update / move / tags / assign
    DELETE_TASK = "delete_task"        # task.delete (plus the creator rule)


_PROJECT_ROLE_ACTIONS: dict[ProjectRole, frozenset[Action]] = {
    ProjectRole.OWNER: frozenset(Action),
    ProjectRole.MANAGER: frozenset({Action.READ, Action.UPDATE_PROJECT, Action.MANAGE_MEMBERS, Action.WRITE_TASKS}),
    ProjectRole.MEMBER: frozenset({Action.READ, Action.WRITE_TASKS}),
    ProjectRole.VIEWER: frozenset({Action.READ}),
}

_WRITES = frozenset(Action) - {Action.READ}
ROLE_RANK = {ProjectRole.VIEWER: 0, ProjectRole.MEMBER: 1, ProjectRole.MANAGER: 2, ProjectRole.OWNER: 3}


def may_create_projects(caller: Principal) -> bool:
    return caller.is_admin or "manager" in caller.roles


def is_read_only(caller: Principal) -> bool:
    """A caller whose only global role is viewer may not write anything."""
    return not caller.is_admin and not ({"manager", "developer"} & set(caller.roles))


def allowed(caller: Principal, member: Member | None, action: Action) -> bool:
    if caller.is_admin:
        return True
    if member is None:
        return False
    if action in _WRITES and is_read_only(caller):
        return False
    return action in _PROJECT_ROLE_ACTIONS[member.role]


def require(caller: Principal, member: Member | None, action: Action) -> None:
    """Raise :class:`Forbidden` unless the caller may do ``action``."""
    if not allowed(caller, member, action):
        if member is None and not caller.is_admin:
            raise Forbidden("You are not a member of this project")
        raise Forbidden(f"Your role does not allow this ({action.value})")


def may_delete_task(caller: Principal, member: Member | None, created_by: object) -> bool:
    """The task's creator (while they may still write tasks), the project owner, or an admin (API.md).

    The same rule removes comments (their author) and attachments (their uploader)."""
    if caller.is_admin:
        return True
    if member is None or is_read_only(caller) or Action.WRITE_TASKS not in _PROJECT_ROLE_ACTIONS[member.role]:
        return False  # project viewers may not delete, not even what they created earlier
    return member.role == ProjectRole.OWNER or created_by == caller.user_id
