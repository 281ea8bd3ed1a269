//! `[auth]` as the operator writes it: API tokens, the JWT secret and per-channel rules.
//! `Auth::from_config` turns it into the runtime object (reading token files on the way).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::Role;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HMAC key for HS256 connection JWTs. Prefer `jwt_hmac_secret_file`.
    pub jwt_hmac_secret: String,
    /// File holding the HMAC key (trailing newline ignored). A relative path is looked up in
    /// `$CREDENTIALS_DIRECTORY` when systemd set it (`LoadCredential=`).
    pub jwt_hmac_secret_file: Option<PathBuf>,
    /// `[[auth.tokens]]`: static API tokens with a role.
    pub tokens: Vec<TokenConfig>,
    /// `[[auth.rules]]`: per-channel narrowing, first match wins.
    pub rules: Vec<RuleConfig>,
    /// A connection whose JWT expired and was not refreshed is closed (3005) this long after.
    #[serde(with = "crate::duration")]
    pub expired_close_delay: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_hmac_secret: String::new(),
            jwt_hmac_secret_file: None,
            tokens: Vec::new(),
            rules: Vec::new(),
            expired_close_delay: Duration::from_secs(25),
        }
    }
}

/// One API token: exactly one of `token`, `token_sha256`, `token_file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Shown as the user in presence and publications, and in logs.
    pub name: String,
    pub role: Role,
    pub token: Option<String>,
    /// Hex SHA-256 of the token, so the config file holds no secret.
    pub token_sha256: Option<String>,
    /// File holding the token; relative paths as for `jwt_hmac_secret_file`.
    pub token_file: Option<PathBuf>,
}

/// One per-channel rule. Roles left out keep the default (viewer to subscribe, publisher to
/// publish); a rule may only raise them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Path glob over the channel name: `*` within a segment, `**` across segments.
    pub pattern: String,
    pub subscribe: Option<Role>,
    pub publish: Option<Role>,
}

/// Shortest accepted secret or token, bytes: anything shorter can be guessed over a LAN.
pub const MIN_SECRET_LEN: usize = 16;

impl AuthConfig {
    /// Problems that need no file access (check-config also builds `Auth`, which reads files).
    pub fn validate(&self, problems: &mut Vec<String>) {
        if !self.jwt_hmac_secret.is_empty() && self.jwt_hmac_secret_file.is_some() {
            problems.push("[auth] set jwt_hmac_secret or jwt_hmac_secret_file, not both".into());
        }
        if !self.jwt_hmac_secret.is_empty() && self.jwt_hmac_secret.len() < MIN_SECRET_LEN {
            problems.push(format!(
                "[auth] jwt_hmac_secret must be at least {MIN_SECRET_LEN} bytes"
            ));
        }
        for (i, t) in self.tokens.iter().enumerate() {
            let n = i + 1;
            if t.name.is_empty() {
                problems.push(format!("[[auth.tokens]] #{n}: name must not be empty"));
            }
            let given = [
                t.token.is_some(),
                t.token_sha256.is_some(),
                t.token_file.is_some(),
            ];
            if given.iter().filter(|g| **g).count() != 1 {
                problems.push(format!(
                    "[[auth.tokens]] #{n} ({}): set exactly one of token, token_sha256, token_file",
                    t.name
                ));
            }
            if let Some(tok) = &t.token {
                if tok.len() < MIN_SECRET_LEN || tok.chars().any(char::is_whitespace) {
                    problems.push(format!(
                        "[[auth.tokens]] #{n} ({}): token must be at least {MIN_SECRET_LEN} bytes without spaces",
                        t.name
                    ));
                }
            }
            if let Some(h) = &t.token_sha256 {
                if parse_sha256(h).is_none() {
                    problems.push(format!(
                        "[[auth.tokens]] #{n} ({}): token_sha256 must be 64 hex digits",
                        t.name
                    ));
                }
            }
        }
        for (i, r) in self.rules.iter().enumerate() {
            let n = i + 1;
            if !crate::glob::can_match_a_channel(&r.pattern) {
                problems.push(format!(
                    "[[auth.rules]] #{n}: pattern {:?} cannot match a channel name",
                    r.pattern
                ));
            }
            for (action, role) in [
                (super::Action::Subscribe, r.subscribe),
                (super::Action::Publish, r.publish),
            ] {
                if role.is_some_and(|role| role < action.default_role()) {
                    problems.push(format!(
                        "[[auth.rules]] #{n}: {} = {:?} would widen rights; rules only narrow ({} needs at least {:?})",
                        action.name(),
                        role.unwrap().name(),
                        action.name(),
                        action.default_role().name(),
                    ));
                }
            }
            if r.subscribe.is_none() && r.publish.is_none() {
                problems.push(format!(
                    "[[auth.rules]] #{n}: set subscribe, publish or both"
                ));
            }
        }
    }
}

/// 64 hex digits → 32 bytes.
pub fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Reads a secret file of ours (at least `MIN_SECRET_LEN` bytes): relative paths go to
/// `$CREDENTIALS_DIRECTORY` when it is set.
pub fn read_secret(path: &Path) -> Result<String, String> {
    let secret = read_secret_any(path)?;
    if secret.len() < MIN_SECRET_LEN {
        let full = resolve(path);
        return Err(format!(
            "{}: holds fewer than {MIN_SECRET_LEN} bytes",
            full.display()
        ));
    }
    Ok(secret)
}

/// Where a secret file is: relative paths go to `$CREDENTIALS_DIRECTORY` when it is set.
fn resolve(path: &Path) -> std::path::PathBuf {
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if path.is_relative() => Path::new(&dir).join(path),
        _ => path.to_owned(),
    }
}

/// Reads a secret file of any length (another system's password, such as an MQTT broker's),
/// without its trailing newline.
pub fn read_secret_any(path: &Path) -> Result<String, String> {
    let full = resolve(path);
    let text = std::fs::read_to_string(&full)
        .map_err(|e| format!("{}: cannot read: {e}", full.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}
