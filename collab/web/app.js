// The board's entry point: the shell (top bar, connection status, bell,
// account menu) and the router over the URL fragment:
//   #/signin  #/signup  #/projects  #/p/<project id>  #/p/<project id>/t/<task id>
// The page itself is always "/", so the server serves one document.

import { Api } from './api.js';
import { AuthView } from './auth.js';
import { BoardView } from './board.js';
import { h, icon } from './dom.js';
import { NotificationBell } from './notifications.js';
import { ProjectsView } from './projects.js';
import { Realtime } from './realtime.js';
import { Session } from './session.js';
import { avatar, describeError, toast } from './ui.js';

const UUID = '[0-9a-fA-F-]{36}';
const ROUTES = [
  [new RegExp(`^#/p/(${UUID})/t/(${UUID})$`), 'task'],
  [new RegExp(`^#/p/(${UUID})$`), 'board'],
  [/^#\/projects$/, 'projects'],
  [/^#\/signin$/, 'signin'],
  [/^#\/signup$/, 'signup'],
];

class App {
  constructor(root) {
    this.root = root;
    this.session = new Session();
    this.api = new Api(this.session);
    this.realtime = null;
    this.bell = null;
    this.view = null;
    this.viewKey = null;
    this.session.addEventListener('signedout', () => this.signedOut());
    window.addEventListener('hashchange', () => this.route());
    // Unsent ops survive a reload (sessionStorage) but not closing the tab: ask first.
    window.addEventListener('beforeunload', (event) => {
      if (this.realtime && this.realtime.unanswered() > 0) event.preventDefault();
    });
    this.buildShell();
  }

  get userId() {
    return this.session.user ? this.session.user.id : null;
  }

  get userName() {
    const user = this.session.user;
    return user ? user.display_name || user.username : '';
  }

  start() {
    if (this.session.signedIn) this.startRealtime();
    this.route();
  }

  // --- the shell -----------------------------------------------------------------------

  buildShell() {
    this.connEl = h('div', { class: 'conn', id: 'conn', dataset: { state: 'idle' }, role: 'status', 'aria-live': 'polite' },
      h('span', { class: 'conn-dot' }), h('span', { class: 'conn-text' }, ''));
    this.retryButton = h('button', { class: 'link-btn', hidden: true, onclick: () => this.realtime && this.realtime.reconnectNow() }, 'Retry now');
    this.banner = h('div', { class: 'banner', id: 'offline-banner', hidden: true },
      h('span', { class: 'banner-text' }, ''), this.retryButton);
    this.userEl = h('div', { class: 'user-menu' });
    this.bellHost = h('div', { class: 'bell-host' });
    this.topbar = h('header', { class: 'topbar', hidden: true },
      h('a', { class: 'brand', href: '#/projects' }, h('span', { class: 'brand-mark' }, icon('check', 14)), 'Collab'),
      h('div', { class: 'topbar-spacer' }),
      this.connEl,
      this.bellHost,
      this.userEl);
    this.main = h('div', { class: 'main' });
    this.root.replaceChildren(h('div', { class: 'chrome' }, this.topbar, this.banner), this.main);
  }

  renderUser() {
    const user = this.session.user;
    if (!user) {
      this.userEl.replaceChildren();
      return;
    }
    this.userEl.replaceChildren(
      avatar(user.id, this.userName, { size: 'md', title: `Signed in as ${this.userName}` }),
      h('span', { class: 'user-name' }, this.userName),
      h('button', { class: 'icon-btn', 'aria-label': 'Sign out', title: 'Sign out', onclick: () => this.signOut() }, icon('logout', 16)));
  }

  showConnection({ state, retryInMs, code }) {
    const pending = this.realtime ? this.realtime.unanswered() : 0;
    const labels = {
      idle: '', connecting: 'Connecting…', syncing: 'Catching up…', online: 'Live',
      reconnecting: 'Reconnecting…', closed: 'Offline',
    };
    const previous = this.connEl.dataset.state;
    this.connEl.dataset.state = state;
    let text = labels[state] ?? state;
    if (state === 'online' && (previous === 'syncing' || previous === 'reconnecting') && this.wasDisconnected) {
      text = 'Live · caught up';
      this.wasDisconnected = false;
      this.connEl.dataset.resumes = String(Number(this.connEl.dataset.resumes || 0) + 1);
      clearTimeout(this.caughtUpTimer);
      this.caughtUpTimer = setTimeout(() => {
        if (this.connEl.dataset.state === 'online') this.connEl.querySelector('.conn-text').textContent = 'Live';
      }, 4000);
    }
    this.connEl.querySelector('.conn-text').textContent = text;
    if (state === 'reconnecting' || state === 'closed') this.wasDisconnected = true;
    const offline = state === 'reconnecting' || state === 'closed';
    this.banner.hidden = !offline;
    this.retryButton.hidden = state !== 'reconnecting';
    if (offline) {
      const kept = pending ? ` ${pending} change${pending === 1 ? '' : 's'} will be sent when the connection is back.` : ' Your changes are kept and will be sent when it is back.';
      const lead = state === 'closed'
        ? (code === 4503 ? 'Too many open tabs: close some and reload.' : 'Disconnected.')
        : `Connection lost. Reconnecting${retryInMs ? ` in ${Math.ceil(retryInMs / 1000)} s` : ''}…`;
      this.banner.querySelector('.banner-text').textContent = lead + (state === 'closed' ? '' : kept);
    }
  }

  // --- session --------------------------------------------------------------------------------

  async signIn(email, password) {
    const tokens = await this.api.login(email, password);
    this.session.set(tokens);
    this.startRealtime();
    this.navigate('#/projects');
  }

  startRealtime() {
    if (this.realtime) return;
    const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    this.realtime = new Realtime({
      url: `${scheme}//${window.location.host}/ws`,
      token: () => this.session.freshAccessToken(),
      refresh: () => this.session.refresh(),
      storageKey: `collab.pending.${this.userId}`,
    });
    this.realtime.addEventListener('state', (e) => {
      this.showConnection(e.detail);
      if (e.detail.state === 'closed' && e.detail.code === 4501) {
        toast('Your session ended; please sign in again', 'error');
        this.session.clear();
      }
    });
    this.realtime.addEventListener('pending', () => {
      if (this.realtime && this.realtime.state !== 'online') this.showConnection({ state: this.realtime.state });
    });
    this.realtime.start();
    this.bell = new NotificationBell(this);
    this.bellHost.replaceChildren(this.bell.el);
    this.renderUser();
    this.topbar.hidden = false;
    // Read-only figures for the browser tests and the curious (no tokens).
    const realtime = this.realtime;
    window.collabDebug = Object.freeze({
      state: () => realtime.state,
      stats: () => ({ ...realtime.stats }),
      unanswered: () => realtime.unanswered(),
    });
  }

  async signOut() {
    try {
      await this.api.logout();
    } catch (error) {
      if (error.status !== 401) toast(describeError(error), 'error');
    }
    this.session.clear();
  }

  signedOut() {
    if (this.view) this.view.destroy();
    this.view = null;
    this.viewKey = null;
    if (this.realtime) this.realtime.stop();
    if (this.bell) this.bell.destroy();
    this.realtime = null;
    this.bell = null;
    this.bellHost.replaceChildren();
    this.topbar.hidden = true;
    this.banner.hidden = true;
    this.navigate('#/signin');
  }

  // --- routing ------------------------------------------------------------------------------

  navigate(hash) {
    if (window.location.hash === hash) this.route();
    else window.location.hash = hash;
  }

  route() {
    const hash = window.location.hash || '#/projects';
    let name = null;
    let args = [];
    for (const [pattern, routeName] of ROUTES) {
      const match = hash.match(pattern);
      if (match) {
        name = routeName;
        args = match.slice(1).map((s) => s.toLowerCase());
        break;
      }
    }
    const signedIn = this.session.signedIn;
    if (!signedIn && name !== 'signin' && name !== 'signup') return this.navigate('#/signin');
    if (signedIn && (name === 'signin' || name === 'signup' || name === null)) return this.navigate('#/projects');
    const key = name === 'task' ? `board:${args[0]}` : `${name}:${args[0] || ''}`;
    if (key !== this.viewKey) {
      if (this.view) this.view.destroy();
      this.viewKey = key;
      if (name === 'signin' || name === 'signup') this.view = new AuthView(this, name);
      else if (name === 'projects') this.view = new ProjectsView(this);
      else this.view = new BoardView(this, args[0]);
      this.main.replaceChildren(this.view.el);
      document.body.dataset.view = name === 'task' ? 'board' : name;
    }
    if (this.view instanceof BoardView) {
      if (name === 'task') this.view.openTask(args[1]);
      else this.view.closeTask();
    }
    return undefined;
  }
}

const app = new App(document.getElementById('app'));
app.start();
