// What the board shows: the replica's committed tasks with this client's
// pending ops laid on top (optimistic updates), arranged in columns.
//
// Pure functions, no DOM. An op stays in the overlay until the replica has
// applied the event it caused (see Realtime.settle), so a card moved or
// edited here never jumps back while the server catches up; an op the
// server refuses leaves the overlay and the card returns to the committed
// state.

import { STATUSES } from './ui.js';

/** Order inside a column: fractional position, then id (the server's order). */
export function byPosition(a, b) {
  const pa = a.position || '';
  const pb = b.position || '';
  if (pa !== pb) return pa < pb ? -1 : 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

function lower(tags) {
  return new Set((tags || []).map((t) => t.toLowerCase()));
}

/**
 * replica: a ProjectReplica; pending: [{op, id}] in the order they were made.
 * Returns {tasks: Map id -> task (with `pending: true` when an op is in
 * flight for it), columns: {status: [task, ...]}}.
 */
export function boardView(replica, pending) {
  const tasks = new Map();
  for (const [id, task] of replica.tasks) tasks.set(id, task);
  const placements = new Map(); // task id -> the latest move op
  for (const { op } of pending) {
    const current = op.task_id ? tasks.get(op.task_id) : undefined;
    switch (op.kind) {
      case 'task.create':
        if (!current) {
          tasks.set(op.task_id, {
            id: op.task_id, title: '', description: null, status: 'todo', priority: 'medium', assignee_id: null,
            due_date: null, tags: [], position: '\uffff', version: 0, ...op.fields, pending: true,
          });
        }
        break;
      case 'task.update':
        if (current) {
          tasks.set(op.task_id, { ...current, ...op.fields, pending: true });
          if (op.fields && op.fields.status && op.fields.status !== current.status) {
            placements.set(op.task_id, { status: op.fields.status });
          }
        }
        break;
      case 'task.move':
        if (current) {
          tasks.set(op.task_id, { ...current, status: op.status || current.status, pending: true });
          placements.set(op.task_id, { status: op.status || current.status, before: op.before, after: op.after });
        }
        break;
      case 'task.assign':
        if (current) tasks.set(op.task_id, { ...current, assignee_id: op.assignee_id, pending: true });
        break;
      case 'task.add_tags':
      case 'task.remove_tags':
        if (current) {
          const have = current.tags || [];
          const named = lower(op.tags);
          const tags = op.kind === 'task.add_tags'
            ? [...have, ...op.tags.filter((t) => !lower(have).has(t.toLowerCase()))]
            : have.filter((t) => !named.has(t.toLowerCase()));
          tasks.set(op.task_id, { ...current, tags, pending: true });
        }
        break;
      case 'task.delete':
        tasks.delete(op.task_id);
        placements.delete(op.task_id);
        break;
      default:
        break;
    }
  }
  const columns = {};
  for (const { id } of STATUSES) columns[id] = [];
  for (const task of tasks.values()) {
    if (placements.has(task.id) || !columns[task.status]) continue;
    columns[task.status].push(task);
  }
  for (const list of Object.values(columns)) list.sort(byPosition);
  for (const [taskId, place] of placements) {
    const task = tasks.get(taskId);
    const list = task && columns[task.status];
    if (!list) continue;
    let index = list.length;
    const after = place.after ? list.findIndex((t) => t.id === place.after) : -1;
    const before = place.before ? list.findIndex((t) => t.id === place.before) : -1;
    if (after >= 0) index = after + 1;
    else if (before >= 0) index = before;
    list.splice(index, 0, task);
  }
  return { tasks, columns };
}

/** The neighbours a card dropped at `index` of `column` (the card itself left out) goes between. */
export function neighbours(column, index, movingId) {
  const others = column.filter((t) => t.id !== movingId);
  const after = index > 0 ? others[index - 1] : undefined;
  const before = index < others.length ? others[index] : undefined;
  return { after: after ? after.id : undefined, before: before ? before.id : undefined };
}
