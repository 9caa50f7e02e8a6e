// The board's pure parts under node's test runner: replica seq rules and the
// optimistic overlay of pending ops (run by tests/browser/test_client_units.py).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { boardView, neighbours } from '../../../collab/web/boardstate.js';
import { APPLIED, GAP, INCONSISTENT, ProjectReplica, STALE } from '../../../collab/web/replica.js';

const task = (id, status, position, extra = {}) => ({ id, status, position, title: id, tags: [], version: 1, ...extra });

function replicaWith(tasks, seq = 10) {
  const replica = new ProjectReplica('p');
  replica.loadSnapshot({ project: { id: 'p', name: 'P' }, members: [], tasks }, seq);
  return replica;
}

const ids = (list) => list.map((t) => t.id);

test('events apply strictly in seq order', () => {
  const replica = replicaWith([task('a', 'todo', 'a')], 5);
  assert.equal(replica.apply({ seq: 5, kind: 'task.deleted', data: { task_id: 'a' } }), STALE);
  assert.equal(replica.apply({ seq: 7, kind: 'task.deleted', data: { task_id: 'a' } }), GAP);
  assert.equal(replica.tasks.size, 1);
  assert.equal(replica.apply({ seq: 6, kind: 'task.updated', data: { task_id: 'a', changes: { title: 'A', version: 6 } } }), APPLIED);
  assert.equal(replica.tasks.get('a').title, 'A');
  assert.equal(replica.apply({ seq: 7, kind: 'task.updated', data: { task_id: 'zz', changes: {} } }), INCONSISTENT);
  assert.equal(replica.seq, 6);
  assert.equal(replica.apply({ seq: 7, kind: 'comment.added', data: { comment: { task_id: 'a' } } }), APPLIED, 'unknown kinds advance');
  assert.equal(replica.seq, 7);
});

test('columns follow positions, then ids', () => {
  const replica = replicaWith([task('b', 'todo', 'm'), task('a', 'todo', 'm'), task('c', 'todo', 'c'), task('d', 'done', 'a')]);
  const { columns } = boardView(replica, []);
  assert.deepEqual(ids(columns.todo), ['c', 'a', 'b']);
  assert.deepEqual(ids(columns.done), ['d']);
  assert.deepEqual(columns.cancelled, []);
});

test('a pending move shows the card between the neighbours it names', () => {
  const replica = replicaWith([task('a', 'todo', 'a'), task('b', 'todo', 'b'), task('x', 'todo', 'c'), task('p', 'done', 'a'), task('q', 'done', 'b')]);
  let view = boardView(replica, [{ op: { kind: 'task.move', task_id: 'x', status: 'done', after: 'p', before: 'q' } }]);
  assert.deepEqual(ids(view.columns.done), ['p', 'x', 'q']);
  assert.deepEqual(ids(view.columns.todo), ['a', 'b']);
  assert.equal(view.tasks.get('x').pending, true);
  view = boardView(replica, [{ op: { kind: 'task.move', task_id: 'x', status: 'done', before: 'p' } }]);
  assert.deepEqual(ids(view.columns.done), ['x', 'p', 'q']);
  view = boardView(replica, [{ op: { kind: 'task.move', task_id: 'b', before: 'a' } }]);
  assert.deepEqual(ids(view.columns.todo), ['b', 'a', 'x'], 'within a column');
  // Two moves of one card: the later wins.
  view = boardView(replica, [
    { op: { kind: 'task.move', task_id: 'x', status: 'done' } },
    { op: { kind: 'task.move', task_id: 'x', status: 'todo', before: 'a' } },
  ]);
  assert.deepEqual(ids(view.columns.todo), ['x', 'a', 'b']);
  assert.deepEqual(ids(view.columns.done), ['p', 'q']);
});

test('pending creates, updates, tags, assignments and deletes are shown', () => {
  const replica = replicaWith([task('a', 'todo', 'a', { tags: ['UI'] }), task('b', 'todo', 'b')]);
  const view = boardView(replica, [
    { op: { kind: 'task.create', task_id: 'n', fields: { title: 'New', status: 'in_review' } } },
    { op: { kind: 'task.update', task_id: 'a', fields: { title: 'Renamed' } } },
    { op: { kind: 'task.add_tags', task_id: 'a', tags: ['ui', 'api'] } },
    { op: { kind: 'task.remove_tags', task_id: 'a', tags: ['Ui'] } },
    { op: { kind: 'task.assign', task_id: 'a', assignee_id: 'u1' } },
    { op: { kind: 'task.delete', task_id: 'b' } },
    { op: { kind: 'task.update', task_id: 'gone', fields: { title: 'ignored' } } },
  ]);
  assert.deepEqual(ids(view.columns.in_review), ['n']);
  assert.equal(view.tasks.get('n').title, 'New');
  const a = view.tasks.get('a');
  assert.equal(a.title, 'Renamed');
  assert.deepEqual(a.tags, ['api']);
  assert.equal(a.assignee_id, 'u1');
  assert.deepEqual(ids(view.columns.todo), ['a']);
  assert.equal(replica.tasks.get('a').title, 'a', 'the replica itself is untouched');
});

test('a status change through task.update moves the card to the end of its new column', () => {
  const replica = replicaWith([task('a', 'todo', 'a'), task('p', 'done', 'z')]);
  const view = boardView(replica, [{ op: { kind: 'task.update', task_id: 'a', fields: { status: 'done' } } }]);
  assert.deepEqual(ids(view.columns.done), ['p', 'a']);
});

test('drop positions become neighbours, the moving card left out', () => {
  const column = [task('a', 'todo', 'a'), task('b', 'todo', 'b'), task('c', 'todo', 'c')];
  assert.deepEqual(neighbours(column, 0, 'x'), { after: undefined, before: 'a' });
  assert.deepEqual(neighbours(column, 1, 'x'), { after: 'a', before: 'b' });
  assert.deepEqual(neighbours(column, 3, 'x'), { after: 'c', before: undefined });
  assert.deepEqual(neighbours(column, 1, 'a'), { after: 'b', before: 'c' });
  assert.deepEqual(neighbours([], 0, 'x'), { after: undefined, before: undefined });
});
