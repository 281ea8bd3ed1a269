//! Records the target triple for `edgelive --version` (a cross-built arm64 binary says so), and
//! gzips the on-device dashboard (`web/`) once at build time, so the daemon serves it
//! compressed without compressing on the device.

use std::io::Write;
use std::path::Path;

/// Served path, file under `web/`, content type.
const ASSETS: &[(&str, &str, &str)] = &[
    ("/", "index.html", "text/html; charset=utf-8"),
    ("/ui/app.js", "app.js", "text/javascript; charset=utf-8"),
    (
        "/ui/frames.js",
        "frames.js",
        "text/javascript; charset=utf-8",
    ),
    ("/ui/app.css", "app.css", "text/css; charset=utf-8"),
    (
        "/ui/vendor/centrifuge-5.8.0.js",
        "vendor/centrifuge.js",
        "text/javascript; charset=utf-8",
    ),
    (
        "/ui/vendor/uPlot-1.6.32.iife.min.js",
        "vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
    ),
    (
        "/ui/vendor/uPlot-1.6.32.min.css",
        "vendor/uPlot.min.css",
        "text/css; charset=utf-8",
    ),
];

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=EDGELIVE_BUILD_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");

    let out = std::env::var("OUT_DIR").expect("OUT_DIR");
    let mut table = String::from(
        "/// (path, content type, gzipped bytes)\npub static ASSETS: &[(&str, &str, &[u8])] = &[\n",
    );
    for (i, (path, file, content_type)) in ASSETS.iter().enumerate() {
        let source = Path::new("web").join(file);
        println!("cargo:rerun-if-changed={}", source.display());
        let raw = std::fs::read(&source).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&raw).expect("gzip into memory");
        let gz = gz.finish().expect("gzip into memory");
        let name = format!("asset{i}.gz");
        std::fs::write(Path::new(&out).join(&name), gz).expect("write OUT_DIR");
        table.push_str(&format!(
            "    ({path:?}, {content_type:?}, include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}\"))),\n"
        ));
    }
    table.push_str("];\n");
    std::fs::write(Path::new(&out).join("web_assets.rs"), table).expect("write OUT_DIR");
}
