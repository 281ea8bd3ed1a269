// Grafana's own front-end data path against edgelive's push API: the unmodified centrifuge
// client subscribes to a managed stream and every publication goes into StreamingDataFrame
// from @grafana/data, the class Grafana's live panels use. Values, labels and times must match
// what was pushed, across a schema change, and for a subscriber that joins late (which starts
// from the subscribe reply's data, the last full frame).
// Grafana's StreamingDataFrame cannot take a field-set change in labels mode once it holds
// labels (it keeps its label set and throws "push message mismatch": Grafana issues #72461 and
// #108807), so a schema change is checked the ways Grafana's front end does survive it: the
// SDK decoder on the publication itself, and a dashboard opened after the change.
// Run by tests/real_clients.rs with EDGELIVE_URL and EDGELIVE_HTTP. Exits non-zero on failure.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';
import { feed } from './feed.mjs';

const require = createRequire(import.meta.url);
const { dataFrameFromJSON } = require('@grafana/data');

const url = process.env.EDGELIVE_URL;
const base = process.env.EDGELIVE_HTTP;
assert.ok(url && base, 'EDGELIVE_URL and EDGELIVE_HTTP must be set');

// Grafana's front end subscribes with the org prefix.
const channel = '1/stream/js/weather';
const T1 = 1700000000000n * 1000000n + 123n; // ns, with a sub-millisecond remainder
const T2 = 1700000001000n * 1000000n;
const T3 = 1700000002000n * 1000000n;

async function push(body) {
  const r = await fetch(`${base}/api/live/push/js`, {
    method: 'POST',
    headers: { 'Content-Type': 'text/plain; charset=utf-8' },
    body,
  });
  assert.equal(r.status, 200, `push failed: ${r.status} ${await r.text()}`);
}

function client() {
  const c = new Centrifuge(url, { websocket: WebSocket, timeout: 5000 });
  c.on('error', (ctx) => console.error('client error', ctx.error));
  return c;
}

function field(frame, name, labels) {
  const f = frame.fields.find((x) => x.name === name
    && JSON.stringify(x.labels ?? {}) === JSON.stringify(labels ?? {}));
  assert.ok(f, `field ${name} ${JSON.stringify(labels)} in ${frame.fields.map((x) => `${x.name}${JSON.stringify(x.labels ?? {})}`)}`);
  return Array.from(f.values);
}

const a = client();
a.connect();
const sub = a.newSubscription(channel);
const live = feed(sub);
sub.subscribe();
await new Promise((r) => sub.once('subscribed', r));

await push(`weather,city=a temp=1.5,hum=40i ${T1}\nweather,city=b temp=2.5,hum=50i ${T1}\n`);
await live.until(1);
await push(`weather,city=a temp=3.5,hum=41i ${T2}\n`);
await live.until(2);
let f = live.frame;
assert.deepEqual(field(f, 'time'), [1700000000000, 1700000001000]);
assert.deepEqual(field(f, 'temp', { city: 'a' }), [1.5, 3.5]);
assert.deepEqual(field(f, 'hum', { city: 'a' }), [40, 41]);
assert.deepEqual(field(f, 'temp', { city: 'b' })[0], 2.5);

// A new field: the next publication carries the new schema with its data.
let changed;
sub.removeAllListeners('publication');
const gotChange = new Promise((resolve) => sub.once('publication', (ctx) => resolve(ctx.data)));
await push(`weather,city=a temp=4.5,hum=42i,wind=3 ${T3}\n`);
changed = await gotChange;
assert.ok(changed.schema, 'a changed schema is sent again');
const decoded = dataFrameFromJSON(changed);
assert.deepEqual(decoded.fields.map((x) => x.name), ['labels', 'time', 'hum', 'temp', 'wind']);
assert.deepEqual(Array.from(decoded.fields[4].values), [3]);
assert.deepEqual(Array.from(decoded.fields[1].values), [1700000002000]);

// A dashboard opened now starts from the last full frame in the subscribe reply, and follows
// the data-only publications after it.
const b = client();
b.connect();
const late = b.newSubscription(channel);
const joined = feed(late);
late.subscribe();
await joined.until(1);
assert.deepEqual(field(joined.frame, 'wind', { city: 'a' }), [3]);
assert.deepEqual(field(joined.frame, 'temp', { city: 'a' }), [4.5]);
assert.deepEqual(field(joined.frame, 'time'), [1700000002000]);
await push(`weather,city=a temp=5.5,hum=43i,wind=4 ${T3 + 1000000000n}\nweather,city=c temp=9,hum=1i,wind=0 ${T3 + 1000000000n}\n`);
await joined.until(2);
assert.deepEqual(field(joined.frame, 'temp', { city: 'a' }), [4.5, 5.5]);
assert.deepEqual(field(joined.frame, 'wind', { city: 'a' }), [3, 4]);
assert.deepEqual(field(joined.frame, 'time'), [1700000002000, 1700000003000]);
// A label seen for the first time becomes its own set of fields.
assert.deepEqual(field(joined.frame, 'temp', { city: 'c' }).at(-1), 9);

a.disconnect();
b.disconnect();
console.log('ok frames');
process.exit(0);
