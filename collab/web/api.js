// The public REST API (docs/api.md), nothing else.
//
// Every call sends the access token as a Bearer header (never a cookie, never
// in a URL), refreshes it once on a 401, and turns problem+json answers into
// ApiError {status, code, detail, retryable, errors}.

import { SessionExpired } from './session.js';

export class ApiError extends Error {
  constructor(status, problem = {}) {
    super(problem.detail || problem.title || `Request failed (${status})`);
    this.name = 'ApiError';
    this.status = status;
    this.code = problem.code || (status === 0 ? 'network' : 'error');
    this.detail = problem.detail || problem.title || this.message;
    this.retryable = Boolean(problem.retryable) || status === 0;
    this.errors = problem.errors || null;
  }
}

export class Api {
  constructor(session) {
    this.session = session;
  }

  /**
   * request('GET', '/api/v1/projects', {query: {limit: 100}})
   * Options: json (a body to encode), form (FormData), query, raw (return the Response).
   */
  async request(method, path, { json, form, query, raw = false, auth = true } = {}) {
    let url = path;
    if (query) {
      const params = new URLSearchParams();
      for (const [key, value] of Object.entries(query)) {
        for (const item of [value].flat()) if (item !== undefined && item !== null) params.append(key, String(item));
      }
      url += `?${params}`;
    }
    for (let attempt = 0; ; attempt++) {
      const headers = { Accept: 'application/json' };
      let body;
      if (json !== undefined) {
        headers['Content-Type'] = 'application/json';
        body = JSON.stringify(json);
      } else if (form) {
        body = form;
      }
      if (auth) headers.Authorization = `Bearer ${await this.session.freshAccessToken()}`;
      let response;
      try {
        response = await fetch(url, { method, headers, body, credentials: 'omit', cache: 'no-store' });
      } catch (error) {
        throw new ApiError(0, { detail: 'The server cannot be reached', code: 'network', retryable: true });
      }
      if (response.status === 401 && auth && attempt === 0) {
        try {
          await this.session.refresh();
        } catch (error) {
          if (error instanceof SessionExpired) throw new ApiError(401, { code: 'unauthenticated', detail: error.message });
          throw error;
        }
        continue;
      }
      if (!response.ok) throw new ApiError(response.status, await problemOf(response));
      if (raw) return response;
      if (response.status === 204) return null;
      return response.json();
    }
  }

  get(path, query) { return this.request('GET', path, { query }); }
  post(path, json) { return this.request('POST', path, { json }); }
  put(path, json) { return this.request('PUT', path, { json }); }
  del(path) { return this.request('DELETE', path); }

  // --- accounts ---
  login(email, password) {
    return this.request('POST', '/api/v1/auth/login', { json: { email, password }, auth: false });
  }
  register(fields) {
    return this.request('POST', '/api/v1/auth/register', { json: fields, auth: false });
  }
  logout() { return this.request('POST', '/api/v1/auth/logout'); }
  me() { return this.get('/api/v1/users/me'); }
  searchUsers(q) { return this.get('/api/v1/users', { q, limit: 10 }); }

  // --- projects ---
  projects() { return this.get('/api/v1/projects', { limit: 100 }); }
  project(id) { return this.get(`/api/v1/projects/${encodeURIComponent(id)}`); }
  createProject(fields) { return this.post('/api/v1/projects', fields); }
  addMember(projectId, userId, role = 'member') {
    return this.post(`/api/v1/projects/${encodeURIComponent(projectId)}/members`, { user_id: userId, role });
  }

  // --- comments and attachments (GET|POST .../comments, .../attachments) ---
  comments(taskId) { return this.get(`/api/v1/tasks/${encodeURIComponent(taskId)}/comments`, { limit: 100 }); }
  addComment(taskId, content) { return this.post(`/api/v1/tasks/${encodeURIComponent(taskId)}/comments`, { content }); }
  editComment(taskId, id, content) {
    return this.put(`/api/v1/tasks/${encodeURIComponent(taskId)}/comments/${encodeURIComponent(id)}`, { content });
  }
  deleteComment(taskId, id) {
    return this.del(`/api/v1/tasks/${encodeURIComponent(taskId)}/comments/${encodeURIComponent(id)}`);
  }
  attachments(taskId) { return this.get(`/api/v1/tasks/${encodeURIComponent(taskId)}/attachments`, { limit: 100 }); }
  uploadAttachment(taskId, file) {
    const form = new FormData();
    form.append('file', file, file.name);
    return this.request('POST', `/api/v1/tasks/${encodeURIComponent(taskId)}/attachments`, { form });
  }
  downloadAttachment(taskId, id) {
    return this.request('GET', `/api/v1/tasks/${encodeURIComponent(taskId)}/attachments/${encodeURIComponent(id)}`, { raw: true });
  }
  deleteAttachment(taskId, id) {
    return this.del(`/api/v1/tasks/${encodeURIComponent(taskId)}/attachments/${encodeURIComponent(id)}`);
  }

  // --- notifications ---
  notifications() { return this.get('/api/v1/notifications', { limit: 20 }); }
  markRead(id) { return this.put(`/api/v1/notifications/${encodeURIComponent(id)}/read`); }
  markAllRead() { return this.put('/api/v1/notifications/read-all'); }
}

async function problemOf(response) {
  try {
    const type = response.headers.get('Content-Type') || '';
    if (type.includes('json')) return await response.json();
  } catch {
    // fall through
  }
  return { detail: `${response.status} ${response.statusText}`.trim() };
}
