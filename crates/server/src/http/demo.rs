//! The demo relying party that `latchkey demo` mounts beside the server: a real OAuth
//! client that sends the browser through /authorize, redeems the code at /token over
//! HTTP, calls /userinfo, and shows what it received.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_core::OAuthError;
use latchkey_core::redirect_uri::with_query;
use latchkey_core::secret::ct_eq;
use serde::Deserialize;

use super::authorize::cookie;
use super::pages::{DemoPage, error_page, message_page, render};
use super::see_other;
use crate::state::AppState;

const DEMO_COOKIE: &str = "lk_demo";

#[derive(Clone)]
pub struct DemoClient {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
}

pub async fn start(State(state): State<AppState>, jar: CookieJar) -> Response {
    let Some(demo) = &state.demo else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (Ok(st), Ok(nonce), Ok(verifier)) = (
        state.random_token(),
        state.random_token(),
        state.random_token(),
    ) else {
        return error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            &OAuthError::server_error(),
        );
    };
    let challenge = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ));
    let location = with_query(
        &format!("{}/authorize", state.issuer),
        &[
            ("response_type", "code"),
            ("client_id", &demo.client_id),
            ("redirect_uri", &demo.redirect_uri),
            ("scope", "openid profile email"),
            ("state", &st),
            ("nonce", &nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    );
    let jar = jar.add(cookie(
        &state,
        DEMO_COOKIE,
        format!("{st}.{nonce}.{verifier}"),
        600,
    ));
    (jar, see_other(&location)).into_response()
}

#[derive(Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    iss: Option<String>,
}

pub async fn callback(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(cb): Query<Callback>,
) -> Response {
    // RFC 6749 §4.1.2.1: the user said no; that is an answer, not a fault.
    if cb.error.as_deref() == Some("access_denied") {
        return message_page(
            StatusCode::OK,
            "You denied the demo app",
            "The authorization server sent the demo app back with error=access_denied, so it received no tokens.",
            Some(("/demo", "Try again")),
        );
    }
    match run_callback(&state, &jar, cb).await {
        Ok(page) => render(StatusCode::OK, &page),
        Err(msg) => error_page(StatusCode::BAD_REQUEST, &OAuthError::invalid_request(msg)),
    }
}

async fn run_callback(state: &AppState, jar: &CookieJar, cb: Callback) -> Result<DemoPage, String> {
    let demo = state.demo.as_ref().ok_or("demo is not enabled")?;
    if let Some(e) = cb.error {
        return Err(format!(
            "the authorization server answered {e}: {}",
            cb.error_description.unwrap_or_default()
        ));
    }
    // RFC 9207: check the response comes from the issuer we asked.
    if cb.iss.as_deref() != Some(state.issuer.as_str()) {
        return Err("the iss parameter does not name this issuer".into());
    }
    let cookie = jar
        .get(DEMO_COOKIE)
        .ok_or("the demo cookie is missing; start again at /demo")?;
    let mut parts = cookie.value().splitn(3, '.');
    let (Some(expected_state), Some(nonce), Some(verifier)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err("the demo cookie is malformed; start again at /demo".into());
    };
    if !ct_eq(
        cb.state.unwrap_or_default().as_bytes(),
        expected_state.as_bytes(),
    ) {
        return Err("state does not match (possible CSRF); start again at /demo".into());
    }
    let code = cb.code.ok_or("no code in the callback")?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let response: serde_json::Value = http
        .post(format!("{}/token", state.issuer))
        .basic_auth(&demo.client_id, Some(&demo.client_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &demo.redirect_uri),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .map_err(|e| format!("token request failed: {e}"))?
        .json()
        .await
        .map_err(|e| format!("token response is not JSON: {e}"))?;
    let access_token = response["access_token"]
        .as_str()
        .ok_or_else(|| format!("token endpoint answered {response}"))?;
    let id_token = response["id_token"]
        .as_str()
        .ok_or("no id_token in the token response")?;
    let id_claims = latchkey_core::jose::verify(id_token, state.keys().verifying(), "JWT")
        .map_err(|e| format!("ID token rejected: {e}"))?;
    if id_claims.get("nonce").and_then(|n| n.as_str()) != Some(nonce) {
        return Err("ID token nonce does not match".into());
    }
    let access_claims =
        latchkey_core::jose::verify(access_token, state.keys().verifying(), "at+jwt")
            .map_err(|e| format!("access token rejected: {e}"))?;
    let userinfo: serde_json::Value = http
        .get(format!("{}/userinfo", state.issuer))
        .bearer_auth(access_token)
        .send()
        .await
        .map_err(|e| format!("userinfo request failed: {e}"))?
        .json()
        .await
        .map_err(|e| format!("userinfo response is not JSON: {e}"))?;
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    Ok(DemoPage {
        userinfo: pretty(&userinfo),
        id_token_claims: pretty(&serde_json::Value::Object(id_claims)),
        access_token_claims: pretty(&serde_json::Value::Object(access_claims)),
        token_response: pretty(&response),
    })
}
