//! A `Session` driven by arbitrary command sequences: whatever two clients send, in whatever
//! order and with whatever values, nothing panics and every message the server queues for a
//! client is one compact JSON object (see `compact`).
//!
//! The input is structured (`Script`: commands with fields, JWTs signed with the configured
//! secret, JSON data with any nesting and whitespace, encoded into Centrifuge frames of
//! `\n`-joined commands) or raw (`Raw`: frames of arbitrary bytes after an optional connect).
//! The hub, the store (in a temp dir) and the stream handlers are made once per process, so an
//! execution costs a few commands and one round trip through the storage thread; state such
//! as history therefore carries over between executions, as it does between real clients.
#![no_main]

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arbitrary::Arbitrary;
use edgelive::auth::jwt::{self, Claims};
use edgelive::auth::{Identity, Role};
use edgelive::config::Config;
use edgelive::broker::Broker;
use edgelive::hub::Hub;
use edgelive::outbox::Outbox;
use edgelive::persist::{Persist, Request};
use edgelive::session::Session;
use edgelive::settings::Settings;
use edgelive::streams::lifecycle::Timings;
use edgelive::streams::Streams;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const VIEWER_TOKEN: &str = "viewer-token-0123456789";
const PUBLISHER_TOKEN: &str = "publisher-token-0123456789";

/// JWT auth, two API tokens, one rule that needs admin, and a command rate high enough that
/// long scripts reach the commands rather than the rate limit.
const CONFIG: &str = r#"
[auth]
jwt_hmac_secret = "0123456789abcdef0123456789abcdef"
[[auth.tokens]]
name = "dash"
role = "viewer"
token = "viewer-token-0123456789"
[[auth.tokens]]
name = "sensor"
role = "publisher"
token = "publisher-token-0123456789"
[[auth.rules]]
pattern = "grafana/broadcast/secret-*"
subscribe = "admin"
[live]
client_command_rate = 100000
client_command_burst = 100000
client_channel_limit = 8
"#;

/// What every execution shares: made once per process.
struct World {
    broker: Broker,
    settings: Arc<Settings>,
    persist: Persist,
    streams: Arc<Streams>,
    /// Stream handlers' producers run on it (a subscribe to `plugin/testdata/…` spawns one).
    rt: tokio::runtime::Runtime,
}

static WORLD: OnceLock<World> = OnceLock::new();
static STORE_DIR: OnceLock<PathBuf> = OnceLock::new();
static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

extern "C" {
    fn atexit(f: extern "C" fn()) -> i32;
}

/// libFuzzer ends with `exit`, so statics are never dropped: the store's directory goes here.
extern "C" fn remove_store() {
    if let Some(dir) = STORE_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn world() -> &'static World {
    WORLD.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("edgelive-fuzz-session-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        STORE_DIR.set(dir.clone()).expect("set once");
        // SAFETY: registers a plain function with the C runtime; it only removes a directory.
        unsafe { atexit(remove_store) };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let config = Config::from_toml("fuzz", CONFIG, Vec::new()).expect("config");
        let settings = Arc::new(Settings::from_config(&config).expect("settings"));
        let store =
            edgelive_storage::Store::open(&edgelive_storage::test_config(&dir)).expect("store");
        let hub = Arc::new(Hub::new(settings.org_id));
        let (persist, _threads) =
            Persist::start(store, hub.clone(), (&*settings).into()).expect("storage threads");
        // Producers stop soon after their last watcher, so executions do not pile them up.
        let timings = Timings {
            grace_checks: 1,
            check_every: Duration::from_millis(200),
            ..Default::default()
        };
        let broker = Broker::new(
            hub.clone(),
            persist.clone(),
            settings.kinds.clone(),
            settings.max_read,
            settings.backfill.rows > 0,
        );
        let streams = {
            let _g = rt.enter();
            Streams::new(
                broker.clone(),
                timings,
                &[],
                tokio_util::sync::CancellationToken::new(),
            )
        };
        World {
            broker,
            settings,
            persist,
            streams,
            rt,
        }
    })
}

