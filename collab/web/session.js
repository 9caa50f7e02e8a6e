// The signed-in session: tokens and the user, kept in this tab's sessionStorage.
//
// Why sessionStorage (docs/board.md "Tokens"): it is readable only by pages
// of this origin in this tab, it is not sent with any request on its own (so
// no CSRF), and it ends with the tab. Other sites cannot read it; the one
// way to reach it would be script running in our page, which the strict CSP
// (no inline code, scripts only from this origin) and text-only rendering
// are there to prevent.
//
// Refresh tokens rotate on every use (a reused one ends the session), so a
// refresh is single-flight: concurrent callers share one request.

const KEY = 'collab.session';
const REFRESH_MARGIN_MS = 60 * 1000;

export class SessionExpired extends Error {
  constructor(message = 'Your session ended; sign in again') {
    super(message);
    this.name = 'SessionExpired';
  }
}

export class Session extends EventTarget {
  constructor(storage = window.sessionStorage) {
    super();
    this.storage = storage;
    this.data = null;
    this.refreshing = null;
    try {
      this.data = JSON.parse(storage.getItem(KEY) || 'null');
    } catch {
      this.data = null;
    }
  }

  get signedIn() {
    return Boolean(this.data && this.data.refresh_token);
  }

  get user() {
    return this.data ? this.data.user : null;
  }

  set user(user) {
    if (!this.data) return;
    this.data.user = user;
    this.save();
  }

  /** Store a login or refresh answer ({access_token, refresh_token, expires_in, user?}). */
  set(tokens) {
    this.data = {
      access_token: tokens.access_token,
      refresh_token: tokens.refresh_token,
      expires_at: Date.now() + (Number(tokens.expires_in) || 900) * 1000,
      user: tokens.user || (this.data && this.data.user) || null,
    };
    this.save();
  }

  save() {
    this.storage.setItem(KEY, JSON.stringify(this.data));
  }

  clear() {
    const wasSignedIn = this.signedIn;
    this.data = null;
    this.storage.removeItem(KEY);
    if (wasSignedIn) this.dispatchEvent(new Event('signedout'));
  }

  /** An access token valid for at least a minute more (refreshing first when needed). */
  async freshAccessToken() {
    if (!this.signedIn) throw new SessionExpired('Not signed in');
    if (this.data.expires_at - Date.now() > REFRESH_MARGIN_MS) return this.data.access_token;
    await this.refresh();
    return this.data.access_token;
  }

  /** Rotate the tokens now; SessionExpired (and signed out) when the server refuses. */
  refresh() {
    if (!this.refreshing) {
      this.refreshing = this.doRefresh().finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  async doRefresh() {
    if (!this.signedIn) throw new SessionExpired('Not signed in');
    const used = this.data.refresh_token;
    let response;
    try {
      response = await fetch('/api/v1/auth/refresh', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ refresh_token: used }),
        credentials: 'omit',
      });
    } catch (error) {
      throw Object.assign(new Error('The server cannot be reached'), { code: 'network', retryable: true });
    }
    if (response.status === 401 || response.status === 403) {
      if (this.data && this.data.refresh_token === used) this.clear();
      throw new SessionExpired();
    }
    if (!response.ok) {
      throw Object.assign(new Error(`Refreshing the session failed (${response.status})`), { retryable: true });
    }
    this.set(await response.json());
  }
}
