// The card dialog: edit a task's fields and description, assign, tag,
// comment, see and add attachments; live while open.
//
// Field edits are ops on the WebSocket (task.update / task.move /
// task.assign / task.add_tags / task.remove_tags / task.delete), so they
// survive a dropped connection like any other op. Comments and attachments
// use their REST routes and are reloaded when their events arrive. While
// the dialog is open this connection's presence says it is viewing the
// task, and editing it while a field has focus: other people see a marker
// on the card.

import { clear, h, icon } from './dom.js';
import {
  PRIORITIES, STATUSES, avatar, dateFromInput, dateInputValue, describeError, fileSize, timeAgo, toast,
} from './ui.js';

export function eventTaskId(event) {
  const data = event.data || {};
  return data.task_id || (data.comment && data.comment.task_id) || (data.attachment && data.attachment.task_id)
    || (data.task && data.task.id) || null;
}

export class CardDialog {
  constructor(board, taskId) {
    this.board = board;
    this.app = board.app;
    this.realtime = board.realtime;
    this.projectId = board.projectId;
    this.taskId = taskId;
    this.task = null;
    this.editing = false;
    this.build();
    this.realtime.setPresence(this.projectId, { viewing: taskId, editing: null });
    this.loadComments();
    this.loadAttachments();
    this.refresh(board.lastView ? board.lastView.tasks.get(taskId) : undefined);
    this.panel.focus({ preventScroll: true }); // not a field: opening a card is viewing, not editing
  }

  // --- structure ------------------------------------------------------------------------

