//! Latchkey's protocol core: the rules of OAuth 2 and OpenID Connect as pure functions
//! and types, with no I/O. Time arrives as [`UnixTime`] and randomness as a
//! [`aws_lc_rs::rand::SecureRandom`], so every rule can be tested with a fixed clock.
//!
//! The modules are protocol concepts: [`authorize`] (RFC 6749 §4.1.1, OIDC Core §3.1.2),
//! [`token`] (RFC 6749 §4.1.3, §6, §4.4), [`code`] (§4.1.2), [`pkce`] (RFC 7636), [`redirect_uri`]
//! (RFC 9700 §4.1.3, RFC 8252 §7.3), [`scope`] (RFC 6749 §3.3), [`jose`] (RFC 7515,
//! RFC 8725) and [`error`] (RFC 6749 §4.1.2.1, §5.2, RFC 6750 §3.1).
#![forbid(unsafe_code)]

pub mod authorize;
pub mod claims;
pub mod client;
pub mod code;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod jose;
pub mod keys;
pub mod metadata;
pub mod model;
pub mod params;
pub mod pkce;
pub mod redirect_uri;
pub mod scope;
pub mod seal;
pub mod secret;
pub mod token;

pub use error::{ErrorCode, OAuthError};

/// Seconds since the Unix epoch. The only notion of "now" the core knows; callers pass it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(pub i64);

impl UnixTime {
    pub fn plus(self, seconds: i64) -> UnixTime {
        UnixTime(self.0.saturating_add(seconds))
    }
}
