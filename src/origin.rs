//! `allowed_origins`, with Grafana's rules: no Origin passes; `*` passes everything; an origin
//! whose host:port equals the request's Host passes; otherwise the origin must match one of the
//! glob patterns (`*` any run of characters, `?` one character), e.g. `https://*.example.com`.

/// Decides whether a WebSocket upgrade with this `Origin` and `Host` may proceed.
pub fn allowed(origin: Option<&str>, host: Option<&str>, patterns: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    if patterns.len() == 1 && patterns[0] == "*" {
        return true;
    }
    let lower = origin.to_ascii_lowercase();
    let Some(origin_host) = host_of(&lower) else {
        return false;
    };
    if host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host)) {
        return true;
    }
    patterns.iter().any(|p| origin_glob(p, origin))
}

/// True when `origin` matches `pattern` as a whole, as Grafana's `allowed_origins` patterns
/// (gobwas/glob without separators) do: `*` matches any run of characters, `/` and `.`
/// included, `?` exactly one byte. Origins are URLs, not channel paths, so this is not the
/// channel patterns' path glob (`crate::glob::path_glob`).
fn origin_glob(pattern: &str, origin: &str) -> bool {
    let (pattern, text) = (pattern.as_bytes(), origin.as_bytes());
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

/// `scheme://host[:port]` → `host[:port]`; `None` when it is not an origin.
fn host_of(origin: &str) -> Option<&str> {
    let (scheme, rest) = origin.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    (!host.is_empty() && !host.contains('@')).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn origin_globs_match_any_run() {
        assert!(origin_glob("a*c", "abbbc"));
        assert!(origin_glob("a*", "a"));
        assert!(origin_glob("a?c", "abc"));
        assert!(!origin_glob("a?c", "ac"));
        assert!(origin_glob("*.x.*", "q.x.y"));
        assert!(!origin_glob("abc", "abcd"));
        assert!(origin_glob("https://*", "https://a.b/c/d"));
        assert!(origin_glob(
            "http*://*.example.com",
            "https://a.b.example.com"
        ));
    }

    #[test]
    fn grafana_origin_rules() {
        assert!(allowed(None, Some("h:3030"), &[]));
        assert!(allowed(Some("http://H:3030"), Some("h:3030"), &[]));
        assert!(!allowed(Some("http://evil:3030"), Some("h:3030"), &[]));
        assert!(!allowed(Some("http://h:3031"), Some("h:3030"), &[]));
        assert!(allowed(Some("http://evil"), Some("h"), &v(&["*"])));
        assert!(allowed(
            Some("https://a.example.com"),
            Some("h"),
            &v(&["https://*.example.com"])
        ));
        assert!(!allowed(
            Some("https://a.example.org"),
            Some("h"),
            &v(&["https://*.example.com"])
        ));
        assert!(!allowed(Some("null"), Some("h"), &v(&["https://*"])));
        assert!(!allowed(Some("not an origin"), Some("h"), &[]));
    }
}
