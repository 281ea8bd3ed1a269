// Grafana data frames as edgelive (and Grafana Live) send them: a full frame
// {"schema": {...}, "data": {...}} when the schema changes, then {"data": {...}} alone.
// A FrameBuffer keeps the recent rows of one channel as series a chart can draw: one series
// per numeric field, and per label set where the stream is in labels mode (a "labels" column)
// or its fields carry labels. Plain script: sets globalThis.EdgeFrames.
(function () {
  "use strict";

  function labelsText(labels) {
    if (!labels) return "";
    return Object.keys(labels).sort().map((k) => k + "=" + labels[k]).join(",");
  }

  class FrameBuffer {
    // windowMs: rows older than the newest minus this are dropped; maxRows bounds memory.
    constructor(windowMs, maxRows) {
      this.windowMs = windowMs;
      this.maxRows = maxRows || 20000;
      this.schema = null;
      this.rows = []; // [timeMs, seriesKey, value]
      this.keys = []; // series keys in first-seen order
      this.last = new Map(); // seriesKey -> last value
      this.schemas = 0;
    }

    // Applies one message (subscribe data or a publication). Returns false for one this
    // buffer cannot read (no schema yet): the caller shows it as text instead.
    apply(msg) {
      if (!msg || typeof msg !== "object") return false;
      if (msg.schema) {
        const before = JSON.stringify(this.schema);
        if (before !== JSON.stringify(msg.schema)) {
          this.schema = msg.schema;
          this.schemas += 1;
        }
      }
      if (!this.schema || !msg.data || !Array.isArray(msg.data.values)) return false;
      const fields = this.schema.fields || [];
      const values = msg.data.values;
      const ti = fields.findIndex((f) => f.type === "time");
      if (ti < 0) return false;
      const li = fields.findIndex((f) => f.name === "labels" && f.type === "string");
      const n = (values[ti] || []).length;
      for (let r = 0; r < n; r++) {
        const t = values[ti][r];
        const rowLabels = li >= 0 ? values[li][r] : "";
        fields.forEach((f, i) => {
          if (f.type !== "number") return;
          const v = values[i] ? values[i][r] : null;
          if (v === null || v === undefined) return;
          let key = f.name || "value";
          const own = labelsText(f.labels);
          const all = [rowLabels, own].filter((s) => s).join(",");
          if (all) key += " {" + all + "}";
          if (!this.last.has(key)) this.keys.push(key);
          this.last.set(key, v);
          this.rows.push([t, key, v]);
        });
      }
      this.trim();
      return true;
    }

    trim() {
      if (this.rows.length === 0) return;
      let newest = -Infinity;
      for (const r of this.rows) if (r[0] > newest) newest = r[0];
      const from = newest - this.windowMs;
      if (this.rows[0][0] < from || this.rows.length > this.maxRows) {
        this.rows = this.rows.filter((r) => r[0] >= from).slice(-this.maxRows);
      }
    }

    // uPlot's aligned table: [times in seconds, series...], nulls where a series has no row.
    aligned() {
      const times = Array.from(new Set(this.rows.map((r) => r[0]))).sort((a, b) => a - b);
      const at = new Map(times.map((t, i) => [t, i]));
      const cols = this.keys.map(() => new Array(times.length).fill(null));
      const col = new Map(this.keys.map((k, i) => [k, i]));
      for (const [t, k, v] of this.rows) cols[col.get(k)][at.get(t)] = v;
      return [times.map((t) => t / 1000), ...cols];
    }

    points() {
      return this.rows.length;
    }
  }

  globalThis.EdgeFrames = { FrameBuffer, labelsText };
})();
