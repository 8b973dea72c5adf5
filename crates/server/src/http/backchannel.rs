//! Back-channel endpoints for clients and APIs: token revocation (RFC 7009),
//! introspection (RFC 7662) and the revocation feed (DESIGN §4).
//!
//! Every answer comes from a signature check plus the grant's row: no per-token state.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use latchkey_core::claims::AccessTokenClaims;
use latchkey_core::client::{Client, ClientKind, PresentedCredentials};
use latchkey_core::model::Grant;
use latchkey_core::token::RefreshToken;
use latchkey_core::{OAuthError, UnixTime};
use serde::Deserialize;

use super::token::{RefreshStanding, refresh_standing};
use super::{authenticate_client, json_error, store_failure};
use crate::state::AppState;

/// What a presented token turned out to be.
enum Presented {
    Refresh(Grant, RefreshStanding),
    Access(AccessTokenClaims),
    Unknown,
}

/// Identifies a token of ours. Access tokens must carry a valid signature; `allow_expired`
/// lets revocation act on an expired one.
/// A refresh token is only examined for its own client: walking its chain costs up to
/// `MAX_CHAIN_WALK` MACs, which another caller must not be able to spend.
async fn identify(
    state: &AppState,
    caller: &Client,
    token: &str,
    allow_expired: bool,
) -> Result<Presented, OAuthError> {
    if let Some(rt) = RefreshToken::parse(token) {
        let grant = state
            .store
            .grant(&rt.grant_id)
            .await
            .map_err(|e| store_failure(&e))?;
        return Ok(match grant {
            Some(g) if g.client_id == caller.client_id => {
                let standing = refresh_standing(state, &rt, &g);
                Presented::Refresh(g, standing)
            }
            _ => Presented::Unknown,
        });
    }
    let Ok(raw) = state.keys().verify_access_token(token) else {
        return Ok(Presented::Unknown);
    };
    let claims = if allow_expired {
        AccessTokenClaims::from_verified_any_time(raw, &state.issuer)
    } else {
        AccessTokenClaims::from_verified(raw, &state.issuer, state.clock.now())
    };
    Ok(claims.map_or(Presented::Unknown, Presented::Access))
}

/// RFC 7009 §2: revoke the grant behind a refresh or access token of the calling client.
/// Unknown tokens, and tokens of other clients, still get 200 (§2.2); a storage failure
/// never does (REL-06).
pub async fn revoke(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let result = async {
        let (params, client, _auth) = authenticate_client(&state, peer, &headers, &body).await?;
        let token = params.required("token")?;
        let now = state.now();
        let grant_id = match identify(&state, &client, token, true).await? {
            Presented::Refresh(g, standing) if standing != RefreshStanding::Unknown && g.client_id == client.client_id => Some(g.grant_id),
            Presented::Access(c) if c.client_id == client.client_id => c.gid,
            _ => None,
        };
        if let Some(g) = grant_id
            && state.store.revoke_grant(&g, now).await.map_err(|e| store_failure(&e))?
        {
            tracing::info!(event = "grant_revoked", grant_id = %g, client_id = %client.client_id, "grant revoked by its client");
        }
        Ok::<(), OAuthError>(())
    }
    .await;
    match result {
        Ok(()) => (
            StatusCode::OK,
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        )
            .into_response(),
        Err(e) => json_error(&e),
    }
}

/// RFC 7662: is this token active, and what does it say? A caller sees a token active
/// only if the token was issued to it or is meant for an audience it serves; everything
/// else is `{"active": false}` and nothing more (§2.2).
pub async fn introspect(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let result = async {
        let (params, client, _auth) = authenticate_client(&state, peer, &headers, &body).await?;
        // §2.1: the caller must be authenticated; a public client has no credentials.
        if client.kind == ClientKind::Public {
            return Err(OAuthError::invalid_client(
                "public clients may not introspect tokens",
            ));
        }
        let token = params.required("token")?;
        introspection(&state, &client, token).await
    }
    .await;
    match result {
        Ok(body) => (
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            axum::Json(body),
        )
            .into_response(),
        Err(e) => json_error(&e),
    }
}

