"""wrk Lua scripts of the tasks benchmark: rotating GETs, rotating POSTs, a status tally.

Each script is :data:`loadtest.wrk.LUA_SCRIPT` (bearer token from
``LOADTEST_TOKEN``, exact percentiles in ``done``) followed by a part of its
own. Every script also counts response status codes per wrk thread and prints
them as ``LOADTEST_EXTRA {"statuses": {...}}``, so a run that got 409s or
5xx says which. Task and project ids are written into the script (they are
not secrets); the token never is.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from loadtest.wrk import LUA_SCRIPT

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

STATUS_TALLY = r"""
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

local base_done = done
done = function(summary, latency, requests)
  base_done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses") or {}) do
      total[code] = (total[code] or 0) + n
    end
  end
  local parts = {}
  for code, n in pairs(total) do
    parts[#parts + 1] = string.format('"%d":%d', code, n)
  end
  io.write('LOADTEST_EXTRA {"statuses":{' .. table.concat(parts, ",") .. '}}\n')
end
"""

# Title and priority from a per-thread counter; the status rotates over the five
# columns, moving on after each full pass over the projects (so every project
# gets every status): one column holds at most 2,560 tasks appended at its end.
POST_TASKS = r"""
local projects = {%(projects)s}
local columns = {"todo", "in_progress", "in_review", "done", "cancelled"}
local priorities = {"low", "medium", "high", "urgent"}
local n = 0
wrk.headers["Content-Type"] = "application/json"

request = function()
  n = n + 1
  local p = projects[(n - 1) %% #projects + 1]
  local column = columns[math.floor((n - 1) / #projects) %% #columns + 1]
  local body = string.format(
    '{"project_id":"%%s","title":"wrk task %%d %(tag)s","priority":"%%s","status":"%%s"}',
    p, n, priorities[n %% #priorities + 1], column)
  return wrk.format("POST", "/api/v1/tasks", nil, body)
end
"""

GET_TASKS = r"""
local ids = {%(ids)s}
local i = 0

request = function()
  i = i %% #ids + 1
  return wrk.format("GET", "/api/v1/tasks/" .. ids[i])
end
"""


def _lua_list(ids: Sequence[str]) -> str:
    for value in ids:
        if not _UUID.match(value):
            raise ValueError(f"not a UUID: {value!r}")
    return ", ".join(f'"{value}"' for value in ids)


def _write(directory: Path, name: str, extra: str) -> Path:
    path = directory / f"{name}.lua"
    path.write_text(LUA_SCRIPT + STATUS_TALLY + extra)
    return path


def fixed_path_script(directory: Path) -> Path:
    """GET (or whatever) the URL given on wrk's command line, with the token and the tally."""
    return _write(directory, "tasks_fixed", "")


def get_tasks_script(directory: Path, task_ids: Sequence[str]) -> Path:
    """GET /api/v1/tasks/{id}, rotating over ``task_ids``."""
    if not task_ids:
        raise ValueError("no task ids to rotate over")
    return _write(directory, "tasks_get", GET_TASKS % {"ids": _lua_list(task_ids)})


def post_tasks_script(directory: Path, name: str, project_ids: Sequence[str], tag: str) -> Path:
    """POST /api/v1/tasks, round-robin over ``project_ids``; ``tag`` (a word) marks the titles."""
    if not project_ids:
        raise ValueError("no project ids to rotate over")
    if not re.fullmatch(r"[a-z0-9]{1,20}", tag):
        raise ValueError(f"tag must be a short lowercase word, got {tag!r}")
    return _write(directory, name, POST_TASKS % {"projects": _lua_list(project_ids), "tag": tag})
