//! The authorization request (RFC 6749 §4.1.1, OIDC Core §3.1.2.1), validated in the
//! order RFC 6749 §4.1.2.1 demands: first the client and its redirect URI, whose
//! failures are shown to the user and never redirected (BCP-02), then everything else,
//! whose failures go back to the validated redirect URI with `state` and `iss`.

use crate::client::{Client, GrantType};
use crate::params::Params;
use crate::pkce::CodeChallenge;
use crate::scope::Scope;
use crate::{ErrorCode, OAuthError};

/// OIDC Core §3.1.2.1 `prompt`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prompt {
    pub none: bool,
    pub login: bool,
    pub consent: bool,
}

impl Prompt {
    pub fn parse(s: Option<&str>) -> Result<Prompt, OAuthError> {
        let mut p = Prompt::default();
        for v in s.unwrap_or("").split(' ').filter(|v| !v.is_empty()) {
            match v {
                "none" => p.none = true,
                // One account per session: choosing an account means signing in again.
                "login" | "select_account" => p.login = true,
                "consent" => p.consent = true,
                _ => {
                    return Err(OAuthError::invalid_request(format!(
                        "unknown prompt value {v}"
                    )));
                }
            }
        }
        if p.none && (p.login || p.consent) {
            return Err(OAuthError::invalid_request(
                "prompt=none cannot be combined with other values",
            ));
        }
        Ok(p)
    }
}

/// A validated authorization request.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    pub client_id: String,
    /// The redirect URI as presented; it matched a registered one.
    pub redirect_uri: String,
    pub scope: Scope,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: CodeChallenge,
    pub prompt: Prompt,
    pub max_age: Option<i64>,
    pub id_token_hint: Option<String>,
    /// RFC 8707 resource indicator: the API the tokens are for.
    pub resource: Option<String>,
}

impl AuthorizationRequest {
    /// An OpenID Connect request: `openid` in scope (OIDC Core §3.1.2.1).
    pub fn is_oidc(&self) -> bool {
        self.scope.contains("openid")
    }
}

/// Why an authorization request failed, and so where the answer goes.
#[derive(Debug, Clone)]
pub enum AuthorizeError {
    /// The client or redirect URI could not be validated: show an error page.
    Page(OAuthError),
    /// Everything else: redirect to the validated URI with `error`, `state` and `iss`.
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: OAuthError,
    },
}

/// Validates an authorization request. `client` is the result of looking up the
/// request's `client_id` (the caller does that I/O).
pub fn validate(
    params: &Params,
    client: Option<&Client>,
) -> Result<AuthorizationRequest, AuthorizeError> {
    let page = |e: OAuthError| AuthorizeError::Page(e);
    let client_id = params.required("client_id").map_err(page)?;
    let client =
        client.ok_or_else(|| page(OAuthError::new(ErrorCode::InvalidClient, "unknown client")))?;
    let presented = params.get("redirect_uri").ok_or_else(|| {
        page(OAuthError::invalid_request(
            "missing parameter redirect_uri",
        ))
    })?;
    if client.redirect_uri(presented).is_none() {
        return Err(page(OAuthError::invalid_request(
            "redirect_uri is not registered for this client",
        )));
    }
    if client.client_id != client_id {
        return Err(page(OAuthError::new(
            ErrorCode::InvalidClient,
            "unknown client",
        )));
    }

    let state = params.get("state").map(str::to_owned);
    let redirect = |error: OAuthError| AuthorizeError::Redirect {
        redirect_uri: presented.to_owned(),
        state: state.clone(),
        error,
    };

    if params.contains("request") {
        return Err(redirect(OAuthError::new(
            ErrorCode::RequestNotSupported,
            "request objects are not supported",
        )));
    }
    if params.contains("request_uri") {
        return Err(redirect(OAuthError::new(
            ErrorCode::RequestUriNotSupported,
            "request_uri is not supported",
        )));
    }
    match params.get("response_type") {
        None => {
            return Err(redirect(OAuthError::invalid_request(
                "missing parameter response_type",
            )));
        }
        Some("code") => {}
        Some(_) => {
            return Err(redirect(OAuthError::new(
                ErrorCode::UnsupportedResponseType,
                "only response_type=code is supported",
            )));
        }
    }
    if let Some(mode) = params.get("response_mode")
        && mode != "query"
    {
        return Err(redirect(OAuthError::invalid_request(
            "only response_mode=query is supported",
        )));
    }
    if !client.allows_grant(GrantType::AuthorizationCode) {
        return Err(redirect(OAuthError::unauthorized_client(
            "this client may not use the authorization code grant",
        )));
    }
    let scope = client
        .permitted_scope(params.get("scope"))
        .map_err(redirect)?;
    if scope.is_empty() {
        return Err(redirect(OAuthError::invalid_scope("scope is required")));
    }
    let code_challenge = CodeChallenge::parse(
        params.get("code_challenge"),
        params.get("code_challenge_method"),
    )
    .map_err(redirect)?;
    let resource = client
        .permitted_resource(params.get("resource"))
        .map_err(redirect)?;
    let prompt = Prompt::parse(params.get("prompt")).map_err(redirect)?;
    let max_age = match params.get("max_age") {
        None => None,
        Some(v) => Some(v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            redirect(OAuthError::invalid_request(
                "max_age must be a non-negative integer",
            ))
        })?),
    };
    Ok(AuthorizationRequest {
        client_id: client.client_id.clone(),
        redirect_uri: presented.to_owned(),
        scope,
        state,
        nonce: params.get("nonce").map(str::to_owned),
        code_challenge,
        prompt,
        max_age,
        id_token_hint: params.get("id_token_hint").map(str::to_owned),
        resource,
    })
}

