//! Session unit tests over a real store in a temp dir.
use super::*;
use crate::config::Config;
use crate::hub::Hub;
use crate::persist::TestPersist;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A hub, a real store in a temp dir, and its storage threads.
struct World {
    hub: Arc<Hub>,
    broker: crate::broker::Broker,
    store: TestPersist,
    streams: Arc<crate::streams::Streams>,
}

impl World {
    fn new() -> World {
        World::with(Config::default())
    }

    fn with(config: Config) -> World {
        let hub = Arc::new(Hub::new(1));
        let store = TestPersist::start(hub.clone(), &config);
        let broker = crate::broker::Broker::new(
            hub.clone(),
            store.persist.clone(),
            store.settings.kinds.clone(),
            store.settings.max_read,
            store.settings.backfill.rows > 0,
        );
        let streams = crate::streams::Streams::new(
            broker.clone(),
            Default::default(),
            &[],
            tokio_util::sync::CancellationToken::new(),
        );
        World {
            hub,
            broker,
            store,
            streams,
        }
    }

    /// A session whose upgrade was anonymous loopback (protected mode).
    fn session(&self, id: ClientId) -> (Session, Arc<Outbox>) {
        self.session_as(id, Some(Identity::anonymous()))
    }

    fn session_as(&self, id: ClientId, upgraded_as: Option<Identity>) -> (Session, Arc<Outbox>) {
        let outbox = Arc::new(Outbox::new(1 << 20));
        let s = Session::new(
            id,
            outbox.clone(),
            self.broker.clone(),
            Arc::new((&*self.store.settings).into()),
            self.streams.clone(),
            upgraded_as,
        );
        (s, outbox)
    }
}