impl World {
    /// Returns once the storage thread has handled everything submitted before (it serves
    /// requests in order, so a list request queued now is answered after them).
    fn barrier(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.persist.submit_always(Request::List { reply: tx });
        rx.blocking_recv().expect("the storage thread answers");
    }
}

/// Whitespace between JSON tokens: insignificant in the input, and must not be in the output.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Ws {
    None,
    Space,
    Tab,
    Cr,
    /// A raw newline ends the command line, so such a command does not decode.
    Lf,
    Spaces(u8),
}

/// `SESSION_FUZZ_COMPACT_DATA=1`: the generator writes client data and JWT `info` without
/// whitespace, so a run looks past the known class (both are relayed verbatim) for others.
/// The check stays the same; raw-bytes inputs are not affected.
fn compact_data() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("SESSION_FUZZ_COMPACT_DATA").is_some_and(|v| v == "1"))
}

impl Ws {
    fn put(self, out: &mut String) {
        match self {
            Ws::None => {}
            Ws::Space => out.push(' '),
            Ws::Tab => out.push('\t'),
            Ws::Cr => out.push('\r'),
            Ws::Lf => out.push('\n'),
            Ws::Spaces(n) => out.extend(std::iter::repeat_n(' ', usize::from(n % 8))),
        }
    }
}

/// One token of a JSON document; a flat list so any nesting depth is cheap to generate.
#[derive(Arbitrary, Debug)]
enum JTok {
    Arr,
    Obj,
    Close,
    /// The key of the next member when inside an object.
    Key(String),
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    /// `1e<n>`: valid JSON whatever its range.
    Exp(i16),
    NegZero,
    Str(String),
    /// A string written with `\uXXXX` escapes only.
    Escaped(String),
}