/// Where to send the error for an authorization request whose parameters did not parse
/// (repeated, oversized, not UTF-8): the redirect URI and `state`, if `client_id` and
/// `redirect_uri` are each present once and valid for `client`, and `state` is either
/// absent or present once and intact (it must come back exactly as sent). Otherwise
/// `None`: show an error page (BCP-02).
pub fn malformed_request_target(
    input: &[u8],
    client: Option<&Client>,
) -> Option<(String, Option<String>)> {
    use crate::params::single_value;
    let client = client?;
    if single_value(input, "client_id")? != client.client_id {
        return None;
    }
    let redirect_uri = single_value(input, "redirect_uri")?;
    client.redirect_uri(&redirect_uri)?;
    let state_present = input
        .split(|b| *b == b'&')
        .any(|p| p.starts_with(b"state=") || p == b"state");
    let state = single_value(input, "state");
    if state_present && state.is_none() {
        return None;
    }
    Some((redirect_uri, state))
}

/// What the user must do before a code can be issued, decided from the session state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Login,
    Consent,
    IssueCode,
}

/// The session facts the decision needs.
#[derive(Debug, Clone, Copy)]
pub struct SessionFacts {
    pub auth_time: i64,
    /// The user signed in as part of this very request (after the login form).
    pub just_signed_in: bool,
    /// The request's `id_token_hint` names another user than the signed-in one
    /// (OIDC Core §3.1.2.1): the session does not count.
    pub hint_mismatch: bool,
}

