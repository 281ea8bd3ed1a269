// The on-device dashboard in a real browser: Debian's Chromium driven by playwright-core,
// against the real daemon (EDGELIVE_HTTP, with ADMIN_TOKEN and VIEWER_TOKEN configured;
// OPEN_HTTP is a daemon in protected mode). Checks what a person sees:
// - the page asks for a token once, then loads with no console error;
// - a stream pushed before the page opened is drawn at once with its 500 points (backfill);
// - a stream pushed after load appears in the list and its chart draws;
// - a dashboard saved in one page makes a second page showing it reload it, and presence
//   shows both watching;
// - a viewer's page cannot save; the 800x480 layout has no horizontal scroll;
// - in protected mode a loopback page needs no token.
// Prints timings and takes a screenshot (SCREENSHOT). Exits non-zero on failure.
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const base = process.env.EDGELIVE_HTTP;
const open = process.env.OPEN_HTTP;
const admin = process.env.ADMIN_TOKEN;
const viewer = process.env.VIEWER_TOKEN;
assert.ok(base && open && admin && viewer, 'EDGELIVE_HTTP, OPEN_HTTP, ADMIN_TOKEN, VIEWER_TOKEN');
const T = 15000;

async function push(stream, body) {
  const r = await fetch(`${base}/api/live/push/${stream}`, {
    method: 'POST', body, headers: { Authorization: `Bearer ${admin}` },
  });
  assert.equal(r.status, 200, `push: ${r.status} ${await r.text()}`);
}

const nowNs = (msAgo) => String(BigInt(Date.now() - msAgo) * 1000000n);

// Debian's Chromium as root: no sandbox, and nothing that reaches for the closed network.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const problems = [];
async function page(token, viewport) {
  const context = await browser.newContext({ viewport: viewport || { width: 1280, height: 800 } });
  if (token) await context.addInitScript((t) => sessionStorage.setItem('edgelive.token', t), token);
  const p = await context.newPage();
  p.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  p.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  return p;
}
const points = (p, channel) => p.locator(`.panel[data-channel="${channel}"] .points`);
// Waits for `locator` to show `text`; a timeout says what it showed instead.
async function shows(locator, text) {
  try {
    await locator.filter({ hasText: text }).waitFor({ timeout: T });
  } catch (e) {
    const now = await locator.allInnerTexts().catch(() => []);
    throw new Error(`waited for ${JSON.stringify(text)}, saw ${JSON.stringify(now)}: ${e.message}`);
  }
}

try {
  // 500 points over the last 250 s, pushed before any page is open.
  const early = [];
  for (let i = 0; i < 500; i++) early.push(`level,tank=a litres=${i} ${nowNs((500 - i) * 500)}`);
  await push('early', early.join('\n'));

  // The token is asked for once, then kept for the session.
  const a = await page(null);
  await a.goto(base + '/');
  await a.locator('#login').waitFor({ state: 'visible', timeout: T });
  await a.fill('#token', admin);
  await a.click('#login button');
  await shows(a.locator('#status'), 'connections');
  assert.ok(await a.locator('#login').isHidden(), await a.locator('#login-why').innerText());

  // Backfilled stream: drawn at once with every point.
  const row = a.locator('tr[data-channel="stream/early/level"]');
  await row.waitFor({ timeout: T });
  const clicked = Date.now();
  await row.click();
  await shows(points(a, 'stream/early/level'), '500 points');
  const firstChartMs = Date.now() - clicked;
  assert.equal(await a.locator('.panel[data-channel="stream/early/level"] canvas').count() > 0, true);

  // A stream pushed after load: listed, and its chart draws live.
  const pushed = Date.now();
  await push('late', `env,room=b temp=21.5 ${nowNs(0)}`);
  const late = a.locator('tr[data-channel="stream/late/env"]');
  await late.waitFor({ timeout: T });
  const listedMs = Date.now() - pushed;
  await late.click();
  await shows(points(a, 'stream/late/env'), '1 points');
  await push('late', `env,room=b temp=22.5 ${nowNs(0)}`);
  await shows(points(a, 'stream/late/env'), '2 points');
  const legend = await a.locator('.panel[data-channel="stream/late/env"] .legend').innerText();
  assert.match(legend, /temp \{room=b\} 22\.5/);

  // Saved on the device; a second page on it reloads when it is saved again.
  await a.fill('#board-name', 'Boiler room');
  await a.click('#save');
  await a.waitForURL(/\/d\/[A-Za-z0-9_-]+\/boiler-room$/, { timeout: T });
  const dashUrl = a.url();
  const b = await page(admin);
  await b.goto(dashUrl);
  await b.locator('.panel').nth(1).waitFor({ timeout: T });
  assert.equal(await b.locator('.panel').count(), 2);
  await shows(b.locator('#watchers'), '2 watching: admin');
  await a.locator('tr[data-channel="plugin/testdata/random-2s-stream"]').click();
  await a.locator('.panel').nth(2).waitFor({ timeout: T });
  await a.click('#save');
  await shows(a.locator('#board-msg'), 'version 2');
  await shows(b.locator('#board-msg'), 'Updated from another page');
  assert.equal(await b.locator('.panel').count(), 3);
  // The saving page knows its own save's event.
  assert.match(await a.locator('#board-msg').innerText(), /version 2/);

  // A viewer sees it but cannot save.
  const v = await page(viewer);
  await v.goto(dashUrl);
  await v.locator('.panel').nth(2).waitFor({ timeout: T });
  assert.equal(await v.locator('#save').isDisabled(), true);
  const refused = await fetch(`${base}/api/dashboards/db`, {
    method: 'POST', headers: { Authorization: `Bearer ${viewer}` },
    body: JSON.stringify({ dashboard: { title: 'x' } }),
  });
  assert.equal(refused.status, 403);

  // An 800x480 touch screen: everything fits the width.
  const small = await page(admin, { width: 800, height: 480 });
  await small.goto(dashUrl);
  await shows(points(small, 'stream/early/level'), 'points');
  const overflow = await small.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `horizontal scroll of ${overflow} px at 800x480`);
  // A phone, upright.
  const phone = await page(admin, { width: 390, height: 844 });
  await phone.goto(dashUrl);
  await shows(points(phone, 'stream/early/level'), 'points');
  const phoneOverflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(phoneOverflow <= 0, `horizontal scroll of ${phoneOverflow} px on a phone`);
  if (process.env.SCREENSHOT) {
    await a.screenshot({ path: process.env.SCREENSHOT });
  }

  // Protected mode: a loopback page needs no token.
  const o = await page(null);
  await o.goto(open + '/');
  await shows(o.locator('#status'), 'connections');
  assert.ok(await o.locator('#login').isHidden());

  assert.deepEqual(problems, [], 'no console errors');
  console.log(`timing first_chart_500_backfilled_ms=${firstChartMs} listed_after_push_ms=${listedMs}`);
  console.log('ok dashboard');
} finally {
  await browser.close();
}