/// Waits (bounded) until `n` messages are queued, and takes them.
fn out(o: &Outbox, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    let mut q = VecDeque::new();
    while got.len() < n && Instant::now() < deadline {
        o.drain(&mut q);
        got.extend(q.drain(..).map(|b| String::from_utf8(b.to_vec()).unwrap()));
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(got.len(), n, "{got:?}");
    got
}

#[test]
fn connect_then_subscribe_then_publish_reaches_the_publisher() {
    let w = World::new();
    let (mut s, o) = w.session(1);
    s.handle_message(b"{\"connect\":{\"name\":\"js\"},\"id\":1}\n{\"subscribe\":{\"channel\":\"grafana/broadcast/x\",\"flag\":1},\"id\":2}")
        .unwrap();
    let msgs = out(&o, 3);
    assert!(
        msgs[0].starts_with("{\"id\":1,\"connect\":{\"client\":\""),
        "{msgs:?}"
    );
    assert!(
        msgs[1].starts_with("{\"id\":2,\"subscribe\":{\"recoverable\":true,\"epoch\":\""),
        "{msgs:?}"
    );
    assert!(msgs[2].contains("\"join\""));
    s.handle_message(br#"{"id":3,"publish":{"channel":"grafana/broadcast/x","data":{"a":1}}}"#)
        .unwrap();
    let msgs = out(&o, 2);
    assert!(msgs[0]
        .starts_with(r#"{"push":{"channel":"grafana/broadcast/x","pub":{"data":{"a":1},"info""#));
    assert!(msgs[0].ends_with(r#""offset":1}}}"#), "{msgs:?}");
    assert_eq!(msgs[1], r#"{"id":3,"publish":{}}"#);
}

#[test]
fn protocol_violations_close_with_3501() {
    let w = World::new();
    let (mut s, _) = w.session(1);
    assert_eq!(
        s.handle_message(br#"{"id":1,"subscribe":{"channel":"a/b/c"}}"#),
        Err(Disconnect::BAD_REQUEST)
    );
    let (mut s, _) = w.session(2);
    assert_eq!(s.handle_message(b"not json"), Err(Disconnect::BAD_REQUEST));
    let (mut s, _) = w.session(3);
    s.handle_message(br#"{"id":1,"connect":{}}"#).unwrap();
    assert_eq!(
        s.handle_message(br#"{"id":2,"connect":{}}"#),
        Err(Disconnect::BAD_REQUEST)
    );
}

#[test]
fn errors_are_replies_with_codes() {
    let w = World::new();
    let (mut s, o) = w.session(1);
    s.handle_message(br#"{"id":1,"connect":{}}"#).unwrap();
    out(&o, 1);
    let cases: &[(&[u8], u32)] = &[
        (br#"{"id":2,"subscribe":{"channel":"bad channel/x/y"}}"#, 107),
        (br#"{"id":3,"subscribe":{"channel":"plugin/nope/random-2s-stream"}}"#, 102),
        (br#"{"id":4,"publish":{"channel":"stream/a/b","data":{}}}"#, 103),
        (br#"{"id":5,"history":{"channel":"grafana/broadcast/x","since":{"offset":1,"epoch":"other"}}}"#, 112),
        (br#"{"id":6,"rpc":{"method":"nope"}}"#, 104),
        (br#"{"id":7,"presence":{"channel":"stream/a/b"}}"#, 108),
        (br#"{"id":8,"subscribe":{"channel":"stream/a/b","type":1}}"#, 108),
        (br#"{"id":9,"subscribe":{"channel":"stream/a/b","tf":{}}}"#, 107),
        (br#"{"id":10,"refresh":{"token":"x"}}"#, 108),
    (br#"{"id":11,"sub_refresh":{"channel":"a/b/c","token":"x"}}"#, 108),
    ];
    for (cmd, code) in cases {
        s.handle_message(cmd).unwrap();
        let m = out(&o, 1);
        assert!(m[0].contains(&format!("\"code\":{code},")), "{m:?}");
        assert!(m[0].contains("\"message\":\""), "{m:?}");
    }
}

#[test]
fn dropping_a_session_leaves_its_channels() {
    let w = World::new();
    let (mut a, oa) = w.session(1);
    let (mut b, ob) = w.session(2);
    a.handle_message(br#"{"id":1,"connect":{}}"#).unwrap();
    a.handle_message(br#"{"id":2,"subscribe":{"channel":"1/grafana/broadcast/x"}}"#)
        .unwrap();
    out(&oa, 3);
    b.handle_message(br#"{"id":1,"connect":{}}"#).unwrap();
    b.handle_message(br#"{"id":2,"subscribe":{"channel":"grafana/broadcast/x"}}"#)
        .unwrap();
    out(&ob, 3);
    out(&oa, 1); // b's join
    b.handle_message(br#"{"id":3,"presence_stats":{"channel":"grafana/broadcast/x"}}"#)
        .unwrap();
    assert_eq!(
        out(&ob, 1)[0],
        r#"{"id":3,"presence_stats":{"num_clients":2,"num_users":1}}"#
    );
    drop(a);
    let m = out(&ob, 1);
    assert!(
        m[0].starts_with(r#"{"push":{"channel":"grafana/broadcast/x","leave""#),
        "{m:?}"
    );
    b.handle_message(br#"{"id":4,"presence_stats":{"channel":"grafana/broadcast/x"}}"#)
        .unwrap();
    assert_eq!(
        out(&ob, 1)[0],
        r#"{"id":4,"presence_stats":{"num_clients":1,"num_users":1}}"#
    );
    assert_eq!(w.hub.num_subscribers("grafana/broadcast/x"), 1);
}

/// A config with a JWT secret, two API tokens and one rule.
fn secured() -> Config {
    Config::from_toml(
        "t",
        r#"
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
        client_command_rate = 1
        client_command_burst = 10
        "#,
        Vec::new(),
    )
    .unwrap()
}

fn jwt(w: &World, claims: crate::auth::jwt::Claims) -> String {
    crate::auth::jwt::sign(&claims, w.store.settings.auth.jwt_secret().unwrap())
}

fn connect_with(s: &mut Session, token: &str) -> Result<(), Disconnect> {
    s.handle_message(format!(r#"{{"id":1,"connect":{{"token":"{token}"}}}}"#).as_bytes())
}

#[test]
fn connect_tokens_decide_who_the_client_is() {
    use crate::auth::jwt::Claims;
    let w = World::with(secured());
    // No credentials anywhere: 101, then close 3507.
    let (mut s, o) = w.session_as(1, None);
    assert_eq!(
        s.handle_message(br#"{"id":1,"connect":{}}"#),
        Err(Disconnect::PERMISSION_DENIED)
    );
    assert!(out(&o, 1)[0].contains(r#""code":101"#));
    // Expired: 109, the connection stays for a retry.
    let now = crate::auth::now();
    let expired = jwt(
        &w,
        Claims {
            sub: "ann".into(),
            exp: Some(now - 5.0),
            ..Default::default()
        },
    );
    let (mut s, o) = w.session_as(2, None);
    connect_with(&mut s, &expired).unwrap();
    assert!(out(&o, 1)[0].contains(r#""code":109"#));
    // Forged: 3500.
    let forged = crate::auth::jwt::sign(
        &Claims {
            sub: "ann".into(),
            ..Default::default()
        },
        b"not the configured secret",
    );
    let (mut s, _) = w.session_as(3, None);
    assert_eq!(
        connect_with(&mut s, &forged),
        Err(Disconnect::INVALID_TOKEN)
    );
    // Valid: user, info and expiry reach the reply and ClientInfo.
    let good = jwt(
        &w,
        Claims {
            sub: "ann".into(),
            exp: Some(now + 100.0),
            info: Some(crate::json::CompactJson::from_string(r#"{"desk":4}"#.into()).unwrap()),
            ..Default::default()
        },
    );
    let (mut s, o) = w.session_as(4, None);
    connect_with(&mut s, &good).unwrap();
    let m = out(&o, 1);
    assert!(m[0].contains(r#""expires":true,"ttl":"#), "{m:?}");
    s.handle_message(br#"{"id":2,"subscribe":{"channel":"grafana/broadcast/x"}}"#)
        .unwrap();
    let m = out(&o, 2);
    assert!(
        m[1].contains(r#""user":"ann""#) && m[1].contains(r#""conn_info":{"desk":4}"#),
        "{m:?}"
    );
}

#[test]
fn roles_and_rules_are_enforced_per_command() {
    let w = World::with(secured());
    let viewer = w
        .store
        .settings
        .auth
        .verify("viewer-token-0123456789", 0.0)
        .unwrap();
    let (mut s, o) = w.session_as(1, Some(viewer));
    s.handle_message(br#"{"id":1,"connect":{}}"#).unwrap();
    out(&o, 1);
    let cases: &[(&[u8], &str)] = &[
        (
            br#"{"id":2,"publish":{"channel":"grafana/broadcast/x","data":{}}}"#,
            r#""code":103"#,
        ),
        (
            br#"{"id":3,"subscribe":{"channel":"grafana/broadcast/secret-1"}}"#,
            r#""code":103"#,
        ),
        (
            br#"{"id":4,"history":{"channel":"grafana/broadcast/secret-1"}}"#,
            r#""code":103"#,
        ),
        (
            br#"{"id":5,"presence":{"channel":"grafana/broadcast/secret-1"}}"#,
            r#""code":103"#,
        ),
        (
            br#"{"id":6,"subscribe":{"channel":"grafana/broadcast/open"}}"#,
            r#""id":6,"subscribe":{"#,
        ),
    ];
    for (cmd, want) in cases {
        s.handle_message(cmd).unwrap();
        // A successful subscribe is followed by the client's own join.
        let n = if want.contains("subscribe") { 2 } else { 1 };
        let m = out(&o, n);
        assert!(m[0].contains(want), "{m:?}");
    }
    // An API token cannot be refreshed.
    s.handle_message(br#"{"id":7,"refresh":{"token":"x"}}"#)
        .unwrap();
    assert!(out(&o, 1)[0].contains(r#""code":108"#));
}

#[test]
fn refresh_extends_a_jwt_connection_and_checks_the_user() {
    let w = World::with(secured());
    let now = crate::auth::now();
    let token = |sub: &str, exp: f64| {
        jwt(
            &w,
            crate::auth::jwt::Claims {
                sub: sub.into(),
                exp: Some(exp),
                ..Default::default()
            },
        )
    };
    let refresh = |s: &mut Session, t: &str| {
        s.handle_message(format!(r#"{{"id":2,"refresh":{{"token":"{t}"}}}}"#).as_bytes())
    };
    let (mut s, o) = w.session_as(1, None);
    connect_with(&mut s, &token("ann", now + 10.0)).unwrap();
    out(&o, 1);
    refresh(&mut s, &token("ann", now + 3600.0)).unwrap();
    let m = out(&o, 1);
    assert!(
        m[0].starts_with(r#"{"id":2,"refresh":{"client":""#),
        "{m:?}"
    );
    assert!(m[0].contains(r#""expires":true,"ttl":3"#), "{m:?}");
    assert_eq!(o.expiry_ms(), Some(((now + 3600.0) * 1000.0) as u64));
    assert_eq!(
        refresh(&mut s, &token("bob", now + 3600.0)),
        Err(Disconnect::INVALID_TOKEN)
    );
    let (mut s, o) = w.session_as(2, None);
    connect_with(&mut s, &token("ann", now + 10.0)).unwrap();
    out(&o, 1);
    assert_eq!(
        refresh(&mut s, &token("ann", now - 1.0)),
        Err(Disconnect::EXPIRED)
    );
}

#[test]
fn a_tokens_channels_become_server_side_subscriptions() {
    let w = World::with(secured());
    let t = jwt(
        &w,
        crate::auth::jwt::Claims {
            sub: "ann".into(),
            channels: vec![
                "grafana/broadcast/a".into(),
                "grafana/broadcast/secret-2".into(),
            ],
            ..Default::default()
        },
    );
    let (mut s, o) = w.session_as(1, None);
    connect_with(&mut s, &t).unwrap();
    let m = out(&o, 4);
    assert!(m[0].starts_with(r#"{"id":1,"connect":"#), "{m:?}");
    let sub = m
        .iter()
        .find(|x| x.contains(r#""subscribe":{"recoverable":true"#))
        .expect("subscribe push");
    assert!(
        sub.starts_with(r#"{"push":{"channel":"grafana/broadcast/a","subscribe":"#),
        "{m:?}"
    );
    let refused = m
        .iter()
        .find(|x| x.contains("unsubscribe"))
        .expect("unsubscribe push");
    assert!(
        refused.contains("grafana/broadcast/secret-2") && refused.contains("permission denied"),
        "{m:?}"
    );
    assert!(m.iter().any(|x| x.contains(r#""join""#)), "{m:?}");
    assert_eq!(s.num_subscriptions(), 1);
}

#[test]
fn a_command_flood_gets_111_then_3013() {
    let w = World::with(secured());
    let (mut s, o) = w.session(1);
    s.handle_message(br#"{"id":1,"connect":{}}"#).unwrap();
    // Burst 10 at 1/s (a stall of under a second refills nothing): the connect and 9 pings
    // pass, then 10 refusals (patience), then the close.
    let pings: Vec<String> = (2..=20)
        .map(|i| format!(r#"{{"id":{i},"ping":{{}}}}"#))
        .collect();
    s.handle_message(pings.join("\n").as_bytes()).unwrap();
    let m = out(&o, 20);
    assert_eq!(
        m.iter().filter(|x| x.contains(r#""ping":{}"#)).count(),
        9,
        "{m:?}"
    );
    assert_eq!(
        m.iter().filter(|x| x.contains(r#""code":111"#)).count(),
        10,
        "{m:?}"
    );
    assert_eq!(
        s.handle_message(br#"{"id":99,"ping":{}}"#),
        Err(Disconnect::TOO_MANY_REQUESTS)
    );
}

/// Drains the outbox until a reply to `id` arrives (bounded); every message on the way must be
/// compact JSON, as the clients' newline framing needs.
fn until_reply(o: &Outbox, id: u32) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut q = VecDeque::new();
    let needle = format!("{{\"id\":{id},");
    while Instant::now() < deadline {
        o.drain(&mut q);
        got.extend(q.drain(..).map(|b| String::from_utf8(b.to_vec()).unwrap()));
        if got.iter().any(|m| m.starts_with(&needle)) {
            for m in &got {
                serde_json::from_str::<serde_json::Value>(m).expect("valid JSON");
                assert!(crate::json::is_compact(m), "{m}");
            }
            return got;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("no reply to {id}: {got:?}");
}

mod extremes {
    use super::*;
    use proptest::prelude::*;

    fn u64s() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0),
            Just(1),
            Just(u64::MAX),
            Just(u64::MAX - 1),
            Just(1 << 53),
            any::<u64>()
        ]
    }
    fn i64s() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(i64::MIN),
            Just(-1),
            Just(0),
            Just(i64::MAX),
            any::<i64>()
        ]
    }
    fn channels() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "grafana/broadcast/x",
            "1/grafana/broadcast/x",
            "stream/s/m",
            "plugin/testdata/random-2s-stream",
            "a/b/c",
            "",
        ])
    }

    /// Every numeric field of every command, at its extremes.
    fn command() -> impl Strategy<Value = String> {
        prop_oneof![
            (channels(), u64s(), any::<bool>(), u64s(), any::<u32>()).prop_map(
                |(c, off, rec, flag, kind)| format!(
                    r#"{{"subscribe":{{"channel":"{c}","recover":{rec},"offset":{off},"epoch":"e","flag":{flag},"type":{kind}}}}}"#
                )
            ),
            (channels(), i64s()).prop_map(|(c, n)| format!(
                r#"{{"publish":{{"channel":"{c}","data":{{"n":{n},"f":-1.7976931348623157e308}},"type":0}}}}"#
            )),
            (channels(), any::<u32>()).prop_map(|(c, kind)| format!(
                r#"{{"publish":{{"channel":"{c}","data":[ 1, {{ "a" : "b c" }} ],"type":{kind}}}}}"#
            )),
            (channels(), any::<i32>(), u64s(), any::<bool>(), any::<bool>()).prop_map(
                |(c, limit, off, rev, epoch)| format!(
                    r#"{{"history":{{"channel":"{c}","limit":{limit},"since":{{"offset":{off},"epoch":"{}"}},"reverse":{rev}}}}}"#,
                    if epoch { "" } else { "other" }
                )
            ),
            channels().prop_map(|c| format!(r#"{{"unsubscribe":{{"channel":"{c}"}}}}"#)),
            channels().prop_map(|c| format!(r#"{{"presence":{{"channel":"{c}"}}}}"#)),
            channels().prop_map(|c| format!(r#"{{"presence_stats":{{"channel":"{c}"}}}}"#)),
            Just(r#"{"refresh":{"token":"x"}}"#.to_owned()),
            Just(r#"{"rpc":{"method":"m","data":{ }}}"#.to_owned()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// No sequence of commands with extreme numbers panics the session or the storage
        /// thread, and every message out is compact JSON.
        #[test]
        fn extreme_numbers_in_any_command_order(cmds in prop::collection::vec(command(), 1..24)) {
            let w = World::new();
            let (mut s, o) = w.session(1);
            s.handle_message(br#"{"id":1,"connect":{"subs":{"grafana/broadcast/x":{"recover":true,"offset":18446744073709551615,"epoch":"e"}}}}"#).unwrap();
            let mut open = true;
            for (i, c) in cmds.iter().enumerate() {
                // `"id"` first, as the clients write it.
                let msg = format!("{{\"id\":{},{}", i + 2, &c[1..]);
                if s.handle_message(msg.as_bytes()).is_err() {
                    open = false;
                    break;
                }
            }
            let (mut probe, po) = w.session(2);
            let (s, o) = if open { (&mut s, &o) } else { (&mut probe, &po) };
            if !open {
                s.handle_message(br#"{"id":1,"connect":{}}"#).unwrap();
            }
            // The storage thread still answers.
            s.handle_message(br#"{"id":4000000000,"history":{"channel":"grafana/broadcast/probe"}}"#).unwrap();
            until_reply(o, 4_000_000_000);
        }
    }
}
