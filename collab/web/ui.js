// Small shared pieces of the interface: constants, avatars, dates, toasts.

import { h, icon } from './dom.js';

export const STATUSES = [
  { id: 'todo', label: 'To do' },
  { id: 'in_progress', label: 'In progress' },
  { id: 'in_review', label: 'In review' },
  { id: 'done', label: 'Done' },
  { id: 'cancelled', label: 'Cancelled' },
];
export const PRIORITIES = [
  { id: 'low', label: 'Low' },
  { id: 'medium', label: 'Medium' },
  { id: 'high', label: 'High' },
  { id: 'urgent', label: 'Urgent' },
];
export const statusLabel = (id) => (STATUSES.find((s) => s.id === id) || { label: id }).label;
export const priorityLabel = (id) => (PRIORITIES.find((p) => p.id === id) || { label: id }).label;

/** A stable palette index (0-7) for a key (FNV-1a), so a person keeps their colour everywhere. */
export function colourIndex(key) {
  let hash = 0x811c9dc5;
  for (const ch of String(key || '')) hash = Math.imul(hash ^ ch.codePointAt(0), 0x01000193) >>> 0;
  return hash % 8;
}

export function initials(name) {
  const words = String(name || '?').replace(/[_.@-]+/g, ' ').trim().split(/\s+/).filter(Boolean);
  const letters = words.length > 1 ? words[0][0] + words[1][0] : (words[0] || '?').slice(0, 2);
  return letters.toUpperCase();
}

/** A round avatar with initials; the name is its tooltip and accessible label. */
export function avatar(userId, name, { size = 'md', title } = {}) {
  return h('span', {
    class: ['avatar', `avatar-${size}`, `av-${colourIndex(name || userId)}`],
    title: title || name || '',
    'aria-label': title || name || '',
    role: 'img',
  }, initials(name));
}

const DAY_MS = 24 * 3600 * 1000;

/** "Today", "Tomorrow", "Mar 4", "Mar 4, 2031" for a due date (ISO string). */
export function dueLabel(iso) {
  if (!iso) return '';
  const due = new Date(iso);
  if (Number.isNaN(due.getTime())) return '';
  const today = new Date();
  const days = Math.round((startOfDay(due) - startOfDay(today)) / DAY_MS);
  if (days === 0) return 'Today';
  if (days === 1) return 'Tomorrow';
  if (days === -1) return 'Yesterday';
  const sameYear = due.getFullYear() === today.getFullYear();
  return due.toLocaleDateString(undefined, { month: 'short', day: 'numeric', ...(sameYear ? {} : { year: 'numeric' }) });
}

export function isOverdue(task) {
  if (!task.due_date || task.status === 'done' || task.status === 'cancelled') return false;
  return startOfDay(new Date(task.due_date)) < startOfDay(new Date());
}

function startOfDay(date) {
  return new Date(date.getFullYear(), date.getMonth(), date.getDate()).getTime();
}

/** The yyyy-mm-dd an <input type=date> shows for an ISO instant (in the user's time zone). */
export function dateInputValue(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/** An <input type=date> value as the ISO instant the API stores (noon UTC keeps the day in every zone nearby). */
export function dateFromInput(value) {
  return value ? `${value}T12:00:00Z` : null;
}

export function timeAgo(iso) {
  const then = new Date(iso).getTime();
  if (Number.isNaN(then)) return '';
  const s = Math.max(0, Math.round((Date.now() - then) / 1000));
  if (s < 45) return 'just now';
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  if (s < 7 * 86400) return `${Math.round(s / 86400)} d ago`;
  return new Date(iso).toLocaleDateString();
}

export function fileSize(bytes) {
  if (!Number.isFinite(bytes)) return '';
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

// --- toasts ------------------------------------------------------------------------

let toastHost = null;

/** A short message at the bottom of the screen; kind: info, error, success. */
export function toast(message, kind = 'info', timeoutMs = 4000) {
  if (!toastHost) {
    toastHost = h('div', { class: 'toasts', role: 'status', 'aria-live': 'polite' });
    document.body.append(toastHost);
  }
  const item = h('div', { class: ['toast', `toast-${kind}`] },
    h('span', { class: 'toast-text' }, message),
    h('button', { class: 'icon-btn toast-close', 'aria-label': 'Dismiss', onclick: () => item.remove() }, icon('x', 14)));
  toastHost.append(item);
  setTimeout(() => item.remove(), timeoutMs);
  return item;
}

/** A message for an ApiError or any other failure. */
export function describeError(error) {
  if (!error) return 'Something went wrong';
  if (error.errors && error.errors.length) {
    return error.errors.map((e) => `${(e.loc || []).slice(-1)[0] || 'input'}: ${e.message}`).join('; ');
  }
  return error.detail || error.message || 'Something went wrong';
}
