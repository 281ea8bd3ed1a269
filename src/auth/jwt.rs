//! Centrifuge connection JWTs, HS256 only (RFC 7519 compact form).
//!
//! Verification order matters for the client: the signature is checked before any claim, so a
//! forged token is "invalid" (close 3500) and never "expired" (109, which makes clients fetch a
//! new one and retry). `alg: none` and every other algorithm are refused.
//!
//! Hand-written over `hmac` + `sha2` rather than `jsonwebtoken`: HS256 is a few lines, while
//! jsonwebtoken's crypto backends pull RSA and elliptic-curve code a Pi never uses.

use crate::json::CompactJson;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::Role;

/// Longest token accepted (headers and connect commands are bounded anyway; this bounds the work).
pub const MAX_TOKEN_LEN: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("not a JWT: expected three base64url parts separated by '.'")]
    Malformed,
    #[error("token longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    #[error("JWT header: {0}")]
    Header(String),
    #[error("JWT algorithm {0:?} is not accepted (HS256 only)")]
    Algorithm(String),
    #[error("JWT signature does not match")]
    Signature,
    #[error("JWT claims: {0}")]
    Claims(String),
    #[error("token expired")]
    Expired,
    #[error("token not valid before its nbf time")]
    NotYetValid,
}

/// The claims edgelive reads. Unknown claims are ignored, as Centrifugo does.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Claims {
    /// User id; becomes `user` in ClientInfo.
    #[serde(default)]
    pub sub: String,
    /// Expiry, seconds since the epoch. Absent: never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<f64>,
    /// Any JSON; becomes `conn_info` in ClientInfo (compacted when read, since a token's
    /// author may have pretty-printed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<CompactJson<'static>>,
    /// Server-side subscriptions made at connect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    /// edgelive's role claim; absent means `viewer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Present only in subscription tokens; a connection token carrying it is invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// True when `token` has the shape of a JWT (so it is not looked up as an API token).
pub fn looks_like_jwt(token: &str) -> bool {
    token.len() > 10 && token.bytes().filter(|&b| b == b'.').count() == 2
}

/// Verifies signature, then `nbf`/`exp` against `now` (seconds since the epoch).
pub fn verify(token: &str, secret: &[u8], now: f64) -> Result<Claims, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header = URL_SAFE_NO_PAD.decode(h).map_err(|_| JwtError::Malformed)?;
    let header: Header =
        serde_json::from_slice(&header).map_err(|e| JwtError::Header(e.to_string()))?;
    if header.alg != "HS256" {
        return Err(JwtError::Algorithm(header.alg.chars().take(16).collect()));
    }
    let signature = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)?;
    let mut mac = mac(secret);
    mac.update(&token.as_bytes()[..h.len() + 1 + p.len()]);
    mac.verify_slice(&signature)
        .map_err(|_| JwtError::Signature)?;
    let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| JwtError::Malformed)?;
    let claims: Claims =
        serde_json::from_slice(&payload).map_err(|e| JwtError::Claims(e.to_string()))?;
    if claims.channel.is_some() {
        return Err(JwtError::Claims(
            "a connection token must not carry a channel claim".into(),
        ));
    }
    if claims.nbf.is_some_and(|nbf| now < nbf) {
        return Err(JwtError::NotYetValid);
    }
    if claims.exp.is_some_and(|exp| now >= exp) {
        return Err(JwtError::Expired);
    }
    Ok(claims)
}

/// Signs `claims` with HS256 (for `edgelive token` and tests).
pub fn sign(claims: &Claims, secret: &[u8]) -> String {
    sign_payload(
        &serde_json::to_vec(claims).expect("claims serialize"),
        secret,
    )
}

/// Signs a claims payload exactly as written (another issuer's whitespace kept): for tests and
/// fuzzing of what we accept, since [`Claims`] always serializes compact.
pub fn sign_payload(payload: &[u8], secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(payload);
    let mut out = format!("{header}.{payload}");
    let mut mac = mac(secret);
    mac.update(out.as_bytes());
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
    out
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn claims(exp: Option<f64>) -> Claims {
        Claims {
            sub: "ann".into(),
            exp,
            info: Some(CompactJson::from_string(r#"{"room":"lab"}"#.into()).unwrap()),
            ..Default::default()
        }
    }

    #[test]
    fn a_signed_token_verifies_and_keeps_its_claims() {
        let t = sign(&claims(Some(2000.0)), KEY);
        assert!(looks_like_jwt(&t));
        let c = verify(&t, KEY, 1000.0).unwrap();
        assert_eq!(c.sub, "ann");
        assert_eq!(c.info.unwrap().get(), r#"{"room":"lab"}"#);
        assert_eq!(c.role, None);
    }

    #[test]
    fn the_rfc_7519_example_verifies_with_its_key() {
        // RFC 7515 appendix A.1 (HS256), key and token as printed there.
        let key = URL_SAFE_NO_PAD
            .decode("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")
            .unwrap();
        let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(verify(token, &key, 1.0).is_ok());
        assert_eq!(verify(token, &key, 1.4e9).unwrap_err(), JwtError::Expired);
    }

    #[test]
    fn forged_tampered_and_expired_tokens_are_told_apart() {
        let t = sign(&claims(Some(2000.0)), KEY);
        assert_eq!(
            verify(&t, b"another key", 1000.0).unwrap_err(),
            JwtError::Signature
        );
        // A forged signature is "invalid" even when the token is also expired.
        assert_eq!(
            verify(&t, b"another key", 3000.0).unwrap_err(),
            JwtError::Signature
        );
        assert_eq!(verify(&t, KEY, 3000.0).unwrap_err(), JwtError::Expired);
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(br#"{"sub":"root"}"#);
        assert_eq!(
            verify(&parts.join("."), KEY, 1000.0).unwrap_err(),
            JwtError::Signature
        );
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"sub":"root"}"#)
        );
        assert!(matches!(
            verify(&none, KEY, 0.0),
            Err(JwtError::Algorithm(_))
        ));
        assert_eq!(verify("a.b", KEY, 0.0).unwrap_err(), JwtError::Malformed);
        assert_eq!(
            verify("a.b.c.d", KEY, 0.0).unwrap_err(),
            JwtError::Malformed
        );
        let nbf = Claims {
            nbf: Some(500.0),
            ..claims(None)
        };
        assert_eq!(
            verify(&sign(&nbf, KEY), KEY, 100.0).unwrap_err(),
            JwtError::NotYetValid
        );
        let sub_token = Claims {
            channel: Some("a/b/c".into()),
            ..claims(None)
        };
        assert!(matches!(
            verify(&sign(&sub_token, KEY), KEY, 0.0),
            Err(JwtError::Claims(_))
        ));
    }
}
