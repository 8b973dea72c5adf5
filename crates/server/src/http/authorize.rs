//! The authorization endpoint with its login and consent pages (RFC 6749 §4.1.1–4.1.2,
//! OIDC Core §3.1.2).
//!
//! No interaction state is stored: the login and consent forms carry the original
//! request (`authz`), which is validated again from scratch at every step. After a
//! login the browser is sent back to `/authorize` with a marker, a MAC over the new
//! session and the request, that says "this user just signed in for this request", so
//! `prompt=login` and `max_age` do not loop.

use std::sync::Arc;

use axum::Form;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use latchkey_core::OAuthError;
use latchkey_core::authorize::{
    self, AuthorizationRequest, AuthorizeError, NextStep, SessionFacts,
};
use latchkey_core::client::{Client, ClientKind};
use latchkey_core::model::{AuthorizationCode, Session, User, normalize_username};
use latchkey_core::params::Params;
use latchkey_core::redirect_uri::with_query;
use latchkey_core::scope;
use latchkey_core::secret::{ct_eq, digest};
use serde::Deserialize;

use super::pages::{ConsentPage, LoginPage, error_page, render};
use super::{see_other, store_failure};
use crate::state::AppState;

pub const SESSION_COOKIE: &str = "lk_session";
const CSRF_COOKIE: &str = "lk_csrf";
const LOGIN_MARK: &str = "&_lk_login=";

pub async fn authorize_get(
    State(state): State<AppState>,
    jar: CookieJar,
    RawQuery(q): RawQuery,
) -> Response {
    authorize_request(&state, jar, q.unwrap_or_default()).await
}

/// OIDC Core §3.1.2.1: the authorization endpoint accepts POST with a form body too.
pub async fn authorize_post(
    State(state): State<AppState>,
    jar: CookieJar,
    body: String,
) -> Response {
    authorize_request(&state, jar, body).await
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    authz: String,
}

#[derive(Deserialize)]
pub struct ConsentForm {
    #[serde(default)]
    decision: String,
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    authz: String,
}

/// What went wrong before a response could be decided.
enum Failure {
    Page(StatusCode, OAuthError),
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: OAuthError,
    },
}

impl From<latchkey_store::StoreError> for Failure {
    fn from(e: latchkey_store::StoreError) -> Self {
        Failure::Page(StatusCode::SERVICE_UNAVAILABLE, store_failure(&e))
    }
}

impl From<AuthorizeError> for Failure {
    fn from(e: AuthorizeError) -> Self {
        match e {
            AuthorizeError::Page(err) => Failure::Page(StatusCode::BAD_REQUEST, err),
            AuthorizeError::Redirect {
                redirect_uri,
                state,
                error,
            } => Failure::Redirect {
                redirect_uri,
                state,
                error,
            },
        }
    }
}

impl Failure {
    fn into_response(self, state: &AppState) -> Response {
        match self {
            Failure::Page(status, err) => error_page(status, &err),
            Failure::Redirect {
                redirect_uri,
                state: s,
                error,
            } => see_other(&error_location(state, &redirect_uri, s.as_deref(), &error)),
        }
    }
}

/// RFC 6749 §4.1.2.1 error response, with `iss` (RFC 9207) and `state`.
fn error_location(
    state: &AppState,
    redirect_uri: &str,
    s: Option<&str>,
    error: &OAuthError,
) -> String {
    let mut params = vec![
        ("error", error.code.as_str()),
        ("error_description", error.description()),
    ];
    if let Some(s) = s {
        params.push(("state", s));
    }
    params.push(("iss", &state.issuer));
    with_query(redirect_uri, &params)
}