  build() {
    this.titleInput = h('textarea', {
      class: 'title-input', rows: '1', maxlength: '200', 'aria-label': 'Title', spellcheck: 'true',
    });
    this.titleInput.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') { e.preventDefault(); this.titleInput.blur(); }
      if (e.key === 'Escape') { e.stopPropagation(); this.titleInput.value = this.task ? this.task.title : ''; this.titleInput.blur(); }
    });
    this.titleInput.addEventListener('change', () => this.saveTitle());
    this.statusSelect = this.select(STATUSES, 'Status', (value) => {
      if (this.task && value !== this.task.status) this.op({ kind: 'task.move', task_id: this.taskId, status: value });
    });
    this.prioritySelect = this.select(PRIORITIES, 'Priority', (value) => {
      if (this.task && value !== this.task.priority) this.update({ priority: value });
    });
    this.assigneeSelect = h('select', { class: 'input', 'aria-label': 'Assignee' });
    this.assigneeSelect.addEventListener('change', () => {
      const value = this.assigneeSelect.value || null;
      if (this.task && value !== (this.task.assignee_id || null)) {
        this.op({ kind: 'task.assign', task_id: this.taskId, assignee_id: value });
      }
    });
    this.dueInput = h('input', { class: 'input', type: 'date', 'aria-label': 'Due date' });
    this.dueInput.addEventListener('change', () => {
      const value = dateFromInput(this.dueInput.value);
      if (this.task && dateInputValue(value) !== dateInputValue(this.task.due_date)) this.update({ due_date: value });
    });
    this.tagsEl = h('div', { class: 'tags-editor' });
    this.tagInput = h('input', { class: 'tag-input', placeholder: 'Add tag', maxlength: '50', 'aria-label': 'Add a tag' });
    this.tagInput.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' || e.key === ',') {
        e.preventDefault();
        const tag = this.tagInput.value.trim();
        if (tag) this.op({ kind: 'task.add_tags', task_id: this.taskId, tags: [tag] });
        this.tagInput.value = '';
      }
    });
    this.descriptionInput = h('textarea', {
      class: 'input description-input', rows: '6', maxlength: '20000', placeholder: 'Add a more detailed description…',
      'aria-label': 'Description',
    });
    this.descriptionActions = h('div', { class: 'row-actions', hidden: true },
      h('button', { class: 'btn btn-primary btn-sm', onclick: () => this.saveDescription() }, 'Save'),
      h('button', { class: 'btn btn-ghost btn-sm', onclick: () => this.resetDescription() }, 'Cancel'));
    this.descriptionInput.addEventListener('input', () => {
      this.descriptionActions.hidden = this.descriptionInput.value === ((this.task && this.task.description) || '');
    });
    this.descriptionInput.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) this.saveDescription();
    });
    this.othersEl = h('div', { class: 'others-editing', hidden: true });
    this.metaEl = h('p', { class: 'task-meta' });
    this.commentsEl = h('ol', { class: 'comments' });
    this.commentInput = h('textarea', {
      class: 'input', rows: '2', maxlength: '10000', placeholder: 'Write a comment…', 'aria-label': 'New comment',
    });
    this.commentForm = h('form', { class: 'comment-form' },
      avatar(this.app.userId, this.app.userName, { size: 'sm' }),
      h('div', { class: 'comment-compose' }, this.commentInput,
        h('div', { class: 'row-actions' }, h('button', { class: 'btn btn-primary btn-sm', type: 'submit' }, 'Comment'))));
    this.commentForm.addEventListener('submit', (e) => { e.preventDefault(); this.addComment(); });
    this.commentInput.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); this.addComment(); }
    });
    this.attachmentsEl = h('ul', { class: 'attachments' });
    this.fileInput = h('input', { type: 'file', class: 'visually-hidden', 'aria-label': 'Attach a file' });
    this.fileInput.addEventListener('change', () => this.upload());
    this.uploadButton = h('button', { class: 'btn btn-ghost btn-sm', onclick: () => this.fileInput.click() },
      icon('paperclip', 14), 'Attach file');

    this.panel = h('div', { class: 'dialog', role: 'dialog', 'aria-modal': 'true', 'aria-label': 'Task', tabindex: '-1', dataset: { taskId: this.taskId } },
      h('header', { class: 'dialog-head' },
        h('div', { class: 'dialog-status' }, this.statusSelect),
        h('button', { class: 'icon-btn', 'aria-label': 'Close', title: 'Close (Esc)', onclick: () => this.close() }, icon('x', 18))),
      this.titleInput,
      this.othersEl,
      h('div', { class: 'dialog-body' },
        h('div', { class: 'dialog-main' },
          h('section', { class: 'dialog-section' },
            h('h4', { class: 'section-title' }, 'Description'),
            this.descriptionInput,
            this.descriptionActions),
          h('section', { class: 'dialog-section' },
            h('div', { class: 'section-head' },
              h('h4', { class: 'section-title' }, icon('paperclip', 14), 'Attachments'),
              this.uploadButton, this.fileInput),
            this.attachmentsEl),
          h('section', { class: 'dialog-section' },
            h('h4', { class: 'section-title' }, icon('message', 14), 'Comments'),
            this.commentsEl,
            this.commentForm)),
        h('aside', { class: 'dialog-side' },
          this.field('Assignee', this.assigneeSelect),
          this.field('Priority', this.prioritySelect),
          this.field('Due date', this.dueInput),
          this.field('Tags', h('div', { class: 'tags-box' }, this.tagsEl, this.tagInput)),
          this.metaEl,
          h('button', { class: 'btn btn-danger btn-sm', onclick: () => this.remove() }, icon('trash', 14), 'Delete task'))));
    this.el = h('div', { class: 'dialog-backdrop' }, this.panel);
    this.el.addEventListener('pointerdown', (e) => { if (e.target === this.el) this.close(); });
    this.onKey = (e) => {
      if (e.key === 'Escape' && !e.defaultPrevented) this.close();
    };
    document.addEventListener('keydown', this.onKey);
    const isField = (node) => node instanceof Element && node !== this.panel && node.matches('input, textarea, select');
    this.panel.addEventListener('focusin', (e) => this.setEditing(isField(e.target)));
    this.panel.addEventListener('focusout', (e) => {
      if (!isField(e.relatedTarget) || !this.panel.contains(e.relatedTarget)) this.setEditing(false);
    });
    document.body.append(this.el);
    document.body.classList.add('has-dialog');
  }

  select(options, label, onChange) {
    const el = h('select', { class: 'input', 'aria-label': label },
      options.map((o) => h('option', { value: o.id }, o.label)));
    el.addEventListener('change', () => onChange(el.value));
    return el;
  }

  field(label, control) {
    return h('label', { class: 'field' }, h('span', { class: 'field-label' }, label), control);
  }

  setEditing(editing) {
    if (editing === this.editing) return;
    this.editing = editing;
    this.realtime.setPresence(this.projectId, { viewing: this.taskId, editing: editing ? this.taskId : null });
  }

  close() {
    this.app.navigate(`#/p/${this.projectId}`);
  }

  destroy() {
    document.removeEventListener('keydown', this.onKey);
    this.el.remove();
    document.body.classList.remove('has-dialog');
  }

  // --- live state -------------------------------------------------------------------------

  /** Show the task as the board has it now (unless the user is typing in that field). */
  refresh(task) {
    const replica = this.board.replica;
    if (!task) {
      if (replica.loaded && !this.realtime.pendingOps(this.projectId).some((p) => p.op.task_id === this.taskId)) {
        toast('This task no longer exists', 'info');
        this.close();
      }
      return;
    }
    this.task = task;
    const active = document.activeElement;
    if (active !== this.titleInput) this.titleInput.value = task.title;
    this.statusSelect.value = task.status;
    this.prioritySelect.value = task.priority;
    if (active !== this.dueInput) this.dueInput.value = dateInputValue(task.due_date);
    if (this.descriptionActions.hidden && active !== this.descriptionInput) this.descriptionInput.value = task.description || '';
    this.renderAssignees(task);
    this.renderTags(task);
    const creator = replica.memberName(task.created_by) || task.created_by_name || 'someone';
    this.metaEl.textContent = `Created by ${creator}${task.created_at ? ` · ${timeAgo(task.created_at)}` : ''}`
      + `${task.updated_at ? ` · updated ${timeAgo(task.updated_at)}` : ''}`;
    const editors = this.board.editingMarkers().get(this.taskId) || [];
    this.othersEl.hidden = !editors.length;
    this.othersEl.replaceChildren(icon('pencil', 13), `${editors.map((e) => e.username).join(', ')} ${editors.length > 1 ? 'are' : 'is'} editing this task`);
  }

  renderAssignees(task) {
    const replica = this.board.replica;
    const members = [...replica.members.values()].sort((a, b) => a.username.localeCompare(b.username));
    const options = [h('option', { value: '' }, 'Unassigned'),
      ...members.map((m) => h('option', { value: m.user_id }, m.display_name || m.username))];
    if (document.activeElement !== this.assigneeSelect) {
      this.assigneeSelect.replaceChildren(...options);
      this.assigneeSelect.value = task.assignee_id || '';
    }
  }

  renderTags(task) {
    clear(this.tagsEl);
    for (const tag of task.tags || []) {
      this.tagsEl.append(h('span', { class: 'tag tag-removable' }, tag,
        h('button', {
          class: 'tag-remove', 'aria-label': `Remove tag ${tag}`,
          onclick: () => this.op({ kind: 'task.remove_tags', task_id: this.taskId, tags: [tag] }),
        }, icon('x', 10))));
    }
  }

  onEvent(event) {
    if (eventTaskId(event) !== this.taskId) return;
    if (event.kind.startsWith('comment.')) this.loadComments();
    if (event.kind.startsWith('attachment.')) this.loadAttachments();
  }

  // --- writes ------------------------------------------------------------------------------

  op(op) {
    this.realtime.sendOp(this.projectId, op);
    this.board.queueRender();
  }

  update(fields) {
    this.op({ kind: 'task.update', task_id: this.taskId, fields });
  }

  saveTitle() {
    const title = this.titleInput.value.replace(/\s+/g, ' ').trim();
    if (!title) {
      this.titleInput.value = this.task ? this.task.title : '';
      return;
    }
    if (this.task && title !== this.task.title) this.update({ title });
  }

  saveDescription() {
    const description = this.descriptionInput.value;
    if (this.task && description !== (this.task.description || '')) this.update({ description });
    this.descriptionActions.hidden = true;
  }

  resetDescription() {
    this.descriptionInput.value = (this.task && this.task.description) || '';
    this.descriptionActions.hidden = true;
  }

  remove() {
    if (!window.confirm('Delete this task? This cannot be undone.')) return;
    this.op({ kind: 'task.delete', task_id: this.taskId });
    this.close();
  }

  // --- comments ----------------------------------------------------------------------------

  async loadComments() {
    try {
      const page = await this.app.api.comments(this.taskId);
      this.renderComments(page.data || []);
    } catch (error) {
      this.unavailable(this.commentsEl, error, 'Comments');
      if (error.status === 404 || error.status === 405) this.commentForm.hidden = true;
    }
  }

  renderComments(comments) {
    const replica = this.board.replica;
    this.commentsEl.replaceChildren(...comments.map((c) => {
      const name = replica.memberName(c.user_id) || c.username || 'someone';
      const own = c.user_id === this.app.userId;
      const body = h('div', { class: 'comment-content' }, c.content);
      const actions = own ? h('span', { class: 'comment-actions' },
        h('button', { class: 'link-btn', onclick: () => this.editComment(c, body) }, 'Edit'),
        h('button', { class: 'link-btn', onclick: () => this.deleteComment(c) }, 'Delete')) : null;
      return h('li', { class: 'comment', dataset: { commentId: c.id } },
        avatar(c.user_id, name, { size: 'sm' }),
        h('div', { class: 'comment-body' },
          h('div', { class: 'comment-head' },
            h('strong', {}, name),
            h('span', { class: 'muted' }, timeAgo(c.created_at)),
            c.updated_at && c.updated_at !== c.created_at ? h('span', { class: 'muted' }, '(edited)') : null,
            actions),
          body));
    }));
    if (!comments.length) this.commentsEl.append(h('li', { class: 'muted empty-note' }, 'No comments yet'));
  }

  async addComment() {
    const content = this.commentInput.value.trim();
    if (!content) return;
    try {
      await this.app.api.addComment(this.taskId, content);
      this.commentInput.value = '';
      await this.loadComments();
    } catch (error) {
      toast(`The comment was not posted: ${describeError(error)}`, 'error');
    }
  }

  editComment(comment, body) {
    const input = h('textarea', { class: 'input', rows: '3', maxlength: '10000', 'aria-label': 'Edit comment' });
    input.value = comment.content;
    const save = async () => {
      try {
        await this.app.api.editComment(this.taskId, comment.id, input.value.trim());
        await this.loadComments();
      } catch (error) {
        toast(describeError(error), 'error');
      }
    };
    body.replaceChildren(input, h('div', { class: 'row-actions' },
      h('button', { class: 'btn btn-primary btn-sm', onclick: save }, 'Save'),
      h('button', { class: 'btn btn-ghost btn-sm', onclick: () => this.loadComments() }, 'Cancel')));
    input.focus();
  }

  async deleteComment(comment) {
    if (!window.confirm('Delete this comment?')) return;
    try {
      await this.app.api.deleteComment(this.taskId, comment.id);
      await this.loadComments();
    } catch (error) {
      toast(describeError(error), 'error');
    }
  }

  // --- attachments -------------------------------------------------------------------------

  async loadAttachments() {
    try {
      const page = await this.app.api.attachments(this.taskId);
      this.renderAttachments(page.data || page || []);
    } catch (error) {
      this.unavailable(this.attachmentsEl, error, 'Attachments');
      if (error.status === 404 || error.status === 405) this.uploadButton.hidden = true;
    }
  }

  renderAttachments(items) {
    const replica = this.board.replica;
    this.attachmentsEl.replaceChildren(...(Array.isArray(items) ? items : []).map((a) => {
      const who = replica.memberName(a.uploaded_by) || 'someone';
      return h('li', { class: 'attachment', dataset: { attachmentId: a.id } },
        h('span', { class: 'attachment-icon' }, icon('paperclip', 14)),
        h('div', { class: 'attachment-info' },
          h('button', { class: 'link-btn attachment-name', onclick: () => this.download(a) }, a.filename),
          h('span', { class: 'muted' }, `${fileSize(a.file_size)} · ${who} · ${timeAgo(a.uploaded_at)}`)),
        h('button', { class: 'icon-btn', 'aria-label': `Download ${a.filename}`, onclick: () => this.download(a) }, icon('download', 14)),
        h('button', { class: 'icon-btn', 'aria-label': `Delete ${a.filename}`, onclick: () => this.deleteAttachment(a) }, icon('trash', 14)));
    }));
    if (!this.attachmentsEl.childElementCount) this.attachmentsEl.append(h('li', { class: 'muted empty-note' }, 'No attachments'));
  }

  async upload() {
    const file = this.fileInput.files && this.fileInput.files[0];
    if (!file) return;
    this.uploadButton.disabled = true;
    try {
      await this.app.api.uploadAttachment(this.taskId, file);
      await this.loadAttachments();
    } catch (error) {
      toast(`The file was not attached: ${describeError(error)}`, 'error');
    } finally {
      this.uploadButton.disabled = false;
      this.fileInput.value = '';
    }
  }

  async download(attachment) {
    // The route needs the Bearer token, so fetch it and hand the browser a blob: URL (never a token in a link).
    try {
      const response = await this.app.api.downloadAttachment(this.taskId, attachment.id);
      const url = URL.createObjectURL(await response.blob());
      const link = h('a', { href: url, download: attachment.filename, class: 'visually-hidden' });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (error) {
      toast(`Download failed: ${describeError(error)}`, 'error');
    }
  }

  async deleteAttachment(attachment) {
    if (!window.confirm(`Delete ${attachment.filename}?`)) return;
    try {
      await this.app.api.deleteAttachment(this.taskId, attachment.id);
      await this.loadAttachments();
    } catch (error) {
      toast(describeError(error), 'error');
    }
  }

  unavailable(listEl, error, what) {
    const missing = error && (error.status === 404 || error.status === 405);
    listEl.replaceChildren(h('li', { class: 'muted empty-note' },
      missing ? `${what} are not available on this server yet.` : `${what} could not be loaded: ${describeError(error)}`));
  }
}
