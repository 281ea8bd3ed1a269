//! Records the target triple for `edgelive --version` (a cross-built arm64 binary says so).

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=EDGELIVE_BUILD_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
