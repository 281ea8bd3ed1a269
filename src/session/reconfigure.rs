//! A reload (SIGHUP) reaches every session: it takes the new settings, and a client whose
//! credentials no longer hold, or that holds a subscription the new rules deny, is closed.

use std::sync::Arc;
use std::time::Instant;

use tracing::info;

use super::{Session, SessionSettings};
use crate::auth::{Action, Identity, Revoked};
use crate::protocol::Disconnect;
use crate::ratelimit::RateLimit;

impl Session {
    /// Puts `new` in force for this session. `Err` closes the connection: 3500 "token revoked"
    /// when its token, JWT secret or protected mode is gone, 3507 when it keeps a subscription
    /// its role may no longer have. An API token whose role changed takes the new role.
    pub fn reconfigure(&mut self, new: Arc<SessionSettings>) -> Result<(), Disconnect> {
        if let Some(who) = self.upgraded_as.as_mut() {
            if recheck(&new, who).is_err() {
                // Not connected yet: the connect command will need a token of its own.
                self.upgraded_as = None;
            }
        }
        if let Some(who) = self.who.as_mut() {
            if let Err(why) = recheck(&new, who) {
                info!(client = self.id, user = %who.user, reason = %why, "closing: credentials revoked by the reload");
                return Err(Disconnect {
                    code: Disconnect::INVALID_TOKEN.code,
                    reason: why.to_string().into(),
                });
            }
            let denied = self
                .subs
                .keys()
                .find(|key| new.auth.check(who, Action::Subscribe, key).is_err());
            if let Some(key) = denied {
                info!(client = self.id, user = %who.user, channel = %key, "closing: the reloaded rules deny a subscription");
                return Err(Disconnect::PERMISSION_DENIED);
            }
        }
        if (new.command_rate, new.command_burst)
            != (self.settings.command_rate, self.settings.command_burst)
        {
            self.limit = RateLimit::new(new.command_rate, new.command_burst, Instant::now());
        }
        self.settings = new;
        Ok(())
    }
}

/// Checks `who` against the new credentials, taking the role they give it now.
fn recheck(new: &SessionSettings, who: &mut Identity) -> Result<(), Revoked> {
    who.role = new.auth.recheck(who)?;
    Ok(())
}
