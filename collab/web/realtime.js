// The WebSocket protocol v1 (docs/protocol.md) for the browser, with resume
// and exactly-once ops: the same rules as collab/client/realtime.py.
//
// - Authentication is the first frame ({type: "auth", token}); the token is
//   never put in the URL. Nothing else is sent before `welcome`.
// - Each subscribed project has a ProjectReplica that applies events strictly
//   in seq order; a gap, a `resync` or a reconnect resubscribes with
//   since = the replica's seq, so the server sends exactly what was missed.
// - An op keeps its client op id until it is answered. Ops made while the
//   socket is down wait (and are kept in sessionStorage, so a reload does
//   not lose them either); after every reconnect they are resent, in the
//   order they were made, with their ORIGINAL ids: the server applies each
//   at most once (a resend of an applied op is acked with `duplicate`).
//   An acked op stays "pending" until the replica has applied the ack's
//   seq, so the optimistic view never flickers back.
// - Close codes 4000-4499 and dropped sockets: reconnect with full-jitter
//   exponential backoff. 4500-4999 and 1009: stop (4501 first tries one token
//   refresh, as an expired access token is the usual cause).
// - A ping every 20 s keeps the socket alive; nothing received for 45 s
//   means it is dead (e.g. the laptop slept) and it is dropped and reopened.
// - Frames leave through a token bucket paced by the server's limits.
//
// Events (CustomEvent detail): state {state, reason, retryInMs},
// snapshot {projectId, reset}, event {projectId, event, catchUp},
// presence {projectId}, subscribed {projectId}, ended {projectId, reason},
// notification {notification}, pending {count}, rejected {op, code, message}.

import { APPLIED, GAP, INCONSISTENT, ProjectReplica, STALE } from './replica.js';

const PING_INTERVAL_MS = 20_000;
const DEAD_AFTER_MS = 45_000;
const WELCOME_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 15_000;
const OP_RESEND_AFTER_MS = 10_000;
const BACKOFF_BASE_MS = 250;
const BACKOFF_CAP_MS = 10_000;
const STABLE_AFTER_MS = 10_000;
const MAX_KEPT_OPS = 500;

export class OpRejected extends Error {
  constructor(code, message, retryable = false) {
    super(message || code);
    this.name = 'OpRejected';
    this.code = code;
    this.retryable = retryable;
  }
}

/** A random UUID (crypto.randomUUID needs a secure context; getRandomValues does not). */
export function uuid4() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export function isFatalClose(code) {
  return (code >= 4500 && code <= 4999) || code === 1009;
}

export class Realtime extends EventTarget {
  /**
   * url: ws(s)://host/ws; token(): a current access token; refresh(): rotate the
   * tokens (throws when the session ended); storage + storageKey: where pending
   * ops are kept across reloads.
   */
  constructor({ url, token, refresh, storage = window.sessionStorage, storageKey = 'collab.pending' }) {
    super();
    this.url = url;
    this.token = token;
    this.refresh = refresh;
    this.storage = storage;
    this.storageKey = storageKey;
    this.state = 'idle';
    this.stateReason = null;
    this.ws = null;
    this.welcomedWs = null;
    this.generation = 0;
    this.welcome = null;
    this.everOnline = false;
    this.subs = new Map();
    this.pending = new Map();
    this.requests = new Map();
    this.ids = 0;
    this.attempt = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    this.lastRx = 0;
    this.connectedAt = 0;
    this.stopped = true;
    this.refreshedFor4501 = false;
    this.queue = [];
    this.rate = 50;
    this.burst = 200;
    this.bucket = 20;
    this.bucketAt = 0;
    this.pumpTimer = null;
    this.stats = { connections: 0, opsSent: 0, opsResent: 0, duplicateAcks: 0, resubscribes: 0 };
    this.onOnline = () => {
      if (this.state === 'reconnecting') this.reconnectNow();
    };
    this.restorePending();
  }

