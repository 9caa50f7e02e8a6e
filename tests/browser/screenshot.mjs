// Screenshot of the demo board for the README:
//   collab serve --demo          (in another terminal)
//   node tests/browser/screenshot.mjs http://127.0.0.1:8000 docs/board.png
// Signs in as bob in one context (so he shows up as present and editing a
// card) and as alice in another, whose board is captured.

import { launch, openBoard, openPage, signIn } from './lib.mjs';

const [baseUrl = 'http://127.0.0.1:8000', out = 'docs/board.png', what = 'board'] = process.argv.slice(2);
const PROJECT = '6d656d6f-0000-4000-8000-000000000001';
const PASSWORD = 'collab-demo';

const browser = await launch();
try {
  const bob = await openPage(browser, 'bob');
  await signIn(bob.page, baseUrl, 'bob@demo.local', PASSWORD);
  await openBoard(bob.page, PROJECT);
  const alice = await openPage(browser, 'alice');
  await signIn(alice.page, baseUrl, 'alice@demo.local', PASSWORD);
  await openBoard(alice.page, PROJECT);
  // Bob opens a card and starts typing in its description: alice sees the marker.
  await bob.page.locator('.card-list[data-status="in_progress"] .card').first().click();
  await bob.page.locator('.dialog .description-input').click();
  await alice.page.locator('.editing-marker').first().waitFor({ timeout: 5000 });
  if (what === 'dialog') {
    await alice.page.locator('.card-list[data-status="in_review"] .card').first().click();
    await alice.page.locator('.dialog').waitFor();
    await alice.page.waitForTimeout(500);
  }
  await alice.page.mouse.move(5, 500);
  await alice.page.waitForTimeout(300);
  await alice.page.screenshot({ path: out });
  console.log(`saved ${out}`);
  for (const { page } of [alice, bob]) if (page.problems.length) console.log(page.name, page.problems);
} finally {
  await browser.close();
}
