// One MQTT publisher through edgelive to 10 Centrifuge subscribers (run by benches/mqtt.sh):
// mosquitto_pub -l sends N JSON messages as fast as the broker takes them; 10 centrifuge-js
// clients subscribed to the stream count what arrives. Prints messages/s (first to last
// delivery at the subscribers) and the daemon's CPU per message.
// EDGELIVE_URL, MQTT_PORT, DAEMON_PID, QOS, N.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(new URL('../tests/clients/package.json', import.meta.url));
const { Centrifuge } = require('centrifuge');
const WebSocket = require('ws');

const { EDGELIVE_URL: url, MQTT_PORT: port, DAEMON_PID: pid } = process.env;
const qos = process.env.QOS || '1';
const n = Number(process.env.N || 20000);
const cpu = () => {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
};

const channel = `stream/mqtt/bench/q${qos}`;
let first = 0;
let last = 0;
let got = 0;
const clients = [];
for (let i = 0; i < 10; i++) {
  const c = new Centrifuge(url, { websocket: WebSocket });
  const s = c.newSubscription(channel);
  s.on('publication', () => {
    got++;
    if (!first) first = Date.now();
    last = Date.now();
  });
  s.subscribe();
  c.connect();
  await new Promise((r) => s.on('subscribed', r));
  clients.push(c);
}
const cpu0 = cpu();
const pub = spawn('mosquitto_pub', ['-h', '127.0.0.1', '-p', port, '-q', qos, '-t', `bench/q${qos}`, '-l']);
for (let i = 0; i < n; i++) {
  if (!pub.stdin.write(`{"v":${i},"t":21.5}\n`)) await new Promise((r) => pub.stdin.once('drain', r));
}
pub.stdin.end();
const deadline = Date.now() + 120000;
while (got < n * 10 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
const cpuUsed = cpu() - cpu0;
const secs = Math.max(1, last - first) / 1000;
console.log(`qos${qos} messages ${n} delivered ${got} (${(got / (n * 10)).toFixed(3)}) rate_msgs_per_s ${(n / secs).toFixed(0)} deliveries_per_s ${(got / secs).toFixed(0)} daemon_cpu_us_per_message ${(cpuUsed * 1e6 / n).toFixed(1)}`);
for (const c of clients) c.disconnect();
process.exit(0);