/// Parses and validates the request carried in `raw`, looking the client up.
async fn validated(
    state: &AppState,
    raw: &str,
) -> Result<(AuthorizationRequest, Arc<Client>), Failure> {
    let params = match Params::parse(raw.as_bytes()) {
        Ok(p) => p,
        // RFC 6749 §4.1.2.1: a malformed parameter is `invalid_request`, sent back to
        // the client when its redirect URI can still be validated.
        Err(error) => {
            let client = match latchkey_core::params::single_value(raw.as_bytes(), "client_id") {
                Some(id) => state.client(&id).await?,
                None => None,
            };
            return Err(
                match authorize::malformed_request_target(raw.as_bytes(), client.as_deref()) {
                    Some((redirect_uri, state)) => Failure::Redirect {
                        redirect_uri,
                        state,
                        error,
                    },
                    None => Failure::Page(StatusCode::BAD_REQUEST, error),
                },
            );
        }
    };
    let client = match params.get("client_id") {
        Some(id) => state.client(id).await?,
        None => None,
    };
    let req = authorize::validate(&params, client.as_deref())?;
    let client = client.ok_or_else(|| {
        Failure::Page(
            StatusCode::BAD_REQUEST,
            OAuthError::invalid_client("unknown client"),
        )
    })?;
    Ok((req, client))
}

async fn authorize_request(state: &AppState, jar: CookieJar, raw: String) -> Response {
    match authorize_flow(state, jar, raw).await {
        Ok(r) => r,
        Err(f) => f.into_response(state),
    }
}

async fn authorize_flow(
    state: &AppState,
    jar: CookieJar,
    raw: String,
) -> Result<Response, Failure> {
    let (query, mark) = match raw.rfind(LOGIN_MARK) {
        Some(i) => (&raw[..i], Some(&raw[i + LOGIN_MARK.len()..])),
        None => (raw.as_str(), None),
    };
    let (req, client) = validated(state, query).await?;
    let now = state.now();
    let session = current_session(state, &jar).await?;
    let just_signed_in = match (&session, mark) {
        (Some((s, _)), Some(m)) => ct_eq(
            m.as_bytes(),
            login_mark(state, &s.session_hash, query).as_bytes(),
        ),
        _ => false,
    };
    let remembered = match &session {
        Some((_, user)) => consent_remembered(state, &client, user, &req, now).await?,
        None => false,
    };
    let redirect_err = |error| Failure::Redirect {
        redirect_uri: req.redirect_uri.clone(),
        state: req.state.clone(),
        error,
    };
    // OIDC Core §3.1.2.1: `id_token_hint` must be an ID token we issued (its expiry does
    // not matter); if it names someone else than the signed-in user, sign in again.
    let hinted_sub = match &req.id_token_hint {
        Some(hint) => Some(id_token_hint(state, hint).map_err(redirect_err)?.sub),
        None => None,
    };
    let facts = session.as_ref().map(|(s, user)| SessionFacts {
        auth_time: s.auth_time,
        just_signed_in,
        hint_mismatch: hinted_sub.as_ref().is_some_and(|sub| *sub != user.user_id),
    });
    let step =
        authorize::next_step(&req, facts, state.clock.now(), remembered).map_err(redirect_err)?;
    Ok(match (step, session) {
        (NextStep::IssueCode, Some((s, user))) => issue_code(state, &req, &s, &user).await?,
        (NextStep::Consent, Some((_, user))) => {
            consent_page(state, jar, &client, &req, &user, query)
        }
        _ => login_page(state, jar, Some(&client.name), None, "", query),
    })
}

/// A validated `id_token_hint` (OIDC Core §3.1.2.1): an ID token signed by one of our
/// keys for this issuer, whatever its expiry. Typed `JWT`, so an access token
/// (`at+jwt`) is refused (JWT-12). Used by `/authorize` and `/logout`.
pub(super) struct IdTokenHint {
    pub sub: String,
    pub aud: Option<String>,
}

