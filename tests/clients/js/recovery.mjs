// Recovery with the unmodified centrifuge JS client: across a reconnect, a clean restart of the
// daemon, and a SIGKILL while publishing. tests/real_clients.rs drives the restarts: this
// script prints RESTART or KILL on stdout and waits for GO on stdin.
import assert from 'node:assert/strict';
import readline from 'node:readline';
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

const url = process.env.EDGELIVE_URL;
const channel = 'grafana/broadcast/js-recovery';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const lines = readline.createInterface({ input: process.stdin });
const stdinLines = [];
const waiters = [];
lines.on('line', (l) => (waiters.length ? waiters.shift()(l) : stdinLines.push(l)));
const nextLine = () => new Promise((r) => (stdinLines.length ? r(stdinLines.shift()) : waiters.push(r)));

async function until(pred, what, ms = 15000) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timeout: ${what}`);
    await sleep(20);
  }
}

const opts = { websocket: WebSocket, timeout: 5000, minReconnectDelay: 100, maxReconnectDelay: 500 };
const a = new Centrifuge(url, opts);
const p = new Centrifuge(url, opts);
const received = []; // {n, offset}
const subscribedEvents = [];
const sub = a.newSubscription(channel);
sub.on('publication', (ctx) => received.push({ n: ctx.data.n, offset: ctx.offset }));
sub.on('subscribed', (ctx) => subscribedEvents.push(ctx));

async function publish(from, to) {
  await p.ready(15000);
  for (let n = from; n <= to; n++) await p.publish(channel, { n });
}
const ns = () => received.map((r) => r.n);
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

sub.subscribe();
a.connect();
p.connect();
await sub.ready(5000);
assert.equal(subscribedEvents[0].recoverable, true);
await publish(1, 5);
await until(() => received.length === 5, 'first five');

// 1. Disconnect, miss seven, reconnect: exactly those seven, in order.
a.disconnect();
await publish(6, 12);
a.connect();
await until(() => subscribedEvents.length === 2, 'resubscribed');
assert.equal(subscribedEvents[1].wasRecovering, true);
assert.equal(subscribedEvents[1].recovered, true);
await until(() => received.length === 12, 'recovered seven');
assert.deepEqual(ns(), range(1, 12));
assert.deepEqual(received.map((r) => r.offset), range(1, 12));
console.log('ok recovered after reconnect');

// 2. The daemon restarts cleanly while we are away; four more are published after it.
a.disconnect();
console.log('RESTART');
assert.equal(await nextLine(), 'GO');
await publish(13, 16);
a.connect();
await until(() => subscribedEvents.length === 3, 'resubscribed after restart');
assert.equal(subscribedEvents[2].recovered, true, 'same epoch after a clean restart');
await until(() => received.length === 16, 'recovered four after restart');
assert.deepEqual(ns(), range(1, 16));
console.log('ok recovered across a clean restart');

// 3. SIGKILL while publishing: every acknowledged publication survives, nothing is duplicated,
// and the subscriber either recovers exactly or is told it could not.
const acked = [];
const inflight = [];
for (let n = 17; n <= 516; n++) {
  inflight.push(p.publish(channel, { n }).then(() => acked.push(n), () => {}));
}
// Kill once some are acknowledged, so the check below has something to check.
await until(() => acked.length >= 50, 'fifty acknowledgements');
console.log('KILL');
assert.equal(await nextLine(), 'GO');
assert.ok(acked.length >= 50);
await Promise.all(inflight);
await until(() => subscribedEvents.length === 4, 'resubscribed after the kill');
const after = subscribedEvents[3];
assert.equal(after.wasRecovering, true);
const offsets = received.map((r) => r.offset);
for (let i = 1; i < offsets.length; i++) assert.ok(offsets[i] > offsets[i - 1], `offsets increase: ${offsets}`);
if (after.recovered) {
  for (let i = 1; i < offsets.length; i++) assert.equal(offsets[i], offsets[i - 1] + 1, 'recovered means no gap');
}
await p.ready(15000);
const h = await p.history(channel, { limit: -1 });
const stored = h.publications.map((x) => x.data.n);
for (const n of acked) assert.ok(stored.includes(n), `acknowledged ${n} lost`);
assert.deepEqual(h.publications.map((x) => x.offset), range(1, h.publications.length), 'stored offsets contiguous');
console.log(`ok ${acked.length} acknowledged publications survived SIGKILL (recovered: ${after.recovered})`);
a.disconnect();
p.disconnect();
process.exit(0);
