//! Claims of the tokens Latchkey issues: RFC 9068 access tokens and OIDC ID tokens.

use serde::{Deserialize, Serialize};

use crate::UnixTime;

/// RFC 9068 §2.2 claims, plus `gid`, the grant the token belongs to (absent for
/// client-credentials tokens, whose "grant" is the client itself).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub scope: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
}

pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Allowed clock difference when checking `exp`, `nbf` and `iat` (REL-04).
pub const LEEWAY_SECONDS: i64 = 10;

impl AccessTokenClaims {
    /// Reads and checks the claims of a signature-verified access token.
    pub fn from_verified(
        claims: serde_json::Map<String, serde_json::Value>,
        issuer: &str,
        now: UnixTime,
    ) -> Result<AccessTokenClaims, &'static str> {
        let c = Self::from_verified_any_time(claims, issuer)?;
        if now.0 >= c.exp + LEEWAY_SECONDS {
            return Err("token has expired");
        }
        if c.iat > now.0 + LEEWAY_SECONDS {
            return Err("token is issued in the future");
        }
        Ok(c)
    }

    /// Reads the claims of a signature-verified access token of this issuer without
    /// the time checks: revocation (RFC 7009) acts on expired tokens too.
    pub fn from_verified_any_time(
        claims: serde_json::Map<String, serde_json::Value>,
        issuer: &str,
    ) -> Result<AccessTokenClaims, &'static str> {
        let c: AccessTokenClaims = serde_json::from_value(serde_json::Value::Object(claims))
            .map_err(|_| "token claims are incomplete")?;
        if c.iss != issuer {
            return Err("token issuer is not this server");
        }
        Ok(c)
    }

    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split(' ').filter(|s| !s.is_empty())
    }
}

/// OIDC Core §2 ID token claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    pub azp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}