pub(super) fn id_token_hint(state: &AppState, hint: &str) -> Result<IdTokenHint, OAuthError> {
    let bad =
        || OAuthError::invalid_request("id_token_hint is not an ID token issued by this server");
    let claims =
        latchkey_core::jose::verify(hint, state.keys().verifying(), "JWT").map_err(|_| bad())?;
    if claims.get("iss").and_then(|v| v.as_str()) != Some(state.issuer.as_str()) {
        return Err(bad());
    }
    let text = |k: &str| claims.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    Ok(IdTokenHint {
        sub: text("sub").ok_or_else(bad)?,
        aud: text("aud"),
    })
}

/// Consent is remembered for confidential clients that hold an active grant covering
/// the scopes; public clients are asked every time unless first-party (TM-12).
async fn consent_remembered(
    state: &AppState,
    client: &Client,
    user: &User,
    req: &AuthorizationRequest,
    now: i64,
) -> Result<bool, Failure> {
    if client.first_party {
        return Ok(true);
    }
    if client.kind == ClientKind::Public {
        return Ok(false);
    }
    Ok(state
        .store
        .remembered_consent(&user.user_id, &client.client_id, &req.scope, now)
        .await?)
}

async fn issue_code(
    state: &AppState,
    req: &AuthorizationRequest,
    session: &Session,
    user: &User,
) -> Result<Response, Failure> {
    let now = state.now();
    let record = AuthorizationCode {
        grant_id: state
            .new_grant_id()
            .map_err(|e| Failure::Page(StatusCode::INTERNAL_SERVER_ERROR, e))?,
        client_id: req.client_id.clone(),
        user_id: user.user_id.clone(),
        session_hash: Some(session.session_hash.clone()),
        redirect_uri: req.redirect_uri.clone(),
        scope: req.scope.clone(),
        nonce: req.nonce.clone(),
        code_challenge: req.code_challenge.clone(),
        auth_time: session.auth_time,
        expires_at: now + state.config.code_ttl,
        resource: req.resource.clone(),
    };
    // Nothing is stored: the code carries the request, sealed (latchkey_core::code).
    let code = state.codes.seal(&record).map_err(|e| {
        tracing::error!(error = %e, "sealing an authorization code failed");
        Failure::Page(
            StatusCode::INTERNAL_SERVER_ERROR,
            latchkey_core::OAuthError::server_error(),
        )
    })?;
    let mut params = vec![("code", code.as_str())];
    if let Some(s) = &req.state {
        params.push(("state", s));
    }
    params.push(("iss", &state.issuer));
    Ok(see_other(&with_query(&req.redirect_uri, &params)))
}

pub(super) fn login_page(
    state: &AppState,
    jar: CookieJar,
    client_name: Option<&str>,
    error: Option<&str>,
    username: &str,
    authz: &str,
) -> Response {
    let (jar, csrf_token) = csrf_token(state, jar);
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    (
        jar,
        render(
            status,
            &LoginPage {
                client_name,
                error,
                username,
                csrf_token: &csrf_token,
                authz,
            },
        ),
    )
        .into_response()
}

fn consent_page(
    state: &AppState,
    jar: CookieJar,
    client: &Client,
    req: &AuthorizationRequest,
    user: &User,
    authz: &str,
) -> Response {
    let (jar, csrf_token) = csrf_token(state, jar);
    let redirect_host = url::Url::parse(&req.redirect_uri)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            })
        })
        .unwrap_or_else(|| req.redirect_uri.clone());
    // Signing in first, then what the app may see and do.
    let mut scopes: Vec<(String, String)> = req
        .scope
        .iter()
        .map(|s| (s.to_owned(), scope::describe(s)))
        .collect();
    scopes.sort_by_key(|(s, _)| s != "openid");
    let page = ConsentPage {
        client_name: &client.name,
        username: user.name.as_deref().unwrap_or(&user.username),
        redirect_host: &redirect_host,
        scopes,
        csrf_token: &csrf_token,
        authz,
    };
    (jar, render(StatusCode::OK, &page)).into_response()
}

