// The browser's protocol client against a scripted fake socket: first-frame
// auth, resume with `since`, pending ops resent with their ids after a
// reconnect and after a reload, settling once the replica has the ack's seq,
// and the close-code rule (run by tests/browser/test_client_units.py).

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';

class FakeSocket {
  static OPEN = 1;
  static all = [];

  constructor(url) {
    this.url = url;
    this.sent = [];
    this.readyState = 0;
    FakeSocket.all.push(this);
    setTimeout(() => {
      this.readyState = 1;
      if (this.onopen) this.onopen();
    }, 0);
  }

  send(text) { this.sent.push(JSON.parse(text)); }

  close() { this.readyState = 3; }

  // --- the "server" side ---
  answer(...frames) { this.onmessage({ data: JSON.stringify(frames.length === 1 ? frames[0] : frames) }); }

  drop(code = 1006) {
    this.readyState = 3;
    if (this.onclose) this.onclose({ code, reason: '' });
  }
}

class MemoryStorage {
  constructor() { this.items = new Map(); }
  getItem(key) { return this.items.has(key) ? this.items.get(key) : null; }
  setItem(key, value) { this.items.set(key, String(value)); }
  removeItem(key) { this.items.delete(key); }
}

globalThis.WebSocket = FakeSocket;
globalThis.window = new EventTarget();
const { Realtime, isFatalClose } = await import('../../../collab/web/realtime.js');

const WELCOME = { type: 'welcome', protocol: 1, session_id: 's1', user: { id: 'u1', username: 'ada' }, limits: { messages_per_s: 50, message_burst: 200 } };
const TASK = { id: 't1', title: 'T', status: 'todo', position: 'a', version: 2, tags: [] };
const clients = [];

afterEach(() => {
  for (const client of clients.splice(0)) client.stop();
  FakeSocket.all = [];
});

