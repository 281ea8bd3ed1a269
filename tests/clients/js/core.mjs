// The unmodified centrifuge JS client (npm, 5.x) against edgelive.
// Run by tests/real_clients.rs with EDGELIVE_URL (a daemon pinging every second) and
// EDGELIVE_LIMITED_URL (a daemon with max_connections = 1). Exits non-zero on any failure.
import assert from 'node:assert/strict';
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

const url = process.env.EDGELIVE_URL;
const limitedUrl = process.env.EDGELIVE_LIMITED_URL;
assert.ok(url && limitedUrl, 'EDGELIVE_URL and EDGELIVE_LIMITED_URL must be set');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Resolves with the first event that satisfies `pred`, or rejects after `ms`.
function waitFor(emitter, event, pred = () => true, ms = 5000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timeout waiting for ${event}`)), ms);
    const h = (ctx) => {
      if (pred(ctx)) {
        clearTimeout(t);
        emitter.removeListener(event, h);
        resolve(ctx);
      }
    };
    emitter.on(event, h);
  });
}

function client(u = url) {
  const c = new Centrifuge(u, { websocket: WebSocket, timeout: 5000 });
  c.disconnects = [];
  c.on('disconnected', (ctx) => c.disconnects.push(ctx));
  c.on('connected', (ctx) => { c.clientId = ctx.client; });
  c.on('error', (ctx) => console.error('client error', ctx.error));
  return c;
}

const channel = 'grafana/broadcast/js-room';

async function pubSubPresenceJoinLeave() {
  const a = client();
  const b = client();
  const subA = a.newSubscription(channel, { joinLeave: true });
  const subB = b.newSubscription(`1/${channel}`, { joinLeave: true });
  const gotA = [];
  const gotB = [];
  subA.on('publication', (ctx) => gotA.push(ctx));
  subB.on('publication', (ctx) => gotB.push(ctx));
  // Optimistic subscribe: the client batches connect + subscribe in one frame.
  subA.subscribe();
  a.connect();
  await subA.ready(5000);
  // Recorded, not matched as they come: b's join may reach a before b's own connect reply
  // has told b its client id (two sockets, no order between them).
  const joinsA = [];
  subA.on('join', (ctx) => joinsA.push(ctx.info.client));
  subB.subscribe();
  b.connect();
  await subB.ready(5000);
  await b.ready(5000);
  for (let i = 0; i < 250 && !joinsA.includes(b.clientId); i++) await sleep(20);
  assert.ok(joinsA.includes(b.clientId), `a sees b join: ${joinsA}`);

  await subA.publish({ from: 'a', n: 1 });
  await b.publish(`1/${channel}`, { from: 'b', n: 2 });
  for (let i = 0; i < 100 && (gotA.length < 2 || gotB.length < 2); i++) await sleep(20);
  assert.deepEqual(gotA.map((p) => p.data), [{ from: 'a', n: 1 }, { from: 'b', n: 2 }]);
  assert.deepEqual(gotB.map((p) => p.data), [{ from: 'a', n: 1 }, { from: 'b', n: 2 }]);
  assert.equal(gotB[0].info.client, a.clientId, 'publication carries the publisher info');

  const presence = await subA.presence();
  assert.deepEqual(Object.keys(presence.clients).sort(), [a.clientId, b.clientId].sort());
  const stats = await subB.presenceStats();
  assert.deepEqual({ c: stats.numClients, u: stats.numUsers }, { c: 2, u: 1 });

  const leaveOfB = waitFor(subA, 'leave', (ctx) => ctx.info.client === b.clientId);
  const unsubscribed = waitFor(subB, 'unsubscribed');
  subB.unsubscribe();
  await unsubscribed;
  await leaveOfB;
  assert.equal(subB.state, 'unsubscribed');
  const after = await a.presenceStats(channel);
  assert.equal(after.numClients, 1);

  // Server pings every second: the client answers and stays connected.
  await sleep(3500);
  assert.equal(a.state, 'connected');
  assert.equal(a.disconnects.length, 0, JSON.stringify(a.disconnects));

  // Errors reach the caller with code and message.
  await assert.rejects(a.publish('stream/s/m', { x: 1 }), (e) => e.code === 103 && !!e.message);
  const bad = a.newSubscription('plugin/testdata/no-such-stream');
  const err = waitFor(bad, 'unsubscribed');
  bad.subscribe();
  assert.equal((await err).code, 102);

  a.disconnect();
  b.disconnect();
}

async function connectionLimitIsTerminal() {
  const first = client(limitedUrl);
  first.connect();
  await first.ready(5000);
  const second = client(limitedUrl);
  let reconnecting = 0;
  const disconnected = waitFor(second, 'disconnected');
  second.connect();
  const ctx = await disconnected;
  assert.equal(ctx.code, 3504);
  assert.equal(ctx.reason, 'connection limit');
  second.on('connecting', () => reconnecting++);
  await sleep(1500);
  assert.equal(second.state, 'disconnected');
  assert.equal(reconnecting, 0, 'a terminal close must not reconnect');
  first.disconnect();
}

await pubSubPresenceJoinLeave();
console.log('ok pub/sub, presence, join/leave, unsubscribe, pings, errors');
await connectionLimitIsTerminal();
console.log('ok 3504 connection limit is terminal');
process.exit(0);
