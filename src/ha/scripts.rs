//! The Lua scripts run in Redis. Written for edgelive, to have the effects Centrifuge's own
//! scripts (centrifugal/centrifuge `internal/redis_lua/`) have on the same keys, so that its
//! nodes and ours read each other's history, offsets and presence:
//!
//! - history: the meta hash's `e` (epoch, kept when there is one) and `s` (top offset, by
//!   `HINCRBY`); the stream's entry id is the offset and its field `d` the protobuf
//!   publication; `MAXLEN` and the TTLs; the pub/sub message carries `__p1:<offset>:<epoch>__`;
//! - presence: the data hash (client → `ClientInfo`) and the expiry sorted set (client scored by
//!   when it expires), both with the presence TTL; a read first drops what expired.
//!
//! Each script is one atomic step in Redis: an offset, its stream entry and its pub/sub
//! message cannot be split by another node's publication.

use redis::Script;

/// Reads (or starts) a history's meta and appends: KEYS stream, meta; ARGV payload, max
/// length, stream TTL (s), pub/sub channel, meta TTL (s, 0 = none), epoch to use when the
/// history has none. Returns `{offset, epoch}`.
const HISTORY_ADD: &str = r#"
local function history_add(stream, meta, payload, size, ttl, channel, meta_ttl, new_epoch)
  local epoch = redis.call("hget", meta, "e")
  if epoch == false then
    epoch = new_epoch
    redis.call("hset", meta, "e", epoch)
  end
  local offset = redis.call("hincrby", meta, "s", 1)
  if meta_ttl ~= "0" then
    redis.call("expire", meta, meta_ttl)
  end
  if offset == 1 then
    -- The meta hash was new (or had expired): entries of a former life go.
    redis.call("del", stream)
  end
  redis.call("xadd", stream, "MAXLEN", size, offset, "d", payload)
  redis.call("expire", stream, ttl)
  redis.call("publish", channel, "__p1:" .. offset .. ":" .. epoch .. "__" .. payload)
  return {offset, epoch}
end
"#;

/// A publication with history (see `HISTORY_ADD`).
pub fn publish_history() -> Script {
    Script::new(&format!(
        "{HISTORY_ADD}\nreturn history_add(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])"
    ))
}

/// A managed stream's push: KEYS last-frame hash, stream, meta; ARGV schema, frame, full
/// payload, data-only payload, last-frame TTL (s), history ("1"/"0"), max length, stream TTL,
/// pub/sub channel, meta TTL, new epoch, retained ("1": an MQTT retained value, given again
/// whenever a bridge subscribes again), its time column (from 1; 0 = none), the push's time. The data-only
/// payload goes out when the schema is the hash's (schema once, as Grafana publishes); the hash
/// then holds this frame, and `t` the push's time (unix ms; for `/api/live/list`, Grafana's
/// cache reads only `schema` and `frame`). A retained value that repeats the last frame but for
/// its time column changes nothing. Returns `{offset, epoch}` (`{0, ""}` without history or when skipped).
pub fn push_frame() -> Script {
    Script::new(&format!(
        r#"{HISTORY_ADD}
if ARGV[12] == "1" and redis.call("hget", KEYS[1], "schema") == ARGV[1] then
  local before = redis.call("hget", KEYS[1], "frame")
  local ok_a, a = pcall(cjson.decode, before or "")
  local ok_b, b = pcall(cjson.decode, ARGV[2])
  if ok_a and ok_b and type(a.data) == "table" and type(b.data) == "table" then
    local va, vb = a.data.values, b.data.values
    local time = tonumber(ARGV[13])
    local same = type(va) == "table" and type(vb) == "table" and #va == #vb
    if same then
      for i = 1, #va do
        if i ~= time and cjson.encode(va[i]) ~= cjson.encode(vb[i]) then
          same = false
          break
        end
      end
    end
    if same then
      return {{0, ""}}
    end
  end
end
local last = redis.call("hget", KEYS[1], "schema")
local payload = ARGV[4]
if last ~= ARGV[1] then
  payload = ARGV[3]
end
redis.call("hset", KEYS[1], "schema", ARGV[1], "frame", ARGV[2], "t", ARGV[14])
redis.call("expire", KEYS[1], ARGV[5])
if ARGV[6] == "0" then
  redis.call("publish", ARGV[9], payload)
  return {{0, ""}}
end
return history_add(KEYS[2], KEYS[3], payload, ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11])"#
    ))
}

/// What a subscribe or the history command reads, in one step: KEYS stream, meta, last-frame
/// hash; ARGV with publications ("1"/"0"), from (an offset, "-" or "+"), count, reverse
/// ("1"/"0"), meta TTL, epoch to start with when the history has none, with the last frame
/// ("1"/"0"), with the position ("1"/"0"). Reading the position starts the epoch when there is
/// none and keeps the meta alive, as Centrifuge's read does. Returns `{top, epoch, entries,
/// frame}` (entries as XRANGE gives them; `"0"`, `""` without the position; frame nil when not
/// asked for or none).
pub fn history_read() -> Script {
    Script::new(
        r#"
local top, epoch = "0", ""
if ARGV[8] == "1" then
  local meta = redis.call("hmget", KEYS[2], "s", "e")
  top, epoch = meta[1], meta[2]
  if epoch == false then
    epoch = ARGV[6]
    top = "0"
    redis.call("hset", KEYS[2], "e", epoch)
  end
  if top == false then
    top = "0"
  end
  if ARGV[5] ~= "0" then
    redis.call("expire", KEYS[2], ARGV[5])
  end
end
local entries = {}
if ARGV[1] == "1" then
  if ARGV[4] == "1" then
    entries = redis.call("xrevrange", KEYS[1], ARGV[2], "-", "COUNT", ARGV[3])
  else
    entries = redis.call("xrange", KEYS[1], ARGV[2], "+", "COUNT", ARGV[3])
  end
end
local frame = false
if ARGV[7] == "1" then
  frame = redis.call("hget", KEYS[3], "frame")
end
return {top, epoch, entries, frame}"#,
    )
}

/// Adds or refreshes one presence entry: KEYS expiry set, data hash; ARGV TTL (s), expires at
/// (unix s), client id, protobuf `ClientInfo`.
pub fn presence_add() -> Script {
    Script::new(
        r#"
redis.call("zadd", KEYS[1], ARGV[2], ARGV[3])
redis.call("hset", KEYS[2], ARGV[3], ARGV[4])
redis.call("expire", KEYS[1], ARGV[1])
redis.call("expire", KEYS[2], ARGV[1])
return 1"#,
    )
}

/// Removes one presence entry: KEYS expiry set, data hash; ARGV client id.
pub fn presence_remove() -> Script {
    Script::new(
        r#"
redis.call("hdel", KEYS[2], ARGV[1])
redis.call("zrem", KEYS[1], ARGV[1])
return 1"#,
    )
}

/// Who is present: KEYS expiry set, data hash; ARGV now (unix s). Entries that expired (their
/// node stopped refreshing them) are dropped first. Returns HGETALL's flat list.
pub fn presence_get() -> Script {
    Script::new(
        r#"
local expired = redis.call("zrangebyscore", KEYS[1], "0", ARGV[1])
for _, client in ipairs(expired) do
  redis.call("hdel", KEYS[2], client)
  redis.call("zrem", KEYS[1], client)
end
return redis.call("hgetall", KEYS[2])"#,
    )
}
