//! Channel patterns: one dialect for every pattern over channel names — `[[history]]` rules,
//! `[[auth.rules]]` and `[[streams.exec]]` channels. Channels are `scope/namespace/path` and
//! the path may hold `/`, so patterns are path globs: `*` matches within one `/`-separated
//! segment, `**` across segments (any run, `/` included, or none), `?` one character other
//! than `/`.
//!
//! History and exec patterns once used a glob whose `*` crossed `/`, while auth rules had
//! path globs: `grafana/broadcast/*` kept history for `grafana/broadcast/a/b` but an auth rule
//! written the same left it open. With one dialect a pattern means the same everywhere;
//! `lone_star_warning` names the patterns whose meaning that changed (or, for auth rules,
//! that leave deeper channels uncovered), for `check-config` and start-up to warn about.
//! (`allowed_origins` are URLs, not paths: see `origin::origin_glob`.)

/// True when `channel` matches the path glob `pattern` as a whole.
///
/// Called for every command on every rule tried (history rules, auth rules), so the literal
/// head and tail of the pattern are compared directly and only what lies between its
/// wildcards goes through the matching table; the usual rules (`scope/namespace/*`,
/// `…/**`) then need no allocation. Measured: it was the top symbol of the daemon's profile
/// with 1,000 channels published round-robin (6% of samples, plus the allocator's share).
pub fn path_glob(pattern: &str, channel: &str) -> bool {
    let wild = |b: u8| b == b'*' || b == b'?';
    let (mut p, mut t) = (pattern.as_bytes(), channel.as_bytes());
    while let (Some(&a), Some(&b)) = (p.first(), t.first()) {
        if wild(a) {
            break;
        }
        if a != b {
            return false;
        }
        (p, t) = (&p[1..], &t[1..]);
    }
    while let (Some(&a), Some(&b)) = (p.last(), t.last()) {
        if wild(a) {
            break;
        }
        if a != b {
            return false;
        }
        (p, t) = (&p[..p.len() - 1], &t[..t.len() - 1]);
    }
    match p {
        [] => t.is_empty(),
        b"*" => !t.contains(&b'/'),
        b"**" => true,
        _ => table(p, t),
    }
}

/// The matching table for what is left of a pattern: one row per token, O(pattern × text).
fn table(p: &[u8], t: &[u8]) -> bool {
    #[derive(Clone, Copy)]
    enum Tok {
        Byte(u8),
        One,
        Star,
        Globstar,
    }
    // ok[j]: the tokens so far match t[..j].
    let mut ok = vec![false; t.len() + 1];
    let mut next = vec![false; t.len() + 1];
    ok[0] = true;
    let mut i = 0;
    while i < p.len() {
        let tok = match p[i] {
            b'*' if p.get(i + 1) == Some(&b'*') => {
                i += 1;
                Tok::Globstar
            }
            b'*' => Tok::Star,
            b'?' => Tok::One,
            b => Tok::Byte(b),
        };
        i += 1;
        for j in 0..=t.len() {
            next[j] = match tok {
                Tok::Byte(b) => j > 0 && ok[j - 1] && t[j - 1] == b,
                Tok::One => j > 0 && ok[j - 1] && t[j - 1] != b'/',
                Tok::Star => ok[j] || (j > 0 && next[j - 1] && t[j - 1] != b'/'),
                Tok::Globstar => ok[j] || (j > 0 && next[j - 1]),
            };
        }
        std::mem::swap(&mut ok, &mut next);
    }
    ok[t.len()]
}

/// Whether a config pattern (`[[history]]`, `[[auth.rules]]`) could match a channel name at
/// all: not empty, and only channel characters and wildcards.
pub fn can_match_a_channel(pattern: &str) -> bool {
    !pattern.is_empty()
        && pattern
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./=*?".contains(c))
}

/// Which table a pattern comes from: it decides what a lone `*` is worth a warning for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternKind {
    /// `[[history]]` and `[[streams.exec]]`: their `*` crossed `/` before, so any lone `*`
    /// now matches less than it did.
    CrossedBefore,
    /// `[[auth.rules]]`: always path globs, but a lone `*` in the last segment leaves the
    /// channels below it under the default roles — most likely not what was meant.
    AuthRule,
}

/// A warning for `pattern` (named `what`, e.g. "[[history]] #1") when a lone `*` in it
/// changed meaning or leaves deeper channels uncovered, with the `**` spelling that matches
/// below as before; `None` when there is nothing to say.
pub fn lone_star_warning(what: &str, pattern: &str, kind: PatternKind) -> Option<String> {
    let widened = widen(pattern, kind);
    if widened == pattern {
        return None;
    }
    Some(match kind {
        PatternKind::CrossedBefore => format!(
            "{what} pattern `{pattern}`: `*` now matches within one /-separated segment only \
             (it used to cross `/`); write `{widened}` to match below it as before"
        ),
        PatternKind::AuthRule => format!(
            "{what} pattern `{pattern}`: `*` matches within one /-separated segment only, so \
             deeper channels (one more `/…` below a match) keep the default roles; write \
             `{widened}` to cover everything below"
        ),
    })
}

