//! The on-device dashboard's files (`web/`, gzipped into the binary by `build.rs`): `GET /`
//! (and Grafana-style `/d/<uid>/…` links) is the page, `/ui/…` its script, styles and the
//! vendored centrifuge and uPlot. No CDN and no network: the device may be offline. They hold
//! no secret, so they are served to anyone; the page asks for a token where the API needs one.

use bytes::Bytes;
use hyper::header::{
    HeaderValue, ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, VARY,
};
use hyper::{HeaderMap, Response, StatusCode};
use std::io::Read;

use crate::respond::Body;

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// The asset a GET of `path` serves, if any.
fn find(path: &str) -> Option<&'static (&'static str, &'static str, &'static [u8])> {
    let path = if path == "/index.html" || path.starts_with("/d/") {
        "/"
    } else {
        path
    };
    ASSETS.iter().find(|(p, _, _)| *p == path)
}

/// Whether `path` is one of the dashboard's.
pub fn serves(path: &str) -> bool {
    find(path).is_some()
}

/// The asset, gzipped when the client takes gzip (every browser does), else inflated on the
/// blocking pool.
pub async fn asset(path: &str, headers: &HeaderMap) -> Response<Body> {
    let Some((served, content_type, gz)) = find(path) else {
        return crate::respond::error(StatusCode::NOT_FOUND, "not found");
    };
    let gzip_ok = headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let body = if gzip_ok {
        Bytes::from_static(gz)
    } else {
        let inflated = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(*gz)
                .read_to_end(&mut out)
                .map(|_| out)
        })
        .await;
        match inflated {
            Ok(Ok(b)) => Bytes::from(b),
            _ => return crate::respond::error(StatusCode::INTERNAL_SERVER_ERROR, "asset"),
        }
    };
    let mut r = Response::new(Body::new(body));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    if gzip_ok {
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    // Vendored files carry their version in the path; the page and its script change with
    // edgelive, so they are revalidated.
    let cache = if served.starts_with("/ui/vendor/") {
        "public, max-age=604800, immutable"
    } else {
        "no-cache"
    };
    h.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}

/// The dashboard's weight on the wire: every asset gzipped, bytes.
pub fn gzipped_bytes() -> usize {
    ASSETS.iter().map(|(_, _, gz)| gz.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_there_and_the_whole_page_is_under_200_kb_gzipped() {
        for p in [
            "/",
            "/d/abc/boiler",
            "/ui/app.js",
            "/ui/vendor/centrifuge-5.8.0.js",
        ] {
            assert!(serves(p), "{p}");
        }
        assert!(!serves("/api/live/ws") && !serves("/ui/nope.js"));
        assert!(gzipped_bytes() < 200 * 1024, "{}", gzipped_bytes());
    }
}
