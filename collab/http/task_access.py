"""Reading a task and what hangs off it from its project actor's committed state.

:func:`readable_task` is the one membership check for every read below
``/api/v1/tasks/{id}``: the caller must be a member of the task's project
(any role) or a global admin. An unknown task (or one of a deleted project) is
404; a task of a project the caller is not in is 403 (API.md, as the seed's
tests expect).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from collab.actors.project import ProjectActor
from collab.domain.model import ProjectState, Task
from collab.domain.permissions import Action, require
from collab.domain.users import Principal
from collab.errors import NotFound
from collab.http.context import current_principal, services
from collab.http.inputs import path_uuid


@dataclass(frozen=True, slots=True)
class ReadableTask:
    principal: Principal
    actor: ProjectActor
    state: ProjectState
    task: Task

    def name_of(self, user_id: uuid.UUID) -> str | None:
        """A user's username as this project knows it (members, then past contributors)."""
        member = self.state.members.get(user_id)
        return member.username if member else self.actor.name_of(user_id)


async def readable_task(task_id: str) -> ReadableTask:
    principal = await current_principal()
    tid = path_uuid(task_id, "task")
    registry = services().registry
    actor = await registry.read(await registry.project_of_task(tid))
    state = actor.state
    if state is None or state.deleted:
        raise NotFound("No such task")
    require(principal, state.members.get(principal.user_id), Action.READ)
    task = state.tasks.get(tid)
    if task is None:
        raise NotFound("No such task")
    return ReadableTask(principal, actor, state, task)
