//! A push body through the parser and converter, in both layouts and every precision. An error
//! must point inside the body; a success must name only valid channels, and the line protocol
//! written for `[[forward]]` targets must read back as the same points.
#![no_main]

use edgelive::channel::Channel;
use edgelive::ingest::convert::Limits;
use edgelive::forward::lines::body_lines;
use edgelive::ingest::lineproto::{Line, LineLimits, Lines, Parser, Precision};
use edgelive::ingest::{frames_echo, target};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_700_000_000_000_000_000;

/// Every point of `body` as text, timestamps in nanoseconds (`NOW` where a line had none).
fn points(body: &str, precision: Precision, limits: LineLimits) -> Vec<String> {
    let mut p = Parser::with_limits(body, precision, limits);
    let mut l = Line::default();
    let mut out = Vec::new();
    while let Some(r) = p.next(&mut l) {
        r.expect("parses");
        out.push(format!(
            "{:?}|{:?}|{:?}|{}",
            l.measurement,
            l.tags,
            l.fields,
            l.timestamp.unwrap_or(NOW)
        ));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // The defaults, and limits small enough for fuzz inputs to reach.
    let small = Limits {
        line: LineLimits {
            max_tags: 4,
            max_fields: 8,
        },
        max_values: 256,
    };
    for (query, limits) in [
        ("", Limits::default()),
        ("gf_live_frame_format=wide&precision=s", Limits::default()),
        ("", small),
        ("gf_live_frame_format=wide", small),
    ] {
        let t = target("fuzz", Some(query), limits).expect("valid target");
        let mut echo = Lines::default();
        match frames_echo(data, &t, NOW, None, Some(&mut echo)) {
            Ok(out) => {
                for (channel, _) in out {
                    Channel::parse_bare(&channel).expect("converted frames name valid channels");
                }
                let text = std::str::from_utf8(data).expect("an accepted body is UTF-8");
                let original = points(text, t.precision, limits.line);
                assert_eq!(
                    points(&echo.text, Precision::Nanoseconds, limits.line),
                    original,
                    "forwarded lines {:?}",
                    echo.text
                );
                assert_eq!(echo.points as usize, original.len());
                // The parser-only writer (MQTT's) writes the same.
                let written = body_lines(text, t.precision, NOW, limits.line)
                    .expect("an accepted body is forwarded");
                assert_eq!(written, echo);
            }
            Err(edgelive::ingest::PushError::Parse(e)) => {
                assert!(e.line >= 1, "{e}");
            }
            Err(_) => {}
        }
    }
});
