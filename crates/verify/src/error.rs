//! Errors in two levels: [`TokenError`] says exactly why a token was refused, and
//! [`VerifyError`] is what the API answers, mapped in one place to the RFC 6750 §3.1
//! error code, the HTTP status and the `WWW-Authenticate` challenge.

use std::fmt;

/// Why a bearer token was refused. Each description is safe to send to the client
/// (RFC 6750 §3 `error_description`: printable ASCII without `"` or `\`) and never
/// contains the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Larger than [`MAX_TOKEN_LEN`](crate::MAX_TOKEN_LEN), checked before anything else.
    #[error("token is larger than 8192 bytes")]
    TooLarge,
    /// Not three base64url segments of the compact serialization (RFC 7515 §7.1).
    #[error("token is not a compact JWS")]
    Malformed,
    /// The protected header is not a JSON object with a string `alg` (RFC 7515 §4).
    #[error("token header is not valid")]
    BadHeader,
    /// A header parameter that would let the token choose its own key or change how it is
    /// processed (`jku`, `x5u`, `jwk`, `x5c`, `crit`, `zip`, `b64`); RFC 8725 §3.10.
    #[error("token header parameter {0} is not accepted")]
    ForbiddenHeader(&'static str),
    /// `none`, an HMAC algorithm, or any algorithm not allowed for this issuer
    /// (RFC 8725 §3.1, §3.2).
    #[error("token algorithm is not accepted")]
    AlgorithmNotAllowed,
    /// The header's `alg` is not the algorithm the key with that `kid` declares
    /// (RFC 8725 §3.1: each key is used with exactly one algorithm).
    #[error("token algorithm does not match its key")]
    AlgorithmMismatch,
    /// `typ` is not `at+jwt` (RFC 9068 §2.1, §4; RFC 8725 §3.11).
    #[error("token type is not at+jwt")]
    WrongType,
    /// The header has no `kid`.
    #[error("token header has no key id")]
    MissingKeyId,
    /// No key of the issuer's JWKS has this `kid`, even after a refetch.
    #[error("token is signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify with the issuer's key (RFC 7515 §5.2).
    #[error("token signature is not valid")]
    BadSignature,
    /// The payload is not a JSON object, repeats a claim or nests too deeply.
    #[error("token claims are not valid JSON")]
    BadClaims,
    /// A claim RFC 9068 §2.2 requires is absent.
    #[error("token has no {0} claim")]
    MissingClaim(&'static str),
    /// A claim has the wrong type, e.g. a non-integer `exp`.
    #[error("token claim {0} is not valid")]
    InvalidClaim(&'static str),
    /// `iss` is not the configured issuer (RFC 9068 §4).
    #[error("token issuer is not trusted")]
    WrongIssuer,
    /// `aud` does not name this API (RFC 9068 §4, RFC 8725 §3.9).
    #[error("token audience is not this API")]
    WrongAudience,
    /// `exp` has passed, beyond the leeway (RFC 7519 §4.1.4).
    #[error("token has expired")]
    Expired,
    /// `nbf` is still ahead, beyond the leeway (RFC 7519 §4.1.5).
    #[error("token is not valid yet")]
    NotYetValid,
    /// `iat` is in the future, beyond the leeway.
    #[error("token is issued in the future")]
    IssuedInFuture,
    /// The route demands a token issued more recently ([`Policy::max_age`](crate::Policy::max_age)).
    #[error("token is too old for this resource")]
    TooOld,
    /// The token carries a confirmation (`cnf`, RFC 9449 §6) this verifier cannot check;
    /// a sender-constrained token is never accepted as a plain bearer token.
    #[error("token is sender-constrained, which this API does not support")]
    SenderConstrained,
    /// The revocation feed lists the token's grant, user, client or signing key.
    #[error("token has been revoked")]
    Revoked(RevokedBy),
}

/// What the revocation feed listed for a revoked token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevokedBy {
    /// The `gid` claim (the grant).
    Grant,
    /// The `sub` claim (a deleted user).
    User,
    /// The `client_id` claim (a deleted client).
    Client,
    /// The header's `kid` (a revoked signing key).
    Key,
}

/// The outcome of checking a request's bearer token, as the API should answer it
/// (RFC 6750 §3, §3.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The request has no bearer token (no `Authorization` header, or another
    /// scheme). 401 with a bare `WWW-Authenticate: Bearer` (RFC 6750 §3.1, last
    /// paragraph: no error code when no authentication was attempted).
    #[error("no bearer token")]
    MissingToken,
    /// The `Authorization` header is malformed or repeated: 400 `invalid_request`.
    #[error("{0}")]
    InvalidRequest(&'static str),
    /// The token is malformed, forged, expired, revoked or for someone else: 401
    /// `invalid_token`.
    #[error(transparent)]
    InvalidToken(#[from] TokenError),
    /// The token is valid but lacks scopes: 403 `insufficient_scope` with `scope` set to
    /// the scopes the resource needs.
    #[error("token lacks the scope this resource requires")]
    InsufficientScope {
        /// The scopes the resource requires, space separated.
        scope: String,
    },
}

impl VerifyError {
    /// The HTTP status RFC 6750 §3.1 gives this error.
    pub fn status(&self) -> u16 {
        match self {
            VerifyError::MissingToken | VerifyError::InvalidToken(_) => 401,
            VerifyError::InvalidRequest(_) => 400,
            VerifyError::InsufficientScope { .. } => 403,
        }
    }

    /// The RFC 6750 §3.1 error code, or `None` when no token was presented.
    pub fn error_code(&self) -> Option<&'static str> {
        match self {
            VerifyError::MissingToken => None,
            VerifyError::InvalidRequest(_) => Some("invalid_request"),
            VerifyError::InvalidToken(_) => Some("invalid_token"),
            VerifyError::InsufficientScope { .. } => Some("insufficient_scope"),
        }
    }

    /// The value of the `WWW-Authenticate` response header (RFC 6750 §3).
    pub fn www_authenticate(&self) -> String {
        let Some(code) = self.error_code() else {
            return "Bearer".to_owned();
        };
        let description = Quoted(self);
        match self {
            VerifyError::InsufficientScope { scope } => format!(
                "Bearer error=\"{code}\", error_description=\"{description}\", scope=\"{}\"",
                Quoted(scope)
            ),
            _ => format!("Bearer error=\"{code}\", error_description=\"{description}\""),
        }
    }
}

/// Writes a value as the inside of an RFC 6750 quoted string, dropping any character
/// outside `%x20-21 / %x23-5B / %x5D-7E`. Our descriptions never contain one; scope
/// tokens cannot (RFC 6749 §3.3); this is the belt to those braces.
struct Quoted<'a, T: fmt::Display + ?Sized>(&'a T);

