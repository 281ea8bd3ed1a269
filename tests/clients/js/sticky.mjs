// Grafana's StreamingDataFrame (@grafana/data), fed by the unmodified centrifuge client, on
// what Grafana's own server makes it throw on or lose:
// - a Telegraf-like stream whose batches alternate field sets (labels mode): edgelive keeps
//   one schema (sticky fields), so every message is pushed into the frame and never throws
//   "push message mismatch" (grafana/grafana#108807, #72461);
// - a subscriber arriving after 50 points were pushed: the subscribe reply carries them
//   (backfill), so the frame starts with 50 rows, then appends live ones.
// Run by tests/real_clients.rs with EDGELIVE_URL and EDGELIVE_HTTP. Exits non-zero on failure.
import assert from 'node:assert/strict';
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';
import { feed } from './feed.mjs';


const url = process.env.EDGELIVE_URL;
const base = process.env.EDGELIVE_HTTP;
assert.ok(url && base, 'EDGELIVE_URL and EDGELIVE_HTTP must be set');

async function push(stream, body) {
  const r = await fetch(`${base}/api/live/push/${stream}`, { method: 'POST', body });
  assert.equal(r.status, 200, `push failed: ${r.status} ${await r.text()}`);
}

function values(frame, name) {
  const f = frame.fields.find((x) => x.name === name);
  assert.ok(f, `field ${name} in ${frame.fields.map((x) => x.name)}`);
  return Array.from(f.values);
}

const c = new Centrifuge(url, { websocket: WebSocket, timeout: 5000 });
c.connect();

// Alternating field sets, Grafana's front end subscribing with the org prefix.
const T = 1700000000000n * 1000000n;
const ns = (s) => String(T + BigInt(s) * 1000000000n);
await push('tele', `env,room=a temp=1,hum=40 ${ns(0)}`);
const live = feed(c.newSubscription('1/stream/tele/env'), 100);
live.sub = c.getSubscription('1/stream/tele/env');
live.sub.subscribe();
await live.until(1);
await push('tele', `env,room=a temp=2 ${ns(1)}`);
await push('tele', `env,room=a hum=42,temp=3 ${ns(2)}`);
await live.until(3);
// One schema: the rows accumulate, the missing values are nulls.
assert.equal(live.frame.length, 3);
assert.deepEqual(values(live.frame, 'temp'), [1, 2, 3]);
assert.deepEqual(values(live.frame, 'hum'), [40, null, 42]);
// A field never seen widens the schema once (Grafana's frame starts over at a schema change,
// as it does for any), and from then on the wider schema holds whatever each batch lacks.
const batches = [
  `env,room=a co2=400,temp=4 ${ns(3)}`,
  `env,room=a hum=44 ${ns(4)}`,
  `env,room=a temp=5 ${ns(5)}`,
  `env,room=a hum=46,temp=6 ${ns(6)}`,
];
for (const b of batches) await push('tele', b);
await live.until(3 + batches.length);
const f = live.frame;
assert.deepEqual(values(f, 'temp'), [4, null, 5, 6]);
assert.deepEqual(values(f, 'hum'), [null, 44, null, 46]);
assert.deepEqual(values(f, 'co2'), [400, null, null, null]);
assert.equal(f.length, 4);

// Backfill: 50 points pushed before anyone subscribed.
const lines = [];
for (let i = 0; i < 50; i++) lines.push(`level,tank=b litres=${i} ${String(BigInt(Date.now() - 50000 + i * 1000) * 1000000n)}`);
await push('tank', lines.slice(0, 20).join('\n'));
for (let i = 20; i < 50; i++) await push('tank', lines[i]);
const late = feed(c.newSubscription('stream/tank/level'), 1000);
c.getSubscription('stream/tank/level').subscribe();
await late.until(1);
assert.equal(late.frame.length, 50, 'the subscribe reply carries the 50 rows');
assert.deepEqual(values(late.frame, 'litres'), Array.from({ length: 50 }, (_, i) => i));
await push('tank', `level,tank=b litres=50 ${String(BigInt(Date.now()) * 1000000n)}`);
await late.until(2);
assert.equal(late.frame.length, 51, 'then live rows append');
assert.equal(values(late.frame, 'litres')[50], 50);

c.disconnect();
console.log('ok sticky');
process.exit(0);
