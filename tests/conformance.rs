//! Grafana's own converter fixtures (`shared/conformance/grafana-convert/`, beside this
//! repository) must come out of our converter exactly, compared as parsed JSON. The fixtures
//! are AGPL data kept in the shared folder, so they are read from there, not copied here;
//! `EDGELIVE_CONFORMANCE_DIR` points elsewhere if needed.

use std::path::PathBuf;

use edgelive::push::convert::{convert, Layout};
use edgelive::push::Precision;
use serde_json::Value;

fn dir() -> PathBuf {
    let d = std::env::var_os("EDGELIVE_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/grafana-convert")
        });
    assert!(
        d.is_dir(),
        "conformance fixtures not found at {} (set EDGELIVE_CONFORMANCE_DIR)",
        d.display()
    );
    d
}

fn read(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Our frames as the JSON values Grafana's SDK would write.
fn ours(input: &str, layout: Layout) -> Vec<Value> {
    convert(input, layout, Precision::Nanoseconds, 0)
        .expect("fixture parses")
        .iter()
        .map(|f| serde_json::from_str(&f.to_json().full()).expect("our frame JSON parses"))
        .collect()
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
    let input = read("same_metrics_different_labels_same_time.txt");
    let golden: Value = serde_json::from_str(&read("golden_labels_column.json")).unwrap();
    let got = ours(&input, Layout::LabelsColumn);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0], golden);
    assert_eq!(golden["schema"]["fields"].as_array().unwrap().len(), 12);
}

#[test]
fn wide_matches_grafanas_golden_file() {
    let input = read("same_metrics_different_labels_same_time.txt");
    let golden: Value = serde_json::from_str(&read("golden_wide.json")).unwrap();
    let got = ours(&input, Layout::Wide);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["schema"]["fields"].as_array().unwrap().len(), 131);
    assert_eq!(got[0], golden);
}

#[test]
fn changing_types_and_nan_strings_match_grafanas_golden_file() {
    let input = read("changing_types_NaN.txt");
    let golden = jsonc(&read("changing_types_NaN.jsonc"));
    let got = ours(&input, Layout::LabelsColumn);
    assert_eq!(Value::Array(got), golden["frames"]);
}

#[test]
fn field_order_in_the_input_does_not_change_the_frames() {
    let input = read("same_metrics_different_labels_same_time.txt");
    // Reverse every line's field order.
    let shuffled: String = input
        .lines()
        .map(|l| {
            let mut parts: Vec<&str> = l.split(' ').collect();
            let mut fields: Vec<&str> = parts[1].split(',').collect();
            fields.reverse();
            let joined = fields.join(",");
            parts[1] = &joined;
            parts.join(" ") + "\n"
        })
        .collect();
    for layout in [Layout::LabelsColumn, Layout::Wide] {
        assert_eq!(ours(&input, layout), ours(&shuffled, layout));
    }
}
