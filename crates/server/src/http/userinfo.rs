//! UserInfo (OIDC Core §5.3): GET or POST with a bearer access token (RFC 6750 §2.1,
//! or §2.2 in a POST body); never from the query string (TM-18).

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use latchkey_core::claims::AccessTokenClaims;
use latchkey_core::params::Params;
use latchkey_core::{ErrorCode, OAuthError};

use crate::state::AppState;

pub async fn userinfo_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    if q.as_deref().is_some_and(|q| q.contains("access_token=")) {
        return bearer_error(&OAuthError::invalid_request(
            "send the access token in the Authorization header, not the URL",
        ));
    }
    respond(&state, bearer_from_header(&headers)).await
}

pub async fn userinfo_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let from_header = bearer_from_header(&headers);
    let from_body = match Params::parse(&body) {
        Ok(p) => p.get("access_token").map(str::to_owned),
        Err(e) => return bearer_error(&e),
    };
    let token = match (from_header, from_body) {
        (Ok(Some(_)), Some(_)) => {
            return bearer_error(&OAuthError::invalid_request(
                "send the access token once, not in both header and body",
            ));
        }
        (Ok(Some(t)), None) | (Ok(None), Some(t)) => Ok(Some(t)),
        (other, None) => other,
        (Err(e), Some(_)) => Err(e),
    };
    respond(&state, token).await
}

async fn respond(state: &AppState, token: Result<Option<String>, OAuthError>) -> Response {
    let token = match token {
        Ok(Some(t)) => t,
        // RFC 6750 §3.1: a request without credentials gets a bare challenge.
        Ok(None) => {
            return (
                StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"latchkey\""),
                )],
            )
                .into_response();
        }
        Err(e) => return bearer_error(&e),
    };
    match claims_for(state, &token).await {
        Ok(body) => (
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            axum::Json(body),
        )
            .into_response(),
        Err(e) => bearer_error(&e),
    }
}

async fn claims_for(state: &AppState, token: &str) -> Result<serde_json::Value, OAuthError> {
    let now = state.clock.now();
    let raw = state
        .keys()
        .verify_access_token(token)
        .map_err(|e| OAuthError::invalid_token(e.to_string()))?;
    let claims = AccessTokenClaims::from_verified(raw, &state.issuer, now)
        .map_err(OAuthError::invalid_token)?;
    let grant_id = claims
        .gid
        .as_deref()
        .ok_or_else(|| OAuthError::invalid_token("the token was not issued for a user"))?;
    let grant = state
        .store
        .grant(grant_id)
        .await
        .map_err(|e| super::store_failure(&e))?;
    if !grant.is_some_and(|g| g.is_active(now) && g.user_id == claims.sub) {
        return Err(OAuthError::invalid_token(
            "the grant behind this token was revoked",
        ));
    }
    if !claims.scopes().any(|s| s == "openid") {
        return Err(OAuthError::new(
            ErrorCode::InsufficientScope,
            "the token lacks the openid scope",
        ));
    }
    let user = match state
        .user(&claims.sub)
        .await
        .map_err(|e| super::store_failure(&e))?
    {
        Some(u) if !u.disabled => u,
        _ => return Err(OAuthError::invalid_token("the user no longer exists")),
    };
    let mut out = serde_json::json!({ "sub": user.user_id });
    if claims.scopes().any(|s| s == "profile") {
        out["preferred_username"] = user.username.clone().into();
        if let Some(name) = &user.name {
            out["name"] = name.clone().into();
        }
    }
    if claims.scopes().any(|s| s == "email")
        && let Some(email) = &user.email
    {
        out["email"] = email.clone().into();
        out["email_verified"] = user.email_verified.into();
    }
    Ok(out)
}

/// RFC 6750 §2.1: `Authorization: Bearer <token>`, scheme case-insensitive.
fn bearer_from_header(headers: &HeaderMap) -> Result<Option<String>, OAuthError> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| OAuthError::invalid_request("malformed Authorization header"))?;
    match v.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(Some(token.trim().to_owned()))
        }
        _ => Err(OAuthError::invalid_request(
            "the Authorization header must use the Bearer scheme",
        )),
    }
}

/// RFC 6750 §3: the error in `WWW-Authenticate` and in a JSON body.
fn bearer_error(err: &OAuthError) -> Response {
    let status = StatusCode::from_u16(err.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let challenge = format!(
        "Bearer realm=\"latchkey\", error=\"{}\", error_description=\"{}\"",
        err.code.as_str(),
        err.description()
    );
    let value = HeaderValue::from_str(&challenge)
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"latchkey\""));
    (
        status,
        [
            (header::WWW_AUTHENTICATE, value),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        axum::Json(err.to_json()),
    )
        .into_response()
}
