//! What one route demands of a token beyond validity: scopes, and how recently it was
//! issued.

use std::sync::Arc;

use crate::claims::Claims;
use crate::error::{TokenError, VerifyError};

/// The requirements of a route. `Policy::any()` accepts every valid token;
/// `Policy::scope("api:read")` also demands a scope; `.max_age(300)` demands a token
/// issued within the last five minutes whatever its `exp` (for sensitive routes).
///
/// ```
/// use latchkey_verify::Policy;
/// let read = Policy::scope("api:read");
/// let transfer = Policy::scope("payments:write").max_age(60);
/// # let _ = (read, transfer);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    scopes: Arc<[String]>,
    max_age: Option<i64>,
}

impl Policy {
    /// Any valid token.
    pub fn any() -> Policy {
        Policy::default()
    }

    /// A valid token granting every scope in `scopes` (space separated, RFC 6749 §3.3).
    /// A token lacking one is refused with 403 `insufficient_scope` (RFC 6750 §3.1).
    pub fn scope(scopes: &str) -> Policy {
        Policy {
            scopes: scopes
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            max_age: None,
        }
    }

    /// Also demands that the token was issued (`iat`) at most `seconds` ago; an older
    /// one is refused as `invalid_token` ("token is too old for this resource"), so the
    /// client fetches a fresh one.
    pub fn max_age(mut self, seconds: u32) -> Policy {
        self.max_age = Some(i64::from(seconds));
        self
    }

    /// The scopes this policy requires.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scopes.iter().map(String::as_str)
    }

    pub(crate) fn check(&self, claims: &Claims, now: i64) -> Result<(), VerifyError> {
        if let Some(max_age) = self.max_age
            && now.saturating_sub(claims.issued_at) > max_age
        {
            return Err(TokenError::TooOld.into());
        }
        if !self.scopes.iter().all(|s| claims.has_scope(s)) {
            return Err(VerifyError::InsufficientScope {
                scope: self.scopes.join(" "),
            });
        }
        Ok(())
    }
}
