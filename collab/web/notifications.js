// The notification bell: unread count and the latest notifications.
//
// Loaded from REST (GET /api/v1/notifications, which also answers the unread
// count) on start and after every reconnect (frames sent while we were away
// are not replayed), and kept current by the `notification` frames the
// server pushes to every socket of the user.

import { h, icon } from './dom.js';
import { describeError, timeAgo, toast } from './ui.js';

export class NotificationBell {
  constructor(app) {
    this.app = app;
    this.items = [];
    this.unread = 0;
    this.badge = h('span', { class: 'badge', hidden: true, 'aria-live': 'polite' });
    this.button = h('button', {
      class: 'icon-btn bell', 'aria-label': 'Notifications', 'aria-haspopup': 'true', 'aria-expanded': 'false',
      onclick: () => this.toggle(),
    }, icon('bell', 18), this.badge);
    this.list = h('ul', { class: 'notification-list' });
    this.panel = h('div', { class: 'popover notifications-panel', hidden: true },
      h('div', { class: 'panel-head' },
        h('h3', { class: 'panel-title' }, 'Notifications'),
        h('button', { class: 'link-btn', onclick: () => this.markAllRead() }, 'Mark all read')),
      this.list);
    this.el = h('div', { class: 'bell-anchor' }, this.button, this.panel);
    this.onDocClick = (e) => { if (!this.el.contains(e.target)) this.close(); };
    this.onNotification = (e) => this.pushed(e.detail.notification);
    this.onState = (e) => { if (e.detail.state === 'online') this.load(); };
    app.realtime.addEventListener('notification', this.onNotification);
    app.realtime.addEventListener('state', this.onState);
    this.load();
  }

  destroy() {
    this.app.realtime.removeEventListener('notification', this.onNotification);
    this.app.realtime.removeEventListener('state', this.onState);
    document.removeEventListener('pointerdown', this.onDocClick);
  }

  async load() {
    try {
      const page = await this.app.api.notifications();
      this.items = page.data || [];
      this.unread = Number(page.unread_count ?? this.items.filter((n) => !n.is_read).length);
      this.render();
    } catch (error) {
      if (error.status !== 401) console.warn('notifications:', describeError(error));
    }
  }

  pushed(notification) {
    if (!notification || !notification.id || this.items.some((n) => n.id === notification.id)) return;
    this.items = [notification, ...this.items].slice(0, 50);
    if (!notification.is_read) this.unread += 1;
    this.render();
    toast(notification.title || 'New notification', 'info');
  }

  render() {
    this.badge.hidden = this.unread === 0;
    this.badge.textContent = this.unread > 99 ? '99+' : String(this.unread);
    this.button.setAttribute('aria-label', `Notifications (${this.unread} unread)`);
    this.button.dataset.unread = String(this.unread);
    this.list.replaceChildren(...this.items.map((n) => h('li', {
      class: ['notification', !n.is_read && 'is-unread'],
      dataset: { notificationId: n.id },
    }, h('button', { class: 'notification-btn', onclick: () => this.open(n) },
      h('span', { class: 'notification-title' }, n.title || n.type),
      n.message ? h('span', { class: 'notification-message' }, n.message) : null,
      h('span', { class: 'muted notification-time' }, timeAgo(n.created_at))))));
    if (!this.items.length) this.list.append(h('li', { class: 'muted empty-note' }, 'You are all caught up'));
  }

  toggle() {
    if (this.panel.hidden) {
      this.panel.hidden = false;
      this.button.setAttribute('aria-expanded', 'true');
      document.addEventListener('pointerdown', this.onDocClick);
      this.load();
    } else {
      this.close();
    }
  }

  close() {
    this.panel.hidden = true;
    this.button.setAttribute('aria-expanded', 'false');
    document.removeEventListener('pointerdown', this.onDocClick);
  }

  async open(notification) {
    this.close();
    if (!notification.is_read) {
      notification.is_read = true;
      this.unread = Math.max(0, this.unread - 1);
      this.render();
      this.app.api.markRead(notification.id).catch((error) => toast(describeError(error), 'error'));
    }
    if (notification.project_id && notification.entity_type === 'task' && notification.entity_id) {
      this.app.navigate(`#/p/${notification.project_id}/t/${notification.entity_id}`);
    } else if (notification.project_id) {
      this.app.navigate(`#/p/${notification.project_id}`);
    }
  }

  async markAllRead() {
    try {
      await this.app.api.markAllRead();
      for (const n of this.items) n.is_read = true;
      this.unread = 0;
      this.render();
    } catch (error) {
      toast(describeError(error), 'error');
    }
  }
}
