//! The user's own pages: the apps they authorized (with a revoke button per app) and
//! sign-out, including OpenID Connect RP-Initiated Logout 1.0 (`end_session_endpoint`).

use std::collections::BTreeMap;

use askama::Template;
use axum::Form;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar};
use latchkey_core::OAuthError;
use latchkey_core::model::Session;
use latchkey_core::params::Params;
use latchkey_core::redirect_uri::with_query;
use latchkey_store::GrantFilter;
use serde::Deserialize;

use super::authorize::{
    SESSION_COOKIE, csrf_ok, csrf_token, current_session, id_token_hint, login_page,
};
use super::pages::{error_page, render};
use super::{see_other, store_failure};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage<'a> {
    username: &'a str,
    apps: Vec<AppRow>,
    csrf_token: &'a str,
}

struct AppRow {
    client_id: String,
    client_name: String,
    scopes: String,
    authorized: String,
    last_used: String,
    grants: usize,
}

#[derive(Template)]
#[template(path = "logout.html")]
struct LogoutPage<'a> {
    signed_out: bool,
    client_name: Option<&'a str>,
    csrf_token: &'a str,
    request: &'a str,
}

/// GET /account: the apps holding an active grant of the signed-in user.
pub async fn account(State(state): State<AppState>, jar: CookieJar) -> Response {
    let session = match current_session(&state, &jar).await {
        Ok(s) => s,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &store_failure(&e)),
    };
    let Some((_, user)) = session else {
        // An empty request: after signing in, the browser comes back here.
        return login_page(&state, jar, None, None, "", "");
    };
    let filter = GrantFilter {
        user_id: Some(user.user_id.clone()),
        active_only: true,
        ..Default::default()
    };
    let grants = match state.store.list_grants(&filter, state.now(), 500).await {
        Ok(g) => g,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &store_failure(&e)),
    };
    let mut by_client: BTreeMap<String, Vec<latchkey_core::model::Grant>> = BTreeMap::new();
    for g in grants {
        by_client.entry(g.client_id.clone()).or_default().push(g);
    }
    let mut apps = Vec::new();
    for (client_id, grants) in by_client {
        let name = match state.client(&client_id).await {
            Ok(Some(c)) => c.name.clone(),
            Ok(None) => continue,
            Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &store_failure(&e)),
        };
        let mut scopes: Vec<&str> = grants.iter().flat_map(|g| g.scope.iter()).collect();
        scopes.sort_unstable();
        scopes.dedup();
        let authorized = grants.iter().map(|g| g.created_at).min().unwrap_or(0);
        let last_used = grants.iter().map(|g| g.last_used_at).max().unwrap_or(0);
        apps.push(AppRow {
            client_id,
            client_name: name,
            scopes: scopes
                .iter()
                .map(|s| latchkey_core::scope::describe(s))
                .collect::<Vec<_>>()
                .join("; "),
            authorized: ago(state.now(), authorized),
            last_used: ago(state.now(), last_used),
            grants: grants.len(),
        });
    }
    let (jar, token) = csrf_token(&state, jar);
    let page = AccountPage {
        username: user.name.as_deref().unwrap_or(&user.username),
        apps,
        csrf_token: &token,
    };
    (jar, render(StatusCode::OK, &page)).into_response()
}

fn ago(now: i64, then: i64) -> String {
    let d = (now - then).max(0);
    match d {
        0..60 => "just now".to_owned(),
        60..3600 => format!("{} min ago", d / 60),
        3600..86400 => format!("{} h ago", d / 3600),
        _ => format!("{} days ago", d / 86400),
    }
}

#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    client_id: String,
}

/// POST /account/revoke: revoke every grant the user gave this client.
pub async fn revoke_app(
    State(state): State<AppState>,
    jar: CookieJar,
    Form(form): Form<RevokeForm>,
) -> Response {
    if !csrf_ok(&state, &jar, &form.csrf_token) {
        return error_page(
            StatusCode::BAD_REQUEST,
            &OAuthError::invalid_request(
                "the form expired or was not sent by this site; go back and try again",
            ),
        );
    }
    let user = match current_session(&state, &jar).await {
        Ok(Some((_, u))) => u,
        Ok(None) => return see_other(&format!("{}/account", state.issuer)),
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &store_failure(&e)),
    };
    let filter = GrantFilter {
        user_id: Some(user.user_id.clone()),
        client_id: Some(form.client_id.clone()),
        ..Default::default()
    };
    match state.store.revoke_grants(&filter, state.now()).await {
        Ok(n) => {
            tracing::info!(event = "grants_revoked_by_user", user_id = %user.user_id, client_id = %form.client_id, count = n, "user revoked an app");
            see_other(&format!("{}/account", state.issuer))
        }
        Err(e) => error_page(StatusCode::SERVICE_UNAVAILABLE, &store_failure(&e)),
    }
}

/// GET /logout: RP-Initiated Logout §2 request.
pub async fn logout_get(
    State(state): State<AppState>,
    jar: CookieJar,
    RawQuery(q): RawQuery,
) -> Response {
    logout(&state, jar, q.unwrap_or_default(), false).await
}

#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    request: String,
    #[serde(default)]
    confirm: String,
}

