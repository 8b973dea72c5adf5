//! Token requests (RFC 6749 §4.1.3, §6, §4.4) parsed into one closed enum, refresh
//! token format, and the checks a code redemption must pass.

use crate::client::ClientAuthenticated;
use crate::model::AuthorizationCode;
use crate::params::Params;
use crate::pkce::{CodeVerifier, PkceVerified};
use crate::secret::REDACTED;
use crate::{ErrorCode, OAuthError};

/// A token request, by `grant_type`.
#[derive(Clone)]
pub enum TokenRequest {
    AuthorizationCode {
        code: String,
        redirect_uri: Option<String>,
        code_verifier: Option<String>,
        resource: Option<String>,
    },
    RefreshToken {
        refresh_token: String,
        scope: Option<String>,
        resource: Option<String>,
    },
    ClientCredentials {
        scope: Option<String>,
        resource: Option<String>,
    },
}

/// Shows the grant type and the parameters that are not credentials: a code, a
/// verifier or a refresh token must never reach a log through `{:?}`.
impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenRequest::AuthorizationCode {
                redirect_uri,
                code_verifier,
                resource,
                ..
            } => f
                .debug_struct("AuthorizationCode")
                .field("code", &REDACTED)
                .field("redirect_uri", redirect_uri)
                .field("code_verifier", &code_verifier.as_ref().map(|_| REDACTED))
                .field("resource", resource)
                .finish(),
            TokenRequest::RefreshToken {
                scope, resource, ..
            } => f
                .debug_struct("RefreshToken")
                .field("refresh_token", &REDACTED)
                .field("scope", scope)
                .field("resource", resource)
                .finish(),
            TokenRequest::ClientCredentials { scope, resource } => f
                .debug_struct("ClientCredentials")
                .field("scope", scope)
                .field("resource", resource)
                .finish(),
        }
    }
}

impl TokenRequest {
    pub fn parse(params: &Params) -> Result<TokenRequest, OAuthError> {
        let owned = |n: &str| params.get(n).map(str::to_owned);
        match params.required("grant_type")? {
            "authorization_code" => Ok(TokenRequest::AuthorizationCode {
                code: params.required("code")?.to_owned(),
                redirect_uri: owned("redirect_uri"),
                code_verifier: owned("code_verifier"),
                resource: owned("resource"),
            }),
            "refresh_token" => Ok(TokenRequest::RefreshToken {
                refresh_token: params.required("refresh_token")?.to_owned(),
                scope: owned("scope"),
                resource: owned("resource"),
            }),
            "client_credentials" => Ok(TokenRequest::ClientCredentials {
                scope: owned("scope"),
                resource: owned("resource"),
            }),
            // RFC 9700 §2.4: no password grant; no implicit (it is not a token grant anyway).
            other => Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                format!(
                    "grant_type {} is not supported",
                    other.chars().take(64).collect::<String>()
                ),
            )),
        }
    }

    pub fn grant_type(&self) -> crate::client::GrantType {
        use crate::client::GrantType;
        match self {
            TokenRequest::AuthorizationCode { .. } => GrantType::AuthorizationCode,
            TokenRequest::RefreshToken { .. } => GrantType::RefreshToken,
            TokenRequest::ClientCredentials { .. } => GrantType::ClientCredentials,
        }
    }
}

/// An opaque refresh token: `<grant_id>.<generation>.<secret>`. Only the digest of the
/// secret is stored, in the grant row (DESIGN §2).
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub grant_id: String,
    pub generation: i64,
    pub secret: String,
}

/// The grant and generation, never the secret.
impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshToken")
            .field("grant_id", &self.grant_id)
            .field("generation", &self.generation)
            .field("secret", &REDACTED)
            .finish()
    }
}

impl RefreshToken {
    pub fn parse(s: &str) -> Option<RefreshToken> {
        if s.len() > 256 {
            return None;
        }
        let mut it = s.split('.');
        let (Some(grant_id), Some(generation), Some(secret), None) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return None;
        };
        let generation: i64 = generation.parse().ok().filter(|g| *g > 0)?;
        let id_ok = !grant_id.is_empty()
            && grant_id.len() <= 64
            && grant_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        let secret_ok = secret.len() == 43
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        (id_ok && secret_ok).then(|| RefreshToken {
            grant_id: grant_id.to_owned(),
            generation,
            secret: secret.to_owned(),
        })
    }

    pub fn encode(&self) -> String {
        format!("{}.{}.{}", self.grant_id, self.generation, self.secret)
    }
}

