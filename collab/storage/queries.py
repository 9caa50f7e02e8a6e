"""Read-side SQL: task lists and search, project lists.

Everything here reads what PostgreSQL holds, which is always what was
acknowledged. Visibility is part of every query: a caller sees tasks and
projects of projects they are a member of (admins see all), so a non-member
learns nothing from a list, not even a count.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from collab.domain.views import project_payload, task_view
from collab.storage.projects import TASK_COLUMNS, _project, task_from_row

_PRIORITY_RANK = "CASE t.priority WHEN 'low' THEN 0 WHEN 'medium' THEN 1 WHEN 'high' THEN 2 ELSE 3 END"
_STATUS_RANK = (
    "CASE t.status WHEN 'todo' THEN 0 WHEN 'in_progress' THEN 1 WHEN 'in_review' THEN 2 "
    "WHEN 'done' THEN 3 ELSE 4 END"
)
TASK_SORTS = {
    "created_at": "t.created_at",
    "updated_at": "t.updated_at",
    "due_date": "t.due_date",
    "priority": _PRIORITY_RANK,
    "status": _STATUS_RANK,
    "title": "lower(t.title)",
    "position": "t.position",
}


NULLABLE_SORTS = frozenset({"due_date"})


@dataclass(frozen=True)
class TaskFilter:
    project_id: uuid.UUID | None = None
    assignee_id: uuid.UUID | None = None
    created_by: uuid.UUID | None = None
    statuses: tuple[str, ...] = ()
    priorities: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    due_date_from: datetime | None = None
    due_date_to: datetime | None = None
    search: str | None = None
    sort: str = "-created_at"  # field, or -field for descending; "relevance" with search


class _Args:
    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


async def list_tasks(
    conn: asyncpg.Connection, *, viewer_id: uuid.UUID, see_all: bool, filters: TaskFilter, limit: int, offset: int,
) -> tuple[list[dict[str, Any]], int]:
    # The SQL is put together from constants, whitelisted sort columns (TASK_SORTS)
    # and $n placeholders; every value is a bind parameter (hence bandit's B608 is waived below).
    args = _Args()
    where: list[str] = []
    if not see_all and filters.project_id is not None:
        # One project: check membership once instead of once per row.
        member = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM project_members WHERE project_id = $1 AND user_id = $2)",
            filters.project_id, viewer_id,
        )
        if not member:
            return [], 0
    elif not see_all:
        viewer = args.add(viewer_id)
        where.append(f"t.project_id IN (SELECT m.project_id FROM project_members m WHERE m.user_id = {viewer})")  # nosec B608
    if filters.project_id is not None:
        where.append(f"t.project_id = {args.add(filters.project_id)}")
    if filters.assignee_id is not None:
        where.append(f"t.assignee_id = {args.add(filters.assignee_id)}")
    if filters.created_by is not None:
        where.append(f"t.created_by = {args.add(filters.created_by)}")
    if filters.statuses:
        where.append(f"t.status = ANY({args.add(list(filters.statuses))}::text[])")
    if filters.priorities:
        where.append(f"t.priority = ANY({args.add(list(filters.priorities))}::text[])")
    if filters.tags:
        where.append(f"t.tags @> {args.add(list(filters.tags))}::text[]")
    if filters.due_date_from is not None:
        where.append(f"t.due_date >= {args.add(filters.due_date_from)}")
    if filters.due_date_to is not None:
        where.append(f"t.due_date <= {args.add(filters.due_date_to)}")
    rank = None
    if filters.search:
        query = args.add(filters.search)
        where.append(f"t.search @@ websearch_to_tsquery('simple', {query})")
        rank = f"ts_rank(t.search, websearch_to_tsquery('simple', {query}))"
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    order = _order_by(filters.sort, rank)
    total = await conn.fetchval(f"SELECT count(*) FROM tasks t {clause}", *args.values)  # nosec B608
    # Take the page from tasks alone (in index order where possible), then join
    # the names for just those rows.
    rows = await conn.fetch(
        f"""WITH page AS (
                SELECT {TASK_COLUMNS}, row_number() OVER (ORDER BY {order}) AS n FROM (
                    SELECT t.* FROM tasks t {clause}
                    ORDER BY {order}
                    LIMIT {args.add(limit)} OFFSET {args.add(offset)}
                ) t
            )
            SELECT t.*, p.name AS project_name, a.username AS assignee_name, c.username AS created_by_name
            FROM page t
            JOIN projects p ON p.id = t.project_id
            LEFT JOIN users a ON a.id = t.assignee_id
            JOIN users c ON c.id = t.created_by
            ORDER BY t.n""",  # nosec B608
        *args.values,
    )
    views = []
    for r in rows:
        names = {r["created_by"]: r["created_by_name"]}
        if r["assignee_id"] is not None:
            names[r["assignee_id"]] = r["assignee_name"]
        views.append(task_view(task_from_row(r), r["project_name"], names.get))
    return views, total


def _order_by(sort: str, rank: str | None) -> str:
    if sort == "relevance":
        if rank is not None:
            return f"{rank} DESC, t.created_at DESC, t.id"
        sort = "-created_at"
    descending = sort.startswith("-")
    name = sort.lstrip("-")
    column = TASK_SORTS[name]
    # Only due_date can be NULL; for the others a plain ASC/DESC matches the
    # indexes' order (created_at DESC, id), so a page needs no sort.
    nulls = " NULLS LAST" if name in NULLABLE_SORTS else ""
    return f"{column} {'DESC' if descending else 'ASC'}{nulls}, t.id"


async def list_projects(
    conn: asyncpg.Connection, *, viewer_id: uuid.UUID, see_all: bool, statuses: tuple[str, ...],
    priorities: tuple[str, ...], limit: int, offset: int,
) -> tuple[list[dict[str, Any]], int]:
    # Constants and $n placeholders only, as in list_tasks.
    args = _Args()
    viewer = args.add(viewer_id)
    where = [] if see_all else ["m.user_id IS NOT NULL"]
    if statuses:
        where.append(f"p.status = ANY({args.add(list(statuses))}::text[])")
    if priorities:
        where.append(f"p.priority = ANY({args.add(list(priorities))}::text[])")
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    join = f"LEFT JOIN project_members m ON m.project_id = p.id AND m.user_id = {viewer}"
    total = await conn.fetchval(f"SELECT count(*) FROM projects p {join} {clause}", *args.values)  # nosec B608
    rows = await conn.fetch(
        f"""SELECT p.id, p.name, p.description, p.owner_id, p.status, p.priority, p.start_date, p.due_date,
                   p.completed_at, p.created_at, p.updated_at, p.seq, m.role AS my_role
            FROM projects p {join} {clause}
            ORDER BY p.created_at DESC, p.id
            LIMIT {args.add(limit)} OFFSET {args.add(offset)}""",  # nosec B608
        *args.values,
    )
    return [project_payload(_project(r)) | {"seq": r["seq"], "my_role": r["my_role"]} for r in rows], total
