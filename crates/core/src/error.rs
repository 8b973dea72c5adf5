//! OAuth error codes and the one place that maps them to HTTP.
//!
//! Each area (authorization, token, userinfo) returns an [`OAuthError`]: an RFC error
//! code plus a human description. The description is sanitized to printable ASCII with
//! no CR, LF or TAB (RFC 6749 §5.2 `error_description` grammar; OIDC conformance).

use std::fmt;

/// Error codes from RFC 6749 §4.1.2.1 and §5.2, RFC 6750 §3.1, RFC 7009 §2.2.1 and
/// OIDC Core §3.1.2.6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    InvalidScope,
    AccessDenied,
    ServerError,
    TemporarilyUnavailable,
    LoginRequired,
    ConsentRequired,
    InteractionRequired,
    RequestNotSupported,
    RequestUriNotSupported,
    InvalidToken,
    InsufficientScope,
    UnsupportedTokenType,
    /// RFC 8707 §2: the requested resource is unknown or not allowed for this client.
    InvalidTarget,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::LoginRequired => "login_required",
            ErrorCode::ConsentRequired => "consent_required",
            ErrorCode::InteractionRequired => "interaction_required",
            ErrorCode::RequestNotSupported => "request_not_supported",
            ErrorCode::RequestUriNotSupported => "request_uri_not_supported",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::UnsupportedTokenType => "unsupported_token_type",
            ErrorCode::InvalidTarget => "invalid_target",
        }
    }

    /// HTTP status for a JSON error response (token, revocation, introspection,
    /// userinfo). RFC 6749 §5.2: 400, except `invalid_client`, which is 401.
    /// RFC 6750 §3.1: `invalid_token` 401, `insufficient_scope` 403.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidClient | ErrorCode::InvalidToken => 401,
            ErrorCode::InsufficientScope => 403,
            ErrorCode::ServerError => 500,
            ErrorCode::TemporarilyUnavailable => 503,
            _ => 400,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error to report to the client: the RFC code and a description safe to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub code: ErrorCode,
    description: String,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl AsRef<str>) -> Self {
        OAuthError {
            code,
            description: sanitize_description(description.as_ref()),
        }
    }

    pub fn invalid_request(d: impl AsRef<str>) -> Self {
        Self::new(ErrorCode::InvalidRequest, d)
    }
    pub fn invalid_grant(d: impl AsRef<str>) -> Self {
        Self::new(ErrorCode::InvalidGrant, d)
    }
    pub fn invalid_client(d: impl AsRef<str>) -> Self {
        Self::new(ErrorCode::InvalidClient, d)
    }
    pub fn invalid_scope(d: impl AsRef<str>) -> Self {
        Self::new(ErrorCode::InvalidScope, d)
    }
    pub fn unauthorized_client(d: impl AsRef<str>) -> Self {
        Self::new(ErrorCode::UnauthorizedClient, d)
    }
    pub fn invalid_token(d: impl AsRef<str>) -> Self {
        Self::new(ErrorCode::InvalidToken, d)
    }
    pub fn server_error() -> Self {
        Self::new(
            ErrorCode::ServerError,
            "the server could not complete the request",
        )
    }
    pub fn temporarily_unavailable() -> Self {
        Self::new(
            ErrorCode::TemporarilyUnavailable,
            "the server is temporarily unable to handle the request",
        )
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// The JSON body of RFC 6749 §5.2.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": self.code.as_str(),
            "error_description": self.description,
        })
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.description)
    }
}

impl std::error::Error for OAuthError {}

/// RFC 6749 §5.2: `error_description` is `%x20-21 / %x23-5B / %x5D-7E`. Anything else
/// (quotes, backslashes, control characters, non-ASCII) is replaced, so the value is
/// also safe inside a `WWW-Authenticate` quoted string. Capped at 256 characters.
pub fn sanitize_description(s: &str) -> String {
    s.chars()
        .take(256)
        .map(|c| match c {
            '\x20'..='\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e' => c,
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping_follows_rfc6749_and_rfc6750() {
        assert_eq!(ErrorCode::InvalidClient.http_status(), 401);
        assert_eq!(ErrorCode::InvalidGrant.http_status(), 400);
        assert_eq!(ErrorCode::InvalidRequest.http_status(), 400);
        assert_eq!(ErrorCode::UnsupportedGrantType.http_status(), 400);
        assert_eq!(ErrorCode::InvalidToken.http_status(), 401);
        assert_eq!(ErrorCode::InsufficientScope.http_status(), 403);
    }

    #[test]
    fn description_has_no_control_characters_or_quotes() {
        let e = OAuthError::invalid_request("bad\r\nvalue\t\"x\"\\ é");
        assert_eq!(e.description(), "bad??value??x?? ?");
        assert_eq!(e.to_json()["error"], "invalid_request");
    }
}
