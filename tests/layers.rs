//! The layering README describes, checked: every module of `src/` sits on a floor, and no module
//! imports one on a higher floor (so there is no import cycle between floors either). Reads the
//! sources as text: `crate::…` and `super::…` paths outside comments and `#[cfg(test)] mod
//! tests`.
//!
//! A new module must be given its floor here; a failure names the offending import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Bottom up. A module not listed takes the floor of its closest listed parent.
const FLOORS: &[&[&str]] = &[
    // Pure parsers and types.
    &[
        "channel",
        "glob",
        "clock",
        "frame",
        "protocol",
        "wsframe",
        "ratelimit",
        "duration",
        "query",
        "json",
        "allocator",
        "watchdog",
        "ha::keys",
        "ha::message",
        "ha::proto",
        "ha::stats",
        "size",
        "hostport",
        "throttle",
        "forward::stats",
    ],
    // Policy.
    &[
        "ingest",
        "auth",
        "channel_kind",
        "origin",
        "outbox",
        "head",
        "streams::lifecycle",
        "streams::exec::config",
        "mqtt::config",
        "mqtt::payload",
        "mqtt::topic",
        "mqtt::stats",
        "ha::settings",
        "forward::config",
        "forward::lines",
        "forward::spec",
        "forward::queue",
    ],
    &["config", "hub"],
    &["mqtt", "settings"],
    &["persist"],
    &["ha", "forward"],
    &["broker"],
    &["streams"],
    &["session"],
    &["websocket"],
    &["state", "respond"],
    &[
        "push",
        "metrics",
        "status",
        "dashboards",
        "web",
        "mqtt::bridge",
        "http",
    ],
    &["server", "reload", "logging"],
];

/// Module path (`a::b`) → source without its unit tests.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
                continue;
            }
            let name = path.file_name().unwrap().to_str().unwrap();
            if !name.ends_with(".rs") || ["main.rs", "lib.rs", "tests.rs"].contains(&name) {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_str().unwrap().to_owned())
                .collect();
            if parts.last().map(String::as_str) == Some("mod") {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let text = match text.find("#[cfg(test)]\nmod tests") {
                Some(i) => &text[..i],
                None => &text,
            };
            // Comments name modules without importing them.
            let code: Vec<&str> = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect();
            out.insert(parts.join("::"), code.join("\n"));
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    walk(&root, &root, &mut out);
    out
}

/// Paths named in `crate::{a, b::{c, d}}` (the part inside the outer braces).
fn expand(prefix: &str, body: &str, out: &mut Vec<String>) {
    let (mut depth, mut start) = (0, 0);
    let mut items = Vec::new();
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&body[start..]);
    for item in items.into_iter().map(str::trim).filter(|i| !i.is_empty()) {
        let joined = |p: &str| match prefix {
            "" => p.to_owned(),
            _ => format!("{prefix}::{p}"),
        };
        match item.split_once("::{") {
            Some((head, rest)) => expand(&joined(head), rest.strip_suffix('}').unwrap(), out),
            None => out.push(joined(item.split(" as ").next().unwrap())),
        }
    }
}

/// A path of identifiers (`a::b::c`) at the start of `s`.
fn path_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(s.len());
    s[..end].trim_end_matches(':')
}

/// Every module path a source names through `crate::` or `super::`.
fn named(module: &str, code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(body) = rest.strip_prefix('{') {
            let end = body.find("};").unwrap_or(body.len());
            expand("", &body[..end], &mut out);
        } else {
            out.push(path_at(rest).to_owned());
        }
    }
    let parent: Vec<&str> = module.split("::").collect();
    for (i, _) in code.match_indices("super::") {
        let before = code[..i].chars().next_back().unwrap_or(' ');
        if before == ':' || before.is_ascii_alphanumeric() || before == '_' {
            continue; // `super::super::` is taken from its first `super::`
        }
        let mut rest = &code[i..];
        let mut up = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            rest = r;
            up += 1;
        }
        if up > parent.len() {
            continue;
        }
        let mut p: Vec<String> = parent[..parent.len() - up]
            .iter()
            .map(|s| s.to_string())
            .collect();
        p.push(path_at(rest).to_owned());
        out.push(p.join("::"));
    }
    out
}

/// The longest existing module a path starts with.
fn resolve<'a>(path: &str, modules: &'a BTreeMap<String, String>) -> Option<&'a str> {
    let segs: Vec<&str> = path.split("::").collect();
    (1..=segs.len())
        .rev()
        .map(|k| segs[..k].join("::"))
        .find_map(|p| modules.get_key_value(&p).map(|(k, _)| k.as_str()))
}

fn floor(module: &str) -> Option<usize> {
    let segs: Vec<&str> = module.split("::").collect();
    (1..=segs.len()).rev().find_map(|k| {
        let p = segs[..k].join("::");
        FLOORS.iter().position(|f| f.contains(&p.as_str()))
    })
}

#[test]
fn no_module_imports_one_on_a_higher_floor() {
    let modules = modules();
    assert!(
        modules.contains_key("broker") && modules.len() > 40,
        "{modules:?}"
    );
    let unplaced: Vec<&String> = modules.keys().filter(|m| floor(m).is_none()).collect();
    assert!(
        unplaced.is_empty(),
        "give these modules a floor: {unplaced:?}"
    );
    let mut upward = BTreeSet::new();
    for (module, code) in &modules {
        for path in named(module, code) {
            let Some(target) = resolve(&path, &modules) else {
                continue;
            };
            if floor(target) > floor(module) {
                upward.insert(format!("{module} imports {target} ({path})"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports from a higher floor:\n{upward:#?}"
    );
}

/// The checker itself finds what it must: braces, nesting and `super::`.
#[test]
fn imports_are_read_from_every_form() {
    let code = "use crate::{hub::Hub, persist::{Ack, Request}};\nlet x = crate::json::minify(y);\nuse super::super::builtin;\nuse super::Sender;";
    let mut got = named("streams::exec::config", code);
    got.sort();
    assert_eq!(
        got,
        [
            "hub::Hub",
            "json::minify",
            "persist::Ack",
            "persist::Request",
            "streams::builtin",
            "streams::exec::Sender"
        ]
    );
}