/// Decides the next step (OIDC Core §3.1.2.3 and §3.1.2.4). `prior_consent` says the
/// user already granted these scopes to this client; it only counts for confidential or
/// first-party clients (TM-12, RFC 8252 §8.6).
pub fn next_step(
    req: &AuthorizationRequest,
    session: Option<SessionFacts>,
    now: crate::UnixTime,
    consent_remembered: bool,
) -> Result<NextStep, OAuthError> {
    let needs_login = match session {
        None => true,
        Some(s) if s.just_signed_in => false,
        // max_age=0 means "sign in again now", like prompt=login (OpenID Connect
        // working group resolution of Core issue 993).
        Some(s) => {
            s.hint_mismatch
                || req.prompt.login
                || req
                    .max_age
                    .is_some_and(|max| max == 0 || now.0 - s.auth_time > max)
        }
    };
    if needs_login {
        if req.prompt.none {
            return Err(OAuthError::new(
                ErrorCode::LoginRequired,
                "the user is not signed in",
            ));
        }
        return Ok(NextStep::Login);
    }
    if req.prompt.consent || !consent_remembered {
        if req.prompt.none {
            return Err(OAuthError::new(
                ErrorCode::ConsentRequired,
                "the user has not approved this client",
            ));
        }
        return Ok(NextStep::Consent);
    }
    Ok(NextStep::IssueCode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{AuthMethod, ClientKind};
    use crate::jose::Alg;
    use crate::redirect_uri::RedirectUri;

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn client() -> Client {
        Client {
            client_id: "c1".into(),
            name: "App".into(),
            kind: ClientKind::Confidential,
            secret_hash: None,
            redirect_uris: vec![RedirectUri::register("https://app.example/cb").unwrap()],
            grant_types: vec![GrantType::AuthorizationCode],
            scopes: Scope::parse("openid email").unwrap(),
            auth_methods: vec![AuthMethod::ClientSecretBasic],
            first_party: false,
            post_logout_redirect_uris: vec![],
            audiences: vec![],
            resources: vec![],
            access_token_ttl: 300,
            id_token_alg: Alg::RS256,
            created_at: 0,
        }
    }

    fn params(extra: &str) -> Params {
        let base = format!(
            "client_id=c1&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&response_type=code&scope=openid&state=xyz&code_challenge={CHALLENGE}&code_challenge_method=S256{extra}"
        );
        Params::parse(base.as_bytes()).unwrap()
    }

    fn redirect_code(r: Result<AuthorizationRequest, AuthorizeError>) -> ErrorCode {
        match r {
            Err(AuthorizeError::Redirect { error, state, .. }) => {
                assert_eq!(state.as_deref(), Some("xyz"));
                error.code
            }
            other => panic!("expected a redirect error, got {other:?}"),
        }
    }

    #[test]
    fn valid_request() {
        let r = validate(&params("&nonce=n&max_age=10&prompt=login"), Some(&client())).unwrap();
        assert!(r.is_oidc());
        assert_eq!(r.nonce.as_deref(), Some("n"));
        assert_eq!(r.max_age, Some(10));
        assert!(r.prompt.login);
    }

    #[test]
    fn client_and_redirect_errors_are_pages() {
        assert!(matches!(
            validate(&params(""), None),
            Err(AuthorizeError::Page(_))
        ));
        let p = Params::parse(
            b"client_id=c1&redirect_uri=https%3A%2F%2Fevil.example%2Fcb&response_type=code",
        )
        .unwrap();
        assert!(matches!(
            validate(&p, Some(&client())),
            Err(AuthorizeError::Page(_))
        ));
        let p = Params::parse(b"client_id=c1&response_type=code").unwrap();
        assert!(matches!(
            validate(&p, Some(&client())),
            Err(AuthorizeError::Page(_))
        ));
    }

    #[test]
    fn other_errors_redirect_with_state() {
        let c = client();
        let p = |s: &str| Params::parse(s.as_bytes()).unwrap();
        let base = "client_id=c1&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&state=xyz";
        assert_eq!(
            redirect_code(validate(
                &p(&format!("{base}&response_type=token")),
                Some(&c)
            )),
            ErrorCode::UnsupportedResponseType
        );
        assert_eq!(
            redirect_code(validate(&p(base), Some(&c))),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            redirect_code(validate(
                &p(&format!("{base}&response_type=code&scope=openid")),
                Some(&c)
            )),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            redirect_code(validate(
                &p(&format!(
                    "{base}&response_type=code&scope=openid&code_challenge={CHALLENGE}&code_challenge_method=plain"
                )),
                Some(&c)
            )),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            redirect_code(validate(
                &p(&format!(
                    "{base}&response_type=code&scope=admin&code_challenge={CHALLENGE}&code_challenge_method=S256"
                )),
                Some(&c)
            )),
            ErrorCode::InvalidScope
        );
        assert_eq!(
            redirect_code(validate(&params("&prompt=none%20login"), Some(&c))),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            redirect_code(validate(&params("&max_age=-1"), Some(&c))),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            redirect_code(validate(&params("&request=x"), Some(&c))),
            ErrorCode::RequestNotSupported
        );
    }

    #[test]
    fn prompt_and_max_age_decide_login() {
        let c = client();
        let now = crate::UnixTime(1000);
        let fresh = SessionFacts {
            auth_time: 995,
            just_signed_in: false,
            hint_mismatch: false,
        };
        let r = validate(&params(""), Some(&c)).unwrap();
        assert_eq!(next_step(&r, None, now, false).unwrap(), NextStep::Login);
        assert_eq!(
            next_step(&r, Some(fresh), now, false).unwrap(),
            NextStep::Consent
        );
        assert_eq!(
            next_step(&r, Some(fresh), now, true).unwrap(),
            NextStep::IssueCode
        );
        let r = validate(&params("&prompt=login"), Some(&c)).unwrap();
        assert_eq!(
            next_step(&r, Some(fresh), now, true).unwrap(),
            NextStep::Login
        );
        assert_eq!(
            next_step(
                &r,
                Some(SessionFacts {
                    just_signed_in: true,
                    ..fresh
                }),
                now,
                true
            )
            .unwrap(),
            NextStep::IssueCode
        );
        let r = validate(&params("&max_age=3"), Some(&c)).unwrap();
        assert_eq!(
            next_step(&r, Some(fresh), now, true).unwrap(),
            NextStep::Login
        );
        let r = validate(&params("&prompt=none"), Some(&c)).unwrap();
        assert_eq!(
            next_step(&r, None, now, true).unwrap_err().code,
            ErrorCode::LoginRequired
        );
        assert_eq!(
            next_step(&r, Some(fresh), now, false).unwrap_err().code,
            ErrorCode::ConsentRequired
        );
        // OIDC-08: a hint naming another user voids the session.
        let other = SessionFacts {
            hint_mismatch: true,
            ..fresh
        };
        let r = validate(&params(""), Some(&c)).unwrap();
        assert_eq!(
            next_step(&r, Some(other), now, true).unwrap(),
            NextStep::Login
        );
        let r = validate(&params("&prompt=none"), Some(&c)).unwrap();
        assert_eq!(
            next_step(&r, Some(other), now, true).unwrap_err().code,
            ErrorCode::LoginRequired
        );
        let r = validate(&params("&prompt=consent"), Some(&c)).unwrap();
        assert_eq!(
            next_step(&r, Some(fresh), now, true).unwrap(),
            NextStep::Consent
        );
    }
}