/// `pattern` with each lone `*` (all of them, or those of the last segment for auth rules)
/// written `**`: for `CrossedBefore`, exactly what the pattern matched when `*` crossed `/`.
fn widen(pattern: &str, kind: PatternKind) -> String {
    let last_segment = pattern.rfind('/').map_or(0, |i| i + 1);
    let b = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len() + 2);
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'*' && b.get(i + 1) == Some(&b'*') {
            out.push_str("**");
            i += 2;
            continue;
        }
        if b[i] == b'*' && (kind == PatternKind::CrossedBefore || i >= last_segment) {
            out.push_str("**");
        } else {
            out.push(char::from(b[i]));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_stays_within_a_segment_and_globstar_crosses() {
        assert!(path_glob(
            "stream/factory-*/**",
            "stream/factory-7/press/temp"
        ));
        assert!(path_glob("stream/factory-*/*", "stream/factory-7/press"));
        assert!(!path_glob(
            "stream/factory-*/*",
            "stream/factory-7/press/temp"
        ));
        assert!(!path_glob("stream/factory-*/**", "stream/office/press"));
        assert!(path_glob("stream/*", "stream/a"));
        assert!(!path_glob("stream/*", "stream/a/b"));
        assert!(path_glob("stream/**", "stream/a/b/c"));
        assert!(!path_glob("stream/**", "streams/a"));
        assert!(!path_glob("stream/*", "streams/x/y"));
        assert!(path_glob("grafana/broadcast/**", "grafana/broadcast/a/b"));
        assert!(!path_glob("grafana/broadcast/*", "grafana/broadcast/a/b"));
        assert!(path_glob("**", "grafana/broadcast/x"));
        assert!(path_glob("grafana/broadcast/x?", "grafana/broadcast/x1"));
        assert!(!path_glob("grafana/broadcast/x?", "grafana/broadcast/x/"));
        assert!(path_glob("*.x.*", "q.x.y"));
        assert!(!path_glob("a", "ab"));
        assert!(path_glob("", ""));
    }

    #[test]
    fn lone_stars_are_warned_about_with_the_spelling_that_keeps_the_old_meaning() {
        let w = |p, k| lone_star_warning("[[history]] #1", p, k);
        let history = PatternKind::CrossedBefore;
        let msg = w("stream/*", history).unwrap();
        assert!(
            msg.contains("`stream/*`") && msg.contains("`stream/**`"),
            "{msg}"
        );
        assert!(w("stream/factory-*/temp", history)
            .unwrap()
            .contains("`stream/factory-**/temp`"));
        assert_eq!(w("stream/**", history), None);
        assert_eq!(w("grafana/broadcast/x?", history), None);
        // Auth rules: only the end of the pattern leaves channels out.
        let auth = PatternKind::AuthRule;
        assert!(w("grafana/broadcast/*", auth)
            .unwrap()
            .contains("`grafana/broadcast/**`"));
        assert_eq!(w("stream/factory-*/**", auth), None);
        assert!(w("stream/factory-*", auth)
            .unwrap()
            .contains("`stream/factory-**`"));
    }

    /// The obvious recursive definition, exponential but fine for short strings.
    fn reference(p: &[u8], t: &[u8]) -> bool {
        match p {
            [] => t.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=t.len()).any(|i| reference(rest, &t[i..])),
            [b'*', rest @ ..] => (0..=t.len())
                .take_while(|&i| !t[..i].contains(&b'/'))
                .any(|i| reference(rest, &t[i..])),
            [b'?', rest @ ..] => t.first().is_some_and(|&c| c != b'/') && reference(rest, &t[1..]),
            [c, rest @ ..] => t.first() == Some(c) && reference(rest, &t[1..]),
        }
    }

    /// The glob `*` and `?` once had in history and exec patterns: any run, any byte.
    fn crossing(p: &[u8], t: &[u8]) -> bool {
        match p {
            [] => t.is_empty(),
            [b'*', rest @ ..] => (0..=t.len()).any(|i| crossing(rest, &t[i..])),
            [b'?', rest @ ..] => !t.is_empty() && crossing(rest, &t[1..]),
            [c, rest @ ..] => t.first() == Some(c) && crossing(rest, &t[1..]),
        }
    }

    proptest::proptest! {
        #[test]
        fn path_glob_agrees_with_the_recursive_definition(
            p in "[ab/*?]{0,8}",
            t in "[ab/]{0,10}",
        ) {
            proptest::prop_assert_eq!(path_glob(&p, &t), reference(p.as_bytes(), t.as_bytes()));
        }

        /// The warning's suggestion is exact: the widened pattern matches what the old `*`
        /// did, and a pattern without a warning meant the same before (`?` aside, which no
        /// longer matches `/`).
        #[test]
        fn the_suggested_spelling_matches_what_the_pattern_matched_before(
            p in "[ab/*]{0,8}",
            t in "[ab/]{0,10}",
        ) {
            let widened = widen(&p, PatternKind::CrossedBefore);
            proptest::prop_assert_eq!(path_glob(&widened, &t), crossing(p.as_bytes(), t.as_bytes()));
            if lone_star_warning("x", &p, PatternKind::CrossedBefore).is_none() {
                proptest::prop_assert_eq!(path_glob(&p, &t), crossing(p.as_bytes(), t.as_bytes()));
            }
        }

    }
}