impl<T: fmt::Display + ?Sized> fmt::Display for Quoted<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string();
        for c in text.chars() {
            if matches!(c, ' '..='~') && c != '"' && c != '\\' {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

/// Why a [`Verifier`](crate::Verifier) could not be built, or its issuer not reached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The issuer is not an absolute `https` URL (plain `http` only on loopback, or with
    /// [`VerifierBuilder::danger_accept_http_issuer`](crate::VerifierBuilder::danger_accept_http_issuer)).
    #[error("issuer {0} is not acceptable: {1}")]
    Issuer(String, &'static str),
    /// A request to the issuer failed.
    #[error("request to {url} failed: {reason}")]
    Http {
        /// The URL requested (never carries credentials).
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The discovery document (RFC 8414 §3) is unusable.
    #[error("discovery document is not valid: {0}")]
    Discovery(&'static str),
    /// The JWKS is unusable or holds no key this verifier accepts.
    #[error("JWKS is not valid: {0}")]
    Jwks(&'static str),
    /// The revocation feed refused the credentials or answered something unreadable.
    #[error("revocation feed: {0}")]
    Feed(String),
    /// A builder setting is out of range.
    #[error("{0}")]
    Config(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_token_errors() -> Vec<TokenError> {
        vec![
            TokenError::TooLarge,
            TokenError::Malformed,
            TokenError::BadHeader,
            TokenError::ForbiddenHeader("jku"),
            TokenError::AlgorithmNotAllowed,
            TokenError::AlgorithmMismatch,
            TokenError::WrongType,
            TokenError::MissingKeyId,
            TokenError::UnknownKey,
            TokenError::BadSignature,
            TokenError::BadClaims,
            TokenError::MissingClaim("exp"),
            TokenError::InvalidClaim("exp"),
            TokenError::WrongIssuer,
            TokenError::WrongAudience,
            TokenError::Expired,
            TokenError::NotYetValid,
            TokenError::IssuedInFuture,
            TokenError::TooOld,
            TokenError::SenderConstrained,
            TokenError::Revoked(RevokedBy::Grant),
        ]
    }

    #[test]
    fn descriptions_are_rfc6750_quoted_string_safe() {
        for e in all_token_errors() {
            let d = e.to_string();
            assert!(
                d.chars()
                    .all(|c| matches!(c, ' '..='~') && c != '"' && c != '\\'),
                "{d}"
            );
        }
    }

    #[test]
    fn rfc6750_mapping() {
        let missing = VerifyError::MissingToken;
        assert_eq!(
            (missing.status(), missing.www_authenticate()),
            (401, "Bearer".to_owned())
        );
        let expired = VerifyError::InvalidToken(TokenError::Expired);
        assert_eq!(expired.status(), 401);
        assert_eq!(
            expired.www_authenticate(),
            "Bearer error=\"invalid_token\", error_description=\"token has expired\""
        );
        let scope = VerifyError::InsufficientScope {
            scope: "api:write".into(),
        };
        assert_eq!(scope.status(), 403);
        assert_eq!(
            scope.www_authenticate(),
            "Bearer error=\"insufficient_scope\", error_description=\"token lacks the scope \
             this resource requires\", scope=\"api:write\""
        );
        let bad = VerifyError::InvalidRequest("Authorization header is repeated");
        assert_eq!(bad.status(), 400);
        assert!(bad.www_authenticate().contains("error=\"invalid_request\""));
    }

    #[test]
    fn quoting_drops_unsafe_characters() {
        assert_eq!(Quoted("a\"b\\c\u{e9}\nd").to_string(), "abcd");
    }
}
