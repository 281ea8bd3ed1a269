// The unmodified centrifuge JS client with connection JWTs against edgelive: tokens signed here
// with node:crypto (not by edgelive's signer), refreshed through getToken before they expire, a
// server-side subscription from the token's `channels`, an expired first token, a forged one.
// Run by tests/real_clients.rs with EDGELIVE_URL, EDGELIVE_HTTP, EDGELIVE_JWT_SECRET and
// EDGELIVE_ADMIN_TOKEN. The daemon closes unrefreshed connections 2 s after expiry.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

const url = process.env.EDGELIVE_URL;
const http = process.env.EDGELIVE_HTTP;
const secret = process.env.EDGELIVE_JWT_SECRET;
const admin = process.env.EDGELIVE_ADMIN_TOKEN;
assert.ok(url && http && secret && admin, 'environment incomplete');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const b64 = (x) => Buffer.from(x).toString('base64url');

function sign(claims, key = secret) {
  const head = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64(JSON.stringify(claims));
  const sig = createHmac('sha256', key).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}
const now = () => Math.floor(Date.now() / 1000);

function client(opts) {
  const c = new Centrifuge(url, { websocket: WebSocket, timeout: 5000, ...opts });
  c.disconnects = [];
  c.on('disconnected', (ctx) => c.disconnects.push(ctx));
  c.on('error', () => {});
  return c;
}

async function refreshKeepsTheConnection() {
  let calls = 0;
  const c = client({
    getToken: async () => {
      calls += 1;
      return sign({ sub: 'ann', exp: now() + 2, role: 'publisher' });
    },
  });
  c.connect();
  await c.ready(5000);
  // Without a refresh the daemon would close at exp + 2 s; 7 s later we are still here, after
  // at least two refreshes (margin for a loaded machine's timers).
  await sleep(7000);
  assert.equal(c.state, 'connected', `state ${c.state}, disconnects ${JSON.stringify(c.disconnects)}`);
  assert.ok(calls >= 3, `getToken called ${calls} times`);
  assert.deepEqual(c.disconnects, []);
  await c.publish('grafana/broadcast/js-auth', { after: 'refresh' });
  c.disconnect();
  console.log(`ok refresh (${calls} tokens)`);
}

async function serverSideSubscription() {
  const channel = 'grafana/broadcast/js-server-side';
  const c = client({ token: sign({ sub: 'kiosk', channels: [channel] }) });
  const subscribed = new Promise((resolve) => c.on('subscribed', resolve));
  const pubs = [];
  c.on('publication', (ctx) => pubs.push(ctx));
  c.connect();
  const ctx = await subscribed;
  assert.equal(ctx.channel, channel);
  assert.equal(ctx.recoverable, true);
  const res = await fetch(`${http}/api/live/publish`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${admin}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel, data: { hello: 'kiosk' } }),
  });
  assert.equal(res.status, 200);
  for (let i = 0; i < 50 && pubs.length === 0; i++) await sleep(100);
  assert.equal(pubs.length, 1);
  assert.deepEqual(pubs[0].data, { hello: 'kiosk' });
  assert.equal(pubs[0].channel, channel);
  c.disconnect();
  console.log('ok server-side subscription');
}

async function anExpiredTokenIsReplacedThroughGetToken() {
  const tokens = [sign({ sub: 'bob', exp: now() - 60 }), sign({ sub: 'bob', exp: now() + 600 })];
  let calls = 0;
  const c = client({ getToken: async () => tokens[Math.min(calls++, 1)] });
  c.connect();
  await c.ready(10000);
  assert.equal(calls, 2, 'a 109 made the client fetch a second token');
  c.disconnect();
  console.log('ok 109 then a fresh token');
}

async function aForgedTokenIsTerminal() {
  const c = client({ token: sign({ sub: 'mallory', role: 'admin' }, 'not-the-secret-at-all') });
  c.connect();
  for (let i = 0; i < 50 && c.disconnects.length === 0; i++) await sleep(100);
  assert.equal(c.disconnects[0]?.code, 3500, JSON.stringify(c.disconnects));
  await sleep(1500);
  assert.equal(c.state, 'disconnected', 'no reconnect after 3500');
  console.log('ok 3500');
}

async function noCredentialsAreRefused() {
  const c = client({});
  c.connect();
  for (let i = 0; i < 50 && c.disconnects.length === 0; i++) await sleep(100);
  assert.ok([101, 3507].includes(c.disconnects[0]?.code), JSON.stringify(c.disconnects));
  await sleep(1500);
  assert.equal(c.state, 'disconnected');
  console.log(`ok refused without credentials (${c.disconnects[0].code})`);
}

await refreshKeepsTheConnection();
await serverSideSubscription();
await anExpiredTokenIsReplacedThroughGetToken();
await aForgedTokenIsTerminal();
await noCredentialsAreRefused();
console.log('ok auth');
process.exit(0);
