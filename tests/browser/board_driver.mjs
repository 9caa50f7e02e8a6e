// Browser test driver for the Collab board (run by tests/browser/test_board.py).
//
// Two browser contexts (alice and bob, the demo users) on one board, in
// Debian's chromium through playwright-core. The driver talks to pytest with
// JSON lines: on stdout it reports progress ({"event": "step"}), asks for the
// server to be stopped or started ({"event": "stop-server"} / "start-server",
// answered on stdin with "stopped" / "started") and ends with one
// {"event": "result", ok, checks, error, screenshots}. On failure every page
// is photographed into ARTIFACTS_DIR.
//
// Environment: BASE_URL, ARTIFACTS_DIR, PROJECT_ID, DEMO_PASSWORD.

import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import {
  api, card, columnIds, dragCard, launch, openBoard, openPage, signIn,
} from './lib.mjs';

const BASE = process.env.BASE_URL;
const ARTIFACTS = process.env.ARTIFACTS_DIR || fs.mkdtempSync('/tmp/collab-board-');
const PROJECT = process.env.PROJECT_ID;
const PASSWORD = process.env.DEMO_PASSWORD;
const LIVE_MS = 1000; // "a card moved in one appears moved in the other within a second"
const SETTLE_MS = 15_000;
const XSS = '<img src=x onerror="window.__xss=(window.__xss||0)+1">';

const checks = [];
const pages = [];
const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
const step = (name) => emit({ event: 'step', name });
const pass = (name, detail = '') => { checks.push({ name, ok: true, detail }); step(`ok: ${name}${detail ? ` (${detail})` : ''}`); };

const stdinLines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function askPytest(event, expected) {
  emit({ event });
  const { value, done } = await stdinLines.next();
  if (done || value.trim() !== expected) throw new Error(`pytest answered ${JSON.stringify(value)} to ${event}`);
}

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

async function login(email) {
  return (await api(BASE, 'POST', '/api/v1/auth/login', { json: { email, password: PASSWORD } })).access_token;
}

async function routeExists(token, url) {
  const response = await fetch(`${BASE}${url}`, { headers: { Authorization: `Bearer ${token}` } });
  return response.status !== 404 && response.status !== 405;
}