pub async fn login(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
    jar: CookieJar,
    Form(form): Form<LoginForm>,
) -> Response {
    // TM-06: a burst of 30 sign-ins per address, then one every 2 s.
    let ip = crate::net::client_ip(peer, &headers, &state.config.trusted_proxies);
    if let Err(retry) = state.throttle.take(
        &format!("login-ip:{}", crate::net::limit_key(ip)),
        30.0,
        0.5,
    ) {
        tracing::warn!(event = "login_rate_limited", ip = %ip, "too many sign-in attempts from one address");
        let mut resp = error_page(
            StatusCode::TOO_MANY_REQUESTS,
            &OAuthError::new(
                latchkey_core::ErrorCode::TemporarilyUnavailable,
                "too many sign-in attempts from your address; wait a moment and try again",
            ),
        );
        if let Ok(v) = axum::http::HeaderValue::from_str(&retry.as_secs().to_string()) {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, v);
        }
        return resp;
    }
    if !csrf_ok(&state, &jar, &form.csrf_token) {
        return error_page(
            StatusCode::BAD_REQUEST,
            &OAuthError::invalid_request(
                "the sign-in form expired or was not sent by this site; go back and try again",
            ),
        );
    }
    // An empty `authz` is a sign-in for the account page, not for a client.
    let client_name = if form.authz.is_empty() {
        None
    } else {
        match validated(&state, &form.authz).await {
            Ok((_, client)) => Some(client.name.clone()),
            Err(f) => return f.into_response(&state),
        }
    };
    // Failed attempts on an account slow every attempt on it down (no lockout).
    let account = format!("login:{}", normalize_username(&form.username));
    tokio::time::sleep(state.throttle.delay(&account)).await;
    let user = match check_password(&state, &form.username, &form.password).await {
        Ok(Some(user)) => {
            state.throttle.succeed(&account);
            user
        }
        Ok(None) => {
            state.throttle.fail(&account);
            tracing::info!(event = "login_failed", "sign-in failed");
            return login_page(
                &state,
                jar,
                client_name.as_deref(),
                Some("Wrong username or password."),
                &form.username,
                &form.authz,
            );
        }
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &store_failure(&e)),
    };
    // A new session id at every login (session fixation).
    let now = state.now();
    let token = match state.random_token() {
        Ok(t) => t,
        Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let session = Session {
        session_hash: digest(&token),
        user_id: user.user_id.clone(),
        auth_time: now,
        expires_at: now + state.config.session_ttl,
    };
    if let Some(old) = jar.get(SESSION_COOKIE)
        && let Err(e) = state.store.delete_session(&digest(old.value())).await
    {
        return error_page(StatusCode::SERVICE_UNAVAILABLE, &store_failure(&e));
    }
    if let Err(e) = state.store.create_session(&session).await {
        return error_page(StatusCode::SERVICE_UNAVAILABLE, &store_failure(&e));
    }
    tracing::info!(event = "login", user_id = %user.user_id, "user signed in");
    let cookie = cookie(&state, SESSION_COOKIE, token, state.config.session_ttl);
    let location = if form.authz.is_empty() {
        format!(
            "{}{}",
            state.issuer,
            latchkey_core::metadata::paths::ACCOUNT
        )
    } else {
        format!(
            "{}{}?{}{}{}",
            state.issuer,
            latchkey_core::metadata::paths::AUTHORIZE,
            form.authz,
            LOGIN_MARK,
            login_mark(&state, &session.session_hash, &form.authz)
        )
    };
    (jar.add(cookie), see_other(&location)).into_response()
}

