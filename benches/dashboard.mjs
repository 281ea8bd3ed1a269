// The on-device dashboard's costs (run by benches/dashboard.sh against a release daemon):
// - page weight: every file the page loads, gzipped as served;
// - navigation to first chart with 1,000 backfilled points, in Debian's Chromium;
// - the daemon's CPU while 5 pages watch a 20 Hz stream (plugin/testdata/random-20Hz-stream).
// EDGELIVE_HTTP, DAEMON_PID; prints one line per figure.
import { chromium } from '../tests/clients/node_modules/playwright-core/index.mjs';
import { readFileSync } from 'node:fs';

const base = process.env.EDGELIVE_HTTP;
const pid = process.env.DAEMON_PID;
const WATCH_S = Number(process.env.WATCH_SECONDS || 30);

function cpuSeconds() {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, clock ticks
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  // Page weight: every file the page loads, as served (gzipped Content-Length).
  const shell = ['/', '/ui/app.js', '/ui/frames.js', '/ui/app.css', '/ui/vendor/centrifuge-5.8.0.js',
    '/ui/vendor/uPlot-1.6.32.iife.min.js', '/ui/vendor/uPlot-1.6.32.min.css'];
  let assets = 0;
  for (const p of shell) {
    const r = await fetch(base + p, { headers: { 'Accept-Encoding': 'gzip' } });
    assets += Number(r.headers.get('content-length'));
  }
  console.log(`page_weight_gzipped_bytes ${assets}`);

  // 1,000 points pushed before the page opens; navigation to the drawn chart.
  const lines = [];
  const now = Date.now();
  for (let i = 0; i < 1000; i++) lines.push(`tank,site=a level=${i} ${String(BigInt(now - (1000 - i) * 250) * 1000000n)}`);
  const r = await fetch(`${base}/api/live/push/bench`, { method: 'POST', body: lines.join('\n') });
  if (r.status !== 200) throw new Error(`push ${r.status}`);
  const save = await fetch(`${base}/api/dashboards/db`, {
    method: 'POST',
    body: JSON.stringify({ dashboard: { uid: 'bench', title: 'Bench', panels: [{ channel: 'stream/bench/tank', window: '5m' }] }, overwrite: true }),
  });
  if (save.status !== 200) throw new Error(`save ${save.status}`);
  const times = [];
  for (let run = 0; run < 5; run++) {
    const p = await browser.newPage();
    const t0 = Date.now();
    await p.goto(base + '/d/bench/bench');
    await p.locator('.panel .points').filter({ hasText: '1000 points' }).waitFor({ timeout: 30000 });
    times.push(Date.now() - t0);
    await p.close();
  }
  times.sort((a, b) => a - b);
  console.log(`first_chart_1000_backfilled_ms median ${times[2]} min ${times[0]} max ${times[4]}`);

  // Five pages watching the 20 Hz test stream.
  const idleFrom = cpuSeconds();
  await new Promise((res) => setTimeout(res, WATCH_S * 1000));
  const idle = (cpuSeconds() - idleFrom) / WATCH_S;
  await fetch(`${base}/api/dashboards/db`, {
    method: 'POST',
    body: JSON.stringify({ dashboard: { uid: 'hz', title: 'Hz', panels: [{ channel: 'plugin/testdata/random-20Hz-stream', window: '1m' }] }, overwrite: true }),
  });
  const pages = [];
  for (let i = 0; i < 5; i++) {
    const p = await browser.newPage();
    await p.goto(base + '/d/hz/hz');
    await p.locator('.panel .points').filter({ hasText: 'points' }).waitFor({ timeout: 30000 });
    pages.push(p);
  }
  const from = cpuSeconds();
  await new Promise((res) => setTimeout(res, WATCH_S * 1000));
  const watching = (cpuSeconds() - from) / WATCH_S;
  console.log(`daemon_cpu_idle_percent ${(idle * 100).toFixed(2)}`);
  console.log(`daemon_cpu_5_pages_20hz_percent ${(watching * 100).toFixed(2)}`);
} finally {
  await browser.close();
}