async function main() {
  const browser = await launch();
  try {
    const alice = await openPage(browser, 'alice');
    const bob = await openPage(browser, 'bob');
    pages.push(alice.page, bob.page);
    const A = alice.page;
    const B = bob.page;

    // --- sign in, open the board ----------------------------------------------------------
    await signIn(A, BASE, 'alice@demo.local', PASSWORD);
    await signIn(B, BASE, 'bob@demo.local', PASSWORD);
    await openBoard(A, PROJECT);
    await openBoard(B, PROJECT);
    const tokenA = await A.evaluate(() => JSON.parse(sessionStorage.getItem('collab.session')).access_token);
    assert(!(await A.evaluate(() => localStorage.length)), 'nothing is kept in localStorage');
    assert(!(await A.context().cookies()).length, 'no cookies are set');
    assert(typeof tokenA === 'string' && tokenA.length > 20, 'the session is kept in sessionStorage');
    pass('two users signed in, board open and live in both; tokens in sessionStorage, no cookies');

    // --- presence ----------------------------------------------------------------------------
    await A.locator('.presence .presence-avatar[data-username="bob"]').waitFor({ timeout: SETTLE_MS });
    await B.locator('.presence .presence-avatar[data-username="alice"]').waitFor({ timeout: SETTLE_MS });
    pass('presence avatars show the other user');

    // --- a move between columns appears in the other browser within a second ---------------
    const todo = await columnIds(A, 'todo');
    const inProgress = await columnIds(A, 'in_progress');
    const moving = todo[0];
    await dragCard(A, moving, 'in_progress', inProgress[0]);
    await A.locator(`.card-list[data-status="in_progress"] .card[data-task-id="${moving}"]`).waitFor({ timeout: 2000 });
    const started = Date.now();
    await B.waitForFunction(
      ([id]) => document.querySelector('.card-list[data-status="in_progress"] .card')?.dataset.taskId === id,
      [moving], { timeout: LIVE_MS },
    );
    const tookMs = Date.now() - started;
    const expected = [moving, ...inProgress];
    assert(JSON.stringify(await columnIds(B, 'in_progress')) === JSON.stringify(expected), 'bob sees the same in-progress order');
    await A.waitForFunction(() => !document.querySelector('.card.is-pending'), null, { timeout: SETTLE_MS });
    assert(JSON.stringify(await columnIds(A, 'in_progress')) === JSON.stringify(expected), 'alice keeps the order after the ack');
    const server = await api(BASE, 'GET', `/api/v1/tasks/${moving}`, { token: tokenA });
    assert(server.status === 'in_progress', `the server has the task in ${server.status}`);
    pass('a card dragged to another column appears there in the other browser within a second', `${tookMs} ms`);

    // --- a move within a column ----------------------------------------------------------------
    const review = await columnIds(A, 'in_review');
    assert(review.length >= 2, 'the demo has cards in review');
    const last = review[review.length - 1];
    await dragCard(A, last, 'in_review', review[0]);
    const reordered = [last, ...review.slice(0, -1)];
    await B.waitForFunction(
      ([want]) => JSON.stringify([...document.querySelectorAll('.card-list[data-status="in_review"] .card')].map((e) => e.dataset.taskId)) === want,
      [JSON.stringify(reordered)], { timeout: LIVE_MS },
    );
    pass('a card reordered within its column is reordered in the other browser');

    // --- an edit over REST appears on both boards -----------------------------------------------
    const edited = inProgress[1] || inProgress[0];
    const title = `Edited over REST ${Date.now()}`;
    await api(BASE, 'PUT', `/api/v1/tasks/${edited}`, { token: tokenA, json: { title, priority: 'urgent' } });
    for (const page of [A, B]) {
      await page.waitForFunction(
        ([id, want]) => document.querySelector(`.card[data-task-id="${id}"] .card-title`)?.textContent === want,
        [edited, title], { timeout: 2000 },
      );
      assert(await card(page, edited).evaluate((el) => el.classList.contains('card-prio-urgent')), 'the priority changed too');
    }
    pass('an edit made over REST appears on both boards');

    // --- injected markup renders as text and never runs -------------------------------------------
    const injected = await api(BASE, 'POST', '/api/v1/tasks', {
      token: tokenA, json: { project_id: PROJECT, title: XSS, description: XSS, tags: ['<b>x</b>'] },
    });
    for (const page of [A, B]) {
      const titleEl = page.locator(`.card[data-task-id="${injected.id}"] .card-title`);
      await titleEl.waitFor({ timeout: 2000 });
      assert((await titleEl.textContent()) === XSS, 'the title is shown as the literal text');
      assert((await page.locator('.board img').count()) === 0, 'no <img> element was created on the board');
      assert((await card(page, injected.id).locator('.tag').first().textContent()) === '<b>x</b>', 'a tag is text');
    }
    await B.locator(`.card[data-task-id="${injected.id}"]`).click();
    await B.locator('.dialog').waitFor();
    assert((await B.locator('.dialog .title-input').inputValue()) === XSS, 'the dialog shows the title as text');
    assert((await B.locator('.dialog .description-input').inputValue()) === XSS, 'the dialog shows the description as text');
    assert((await B.locator('.dialog img').count()) === 0, 'no <img> in the dialog');
    await B.keyboard.press('Escape');
    await B.locator('.dialog').waitFor({ state: 'detached' });
    for (const page of [A, B]) {
      assert((await page.evaluate(() => window.__xss)) === undefined, `${page.name}: the onerror handler never ran`);
    }
    pass('an injected <img onerror> title renders as text and never executes');

    // --- "editing" markers ----------------------------------------------------------------------------
    const target = (await columnIds(A, 'todo'))[0];
    await card(B, target).click();
    await B.locator('.dialog .description-input').click();
    await card(A, target).locator('.editing-marker').filter({ hasText: 'bob' }).waitFor({ timeout: 3000 });
    await A.locator('.presence .presence-avatar.is-editing[data-username="bob"]').waitFor({ timeout: 3000 });
    // bob edits the description in the dialog: alice's card shows no change in title but bob's dialog saves it.
    await B.locator('.dialog .description-input').fill('Written in the dialog');
    await B.locator('.dialog .row-actions button', { hasText: 'Save' }).first().click();
    await B.keyboard.press('Escape');
    await B.locator('.dialog').waitFor({ state: 'detached' });
    await card(A, target).locator('.editing-marker').waitFor({ state: 'detached', timeout: 3000 });
    const described = await api(BASE, 'GET', `/api/v1/tasks/${target}`, { token: tokenA });
    assert(described.description === 'Written in the dialog', `the description was saved: ${described.description}`);
    pass('opening a card and typing shows an "editing" marker to the other user; the edit is saved');

    // --- comments and attachments (when the server has them) ----------------------------------------
    if (await routeExists(tokenA, `/api/v1/tasks/${target}/comments`)) {
      await card(A, target).click();
      await card(B, target).click();
      await A.locator('.dialog .comment-form textarea').fill(XSS);
      await A.locator('.dialog .comment-form button[type=submit]').click();
      const comment = B.locator('.dialog .comment .comment-content').filter({ hasText: 'onerror' });
      await comment.waitFor({ timeout: 3000 });
      assert((await comment.first().textContent()) === XSS, 'the comment is shown as text');
      assert((await B.locator('.dialog img').count()) === 0, 'a comment makes no <img>');
      if (await routeExists(tokenA, `/api/v1/tasks/${target}/attachments`)) {
        await A.locator('.dialog input[type=file]').setInputFiles({
          name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('hello from the browser test\n'),
        });
        await B.locator('.dialog .attachment-name', { hasText: 'notes.txt' }).waitFor({ timeout: 5000 });
        pass('a comment and an attachment added in one browser appear live in the other, as text');
      } else {
        pass('a comment added in one browser appears live in the other, as text', 'no attachments route: not tested');
      }
      for (const page of [A, B]) {
        await page.keyboard.press('Escape');
        await page.locator('.dialog').waitFor({ state: 'detached' });
      }
    } else {
      checks.push({ name: 'comments', ok: true, detail: 'skipped: the server has no comments route' });
    }

    // --- notifications: bell count from a pushed frame --------------------------------------------
    const bell = A.locator('.bell');
    const before = Number(await bell.getAttribute('data-unread'));
    const tokenB = await login('bob@demo.local');
    const unassigned = (await columnIds(B, 'todo')).find(Boolean);
    await api(BASE, 'PUT', `/api/v1/tasks/${unassigned}/assign`, { token: tokenA, json: { assignee_id: null } });
    await api(BASE, 'PUT', `/api/v1/tasks/${unassigned}/assign`, {
      token: tokenB, json: { assignee_id: (await api(BASE, 'GET', '/api/v1/users/me', { token: tokenA })).id },
    });
    await A.waitForFunction(([n]) => Number(document.querySelector('.bell').dataset.unread) === n + 1, [before], { timeout: 3000 });
    pass('a notification pushed by the server raises the bell count', `${before} -> ${before + 1}`);

    // --- the server restarts; an edit made while it is down is not lost --------------------------
    await askPytest('stop-server', 'stopped');
    await A.locator('#conn[data-state="reconnecting"]').waitFor({ timeout: 10_000 });
    await A.locator('#offline-banner').waitFor({ state: 'visible', timeout: 2000 });
    const offlineTodo = await columnIds(A, 'todo');
    const offlineMove = offlineTodo[offlineTodo.length - 1];
    const doneBefore = await columnIds(A, 'done');
    await dragCard(A, offlineMove, 'done', doneBefore[0]);
    await A.locator(`.card-list[data-status="done"] .card.is-pending[data-task-id="${offlineMove}"]`).waitFor({ timeout: 2000 });
    assert((await A.evaluate(() => window.collabDebug.unanswered())) === 1, 'the offline move waits as one pending op');
    const banner = await A.locator('#offline-banner').textContent();
    assert(/1 change will be sent/.test(banner), `the banner tells about the pending change: ${banner}`);
    pass('while the server is down the board says "reconnecting" and keeps the move as pending');
    await askPytest('start-server', 'started');
    for (const page of [A, B]) {
      // "Live · caught up" is shown for a few seconds; data-resumes counts the times it was.
      await page.locator('#conn[data-state="online"][data-resumes="1"]').waitFor({ timeout: 30_000 });
    }
    await B.waitForFunction(
      ([id]) => document.querySelector('.card-list[data-status="done"] .card')?.dataset.taskId === id,
      [offlineMove], { timeout: SETTLE_MS },
    );
    await A.waitForFunction(() => !document.querySelector('.card.is-pending'), null, { timeout: SETTLE_MS });
    const tokenAfter = await login('alice@demo.local');
    const afterRestart = await api(BASE, 'GET', `/api/v1/tasks/${offlineMove}`, { token: tokenAfter });
    assert(afterRestart.status === 'done', 'the offline move reached the server');
    const changes = await api(BASE, 'GET', `/api/v1/projects/${PROJECT}/changes?since=0&limit=1000`, { token: tokenAfter });
    const moves = changes.data.filter((e) => e.task_id === offlineMove && e.kind === 'task.updated' && e.data.changes.status === 'done');
    assert(moves.length === 1, `the offline move was applied exactly once (${moves.length})`);
    pass('after the restart both boards reconnect, catch up, and the offline move is applied once');

    const title2 = `After the restart ${Date.now()}`;
    await api(BASE, 'PUT', `/api/v1/tasks/${edited}`, { token: tokenAfter, json: { title: title2 } });
    await B.waitForFunction(
      ([id, want]) => document.querySelector(`.card[data-task-id="${id}"] .card-title`)?.textContent === want,
      [edited, title2], { timeout: 3000 },
    );
    const idsA = await A.locator('.card-list .card').evaluateAll((els) => els.map((e) => e.dataset.taskId));
    const idsB = await B.locator('.card-list .card').evaluateAll((els) => els.map((e) => e.dataset.taskId));
    assert(JSON.stringify(idsA) === JSON.stringify(idsB), 'both boards show the same cards in the same order');
    pass('live updates flow again after the restart; both boards agree');

    for (const page of [A, B]) {
      assert(!page.problems.length, `${page.name}: errors in the page: ${page.problems.join(' | ')}`);
    }
    pass('no script errors in either page');
    emit({ event: 'result', ok: true, checks, artifacts: ARTIFACTS, screenshots: [] });
  } catch (error) {
    const screenshots = [];
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    for (const page of pages) {
      const file = path.join(ARTIFACTS, `${page.name}-failure.png`);
      try {
        await page.screenshot({ path: file, fullPage: true });
        screenshots.push(file);
      } catch {
        // the page may be gone
      }
    }
    emit({
      event: 'result', ok: false, checks, artifacts: ARTIFACTS, screenshots,
      error: String(error && error.stack ? error.stack : error),
      problems: Object.fromEntries(pages.map((p) => [p.name, p.problems])),
    });
  } finally {
    await browser.close();
    stdinLines.return?.();
  }
}

await main();
process.exit(0);
