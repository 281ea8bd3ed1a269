//! The push converter against its contract: our own fixtures in `tests/fixtures/convert/`
//! (line protocol in, the frames Grafana would make out, compared as parsed JSON), always; and
//! Grafana's own golden converter files when they are beside this repository
//! (`../shared/conformance/grafana-convert/`, or where `GRAFANA_CONVERT_FIXTURES` points).
//! Those are AGPL data kept out of this tree, so without them their tests say on stderr that
//! they were skipped and pass.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use edgelive::ingest::convert::{convert, Layout};
use edgelive::ingest::Precision;
use serde_json::Value;

/// The receive time of fixture points without a timestamp (with a sub-millisecond part, so
/// `nanos` shows).
const NOW_NS: i64 = 1_700_000_000_123_456_789;

/// Set to write the expected file of a fixture that has none yet (never overwrites one: to
/// change a contract, delete its file, regenerate, and review the diff).
const WRITE_MISSING: &str = "CONVERT_FIXTURES_WRITE_MISSING";

/// Our frames as the JSON values Grafana's SDK would write.
fn ours(input: &str, layout: Layout, precision: Precision) -> Vec<Value> {
    convert(input, layout, precision, NOW_NS)
        .expect("fixture parses")
        .iter()
        .map(|f| serde_json::from_str(&f.to_json().full()).expect("our frame JSON parses"))
        .collect()
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/convert")
}

/// A fixture input's settings, from its `# layouts:` and `# precision:` comment lines.
struct Settings {
    layouts: Vec<(&'static str, Layout)>,
    precision: Precision,
}

fn settings(name: &str, input: &str) -> Settings {
    let directive = |key: &str| {
        input
            .lines()
            .find_map(|l| l.strip_prefix("# ")?.strip_prefix(key)?.strip_prefix(':'))
            .map(str::trim)
    };
    let layouts = directive("layouts")
        .unwrap_or_else(|| panic!("{name}: no `# layouts:` line"))
        .split_whitespace()
        .map(|l| match l {
            "labels_column" => ("labels_column", Layout::LabelsColumn),
            "wide" => ("wide", Layout::Wide),
            other => panic!("{name}: unknown layout {other:?}"),
        })
        .collect();
    let precision = directive("precision").map_or(Precision::Nanoseconds, |p| {
        Precision::parse(p).unwrap_or_else(|| panic!("{name}: unknown precision {p:?}"))
    });
    Settings { layouts, precision }
}

#[test]
fn our_fixtures_convert_to_their_expected_frames() {
    let dir = fixtures_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let inputs: Vec<&str> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".txt"))
        .collect();
    assert!(inputs.len() >= 10, "fixtures missing in {}", dir.display());
    let mut expected_files = Vec::new();
    let mut failures = Vec::new();
    for name in &inputs {
        let input = std::fs::read_to_string(dir.join(format!("{name}.txt"))).unwrap();
        let s = settings(name, &input);
        for (layout_name, layout) in &s.layouts {
            let file = format!("{name}.{layout_name}.json");
            expected_files.push(file.clone());
            let got = Value::Array(ours(&input, *layout, s.precision));
            let path = dir.join(&file);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(_) if std::env::var_os(WRITE_MISSING).is_some() => {
                    let pretty = serde_json::to_string_pretty(&got).unwrap() + "\n";
                    std::fs::write(&path, &pretty).unwrap();
                    say(&format!(
                        "wrote {} (review it: it is the contract)",
                        path.display()
                    ));
                    pretty
                }
                Err(e) => {
                    failures.push(format!(
                        "{file}: {e} (write it with {WRITE_MISSING}=1, then review it)"
                    ));
                    continue;
                }
            };
            let want: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
            if got != want {
                failures.push(format!(
                    "{file}: our converter gives\n{}",
                    serde_json::to_string_pretty(&got).unwrap()
                ));
            }
        }
    }
    // Every expected file belongs to an input and a layout it names.
    for n in names.iter().filter(|n| n.ends_with(".json")) {
        if !expected_files.contains(n) {
            failures.push(format!("{n}: no input declares it"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn field_order_in_the_input_does_not_change_the_frames() {
    let input =
        std::fs::read_to_string(fixtures_dir().join("same_metric_different_labels.txt")).unwrap();
    // Reverse every point's field order (the fixture has no spaces inside values).
    let shuffled: String = input
        .lines()
        .map(|l| {
            if l.starts_with('#') {
                return String::new();
            }
            let mut parts: Vec<&str> = l.split(' ').collect();
            let mut fields: Vec<&str> = parts[1].split(',').collect();
            fields.reverse();
            let joined = fields.join(",");
            parts[1] = &joined;
            parts.join(" ") + "\n"
        })
        .collect();
    assert_ne!(input, shuffled);
    for layout in [Layout::LabelsColumn, Layout::Wide] {
        let p = Precision::Nanoseconds;
        assert_eq!(ours(&input, layout, p), ours(&shuffled, layout, p));
    }
}

/// Where Grafana's golden files are, or `None` (after saying so on stderr) when they are not.
fn grafana_dir(test: &str) -> Option<PathBuf> {
    let (d, how) = match std::env::var_os("GRAFANA_CONVERT_FIXTURES") {
        Some(d) => (PathBuf::from(d), "GRAFANA_CONVERT_FIXTURES"),
        None => (
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/grafana-convert"),
            "the default place; set GRAFANA_CONVERT_FIXTURES to point elsewhere",
        ),
    };
    if d.is_dir() {
        return Some(d);
    }
    say(&format!(
        "{test}: SKIPPED: Grafana's golden converter files are not at {} ({how}); they are AGPL data kept out of this tree, and our own fixtures in tests/fixtures/convert/ were checked instead",
        d.display()
    ));
    None
}

/// Writes a line to the real stderr: `eprintln!` would be captured, and a passing test's
/// captured output is never shown.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Drops the `//` comment block of a golden `.jsonc` response.
fn jsonc(text: &str) -> Value {
    let body: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&body).expect("golden parses")
}

#[test]
fn labels_column_matches_grafanas_golden_file() {
    let Some(dir) = grafana_dir("labels_column_matches_grafanas_golden_file") else {
        return;
    };
    let input = read(&dir, "same_metrics_different_labels_same_time.txt");
    let golden: Value = serde_json::from_str(&read(&dir, "golden_labels_column.json")).unwrap();
    let got = ours(&input, Layout::LabelsColumn, Precision::Nanoseconds);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0], golden);
    assert_eq!(golden["schema"]["fields"].as_array().unwrap().len(), 12);
}

#[test]
fn wide_matches_grafanas_golden_file() {
    let Some(dir) = grafana_dir("wide_matches_grafanas_golden_file") else {
        return;
    };
    let input = read(&dir, "same_metrics_different_labels_same_time.txt");
    let golden: Value = serde_json::from_str(&read(&dir, "golden_wide.json")).unwrap();
    let got = ours(&input, Layout::Wide, Precision::Nanoseconds);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["schema"]["fields"].as_array().unwrap().len(), 131);
    assert_eq!(got[0], golden);
}

#[test]
fn changing_types_and_nan_strings_match_grafanas_golden_file() {
    let Some(dir) = grafana_dir("changing_types_and_nan_strings_match_grafanas_golden_file") else {
        return;
    };
    let input = read(&dir, "changing_types_NaN.txt");
    let golden = jsonc(&read(&dir, "changing_types_NaN.jsonc"));
    let got = ours(&input, Layout::LabelsColumn, Precision::Nanoseconds);
    assert_eq!(Value::Array(got), golden["frames"]);
}