async fn introspection(
    state: &AppState,
    caller: &Client,
    token: &str,
) -> Result<serde_json::Value, OAuthError> {
    let inactive = serde_json::json!({ "active": false });
    let now = state.clock.now();
    match identify(state, caller, token, false).await? {
        Presented::Refresh(grant, RefreshStanding::Current)
            if grant.client_id == caller.client_id && grant.is_active(now) =>
        {
            Ok(serde_json::json!({
                "active": true,
                "token_type": "refresh_token",
                "scope": grant.scope.to_string(),
                "client_id": grant.client_id,
                "sub": grant.user_id,
                "iss": state.issuer,
                "iat": grant.last_used_at,
                "exp": grant.expires_at,
                "grant_id": grant.grant_id,
            }))
        }
        Presented::Access(c) => {
            let visible = c.client_id == caller.client_id || caller.audiences.contains(&c.aud);
            if !visible || !access_token_live(state, &c, now).await? {
                return Ok(inactive);
            }
            let mut out = serde_json::json!({
                "active": true,
                "token_type": "Bearer",
                "scope": c.scope,
                "client_id": c.client_id,
                "sub": c.sub,
                "aud": c.aud,
                "iss": c.iss,
                "iat": c.iat,
                "exp": c.exp,
                "jti": c.jti,
            });
            if let Some(g) = &c.gid {
                out["grant_id"] = g.clone().into();
            }
            Ok(out)
        }
        _ => Ok(inactive),
    }
}

/// An access token is live while its grant is (user tokens) or its client still exists
/// (client-credentials tokens, whose grant is the client itself).
async fn access_token_live(
    state: &AppState,
    c: &AccessTokenClaims,
    now: UnixTime,
) -> Result<bool, OAuthError> {
    match &c.gid {
        Some(gid) => {
            let grant = state
                .store
                .grant(gid)
                .await
                .map_err(|e| store_failure(&e))?;
            Ok(grant.is_some_and(|g| g.is_active(now) && g.client_id == c.client_id))
        }
        None => Ok(state
            .client(&c.client_id)
            .await
            .map_err(|e| store_failure(&e))?
            .is_some()),
    }
}

#[derive(Deserialize)]
pub struct FeedQuery {
    since: Option<i64>,
}

/// Feed entries returned per page.
const FEED_PAGE: i64 = 1000;
/// How far back a cursor is moved to cover revocations committed late by another node.
const FEED_OVERLAP: i64 = 10;

/// The revocation feed: what was revoked since a cursor, bounded to the longest
/// access-token lifetime (older revocations concern only expired tokens). APIs poll it
/// with HTTP Basic client credentials and reject tokens whose `gid`, `sub` or
/// `client_id` it lists. See docs/state-and-revocation.md.
pub async fn revocation_feed(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<FeedQuery>,
) -> Response {
    let result = async {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().map_err(|_| OAuthError::invalid_client("malformed Authorization header")))
            .transpose()?
            .ok_or_else(|| OAuthError::invalid_client("client authentication is required (HTTP Basic)"))?;
        let presented = PresentedCredentials::from_request(Some(authorization), None, None)?;
        let client = state.client(&presented.client_id)
            .await
            .map_err(|e| store_failure(&e))?
            .ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
        client.authenticate(&presented)?;
        // The feed names users and clients: it is for the APIs, not for every app.
        if client.audiences.is_empty() {
            return Err(OAuthError::unauthorized_client(
                "only clients registered as an API (--serves-audience) may read the revocation feed",
            ));
        }
        let now = state.now();
        let window = feed_window(&state);
        let since = q.since.unwrap_or(0).max(now - window);
        let entries = state.store.revocations_since(since, FEED_PAGE).await.map_err(|e| store_failure(&e))?;
        let full = i64::try_from(entries.len()).unwrap_or(i64::MAX) >= FEED_PAGE;
        let next_since = match (full, entries.last()) {
            (true, Some(last)) => last.revoked_at,
            _ => (now - FEED_OVERLAP).max(since),
        };
        let revoked: Vec<serde_json::Value> = entries
            .iter()
            .map(|r| serde_json::json!({ "kind": r.kind, "id": r.subject, "revoked_at": r.revoked_at }))
            .collect();
        Ok::<_, OAuthError>(serde_json::json!({
            "revoked": revoked,
            "next_since": next_since,
            "more": full,
            "window": window,
            "server_time": now,
        }))
    }
    .await;
    match result {
        Ok(body) => (
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            axum::Json(body),
        )
            .into_response(),
        Err(e) => json_error(&e),
    }
}

/// How long a revocation matters to an API: the longest access-token lifetime plus
/// clock leeway.
pub fn feed_window(state: &AppState) -> i64 {
    state.config.access_token_ttl + 60
}
