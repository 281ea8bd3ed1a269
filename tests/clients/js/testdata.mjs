// Grafana's testdata stream through the unmodified centrifuge client into Grafana's own
// StreamingDataFrame: the subscribe reply's data (the schema) starts the frame, each one-row
// data-only publication appends, about 20 per second from random-20Hz-stream.
// Run by tests/real_clients.rs with EDGELIVE_URL. Exits non-zero on failure.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

const require = createRequire(import.meta.url);
const { StreamingDataFrame } = require('@grafana/data');

const url = process.env.EDGELIVE_URL;
assert.ok(url, 'EDGELIVE_URL must be set');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const c = new Centrifuge(url, { websocket: WebSocket, timeout: 5000 });
c.on('error', () => {});
// Grafana's front end subscribes with the org prefix.
const sub = c.newSubscription('1/plugin/testdata/random-20Hz-stream');
let frame = null;
let count = 0;
sub.on('subscribed', (ctx) => {
  assert.ok(ctx.data?.schema, `schema as subscribe data: ${JSON.stringify(ctx.data)}`);
  frame = StreamingDataFrame.fromDataFrameJSON(ctx.data, { maxLength: 1000 });
});
sub.on('publication', (ctx) => {
  assert.ok(frame, 'a publication before the schema');
  assert.equal(ctx.data.schema, undefined, 'data only');
  frame.push(ctx.data);
  count += 1;
});
sub.subscribe();
c.connect();
await sub.ready(5000);
const started = Date.now();
await sleep(3000);
const seconds = (Date.now() - started) / 1000;
const rate = count / seconds;
console.log(`received ${count} in ${seconds.toFixed(2)} s: ${rate.toFixed(1)}/s`);
// About 20 per second (one every 50 ms); wide bounds for a shared 2-core machine.
assert.ok(rate > 10 && rate < 30, `rate ${rate}`);
assert.equal(frame.length, count);
assert.deepEqual(frame.fields.map((f) => f.name), ['Time', 'Value', 'Min', 'Max']);
const values = frame.fields[1].values;
const times = frame.fields[0].values;
for (let i = 1; i < times.length; i++) assert.ok(times[i] >= times[i - 1], 'times ascend');
for (let i = 0; i < values.length; i++) {
  assert.ok(frame.fields[2].values[i] < values[i] && values[i] < frame.fields[3].values[i]);
}
c.disconnect();
console.log('ok testdata');
process.exit(0);