pub async fn consent(
    State(state): State<AppState>,
    jar: CookieJar,
    Form(form): Form<ConsentForm>,
) -> Response {
    if !csrf_ok(&state, &jar, &form.csrf_token) {
        return error_page(
            StatusCode::BAD_REQUEST,
            &OAuthError::invalid_request(
                "the consent form expired or was not sent by this site; go back and try again",
            ),
        );
    }
    let result = async {
        let (req, _client) = validated(&state, &form.authz).await?;
        let Some((session, user)) = current_session(&state, &jar).await? else {
            // The session ended meanwhile: start over, which shows the login page.
            return Ok(see_other(&format!(
                "{}{}?{}",
                state.issuer,
                latchkey_core::metadata::paths::AUTHORIZE,
                form.authz
            )));
        };
        match form.decision.as_str() {
            "allow" => issue_code(&state, &req, &session, &user).await,
            "deny" => Err(Failure::Redirect {
                redirect_uri: req.redirect_uri.clone(),
                state: req.state.clone(),
                error: OAuthError::new(
                    latchkey_core::ErrorCode::AccessDenied,
                    "the user denied the request",
                ),
            }),
            _ => Err(Failure::Page(
                StatusCode::BAD_REQUEST,
                OAuthError::invalid_request("decision must be allow or deny"),
            )),
        }
    }
    .await;
    match result {
        Ok(r) => r,
        Err(f) => f.into_response(&state),
    }
}

/// The signed-in session and its user, if the cookie names a live session of an
/// enabled user.
pub async fn current_session(
    state: &AppState,
    jar: &CookieJar,
) -> Result<Option<(Session, Arc<User>)>, latchkey_store::StoreError> {
    let Some(cookie) = jar.get(SESSION_COOKIE) else {
        return Ok(None);
    };
    let Some(session) = state
        .store
        .session(&digest(cookie.value()), state.now())
        .await?
    else {
        return Ok(None);
    };
    match state.user(&session.user_id).await? {
        Some(user) if !user.disabled => Ok(Some((session, user))),
        _ => Ok(None),
    }
}

/// Verifies a password; unknown users cost the same argon2 work as known ones.
async fn check_password(
    state: &AppState,
    username: &str,
    password: &str,
) -> Result<Option<User>, latchkey_store::StoreError> {
    let user = state
        .store
        .user_by_username(&normalize_username(username))
        .await?;
    let hash = user.as_ref().map_or_else(
        || state.dummy_password_hash.clone(),
        |u| u.password_hash.clone(),
    );
    let password = password.to_owned();
    // A bounded number of argon2id runs at once; the rest wait for a permit.
    let Ok(_permit) = state.hashing.acquire().await else {
        return Ok(None);
    };
    let ok = tokio::task::spawn_blocking(move || crate::password::verify(&password, &hash))
        .await
        .unwrap_or(false);
    Ok(user.filter(|u| ok && !u.disabled))
}

fn login_mark(state: &AppState, session_hash: &str, authz: &str) -> String {
    state.mac("login", &format!("{session_hash}\0{authz}"))
}

pub fn cookie(
    state: &AppState,
    name: &'static str,
    value: String,
    max_age: i64,
) -> Cookie<'static> {
    Cookie::build((name, value))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.secure_cookies)
        .path("/")
        .max_age(cookie::time::Duration::seconds(max_age))
        .build()
}

/// The CSRF token for this browser: a MAC over a random cookie value (REL-08 compares
/// it in constant time).
pub(super) fn csrf_token(state: &AppState, jar: CookieJar) -> (CookieJar, String) {
    if let Some(c) = jar.get(CSRF_COOKIE).filter(|c| c.value().len() == 43) {
        let token = state.mac("csrf", c.value());
        return (jar, token);
    }
    let value = state.random_token().unwrap_or_default();
    let token = state.mac("csrf", &value);
    (jar.add(cookie(state, CSRF_COOKIE, value, 24 * 3600)), token)
}

pub(super) fn csrf_ok(state: &AppState, jar: &CookieJar, presented: &str) -> bool {
    jar.get(CSRF_COOKIE)
        .filter(|c| c.value().len() == 43)
        .is_some_and(|c| {
            ct_eq(
                state.mac("csrf", c.value()).as_bytes(),
                presented.as_bytes(),
            )
        })
}