async function until(condition, what) {
  for (let i = 0; i < 200; i++) {
    if (condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  assert.fail(`timed out waiting for ${what}`);
}

function client(storage = new MemoryStorage()) {
  const rt = new Realtime({ url: 'ws://host/ws', token: async () => 'token-1', refresh: async () => {}, storage, storageKey: 'pending' });
  clients.push(rt);
  return rt;
}

async function connected(rt, n) {
  await until(() => FakeSocket.all.length === n && FakeSocket.all[n - 1].sent.length === 1, `socket ${n} to send auth`);
  const socket = FakeSocket.all[n - 1];
  assert.deepEqual(socket.sent[0], { type: 'auth', token: 'token-1' }, 'auth is the first frame');
  assert.equal(socket.url, 'ws://host/ws', 'no token in the URL');
  socket.answer(WELCOME);
  return socket;
}

test('ops made while disconnected are resent with their ids, then the board resumes with since', async () => {
  const rt = client();
  rt.start();
  const first = await connected(rt, 1);
  const replica = rt.subscribe('p');
  const subscribe = first.sent[1];
  assert.equal(subscribe.type, 'subscribe');
  assert.equal(subscribe.since, undefined, 'the first subscribe asks for a snapshot');
  first.answer({ type: 'subscribed', id: subscribe.id, project_id: 'p', seq: 3, snapshot: { project: { id: 'p' }, members: [], tasks: [TASK] }, presence: [] });
  assert.equal(rt.state, 'online');
  assert.equal(replica.seq, 3);

  first.drop(1006);
  assert.equal(rt.state, 'reconnecting');
  const pending = rt.sendOp('p', { kind: 'task.move', task_id: 't1', status: 'done' });
  assert.equal(rt.unanswered(), 1);
  assert.equal(first.sent.filter((f) => f.type === 'op').length, 0, 'nothing is written to a dead socket');

  rt.reconnectNow();
  const second = await connected(rt, 2);
  const [op, resubscribe] = second.sent.slice(1);
  assert.deepEqual(op, { type: 'op', id: pending.id, project_id: 'p', op: { kind: 'task.move', task_id: 't1', status: 'done' } });
  assert.equal(resubscribe.type, 'subscribe');
  assert.equal(resubscribe.since, 3, 'resume from the last applied seq');
  assert.equal(rt.state, 'syncing');

  // The ack may come before the event: the op stays in the overlay until the replica has seq 4.
  second.answer({ type: 'ack', id: pending.id, seq: 4, result: { ...TASK, status: 'done' } });
  assert.equal(rt.unanswered(), 0);
  assert.equal(rt.pendingOps('p').length, 1);
  assert.equal((await pending.promise).seq, 4);
  second.answer({
    type: 'subscribed', id: resubscribe.id, project_id: 'p', seq: 4, presence: [],
    events: [{ type: 'event', project_id: 'p', seq: 4, kind: 'task.updated', data: { task_id: 't1', changes: { status: 'done', version: 4 } }, client_op_id: pending.id }],
  });
  assert.equal(replica.seq, 4);
  assert.equal(replica.tasks.get('t1').status, 'done');
  assert.equal(rt.pendingOps('p').length, 0);
  assert.equal(rt.state, 'online');
});

test('unanswered ops survive a reload and are resent with the same id', async () => {
  const storage = new MemoryStorage();
  const before = client(storage);
  const pending = before.sendOp('p', { kind: 'task.create', fields: { title: 'Offline' } });
  assert.match(pending.op.task_id, /^[0-9a-f-]{36}$/, 'task.create names its task');
  before.stop();

  const after = client(storage);
  after.start();
  const socket = await connected(after, 1);
  assert.deepEqual(socket.sent[1], { type: 'op', id: pending.id, project_id: 'p', op: pending.op });
  socket.answer({ type: 'ack', id: pending.id, seq: 9, result: {}, duplicate: true });
  assert.equal(after.unanswered(), 0);
  assert.equal(storage.getItem('pending'), null, 'answered ops are forgotten');
});

test('a refused op is dropped and reported; a retryable one is resent with the same id', async () => {
  const rt = client();
  rt.start();
  const socket = await connected(rt, 1);
  const events = [];
  rt.addEventListener('rejected', (e) => events.push(e.detail));
  const refused = rt.sendOp('p', { kind: 'task.delete', task_id: 't1' });
  socket.answer({ type: 'error', id: refused.id, code: 'forbidden', message: 'no', retryable: false });
  await assert.rejects(refused.promise, (error) => error.code === 'forbidden');
  assert.equal(events.length, 1);
  assert.equal(rt.unanswered(), 0);

  const busy = rt.sendOp('p', { kind: 'task.update', task_id: 't1', fields: { title: 'x' } });
  socket.answer({ type: 'error', id: busy.id, code: 'busy', message: 'later', retryable: true });
  await until(() => socket.sent.filter((f) => f.id === busy.id).length === 2, 'the resend');
  assert.equal(rt.unanswered(), 1);
});

test('a gap resubscribes with since; duplicates are ignored', async () => {
  const rt = client();
  rt.start();
  const socket = await connected(rt, 1);
  const replica = rt.subscribe('p');
  socket.answer({ type: 'subscribed', id: socket.sent[1].id, project_id: 'p', seq: 3, snapshot: { project: {}, members: [], tasks: [TASK] }, presence: [] });
  socket.answer({ type: 'event', project_id: 'p', seq: 3, kind: 'task.deleted', data: { task_id: 't1' } });
  assert.equal(replica.tasks.size, 1, 'a duplicate is ignored');
  socket.answer({ type: 'event', project_id: 'p', seq: 5, kind: 'task.deleted', data: { task_id: 't1' } });
  const again = socket.sent[socket.sent.length - 1];
  assert.equal(again.type, 'subscribe');
  assert.equal(again.since, 3);
});

test('the close-code rule: 4000-4499 and drops reconnect, 4500-4999 and 1009 do not', async () => {
  for (const code of [4500, 4501, 4503, 4999, 1009]) assert.equal(isFatalClose(code), true, String(code));
  for (const code of [1000, 1001, 1006, 1011, 4000, 4001, 4002, 4003, 4499]) assert.equal(isFatalClose(code), false, String(code));
  const rt = client();
  rt.start();
  const socket = await connected(rt, 1);
  socket.drop(4500);
  assert.equal(rt.state, 'closed');
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(FakeSocket.all.length, 1, 'no reconnect after 4500');
});
