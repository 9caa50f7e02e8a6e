// Shared by the browser test driver and the screenshot script: Debian's
// chromium through playwright-core (no browser download), and the board's
// common gestures.

import { chromium } from 'playwright-core';
import fs from 'node:fs';

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** A browser on a fresh, throw-away profile (playwright makes a new user data dir per launch). */
export async function launch() {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`no chromium at ${CHROMIUM}`);
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 });
}

/** A new isolated context (its own sessionStorage) and page, with console errors collected. */
export async function openPage(browser, name, { width = 1440, height = 900 } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.name = name;
  page.problems = [];
  page.on('pageerror', (error) => page.problems.push(`pageerror: ${error.message}`));
  page.on('console', (message) => {
    // The browser itself logs each refused WebSocket while the server is down: expected, not a page error.
    if (message.type() === 'error' && !/^WebSocket connection to .* failed/.test(message.text())) {
      page.problems.push(`console: ${message.text()}`);
    }
  });
  return { context, page };
}

export async function signIn(page, baseUrl, email, password) {
  await page.goto(`${baseUrl}/`);
  await page.locator('input[name=email]').fill(email);
  await page.locator('input[name=password]').fill(password);
  await page.locator('form.auth-form button[type=submit]').click();
  await page.locator('.project-card').first().waitFor({ timeout: 10_000 });
}

export async function openBoard(page, projectId) {
  await page.locator(`.project-card[data-project-id="${projectId}"]`).click();
  await page.locator('.card').first().waitFor({ timeout: 10_000 });
  await page.locator('#conn[data-state="online"]').waitFor({ timeout: 10_000 });
}

export function card(page, taskId) {
  return page.locator(`.card-list .card[data-task-id="${taskId}"]`);
}

/** Ids of the cards in a column, top to bottom. */
export async function columnIds(page, status) {
  return page.locator(`.card-list[data-status="${status}"] .card`).evaluateAll((els) => els.map((e) => e.dataset.taskId));
}

/** Drag a card with the mouse onto a spot: above `beforeId`'s card, or to the end of the column. */
export async function dragCard(page, taskId, status, beforeId = null) {
  await card(page, taskId).scrollIntoViewIfNeeded();
  if (beforeId) await card(page, beforeId).scrollIntoViewIfNeeded();
  const source = await card(page, taskId).boundingBox();
  let x;
  let y;
  if (beforeId) {
    const target = await card(page, beforeId).boundingBox();
    x = target.x + target.width / 2;
    y = target.y + Math.min(8, target.height / 4);
  } else {
    const list = await page.locator(`.card-list[data-status="${status}"]`).boundingBox();
    x = list.x + list.width / 2;
    y = list.y + list.height - 4;
  }
  await page.mouse.move(source.x + source.width / 2, source.y + source.height / 2);
  await page.mouse.down();
  await page.mouse.move(source.x + source.width / 2 + 10, source.y + source.height / 2 + 10, { steps: 3 });
  await page.mouse.move(x, y, { steps: 12 });
  await page.mouse.move(x, y + 1, { steps: 2 });
  await page.mouse.up();
}

export async function api(baseUrl, method, path, { token, json } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (json !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(`${baseUrl}${path}`, { method, headers, body: json === undefined ? undefined : JSON.stringify(json) });
  const text = await response.text();
  const body = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return body;
}
