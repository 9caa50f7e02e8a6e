// A project's committed state as this client has seen it, kept in seq order.
//
// The same rules as collab/client/replica.py: a snapshot replaces
// everything; an event applies only when its seq is exactly seq + 1 (older
// ones are duplicates and ignored; a newer one means we missed some, and the
// caller resubscribes with `since`); unknown kinds still advance the seq.

export const APPLIED = 'applied';
export const STALE = 'stale';
export const GAP = 'gap';
export const INCONSISTENT = 'inconsistent';

export class ProjectReplica {
  constructor(projectId) {
    this.projectId = projectId;
    this.seq = 0;
    this.loaded = false;
    this.project = {};
    this.members = new Map(); // user_id -> member
    this.tasks = new Map(); // task id -> task
    this.presence = new Map(); // connection_id -> {user_id, username, connection_id, state}
    this.deleted = false;
    this.ended = null; // the reason the subscription ended for good
  }

  loadSnapshot(snapshot, seq) {
    this.project = { ...(snapshot.project || {}) };
    this.members = new Map((snapshot.members || []).map((m) => [m.user_id, { ...m }]));
    this.tasks = new Map((snapshot.tasks || []).map((t) => [t.id, { ...t }]));
    this.seq = seq;
    this.loaded = true;
    this.deleted = false;
  }

  loadPresence(entries) {
    this.presence = new Map((entries || []).map((e) => [e.connection_id, { ...e }]));
  }

  check(seq) {
    if (seq <= this.seq) return STALE;
    if (seq > this.seq + 1) return GAP;
    return APPLIED;
  }

  apply(event) {
    const seq = Number(event.seq);
    const verdict = this.check(seq);
    if (verdict !== APPLIED) return verdict;
    if (!this.applyKind(event.kind, event.data || {})) return INCONSISTENT;
    this.seq = seq;
    this.project.seq = seq;
    return APPLIED;
  }

  applyKind(kind, data) {
    switch (kind) {
      case 'task.created':
        this.tasks.set(data.task.id, { ...data.task });
        break;
      case 'task.updated': {
        const task = this.tasks.get(data.task_id);
        if (!task) return false;
        Object.assign(task, data.changes || {});
        break;
      }
      case 'task.deleted':
        this.tasks.delete(data.task_id);
        break;
      case 'member.added':
      case 'member.updated':
        this.members.set(data.member.user_id, { ...data.member });
        break;
      case 'member.removed':
        this.members.delete(data.user_id);
        break;
      case 'project.created':
        this.project = { ...(data.project || {}) };
        if (data.member) this.members.set(data.member.user_id, { ...data.member });
        break;
      case 'project.updated':
        Object.assign(this.project, data.changes || {});
        break;
      case 'project.deleted':
        this.deleted = true;
        break;
      default:
        // comment.*, attachment.* and kinds of newer servers: nothing to keep here, the seq still advances.
        break;
    }
    return true;
  }

  applyPresence(change, entry) {
    if (change === 'left') this.presence.delete(entry.connection_id);
    else this.presence.set(entry.connection_id, { ...entry });
  }

  end(reason) {
    this.ended = reason;
    this.presence.clear();
  }

  memberName(userId) {
    const member = this.members.get(userId);
    return member ? member.display_name || member.username : null;
  }
}
