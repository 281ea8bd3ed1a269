// Grafana's LiveDataStream, for the client tests: the first message with a schema starts a
// StreamingDataFrame (@grafana/data), every later one (schema or data only) is pushed into it
// (a throw there is the panel error Grafana's users see). `until(n)` waits for n messages.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { StreamingDataFrame } = require('@grafana/data');

export function feed(sub, maxLength = 100) {
  const state = { frame: undefined, messages: 0, waiters: [] };
  const take = (data) => {
    if (process.env.DEBUG_FRAMES) console.log(JSON.stringify(data));
    if (!data) return;
    if (!state.frame) {
      assert.ok(data.schema, 'the first message carries the schema');
      state.frame = StreamingDataFrame.fromDataFrameJSON(data, { maxLength });
    } else {
      state.frame.push(data);
    }
    state.messages++;
    state.waiters.splice(0).forEach((w) => w());
  };
  sub.on('subscribed', (ctx) => take(ctx.data));
  sub.on('publication', (ctx) => take(ctx.data));
  state.until = (n, ms = 5000) => new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timeout waiting for ${n} messages (have ${state.messages})`)), ms);
    const check = () => {
      if (state.messages >= n) { clearTimeout(t); resolve(); } else state.waiters.push(check);
    };
    check();
  });
  return state;
}
