// MQTT through edgelive to Grafana's front-end data path: the unmodified centrifuge client
// subscribes to an MQTT-fed stream, and each message, published with mosquitto_pub (JSON with
// nested objects, a field that comes and goes), goes into @grafana/data's StreamingDataFrame.
// Run by tests/mqtt.rs with EDGELIVE_URL and MQTT_PORT. Exits non-zero on failure.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';
import { feed } from './feed.mjs';

const url = process.env.EDGELIVE_URL;
const port = process.env.MQTT_PORT;
assert.ok(url && port, 'EDGELIVE_URL and MQTT_PORT must be set');

const publish = (payload) => execFileSync('mosquitto_pub',
  ['-h', '127.0.0.1', '-p', port, '-q', '1', '-t', 'sensors/js/env', '-m', payload]);

const c = new Centrifuge(url, { websocket: WebSocket, timeout: 5000 });
c.connect();
const sub = c.newSubscription('1/stream/mqtt/sensors/js/env');
const live = feed(sub);
sub.subscribe();
await new Promise((resolve) => sub.on('subscribed', resolve));
const until = (n) => live.until(n, 10000);

publish('{"env":{"t":20.5,"rh":40},"ts":1700000000}');
await until(1);
publish('{"env":{"t":21.5},"ts":1700000001}');
publish('{"env":{"t":22.5,"rh":42},"ts":1700000002}');
await until(3);
const values = (name) => Array.from(live.frame.fields.find((f) => f.name === name).values);
assert.deepEqual(values('time'), [1700000000000, 1700000001000, 1700000002000]);
assert.deepEqual(values('env.t'), [20.5, 21.5, 22.5]);
assert.deepEqual(values('env.rh'), [40, null, 42]);
c.disconnect();
console.log('ok mqtt');
process.exit(0);
