// The board of one project: a column per status, cards, drag and drop,
// presence avatars and "editing" markers, live from the project's replica.
//
// Moves and new tasks are ops on the WebSocket (task.move with the
// neighbours it lands between, task.create with a client-chosen id); the
// card shows the result at once (boardstate.js overlays pending ops) and
// the server's events confirm it. Rendering is batched to one pass per
// animation frame; cards are re-made only when something they show changed.

import { boardView, neighbours } from './boardstate.js';
import { clear, h, icon } from './dom.js';
import { CardDialog } from './card.js';
import {
  STATUSES, avatar, describeError, dueLabel, isOverdue, priorityLabel, statusLabel, toast,
} from './ui.js';

const DRAG_THRESHOLD_PX = 5;

export class BoardView {
  constructor(app, projectId) {
    this.app = app;
    this.projectId = projectId;
    this.realtime = app.realtime;
    this.replica = this.realtime.subscribe(projectId);
    this.cards = new Map(); // task id -> {key, el}
    this.drag = null;
    this.suppressClickUntil = 0;
    this.renderQueued = false;
    this.filter = { text: '', mine: false };
    this.dialog = null;
    this.listeners = [];
    this.build();
    this.listen();
    this.realtime.setPresence(projectId, { viewing: null, editing: null });
    this.queueRender();
  }

  // --- structure ---------------------------------------------------------------------

  build() {
    this.titleEl = h('h1', { class: 'board-title' }, 'Loading…');
    this.descriptionEl = h('p', { class: 'board-description' });
    this.presenceEl = h('div', { class: 'presence', 'aria-label': 'People on this board' });
    this.membersButton = h('button', { class: 'btn btn-ghost', onclick: () => this.toggleMembers() },
      icon('users'), h('span', { class: 'members-count' }, ''));
    this.searchInput = h('input', {
      class: 'input input-search', type: 'search', placeholder: 'Filter cards', 'aria-label': 'Filter cards',
      oninput: () => { this.filter.text = this.searchInput.value.trim().toLowerCase(); this.queueRender(); },
    });
    this.mineToggle = h('button', {
      class: 'chip-toggle', 'aria-pressed': 'false',
      onclick: () => {
        this.filter.mine = !this.filter.mine;
        this.mineToggle.setAttribute('aria-pressed', String(this.filter.mine));
        this.queueRender();
      },
    }, 'Assigned to me');
    this.membersPanel = h('div', { class: 'members-panel', hidden: true });
    this.columnsEl = h('div', { class: 'columns' });
    this.columnEls = new Map();
    for (const status of STATUSES) {
      const list = h('div', { class: 'card-list', dataset: { status: status.id } });
      const count = h('span', { class: 'column-count' }, '0');
      const composer = this.composer(status.id);
      const column = h('section', { class: ['column', `column-${status.id}`], dataset: { status: status.id }, 'aria-label': status.label },
        h('header', { class: 'column-header' },
          h('span', { class: ['status-dot', `status-${status.id}`] }),
          h('h2', { class: 'column-title' }, status.label),
          count,
          h('button', {
            class: 'icon-btn column-add', 'aria-label': `Add a task to ${status.label}`, title: 'Add a task',
            onclick: () => composer.open(),
          }, icon('plus'))),
        list,
        composer.el);
      this.columnEls.set(status.id, { column, list, count, composer });
      this.columnsEl.append(column);
    }
    this.el = h('div', { class: 'board', dataset: { projectId: this.projectId } },
      h('div', { class: 'board-bar' },
        h('div', { class: 'board-heading' },
          h('a', { class: 'back-link', href: '#/projects', 'aria-label': 'All projects' }, icon('back'), 'Projects'),
          this.titleEl,
          this.descriptionEl),
        h('div', { class: 'board-tools' },
          this.searchInput,
          this.mineToggle,
          this.presenceEl,
          h('div', { class: 'members-anchor' }, this.membersButton, this.membersPanel))),
      this.columnsEl);
  }