/// A JSON document with whitespace from `ws` (cycled) between its tokens.
#[derive(Arbitrary, Debug)]
struct Json {
    toks: Vec<JTok>,
    ws: Vec<Ws>,
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

impl Json {
    fn render(&self) -> String {
        let mut out = String::new();
        let mut ws = self.ws.iter().copied().cycle();
        let compact = compact_data();
        let mut pad = |out: &mut String| {
            if let Some(w) = ws.next().filter(|_| !compact) {
                w.put(out)
            }
        };
        // Open containers: object or not, members so far.
        let mut stack: Vec<(bool, usize)> = Vec::new();
        let mut key: Option<&str> = None;
        pad(&mut out);
        for t in &self.toks {
            match t {
                JTok::Key(k) => {
                    key = Some(k);
                    continue;
                }
                JTok::Close => {
                    if let Some((obj, _)) = stack.pop() {
                        out.push(if obj { '}' } else { ']' });
                        pad(&mut out);
                        if stack.is_empty() {
                            break;
                        }
                    }
                    continue;
                }
                _ => {}
            }
            if let Some((obj, n)) = stack.last_mut() {
                if *n > 0 {
                    out.push(',');
                    pad(&mut out);
                }
                *n += 1;
                if *obj {
                    out.push_str(&json_str(key.take().unwrap_or("k")));
                    pad(&mut out);
                    out.push(':');
                    pad(&mut out);
                }
            }
            match t {
                JTok::Arr => stack.push((false, 0)),
                JTok::Obj => stack.push((true, 0)),
                _ => {}
            }
            match t {
                JTok::Arr => out.push('['),
                JTok::Obj => out.push('{'),
                JTok::Null => out.push_str("null"),
                JTok::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                JTok::I64(n) => out.push_str(&n.to_string()),
                JTok::U64(n) => out.push_str(&n.to_string()),
                JTok::F64(f) if f.is_finite() => out.push_str(&format!("{f:?}")),
                JTok::F64(_) => out.push_str("-1.5E+308"),
                JTok::Exp(e) => out.push_str(&format!("1e{e}")),
                JTok::NegZero => out.push_str("-0.0e-0"),
                JTok::Str(s) => out.push_str(&json_str(s)),
                JTok::Escaped(s) => {
                    out.push('"');
                    for u in s.encode_utf16() {
                        out.push_str(&format!("\\u{u:04x}"));
                    }
                    out.push('"');
                }
                JTok::Key(_) | JTok::Close => unreachable!("handled above"),
            }
            pad(&mut out);
            if stack.is_empty() {
                break;
            }
        }
        while let Some((obj, _)) = stack.pop() {
            out.push(if obj { '}' } else { ']' });
            pad(&mut out);
        }
        if out.trim().is_empty() {
            out.push_str("null");
        }
        out
    }
}

/// Channel names that reach each channel-kind branch, and odd ones.
const KNOWN: &[&str] = &[
    "grafana/broadcast/x",
    "1/grafana/broadcast/x",
    "grafana/broadcast/secret-1",
    "grafana/broadcast/",
    "grafana/broadcast/a b",
    "grafana/broadcast/ü\u{2028}\"\\",
    "stream/a/b",
    "1/stream/a/b",
    "stream/a",
    "plugin/testdata/random-2s-stream",
    "plugin/testdata/random-flakey-stream",
    "plugin/testdata/random-labeled-stream",
    "plugin/testdata/random-20Hz-stream",
    "plugin/testdata/random-20Hz-stream-7",
    "plugin/testdata/nope",
    "plugin/other/x",
    "ds/uid/x",
    "0/grafana/broadcast/x",
    "-1/grafana/broadcast/x",
    "9223372036854775807/grafana/broadcast/x",
    "18446744073709551616/grafana/broadcast/x",
    "a",
    "/",
    "//",
    "",
];

#[derive(Arbitrary, Debug)]
enum Chan {
    Known(u8),
    Raw(String),
    Parts {
        org: Option<i64>,
        scope: u8,
        namespace: String,
        path: String,
    },
    /// A long name: `unit` repeated.
    Long {
        unit: u8,
        reps: u16,
    },
}

impl Chan {
    fn name(&self) -> String {
        match self {
            Chan::Known(i) => KNOWN[usize::from(*i) % KNOWN.len()].to_owned(),
            Chan::Raw(s) => s.clone(),
            Chan::Parts {
                org,
                scope,
                namespace,
                path,
            } => {
                let scope =
                    ["grafana", "stream", "plugin", "ds", "watch", ""][usize::from(*scope) % 6];
                match org {
                    Some(o) => format!("{o}/{scope}/{namespace}/{path}"),
                    None => format!("{scope}/{namespace}/{path}"),
                }
            }
            Chan::Long { unit, reps } => {
                let c = [b'a', b'/', b'-', b'.', b' '][usize::from(*unit) % 5] as char;
                let mut s = String::from("grafana/broadcast/");
                s.extend(std::iter::repeat_n(c, usize::from(*reps) % 20_000));
                s
            }
        }
    }
}

/// A JWT time claim.
#[derive(Arbitrary, Debug)]
enum Time {
    Absent,
    /// Seconds from now.
    Rel(i32),
    Abs(i64),
    F(f64),
    I64Max,
    I64Min,
    F64Max,
}

impl Time {
    fn value(&self, now: f64) -> Option<f64> {
        match self {
            Time::Absent => None,
            Time::Rel(s) => Some(now + f64::from(*s)),
            Time::Abs(s) => Some(*s as f64),
            Time::F(f) => Some(*f),
            Time::I64Max => Some(i64::MAX as f64),
            Time::I64Min => Some(i64::MIN as f64),
            Time::F64Max => Some(f64::MAX),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct JwtSpec {
    sub: String,
    exp: Time,
    nbf: Time,
    iat: Time,
    info: Option<Json>,
    channels: Vec<Chan>,
    role: Option<u8>,
    /// A subscription token's claim (refused on connect).
    channel: Option<Chan>,
    /// Signed with another key.
    forged: bool,
}

impl JwtSpec {
    fn sign(&self) -> String {
        let now = edgelive::auth::now();
        let claims = Claims {
            sub: self.sub.clone(),
            exp: self.exp.value(now),
            nbf: self.nbf.value(now),
            iat: self.iat.value(now),
            info: None,
            channels: self.channels.iter().map(Chan::name).collect(),
            role: self
                .role
                .map(|r| [Role::Viewer, Role::Publisher, Role::Admin][usize::from(r) % 3]),
            channel: self.channel.as_ref().map(Chan::name),
        };
        let key: &[u8] = if self.forged {
            b"another key"
        } else {
            SECRET.as_bytes()
        };
        // `info` spliced in as rendered (whitespace kept), as another issuer may write it.
        let mut payload = serde_json::to_string(&claims).expect("claims serialize");
        if let Some(info) = self
            .info
            .as_ref()
            .map(Json::render)
            .filter(|j| RawValue::from_string(j.clone()).is_ok())
        {
            payload.pop();
            if payload.len() > 1 {
                payload.push(',');
            }
            payload.push_str("\"info\":");
            payload.push_str(&info);
            payload.push('}');
        }
        jwt::sign_payload(payload.as_bytes(), key)
    }
}

#[derive(Arbitrary, Debug)]
enum Token {
    Empty,
    Raw(String),
    Viewer,
    Publisher,
    Jwt(Box<JwtSpec>),
}

impl Token {
    fn text(&self) -> String {
        match self {
            Token::Empty => String::new(),
            Token::Raw(s) => s.clone(),
            Token::Viewer => VIEWER_TOKEN.into(),
            Token::Publisher => PUBLISHER_TOKEN.into(),
            Token::Jwt(j) => j.sign(),
        }
    }
}

/// Who the HTTP upgrade authenticated.
#[derive(Arbitrary, Debug)]
enum Upgrade {
    Nobody,
    Anonymous,
    Token(Token),
}

impl Upgrade {
    fn identity(&self, w: &World) -> Option<Identity> {
        match self {
            Upgrade::Nobody => None,
            Upgrade::Anonymous => Some(Identity::anonymous()),
            Upgrade::Token(t) => w
                .settings
                .auth
                .verify(&t.text(), edgelive::auth::now())
                .ok(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Id {
    N(u32),
    Absent,
    Neg(i32),
    Huge(u64),
}

#[derive(Arbitrary, Debug)]
enum Limit {
    Absent,
    I32(i32),
    I64(i64),
}

#[derive(Arbitrary, Debug)]
enum Delta {
    Absent,
    Fossil,
    Other(String),
}

#[derive(Arbitrary, Debug)]
struct SubRecovery {
    channel: Chan,
    recover: bool,
    offset: u64,
    epoch: String,
}

#[derive(Arbitrary, Debug)]
enum Method {
    Connect {
        token: Token,
        name: String,
        version: String,
        data: Option<Json>,
        subs: Vec<SubRecovery>,
    },
    Subscribe {
        channel: Chan,
        recover: bool,
        offset: u64,
        epoch: String,
        delta: Delta,
        tf: bool,
        kind: u32,
        data: Option<Json>,
        token: String,
    },
    Unsubscribe(Chan),
    Publish {
        channel: Chan,
        data: Option<Json>,
        kind: u32,
    },
    Presence(Chan),
    PresenceStats(Chan),
    History {
        channel: Chan,
        limit: Limit,
        since: Option<(u64, String)>,
        reverse: bool,
    },
    Ping,
    Send(Option<Json>),
    Rpc {
        method: String,
        data: Option<Json>,
    },
    Refresh(Token),
    SubRefresh {
        channel: Chan,
        token: String,
    },
    /// `{}` (a pong) or `{"id":n}` (an unknown method).
    Empty,
}

#[derive(Arbitrary, Debug)]
struct Cmd {
    id: Id,
    method: Method,
    /// Around the command's own tokens (the decoder ignores it).
    ws: Ws,
}

/// Appends `,"name":<value>` to a JSON object being written.
fn field(out: &mut String, name: &str, value: &str) {
    if !out.ends_with('{') {
        out.push(',');
    }
    out.push_str(&json_str(name));
    out.push(':');
    out.push_str(value);
}

impl Cmd {
    fn encode(&self) -> String {
        let mut out = String::from("{");
        self.ws.put(&mut out);
        match self.id {
            Id::N(n) => field(&mut out, "id", &n.to_string()),
            Id::Absent => {}
            Id::Neg(n) => field(&mut out, "id", &n.to_string()),
            Id::Huge(n) => field(&mut out, "id", &n.to_string()),
        }
        let data = |out: &mut String, d: &Option<Json>| {
            if let Some(j) = d {
                field(out, "data", &j.render());
            }
        };
        let (name, mut body) = (self.method_name(), String::from("{"));
        match &self.method {
            Method::Connect {
                token,
                name,
                version,
                data: d,
                subs,
            } => {
                field(&mut body, "token", &json_str(&token.text()));
                field(&mut body, "name", &json_str(name));
                field(&mut body, "version", &json_str(version));
                data(&mut body, d);
                let mut map = String::from("{");
                for s in subs {
                    let mut one = String::from("{");
                    field(&mut one, "recover", &s.recover.to_string());
                    field(&mut one, "offset", &s.offset.to_string());
                    field(&mut one, "epoch", &json_str(&s.epoch));
                    one.push('}');
                    field(&mut map, &s.channel.name(), &one);
                }
                map.push('}');
                field(&mut body, "subs", &map);
            }
            Method::Subscribe {
                channel,
                recover,
                offset,
                epoch,
                delta,
                tf,
                kind,
                data: d,
                token,
            } => {
                field(&mut body, "channel", &json_str(&channel.name()));
                field(&mut body, "recover", &recover.to_string());
                field(&mut body, "offset", &offset.to_string());
                field(&mut body, "epoch", &json_str(epoch));
                match delta {
                    Delta::Absent => {}
                    Delta::Fossil => field(&mut body, "delta", "\"fossil\""),
                    Delta::Other(s) => field(&mut body, "delta", &json_str(s)),
                }
                if *tf {
                    field(&mut body, "tf", "{}");
                }
                if *kind != 0 {
                    field(&mut body, "type", &kind.to_string());
                }
                data(&mut body, d);
                field(&mut body, "token", &json_str(token));
            }
            Method::Unsubscribe(c) | Method::Presence(c) | Method::PresenceStats(c) => {
                field(&mut body, "channel", &json_str(&c.name()));
            }
            Method::Publish {
                channel,
                data: d,
                kind,
            } => {
                field(&mut body, "channel", &json_str(&channel.name()));
                data(&mut body, d);
                if *kind != 0 {
                    field(&mut body, "type", &kind.to_string());
                }
            }
            Method::History {
                channel,
                limit,
                since,
                reverse,
            } => {
                field(&mut body, "channel", &json_str(&channel.name()));
                match limit {
                    Limit::Absent => {}
                    Limit::I32(n) => field(&mut body, "limit", &n.to_string()),
                    Limit::I64(n) => field(&mut body, "limit", &n.to_string()),
                }
                if let Some((offset, epoch)) = since {
                    let mut s = String::from("{");
                    field(&mut s, "offset", &offset.to_string());
                    field(&mut s, "epoch", &json_str(epoch));
                    s.push('}');
                    field(&mut body, "since", &s);
                }
                field(&mut body, "reverse", &reverse.to_string());
            }
            Method::Ping | Method::Empty => {}
            Method::Send(d) => data(&mut body, d),
            Method::Rpc { method, data: d } => {
                field(&mut body, "method", &json_str(method));
                data(&mut body, d);
            }
            Method::Refresh(t) => field(&mut body, "token", &json_str(&t.text())),
            Method::SubRefresh { channel, token } => {
                field(&mut body, "channel", &json_str(&channel.name()));
                field(&mut body, "token", &json_str(token));
            }
        }
        body.push('}');
        if let Some(name) = name {
            field(&mut out, name, &body);
        }
        self.ws.put(&mut out);
        out.push('}');
        out
    }

    fn method_name(&self) -> Option<&'static str> {
        Some(match self.method {
            Method::Connect { .. } => "connect",
            Method::Subscribe { .. } => "subscribe",
            Method::Unsubscribe(_) => "unsubscribe",
            Method::Publish { .. } => "publish",
            Method::Presence(_) => "presence",
            Method::PresenceStats(_) => "presence_stats",
            Method::History { .. } => "history",
            Method::Ping => "ping",
            Method::Send(_) => "send",
            Method::Rpc { .. } => "rpc",
            Method::Refresh(_) => "refresh",
            Method::SubRefresh { .. } => "sub_refresh",
            Method::Empty => return None,
        })
    }
}

/// One WebSocket message from one of the two clients.
#[derive(Arbitrary, Debug)]
struct Step {
    second_client: bool,
    cmds: Vec<Cmd>,
    trailing_newline: bool,
}

#[derive(Arbitrary, Debug)]
enum Input {
    Script {
        upgrades: [Upgrade; 2],
        steps: Vec<Step>,
    },
    Raw {
        upgrade: Upgrade,
        connect_first: bool,
        frames: Vec<Vec<u8>>,
    },
}

/// A client: its session while the connection lasts, and what the server queued for it.
struct Client {
    session: Option<Session>,
    outbox: Arc<Outbox>,
}

impl Client {
    fn new(w: &World, upgrade: &Upgrade) -> Client {
        let outbox = Arc::new(Outbox::new(1 << 20));
        let session = Session::new(
            NEXT_CLIENT.fetch_add(1, Ordering::Relaxed),
            outbox.clone(),
            w.broker.clone(),
            Arc::new((&*w.settings).into()),
            w.streams.clone(),
            upgrade.identity(w),
        );
        Client {
            session: Some(session),
            outbox,
        }
    }

    /// Hands one message to the session; an `Err` ends the connection, as the transport does.
    fn send(&mut self, w: &World, msg: &[u8]) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        let _g = w.rt.enter();
        if s.handle_message(msg).is_err() {
            self.session = None;
        }
    }
}

/// Whether `msg` is compact JSON, precisely: it is UTF-8; it is one JSON value by RFC 8259's
/// grammar (serde_json's parser, which also rejects trailing content; numbers are not
/// range-checked, as a JSON text may carry `1e999`); that value is an object (every
/// Centrifuge reply and push is); and no byte outside a string literal is JSON whitespace
/// (space, tab, CR, LF). Inside a valid string literal CR, LF and tab can only appear escaped,
/// so a compact message has no raw `\n` at all: it cannot split the `\n`-joined batch a
/// client receives.
fn compact(msg: &[u8]) -> Result<(), String> {
    let s = std::str::from_utf8(msg).map_err(|e| format!("not UTF-8: {e}"))?;
    serde_json::from_str::<serde::de::IgnoredAny>(s).map_err(|e| format!("not JSON: {e}"))?;
    if !s.starts_with('{') {
        return Err("not an object".into());
    }
    let (mut in_str, mut escaped) = (false, false);
    for (i, b) in s.bytes().enumerate() {
        if in_str {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_str = false,
                _ => {}
            }
        } else if b == b'"' {
            in_str = true;
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            return Err(format!(
                "whitespace {:?} outside strings at byte {i}",
                b as char
            ));
        }
    }
    Ok(())
}

fn check_outboxes(clients: &[Client]) {
    let mut q = VecDeque::new();
    for c in clients {
        c.outbox.drain(&mut q);
        for m in q.drain(..) {
            if let Err(e) = compact(&m) {
                panic!(
                    "outgoing message is not compact JSON ({e}): {:?}",
                    String::from_utf8_lossy(&m)
                );
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let w = world();
    let mut clients = Vec::new();
    match input {
        Input::Script { upgrades, steps } => {
            clients.push(Client::new(w, &upgrades[0]));
            clients.push(Client::new(w, &upgrades[1]));
            for step in steps {
                let mut frame = step
                    .cmds
                    .iter()
                    .map(Cmd::encode)
                    .collect::<Vec<_>>()
                    .join("\n");
                if step.trailing_newline {
                    frame.push('\n');
                }
                clients[usize::from(step.second_client)].send(w, frame.as_bytes());
            }
        }
        Input::Raw {
            upgrade,
            connect_first,
            frames,
        } => {
            let mut c = Client::new(w, &upgrade);
            if connect_first {
                c.send(w, br#"{"id":1,"connect":{}}"#);
            }
            for f in frames {
                c.send(w, &f);
            }
            clients.push(c);
        }
    }
    w.barrier();
    check_outboxes(&clients);
    // Leaving sends the others leave pushes (through the storage thread for presence channels).
    for i in 0..clients.len() {
        clients[i].session = None;
        w.barrier();
        check_outboxes(&clients);
    }
});