  // --- what the application uses -------------------------------------------------

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener('online', this.onOnline);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.onOnline);
    clearTimeout(this.retryTimer);
    const ws = this.ws;
    this.detach();
    if (ws) ws.close(1000, 'client closing');
    this.setState('closed', 'stopped');
  }

  /** Connect at once (e.g. a "retry now" click) instead of waiting out the backoff. */
  reconnectNow() {
    if (this.stopped || this.ws) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.connect();
  }

  /** The replica of a project, subscribing when it is new. */
  subscribe(projectId) {
    let sub = this.subs.get(projectId);
    if (!sub) {
      sub = { replica: new ProjectReplica(projectId), requestId: null, live: false, presence: null, timer: null };
      this.subs.set(projectId, sub);
      this.sendSubscribe(projectId);
    }
    return sub.replica;
  }

  unsubscribe(projectId) {
    const sub = this.subs.get(projectId);
    if (!sub) return;
    this.subs.delete(projectId);
    clearTimeout(sub.timer);
    if (sub.live || sub.requestId) this.send({ type: 'unsubscribe', id: this.requestId('u'), project_id: projectId });
    this.checkSynced(); // it may have been the one we were catching up on
  }

  replica(projectId) {
    const sub = this.subs.get(projectId);
    return sub ? sub.replica : null;
  }

  /** What this connection is viewing/editing in a project; re-sent after every resubscribe. */
  setPresence(projectId, state) {
    const sub = this.subs.get(projectId);
    if (!sub) return;
    const next = { viewing: state.viewing || null, editing: state.editing || null };
    if (sub.presence && sub.presence.viewing === next.viewing && sub.presence.editing === next.editing) return;
    sub.presence = next;
    if (sub.live) this.send({ type: 'presence', project_id: projectId, state: next });
  }

  /**
   * Send an op; returns the pending entry {id, projectId, op, promise}. The
   * promise resolves with the ack ({seq, result, duplicate}) or rejects with
   * OpRejected. A task.create gets a client-chosen task_id, so a resend names
   * the same task.
   */
  sendOp(projectId, op, opId = uuid4()) {
    const body = op.kind === 'task.create' && !op.task_id ? { ...op, task_id: uuid4() } : op;
    const pending = this.track({ id: opId, projectId, op: body });
    this.persistPending();
    this.emit('pending', { count: this.unanswered() });
    this.sendPending(pending);
    return pending;
  }

  /** Ops of a project not yet reflected in its replica, in the order they were made. */
  pendingOps(projectId) {
    return [...this.pending.values()].filter((p) => p.projectId === projectId);
  }

  /** How many ops still wait for an answer. */
  unanswered() {
    let n = 0;
    for (const p of this.pending.values()) if (p.ackSeq === null) n++;
    return n;
  }

  get user() {
    return this.welcome ? this.welcome.user : null;
  }

  get sessionId() {
    return this.welcome ? this.welcome.session_id : null;
  }

  // --- connecting -----------------------------------------------------------------

  async connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.stopped || this.ws) return;
    this.setState(this.everOnline ? 'reconnecting' : 'connecting', 'connecting');
    let token;
    try {
      token = await this.token();
    } catch (error) {
      if (error && error.name === 'SessionExpired') this.fail(4501, error.message);
      else this.scheduleReconnect(null, 'cannot reach the server');
      return;
    }
    if (this.stopped || this.ws) return;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (error) {
      this.scheduleReconnect(null, 'cannot open a WebSocket');
      return;
    }
    this.ws = ws;
    this.generation += 1;
    let welcomed = false;
    const welcomeTimer = setTimeout(() => this.drop(ws, 'no welcome in time'), WELCOME_TIMEOUT_MS);
    ws.onopen = () => ws.send(JSON.stringify({ type: 'auth', token }));
    ws.onmessage = (message) => {
      if (ws !== this.ws) return;
      this.lastRx = Date.now();
      let frames;
      try {
        const parsed = JSON.parse(message.data);
        frames = Array.isArray(parsed) ? parsed : [parsed];
      } catch {
        this.drop(ws, 'unreadable message');
        return;
      }
      for (const frame of frames) {
        if (ws !== this.ws) return;
        if (!welcomed) {
          if (frame.type !== 'welcome') {
            this.drop(ws, `expected welcome, got ${frame.type}`);
            return;
          }
          welcomed = true;
          clearTimeout(welcomeTimer);
          this.onWelcome(ws, frame);
          continue;
        }
        this.handle(frame);
      }
    };
    ws.onclose = (event) => {
      clearTimeout(welcomeTimer);
      if (ws === this.ws) this.closed(event.code, event.reason || `closed ${event.code}`, welcomed);
    };
    ws.onerror = () => {}; // a close event follows
  }

  onWelcome(ws, frame) {
    this.welcome = frame;
    this.welcomedWs = ws;
    this.connectedAt = Date.now();
    this.everOnline = true;
    this.refreshedFor4501 = false;
    this.stats.connections += 1;
    const limits = frame.limits || {};
    if (limits.messages_per_s) this.rate = Number(limits.messages_per_s);
    if (limits.message_burst) this.burst = Number(limits.message_burst);
    this.bucket = Math.min(this.burst, 20);
    this.bucketAt = performance.now();
    this.setState('syncing', 'catching up');
    // Unanswered ops first, with their original ids and in their original order ...
    for (const pending of this.pending.values()) {
      if (pending.ackSeq === null) this.sendPending(pending);
    }
    // ... then every subscription resumes from the seq its replica reached.
    for (const projectId of this.subs.keys()) this.sendSubscribe(projectId);
    this.startPinging();
    this.checkSynced();
  }

  closed(code, reason, welcomed) {
    this.detach();
    if (this.stopped) return;
    if (welcomed && Date.now() - this.connectedAt >= STABLE_AFTER_MS) this.attempt = 0;
    if (code === 4501 && this.refresh && !this.refreshedFor4501) {
      // Usually an access token that expired: one refresh, then try again at once.
      this.refreshedFor4501 = true;
      this.setState('reconnecting', 'signing in again');
      Promise.resolve(this.refresh()).then(
        () => this.connect(),
        (error) => {
          if (error && error.name === 'SessionExpired') this.fail(4501, 'your session ended');
          else this.scheduleReconnect(null, 'cannot reach the server');
        },
      );
      return;
    }
    if (isFatalClose(code)) {
      this.fail(code, reason);
      return;
    }
    this.scheduleReconnect(code, reason);
  }

  /** Forget the current socket (its handlers, timers, requests); ops and subscriptions stay wanted. */
  detach() {
    const ws = this.ws;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    }
    this.ws = null;
    this.welcomedWs = null;
    this.queue = [];
    clearTimeout(this.pumpTimer);
    this.pumpTimer = null;
    clearInterval(this.pingTimer);
    this.pingTimer = null;
    for (const request of this.requests.values()) clearTimeout(request.timer);
    this.requests.clear();
    for (const sub of this.subs.values()) {
      sub.requestId = null;
      sub.live = false;
      clearTimeout(sub.timer);
    }
    for (const pending of this.pending.values()) {
      pending.sentOn = null;
      clearTimeout(pending.timer);
    }
  }

  /** Give up on a socket at once, as if the network failed (no waiting for a close handshake). */
  drop(ws, reason) {
    if (ws !== this.ws) return;
    const welcomed = this.welcomedWs === ws;
    this.detach();
    try {
      ws.close(4000, 'client dropped the connection');
    } catch {
      // already closing
    }
    if (!this.stopped) this.closed(null, reason, welcomed);
  }

  scheduleReconnect(code, reason) {
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(this.attempt, 20));
    const floor = code === 4003 ? 5000 : 0;
    this.attempt += 1;
    const delay = floor + Math.random() * Math.max(0, ceiling - floor);
    this.setState('reconnecting', reason, { retryInMs: Math.round(delay) });
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  fail(code, reason) {
    this.stopped = true;
    window.removeEventListener('online', this.onOnline);
    this.setState('closed', reason, { code });
  }

  startPinging() {
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      const ws = this.ws;
      if (!ws) return;
      if (Date.now() - this.lastRx > DEAD_AFTER_MS) {
        this.drop(ws, 'the connection went silent');
        return;
      }
      this.send({ type: 'ping', id: this.requestId('p') });
    }, PING_INTERVAL_MS);
  }

  setState(state, reason = null, extra = {}) {
    this.state = state;
    this.stateReason = reason;
    this.emit('state', { state, reason, ...extra });
  }

  checkSynced() {
    if (this.state !== 'syncing') return;
    for (const sub of this.subs.values()) if (!sub.live) return;
    this.setState('online', 'caught up');
  }

  // --- sending -----------------------------------------------------------------------

  requestId(kind) {
    this.ids += 1;
    return `~${kind}${this.ids}`; // '~' never occurs in op ids: no clash
  }

  /** Queue a frame on the current (welcomed) socket; frames for a dead socket are dropped. */
  send(frame) {
    if (!this.welcomedWs || this.welcomedWs !== this.ws) return false;
    this.queue.push(JSON.stringify(frame));
    this.pump();
    return true;
  }

  pump() {
    if (this.pumpTimer) return;
    const ws = this.welcomedWs;
    while (this.queue.length && ws && ws.readyState === WebSocket.OPEN) {
      const now = performance.now();
      this.bucket = Math.min(this.burst, this.bucket + ((now - this.bucketAt) / 1000) * this.rate);
      this.bucketAt = now;
      if (this.bucket < 1) {
        const waitMs = Math.ceil(((1 - this.bucket) / this.rate) * 1000);
        this.pumpTimer = setTimeout(() => {
          this.pumpTimer = null;
          this.pump();
        }, waitMs);
        return;
      }
      this.bucket -= 1;
      ws.send(this.queue.shift());
    }
  }

  track({ id, projectId, op }) {
    const pending = { id, projectId, op, sentOn: null, sends: 0, ackSeq: null, retries: 0, timer: null };
    pending.promise = new Promise((resolve, reject) => {
      pending.resolve = resolve;
      pending.reject = reject;
    });
    pending.promise.catch(() => {}); // callers may ignore the outcome; the 'rejected' event reports it
    this.pending.set(id, pending);
    return pending;
  }

  sendPending(pending) {
    if (pending.ackSeq !== null || !this.pending.has(pending.id)) return;
    if (!this.send({ type: 'op', id: pending.id, project_id: pending.projectId, op: pending.op })) return;
    pending.sentOn = this.generation;
    this.stats.opsSent += 1;
    if (pending.sends > 0) this.stats.opsResent += 1;
    pending.sends += 1;
    clearTimeout(pending.timer);
    // No answer on this socket in time (e.g. the frame was dropped as rate limited): same id again.
    pending.timer = setTimeout(() => this.sendPending(pending), OP_RESEND_AFTER_MS);
  }

  sendSubscribe(projectId, { fresh = false } = {}) {
    const sub = this.subs.get(projectId);
    if (!sub || !this.welcomedWs) return;
    const id = this.requestId('s');
    const frame = { type: 'subscribe', id, project_id: projectId };
    if (!fresh && sub.replica.loaded) frame.since = sub.replica.seq;
    sub.requestId = id;
    sub.live = false;
    this.stats.resubscribes += sub.replica.loaded ? 1 : 0;
    clearTimeout(sub.timer);
    sub.timer = setTimeout(() => {
      if (sub.requestId === id) this.drop(this.ws, 'no answer to subscribe in time');
    }, REQUEST_TIMEOUT_MS);
    this.send(frame);
  }

  // --- receiving -----------------------------------------------------------------------

  handle(frame) {
    switch (frame.type) {
      case 'subscribed': return this.onSubscribed(frame);
      case 'event': return this.onEvent(frame);
      case 'ack': return this.onAck(frame);
      case 'error': return this.onError(frame);
      case 'presence': return this.onPresence(frame);
      case 'notification': return this.emit('notification', { notification: frame.notification || {} });
      case 'unsubscribed':
        if (frame.reason !== 'requested') this.endSub(frame.project_id, frame.reason || 'ended');
        return undefined;
      case 'resync': {
        const sub = this.subs.get(frame.project_id);
        if (sub) this.sendSubscribe(frame.project_id);
        return undefined;
      }
      default:
        return undefined; // pong, and frame types of newer servers
    }
  }

  onSubscribed(frame) {
    const sub = this.subs.get(frame.project_id);
    if (!sub || sub.requestId !== frame.id) return;
    sub.requestId = null;
    clearTimeout(sub.timer);
    const replica = sub.replica;
    const seq = Number(frame.seq);
    if (frame.snapshot) {
      replica.loadSnapshot(frame.snapshot, seq);
      this.emit('snapshot', { projectId: replica.projectId, reset: Boolean(frame.reset) });
    } else {
      for (const event of frame.events || []) {
        const verdict = replica.apply(event);
        if (verdict === APPLIED) this.emit('event', { projectId: replica.projectId, event, catchUp: true });
        else if (verdict !== STALE) break;
      }
      if (replica.seq < seq) {
        this.sendSubscribe(replica.projectId, { fresh: true }); // the catch-up did not fit: start from a snapshot
        return;
      }
    }
    replica.loadPresence(frame.presence || []);
    sub.live = true;
    if (sub.presence) this.send({ type: 'presence', project_id: replica.projectId, state: sub.presence });
    this.settle(replica.projectId);
    this.emit('presence', { projectId: replica.projectId });
    this.emit('subscribed', { projectId: replica.projectId });
    this.checkSynced();
  }

  onEvent(frame) {
    const sub = this.subs.get(frame.project_id);
    if (!sub || !sub.replica.loaded) return;
    const verdict = sub.replica.apply(frame);
    if (verdict === APPLIED) {
      this.emit('event', { projectId: frame.project_id, event: frame, catchUp: false });
      this.settle(frame.project_id);
    } else if (verdict === GAP && sub.requestId === null) {
      this.sendSubscribe(frame.project_id);
    } else if (verdict === INCONSISTENT) {
      this.sendSubscribe(frame.project_id, { fresh: true });
    }
  }

  onAck(frame) {
    const pending = this.pending.get(frame.id);
    if (!pending || pending.ackSeq !== null) return; // a second answer to a resent op
    clearTimeout(pending.timer);
    pending.ackSeq = Number(frame.seq);
    if (frame.duplicate) this.stats.duplicateAcks += 1;
    pending.resolve({ seq: pending.ackSeq, result: frame.result, duplicate: Boolean(frame.duplicate) });
    this.persistPending();
    this.settle(pending.projectId);
    this.emit('pending', { count: this.unanswered() });
  }

  onError(frame) {
    const pending = frame.id ? this.pending.get(frame.id) : null;
    if (pending) {
      clearTimeout(pending.timer);
      if (frame.retryable) {
        // busy / unavailable: not applied (or maybe applied, for busy): the same id again, later.
        const delay = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(pending.retries, 10)) * Math.random();
        pending.retries += 1;
        pending.timer = setTimeout(() => this.sendPending(pending), delay);
        return;
      }
      this.pending.delete(pending.id);
      this.persistPending();
      const error = new OpRejected(frame.code, frame.message, false);
      pending.reject(error);
      this.emit('rejected', { op: pending.op, projectId: pending.projectId, id: pending.id, code: frame.code, message: frame.message });
      this.emit('pending', { count: this.unanswered() });
      return;
    }
    for (const [projectId, sub] of this.subs) {
      if (frame.id && sub.requestId === frame.id) {
        sub.requestId = null;
        clearTimeout(sub.timer);
        if (frame.retryable) {
          sub.timer = setTimeout(() => this.sendSubscribe(projectId), 1000 + Math.random() * 2000);
        } else {
          this.endSub(projectId, frame.code || 'refused');
        }
        return;
      }
    }
    // No id (e.g. rate_limited: the frame was dropped unread): unanswered ops are resent by their timers.
  }

  onPresence(frame) {
    const sub = this.subs.get(frame.project_id);
    if (!sub) return;
    for (const change of ['joined', 'updated', 'left']) {
      if (frame[change]) {
        sub.replica.applyPresence(change, frame[change]);
        this.emit('presence', { projectId: frame.project_id });
        return;
      }
    }
  }

  endSub(projectId, reason) {
    const sub = this.subs.get(projectId);
    if (!sub) return;
    this.subs.delete(projectId);
    clearTimeout(sub.timer);
    sub.replica.end(reason);
    this.emit('ended', { projectId, reason });
    this.checkSynced();
  }

  /** Drop acked ops whose effect the replica now shows. */
  settle(projectId) {
    const sub = this.subs.get(projectId);
    let changed = false;
    for (const pending of [...this.pending.values()]) {
      if (pending.projectId !== projectId || pending.ackSeq === null) continue;
      if (sub && sub.replica.loaded && sub.replica.seq < pending.ackSeq) continue;
      this.pending.delete(pending.id);
      changed = true;
    }
    if (changed) this.emit('pending', { count: this.unanswered() });
  }

  // --- keeping unanswered ops across reloads --------------------------------------------

  persistPending() {
    if (!this.storage) return;
    const kept = [];
    for (const p of this.pending.values()) {
      if (p.ackSeq === null) kept.push({ id: p.id, project_id: p.projectId, op: p.op });
    }
    try {
      if (kept.length) this.storage.setItem(this.storageKey, JSON.stringify(kept.slice(-MAX_KEPT_OPS)));
      else this.storage.removeItem(this.storageKey);
    } catch {
      // storage full or unavailable: the ops are still kept in memory
    }
  }

  restorePending() {
    if (!this.storage) return;
    let kept = [];
    try {
      kept = JSON.parse(this.storage.getItem(this.storageKey) || '[]');
    } catch {
      kept = [];
    }
    for (const item of Array.isArray(kept) ? kept : []) {
      if (item && item.id && item.project_id && item.op) this.track({ id: item.id, projectId: item.project_id, op: item.op });
    }
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