  composer(status) {
    const input = h('textarea', {
      class: 'input composer-input', rows: '2', placeholder: 'What needs doing?', maxlength: '200',
      'aria-label': 'New task title',
    });
    const form = h('form', { class: 'composer', hidden: true },
      input,
      h('div', { class: 'composer-actions' },
        h('button', { class: 'btn btn-primary btn-sm', type: 'submit' }, 'Add card'),
        h('button', { class: 'btn btn-ghost btn-sm', type: 'button', onclick: () => close() }, 'Cancel')));
    const trigger = h('button', { class: 'add-card', type: 'button', onclick: () => open() }, icon('plus', 14), 'Add a card');
    const el = h('div', { class: 'composer-wrap' }, trigger, form);
    const open = () => {
      form.hidden = false;
      trigger.hidden = true;
      input.focus();
    };
    const close = () => {
      form.hidden = true;
      trigger.hidden = false;
      input.value = '';
    };
    const submit = () => {
      const title = input.value.trim();
      if (!title) return;
      this.realtime.sendOp(this.projectId, { kind: 'task.create', fields: { title, status } });
      input.value = '';
      input.focus();
      this.queueRender();
    };
    form.addEventListener('submit', (e) => { e.preventDefault(); submit(); });
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); submit(); }
      if (e.key === 'Escape') close();
    });
    return { el, open, close };
  }

  listen() {
    const on = (type, fn) => {
      this.realtime.addEventListener(type, fn);
      this.listeners.push([type, fn]);
    };
    const mine = (fn) => (e) => { if (e.detail.projectId === this.projectId) fn(e.detail); };
    on('snapshot', mine(() => this.queueRender()));
    on('event', mine((detail) => {
      this.queueRender();
      if (this.dialog) this.dialog.onEvent(detail.event);
    }));
    on('presence', mine(() => this.queueRender()));
    on('pending', () => this.queueRender());
    on('ended', mine(({ reason }) => this.ended(reason)));
    on('rejected', (e) => {
      if (e.detail.projectId !== this.projectId) return;
      this.onRejected(e.detail);
    });
    this.onKey = (e) => { if (e.key === 'Escape' && this.drag) this.cancelDrag(); };
    document.addEventListener('keydown', this.onKey);
  }

  destroy() {
    for (const [type, fn] of this.listeners) this.realtime.removeEventListener(type, fn);
    document.removeEventListener('keydown', this.onKey);
    this.closeTask();
    this.cancelDrag();
    this.realtime.unsubscribe(this.projectId);
  }

  ended(reason) {
    const why = { removed: 'You were removed from this project.', deleted: 'This project was deleted.',
      forbidden: 'You are not a member of this project.', not_found: 'There is no such project.' }[reason]
      || 'This board is no longer available.';
    toast(why, 'error', 6000);
    this.app.navigate('#/projects');
  }

  onRejected({ op, code, message }) {
    if (op.kind === 'task.move' && code === 'conflict' && op.before && op.after) {
      // The neighbours changed under us (someone moved one): keep the left one only.
      this.realtime.sendOp(this.projectId, { ...op, before: undefined });
      return;
    }
    toast(`Your change was not saved: ${message || code}`, 'error');
    this.queueRender();
  }

  // --- task dialog ------------------------------------------------------------------------

  openTask(taskId) {
    if (this.dialog && this.dialog.taskId === taskId) return;
    this.closeTask();
    this.dialog = new CardDialog(this, taskId);
  }

  closeTask() {
    if (!this.dialog) return;
    const dialog = this.dialog;
    this.dialog = null;
    dialog.destroy();
    this.realtime.setPresence(this.projectId, { viewing: null, editing: null });
  }

  // --- rendering ----------------------------------------------------------------------------

  queueRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame(() => {
      this.renderQueued = false;
      if (this.drag) return; // drawn again after the drop
      this.render();
    });
  }

  view() {
    return boardView(this.replica, this.realtime.pendingOps(this.projectId));
  }

  render() {
    const replica = this.replica;
    const project = replica.project || {};
    this.titleEl.textContent = project.name || (replica.loaded ? 'Untitled project' : 'Loading…');
    this.descriptionEl.textContent = project.description || '';
    this.descriptionEl.hidden = !project.description;
    document.title = project.name ? `${project.name} · Collab` : 'Collab';
    this.membersButton.querySelector('.members-count').textContent = `${replica.members.size}`;
    this.membersButton.title = `${replica.members.size} members`;
    this.renderPresence();
    if (!this.membersPanel.hidden) this.renderMembers();
    const { tasks, columns } = this.view();
    this.lastView = { tasks, columns };
    const editing = this.editingMarkers();
    const seen = new Set();
    for (const status of STATUSES) {
      const parts = this.columnEls.get(status.id);
      const shown = columns[status.id].filter((t) => this.matches(t));
      parts.count.textContent = String(columns[status.id].length);
      const els = shown.map((task) => {
        seen.add(task.id);
        return this.card(task, editing.get(task.id) || []);
      });
      if (!els.length) els.push(h('div', { class: 'column-empty' }, replica.loaded ? 'No cards' : ''));
      parts.list.replaceChildren(...els);
    }
    for (const id of [...this.cards.keys()]) if (!seen.has(id)) this.cards.delete(id);
    if (this.dialog) this.dialog.refresh(tasks.get(this.dialog.taskId));
    this.el.classList.toggle('is-loading', !replica.loaded);
  }

  matches(task) {
    if (this.filter.mine && task.assignee_id !== this.app.userId) return false;
    if (!this.filter.text) return true;
    const haystack = [task.title, task.description, ...(task.tags || []), this.replica.memberName(task.assignee_id)]
      .filter(Boolean).join(' ').toLowerCase();
    return haystack.includes(this.filter.text);
  }

  /** task id -> [{user_id, username}] of OTHER connections editing it. */
  editingMarkers() {
    const markers = new Map();
    const me = this.realtime.sessionId;
    for (const entry of this.replica.presence.values()) {
      const taskId = entry.state && entry.state.editing;
      if (!taskId || entry.connection_id === me) continue;
      const list = markers.get(taskId) || [];
      if (!list.some((e) => e.user_id === entry.user_id)) list.push(entry);
      markers.set(taskId, list);
    }
    return markers;
  }

  card(task, editors) {
    const assigneeName = task.assignee_id ? (this.replica.memberName(task.assignee_id) || task.assignee_name || 'someone') : null;
    const key = JSON.stringify([task.version, task.title, task.status, task.priority, task.assignee_id, assigneeName,
      task.due_date, task.tags, Boolean(task.pending), editors.map((e) => e.username)]);
    const cached = this.cards.get(task.id);
    if (cached && cached.key === key) return cached.el;
    const overdue = isOverdue(task);
    const el = h('article', {
      class: ['card', task.pending && 'is-pending', editors.length && 'is-being-edited', `card-prio-${task.priority}`],
      tabindex: '0',
      role: 'button',
      'aria-label': `${task.title} (${statusLabel(task.status)})`,
      dataset: { taskId: task.id, status: task.status },
    },
    h('div', { class: 'card-top' },
      h('span', { class: ['priority', `priority-${task.priority}`], title: `${priorityLabel(task.priority)} priority` },
        priorityLabel(task.priority)),
      (task.tags || []).slice(0, 4).map((tag) => h('span', { class: 'tag' }, tag)),
      (task.tags || []).length > 4 ? h('span', { class: 'tag tag-more' }, `+${task.tags.length - 4}`) : null),
    h('h3', { class: 'card-title' }, task.title),
    h('div', { class: 'card-meta' },
      task.due_date ? h('span', { class: ['due', overdue && 'is-overdue'], title: `Due ${new Date(task.due_date).toLocaleDateString()}` },
        icon('calendar', 13), dueLabel(task.due_date)) : null,
      task.pending ? h('span', { class: 'syncing', title: 'Saving…' }, icon('cloud', 13), 'Saving') : null,
      h('span', { class: 'spacer' }),
      editors.length ? h('span', { class: 'editing-marker', title: `${editors.map((e) => e.username).join(', ')} editing` },
        icon('pencil', 12), editors.map((e) => e.username).join(', ')) : null,
      assigneeName ? avatar(task.assignee_id, assigneeName, { size: 'sm', title: `Assigned to ${assigneeName}` }) : null));
    el.addEventListener('pointerdown', (e) => this.pointerDown(e, task.id, el));
    el.addEventListener('click', () => {
      if (Date.now() < this.suppressClickUntil) return;
      this.app.navigate(`#/p/${this.projectId}/t/${task.id}`);
    });
    el.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' || e.key === ' ') {
        e.preventDefault();
        this.app.navigate(`#/p/${this.projectId}/t/${task.id}`);
      }
    });
    this.cards.set(task.id, { key, el });
    return el;
  }

  renderPresence() {
    const byUser = new Map();
    for (const entry of this.replica.presence.values()) {
      const known = byUser.get(entry.user_id) || { ...entry, editing: false };
      known.editing = known.editing || Boolean(entry.state && entry.state.editing);
      byUser.set(entry.user_id, known);
    }
    const me = this.app.userId;
    const people = [...byUser.values()].sort((a, b) => (a.user_id === me ? -1 : b.user_id === me ? 1 : a.username.localeCompare(b.username)));
    clear(this.presenceEl);
    for (const person of people.slice(0, 6)) {
      const name = this.replica.memberName(person.user_id) || person.username;
      const label = `${name}${person.user_id === me ? ' (you)' : ''}${person.editing ? ' · editing' : ' · viewing'}`;
      const a = avatar(person.user_id, name, { size: 'md', title: label });
      a.classList.add('presence-avatar');
      if (person.editing) a.classList.add('is-editing');
      a.dataset.userId = person.user_id;
      a.dataset.username = person.username;
      this.presenceEl.append(a);
    }
    if (people.length > 6) this.presenceEl.append(h('span', { class: 'avatar avatar-md avatar-more' }, `+${people.length - 6}`));
  }

  // --- members ----------------------------------------------------------------------------

  toggleMembers() {
    this.membersPanel.hidden = !this.membersPanel.hidden;
    if (this.membersPanel.hidden) return;
    this.memberListEl = h('ul', { class: 'member-list' });
    const me = this.replica.members.get(this.app.userId);
    const canManage = me && (me.role === 'owner' || me.role === 'manager');
    this.membersPanel.replaceChildren(
      h('div', { class: 'panel-head' },
        h('h3', { class: 'panel-title' }, 'Members'),
        h('button', { class: 'icon-btn', 'aria-label': 'Close', onclick: () => this.toggleMembers() }, icon('x', 14))),
      this.memberListEl,
      canManage ? this.memberAdder() : null,
    );
    this.renderMembers();
  }

  renderMembers() {
    if (!this.memberListEl) return;
    const rank = { owner: 0, manager: 1, member: 2, viewer: 3 };
    const rows = [...this.replica.members.values()]
      .sort((a, b) => (rank[a.role] ?? 9) - (rank[b.role] ?? 9) || a.username.localeCompare(b.username))
      .map((m) => h('li', { class: 'member-row' },
        avatar(m.user_id, m.display_name || m.username, { size: 'sm' }),
        h('span', { class: 'member-name' }, m.display_name || m.username),
        h('span', { class: 'member-role' }, m.role)));
    this.memberListEl.replaceChildren(...rows);
  }

  memberAdder() {
    const results = h('ul', { class: 'member-results' });
    const search = h('input', {
      class: 'input', type: 'search', placeholder: 'Add people by email or name', 'aria-label': 'Find people to add',
    });
    const find = async () => {
      const q = search.value.trim();
      clear(results);
      if (q.length < 2) return;
      try {
        const found = await this.app.api.searchUsers(q);
        for (const user of found.data || []) {
          if (this.replica.members.has(user.id)) continue;
          const name = user.display_name || user.username;
          results.append(h('li', { class: 'member-row' },
            avatar(user.id, name, { size: 'sm' }),
            h('span', { class: 'member-name' }, name),
            h('button', {
              class: 'btn btn-sm btn-primary',
              onclick: async () => {
                try {
                  await this.app.api.addMember(this.projectId, user.id, 'member');
                  toast(`${name} was added`, 'success');
                  search.value = '';
                  clear(results);
                } catch (error) {
                  toast(describeError(error), 'error');
                }
              },
            }, 'Add')));
        }
        if (!results.childElementCount) results.append(h('li', { class: 'muted' }, 'Nobody new found'));
      } catch (error) {
        toast(describeError(error), 'error');
      }
    };
    let timer = null;
    search.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(find, 250); });
    return h('div', { class: 'member-add' }, search, results);
  }

  // --- drag and drop --------------------------------------------------------------------------

  pointerDown(event, taskId, el) {
    if (event.button !== 0 || event.pointerType === 'touch') return;
    if (event.target.closest('button, a, input, textarea, select')) return;
    const start = { x: event.clientX, y: event.clientY };
    const move = (e) => {
      if (!this.drag) {
        if (Math.hypot(e.clientX - start.x, e.clientY - start.y) < DRAG_THRESHOLD_PX) return;
        this.beginDrag(taskId, el, start);
      }
      this.dragTo(e.clientX, e.clientY);
    };
    const up = (e) => {
      document.removeEventListener('pointermove', move);
      document.removeEventListener('pointerup', up);
      document.removeEventListener('pointercancel', up);
      if (this.drag) {
        if (e.type === 'pointercancel') this.cancelDrag();
        else this.drop();
      }
    };
    document.addEventListener('pointermove', move);
    document.addEventListener('pointerup', up);
    document.addEventListener('pointercancel', up);
  }

  beginDrag(taskId, el, start) {
    const rect = el.getBoundingClientRect();
    const ghost = el.cloneNode(true);
    ghost.classList.add('drag-ghost');
    ghost.removeAttribute('tabindex');
    ghost.style.width = `${rect.width}px`;
    const placeholder = h('div', { class: 'card-placeholder' });
    placeholder.style.height = `${rect.height}px`;
    el.after(placeholder);
    el.classList.add('is-drag-source');
    document.body.append(ghost);
    document.body.classList.add('is-dragging');
    window.getSelection()?.removeAllRanges();
    this.drag = { taskId, el, ghost, placeholder, dx: start.x - rect.left, dy: start.y - rect.top, from: el.dataset.status };
  }

  dragTo(x, y) {
    const drag = this.drag;
    drag.ghost.style.transform = `translate(${x - drag.dx}px, ${y - drag.dy}px) rotate(2deg)`;
    const under = document.elementFromPoint(x, y);
    const column = under && under.closest('.column');
    if (!column) return;
    const list = column.querySelector('.card-list');
    const cards = [...list.querySelectorAll('.card')].filter((c) => c !== drag.el);
    let before = null;
    for (const card of cards) {
      const r = card.getBoundingClientRect();
      if (y < r.top + r.height / 2) { before = card; break; }
    }
    const empty = list.querySelector('.column-empty');
    if (empty) empty.hidden = true;
    if (before) list.insertBefore(drag.placeholder, before);
    else list.append(drag.placeholder);
    const edge = 40;
    const lr = list.getBoundingClientRect();
    if (y < lr.top + edge) list.scrollTop -= 10;
    else if (y > lr.bottom - edge) list.scrollTop += 10;
  }

  drop() {
    const drag = this.drag;
    const list = drag.placeholder.parentElement;
    const status = list ? list.dataset.status : drag.from;
    let index = 0;
    for (const node of list ? list.children : []) {
      if (node === drag.placeholder) break;
      if (node.classList.contains('card') && node !== drag.el) index += 1;
    }
    this.endDrag();
    const { columns } = this.lastView || this.view();
    // The index counts the cards shown; with a filter on, anchor to the shown neighbours.
    const shown = columns[status].filter((t) => t.id === drag.taskId || this.matches(t));
    const place = neighbours(shown, index, drag.taskId);
    const current = columns[drag.from] || [];
    const was = neighbours(current, current.findIndex((t) => t.id === drag.taskId), drag.taskId);
    if (status === drag.from && was.after === place.after && was.before === place.before) {
      this.queueRender();
      return; // dropped where it was
    }
    const op = { kind: 'task.move', task_id: drag.taskId, status };
    if (place.after) op.after = place.after;
    if (place.before) op.before = place.before;
    this.realtime.sendOp(this.projectId, op);
    this.queueRender();
  }

  cancelDrag() {
    if (!this.drag) return;
    this.endDrag();
    this.queueRender();
  }

  endDrag() {
    const drag = this.drag;
    this.drag = null;
    drag.ghost.remove();
    drag.placeholder.remove();
    drag.el.classList.remove('is-drag-source');
    document.body.classList.remove('is-dragging');
    this.suppressClickUntil = Date.now() + 300;
  }
}