/// POST /logout: either an RP's form-encoded logout request, or the user's confirmation
/// from our own page (which carries a CSRF token).
pub async fn logout_post(
    State(state): State<AppState>,
    jar: CookieJar,
    body: axum::body::Bytes,
) -> Response {
    let Ok(form) = serde_urlencoded::from_bytes::<LogoutForm>(&body) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            &OAuthError::invalid_request("malformed form"),
        );
    };
    if !form.csrf_token.is_empty() {
        if !csrf_ok(&state, &jar, &form.csrf_token) {
            return error_page(
                StatusCode::BAD_REQUEST,
                &OAuthError::invalid_request(
                    "the form expired or was not sent by this site; go back and try again",
                ),
            );
        }
        return logout(&state, jar, form.request, form.confirm == "yes").await;
    }
    logout(
        &state,
        jar,
        String::from_utf8_lossy(&body).into_owned(),
        false,
    )
    .await
}

/// The validated parts of a logout request.
struct LogoutRequest {
    /// `sub` of a valid `id_token_hint`.
    hint_sub: Option<String>,
    client_name: Option<String>,
    /// Where to go afterwards, with `state` (only a registered URI).
    redirect: Option<String>,
}

async fn logout(state: &AppState, jar: CookieJar, raw: String, confirmed: bool) -> Response {
    let req = match parse_logout(state, &raw).await {
        Ok(r) => r,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &e),
    };
    let session = match current_session(state, &jar).await {
        Ok(s) => s,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &store_failure(&e)),
    };
    // §2: without a hint naming the signed-in user, ask the user first, so a third party
    // cannot sign them out with a bare link.
    let hint_matches =
        matches!((&req.hint_sub, &session), (Some(sub), Some((_, u))) if *sub == u.user_id);
    if session.is_some() && !hint_matches && !confirmed {
        let (jar, token) = csrf_token(state, jar);
        let page = LogoutPage {
            signed_out: false,
            client_name: req.client_name.as_deref(),
            csrf_token: &token,
            request: &raw,
        };
        return (jar, render(StatusCode::OK, &page)).into_response();
    }
    let mut jar = jar;
    if let Some((s, user)) = session {
        if let Err(e) = end_session(state, &s).await {
            return error_page(StatusCode::SERVICE_UNAVAILABLE, &store_failure(&e));
        }
        tracing::info!(event = "logout", user_id = %user.user_id, "user signed out");
        jar = jar.remove(Cookie::build(SESSION_COOKIE).path("/"));
    }
    match req.redirect {
        Some(location) => (jar, see_other(&location)).into_response(),
        None => {
            let page = LogoutPage {
                signed_out: true,
                client_name: None,
                csrf_token: "",
                request: "",
            };
            (jar, render(StatusCode::OK, &page)).into_response()
        }
    }
}

/// Ends a session; with `logout_revokes_grants`, the grants made in it too, and its
/// codes not yet redeemed: a redemption then requires the code's session to exist
/// (`Store::redeem_code`). The session goes first, so that a redemption racing the
/// logout either finds it gone or made its grant before the revocation below.
async fn end_session(
    state: &AppState,
    session: &Session,
) -> Result<(), latchkey_store::StoreError> {
    state.store.delete_session(&session.session_hash).await?;
    if state.config.logout_revokes_grants {
        let filter = GrantFilter {
            user_id: Some(session.user_id.clone()),
            session_hash: Some(session.session_hash.clone()),
            ..Default::default()
        };
        state.store.revoke_grants(&filter, state.now()).await?;
    }
    Ok(())
}

async fn parse_logout(state: &AppState, raw: &str) -> Result<LogoutRequest, OAuthError> {
    let params = Params::parse(raw.as_bytes())?;
    let mut client_id = params.get("client_id").map(str::to_owned);
    let mut hint_sub = None;
    if let Some(hint) = params.get("id_token_hint") {
        let hint = id_token_hint(state, hint)?;
        if let (Some(a), Some(c)) = (&hint.aud, &client_id)
            && a != c
        {
            return Err(OAuthError::invalid_request(
                "client_id does not match the id_token_hint audience",
            ));
        }
        client_id = client_id.or(hint.aud);
        hint_sub = Some(hint.sub);
    }
    let client = match &client_id {
        Some(id) => state.client(id).await.map_err(|e| store_failure(&e))?,
        None => None,
    };
    let redirect = match params.get("post_logout_redirect_uri") {
        None => None,
        Some(uri) => {
            let client = client.as_ref().ok_or_else(|| {
                OAuthError::invalid_request(
                    "post_logout_redirect_uri needs id_token_hint or client_id",
                )
            })?;
            // Exact string comparison, as for redirect_uri (BCP-01).
            if !client
                .post_logout_redirect_uris
                .iter()
                .any(|r| r.as_str() == uri)
            {
                return Err(OAuthError::invalid_request(
                    "post_logout_redirect_uri is not registered for this client",
                ));
            }
            let mut q = Vec::new();
            if let Some(s) = params.get("state") {
                q.push(("state", s));
            }
            Some(with_query(uri, &q))
        }
    };
    Ok(LogoutRequest {
        hint_sub,
        client_name: client.map(|c| c.name.clone()),
        redirect,
    })
}
