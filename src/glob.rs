//! Glob patterns, as Grafana's `allowed_origins` and our `[[history]]` rules use them:
//! `*` matches any run of characters (including `/` and none at all), `?` exactly one byte.

/// True when `text` matches `pattern` as a whole.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Whether a config pattern (`[[history]]`, `[[auth.rules]]`) could match a channel name at
/// all: not empty, and only channel characters and wildcards.
pub fn can_match_a_channel(pattern: &str) -> bool {
    !pattern.is_empty()
        && pattern
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./=*?".contains(c))
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_basics() {
        assert!(glob("a*c", "abbbc"));
        assert!(glob("a*", "a"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*.x.*", "q.x.y"));
        assert!(!glob("abc", "abcd"));
        assert!(glob("grafana/broadcast/*", "grafana/broadcast/a/b"));
        assert!(!glob("stream/*", "streams/x/y"));
    }
}