/// RFC 6749 §4.1.3 and OIDC Core §3.1.3.2: the checks on a consumed code. The code was
/// already consumed atomically, so a failure here burns it (and no token was issued).
/// Its times were checked before it was consumed ([`crate::code::check_times`]).
pub fn check_code_redemption(
    code: &AuthorizationCode,
    client: &ClientAuthenticated,
    redirect_uri: Option<&str>,
    code_verifier: Option<&str>,
) -> Result<PkceVerified, OAuthError> {
    if code.client_id != client.client_id() {
        return Err(OAuthError::invalid_grant(
            "the code was issued to another client",
        ));
    }
    if redirect_uri != Some(code.redirect_uri.as_str()) {
        return Err(OAuthError::invalid_grant(
            "redirect_uri must be identical to the one in the authorization request",
        ));
    }
    let verifier =
        code_verifier.ok_or_else(|| OAuthError::invalid_grant("code_verifier is required"))?;
    code.code_challenge.verify(&CodeVerifier::parse(verifier)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No credential reaches a log through `{:?}`: a code, a verifier, a refresh token
    /// and a client secret are shown as `<redacted>`; what is not secret still shows.
    #[test]
    fn debug_never_shows_a_credential() {
        let p = |s: &str| Params::parse(s.as_bytes()).unwrap();
        let cases = [
            (
                format!(
                    "{:?}",
                    TokenRequest::parse(&p(
                        "grant_type=authorization_code&code=CODEVALUE&code_verifier=VERIFIERVALUE&redirect_uri=https%3A%2F%2Fapp%2Fcb"
                    ))
                    .unwrap()
                ),
                &["CODEVALUE", "VERIFIERVALUE"][..],
                "https://app/cb",
            ),
            (
                format!(
                    "{:?}",
                    TokenRequest::parse(&p(
                        "grant_type=refresh_token&refresh_token=g1.2.REFRESHSECRET&scope=api"
                    ))
                    .unwrap()
                ),
                &["REFRESHSECRET", "g1.2"][..],
                "api",
            ),
            (
                format!(
                    "{:?}",
                    RefreshToken::parse(&format!("abc123.7.REFRESHSECRET{}", "x".repeat(30))).unwrap()
                ),
                &["REFRESHSECRET"][..],
                "abc123",
            ),
            (
                format!(
                    "{:?}",
                    crate::client::PresentedCredentials::from_request(
                        None,
                        Some("client-one"),
                        Some("CLIENTSECRET"),
                    )
                    .unwrap()
                ),
                &["CLIENTSECRET"][..],
                "client-one",
            ),
        ];
        for (shown, secrets, visible) in cases {
            for secret in secrets {
                assert!(!shown.contains(secret), "{secret} shown in {shown}");
            }
            assert!(shown.contains(REDACTED), "nothing redacted in {shown}");
            assert!(shown.contains(visible), "{visible} missing from {shown}");
        }
    }

    #[test]
    fn grant_types() {
        let p = |s: &str| Params::parse(s.as_bytes()).unwrap();
        assert!(matches!(
            TokenRequest::parse(&p("grant_type=client_credentials")),
            Ok(TokenRequest::ClientCredentials { .. })
        ));
        assert_eq!(
            TokenRequest::parse(&p("grant_type=password&username=a"))
                .unwrap_err()
                .code,
            ErrorCode::UnsupportedGrantType
        );
        assert_eq!(
            TokenRequest::parse(&p("grant_type=implicit"))
                .unwrap_err()
                .code,
            ErrorCode::UnsupportedGrantType
        );
        assert_eq!(
            TokenRequest::parse(&p("code=x")).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            TokenRequest::parse(&p("grant_type=authorization_code"))
                .unwrap_err()
                .code,
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn refresh_token_format() {
        let t = RefreshToken {
            grant_id: "g1".into(),
            generation: 3,
            secret: "a".repeat(43),
        };
        assert_eq!(RefreshToken::parse(&t.encode()), Some(t));
        assert_eq!(RefreshToken::parse("g1.0.aaaa"), None);
        assert_eq!(
            RefreshToken::parse(&format!("g1.x.{}", "a".repeat(43))),
            None
        );
        assert_eq!(
            RefreshToken::parse(&format!("g'1.1.{}", "a".repeat(43))),
            None
        );
        assert_eq!(
            RefreshToken::parse(&format!("g1.1.{}.x", "a".repeat(43))),
            None
        );
    }
}
