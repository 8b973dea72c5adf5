//! The token endpoint (RFC 6749 §3.2): authorization_code, refresh_token and
//! client_credentials, with client authentication first.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use latchkey_core::claims::{ACCESS_TOKEN_TYP, AccessTokenClaims, IdTokenClaims};
use latchkey_core::client::{Client, ClientAuthenticated, GrantType};
use latchkey_core::code::{Unredeemable, check_times};
use latchkey_core::jose::{Alg, at_hash};
use latchkey_core::model::{Grant, User};
use latchkey_core::pkce::PkceVerified;
use latchkey_core::scope::Scope;
use latchkey_core::secret::{digest, digest_matches};
use latchkey_core::token::{RefreshToken, TokenRequest, check_code_redemption};
use latchkey_core::{OAuthError, UnixTime};
use latchkey_store::{CurrentRefresh, NewGrant, Redemption};
use serde::Serialize;

use super::{json_error, store_failure};
use crate::state::AppState;

/// How many generations back a presented refresh token is followed along the chain to
/// prove it is a genuine, superseded token of this grant.
const MAX_CHAIN_WALK: i64 = 10_000;

/// RFC 6749 §5.1.
#[derive(Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

pub async fn token(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    match exchange(&state, peer, &headers, &body).await {
        Ok(resp) => (
            [
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                (header::PRAGMA, HeaderValue::from_static("no-cache")),
            ],
            axum::Json(resp),
        )
            .into_response(),
        Err(e) => {
            tracing::info!(
                event = "token_error",
                error = e.code.as_str(),
                "token request refused"
            );
            json_error(&e)
        }
    }
}

async fn exchange(
    state: &AppState,
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<TokenResponse, OAuthError> {
    let (params, client, authenticated) =
        super::authenticate_client(state, peer, headers, body).await?;
    let request = TokenRequest::parse(&params)?;
    if !client.allows_grant(request.grant_type()) {
        return Err(OAuthError::unauthorized_client(format!(
            "this client may not use the {} grant",
            request.grant_type().as_str()
        )));
    }
    match request {
        TokenRequest::AuthorizationCode {
            code,
            redirect_uri,
            code_verifier,
            resource,
        } => {
            redeem_code(
                state,
                &client,
                &authenticated,
                &code,
                redirect_uri.as_deref(),
                code_verifier.as_deref(),
                resource.as_deref(),
            )
            .await
        }
        TokenRequest::RefreshToken {
            refresh_token,
            scope,
            resource,
        } => {
            refresh(
                state,
                &client,
                &authenticated,
                &refresh_token,
                scope.as_deref(),
                resource.as_deref(),
            )
            .await
        }
        TokenRequest::ClientCredentials { scope, resource } => client_credentials(
            state,
            &client,
            &authenticated,
            scope.as_deref(),
            resource.as_deref(),
        ),
    }
}

async fn redeem_code(
    state: &AppState,
    client: &Client,
    authenticated: &ClientAuthenticated,
    code: &str,
    redirect_uri: Option<&str>,
    verifier: Option<&str>,
    resource: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    let now = state.now();
    let invalid = || OAuthError::invalid_grant("the code is not valid");
    let stored = state.codes.open(code).ok_or_else(invalid)?;
    match check_times(&stored, now) {
        Ok(()) => {}
        Err(Unredeemable::FromTheFuture) => {
            tracing::warn!(
                "an authorization code was issued in the future by this node's clock: the servers' clocks disagree"
            );
            return Err(OAuthError::invalid_grant(
                "the code was issued in the future; the servers' clocks disagree",
            ));
        }
        Err(Unredeemable::Expired) => {
            // Never redeemed past its life; if it was redeemed while it lived, this is
            // a reuse all the same, and revokes what it made.
            let made = state
                .store
                .grant(&stored.grant_id)
                .await
                .map_err(|e| store_failure(&e))?;
            if made.is_some_and(|g| g.revoked_at.is_none()) {
                revoke_reused(state, &stored.grant_id, now).await?;
            }
            return Err(OAuthError::invalid_grant("the code has expired"));
        }
    }
    let refresh_token = if client.allows_grant(GrantType::RefreshToken) {
        Some(RefreshToken {
            grant_id: stored.grant_id.clone(),
            generation: 1,
            secret: state.random_token()?,
        })
    } else {
        None
    };
    let new_grant = NewGrant {
        refresh_generation: if refresh_token.is_some() { 1 } else { 0 },
        refresh_hash: refresh_token.as_ref().map(|t| digest(&t.secret)),
        expires_at: now + state.config.refresh_ttl.min(state.config.refresh_idle_ttl),
    };
    match state
        .store
        .redeem_code(&stored, &new_grant, now, state.config.logout_revokes_grants)
        .await
        .map_err(|e| store_failure(&e))?
    {
        Redemption::Redeemed => {}
        Redemption::AlreadyRedeemed => {
            // RFC 9700 §4.2.4 / BCP-22: a code used twice revokes what the first use made.
            revoke_reused(state, &stored.grant_id, now).await?;
            return Err(OAuthError::invalid_grant("the code was already used"));
        }
        Redemption::Orphaned => return Err(invalid()),
    }
    // From here on a failed check must also kill the grant the redemption made: no
    // token was issued from it, and none ever will be.
    let checked = check_redemption(
        state,
        &stored,
        authenticated,
        redirect_uri,
        verifier,
        resource,
    )
    .await;
    let (pkce, user) = match checked {
        Ok(v) => v,
        Err(e) => {
            state
                .store
                .revoke_grant(&stored.grant_id, now)
                .await
                .map_err(|e| store_failure(&e))?;
            return Err(e);
        }
    };
    // Exactly what the redemption inserted; no need to read it back.
    let grant = new_grant.grant_from(&stored, now);
    mint(
        state,
        client,
        &grant,
        &user,
        refresh_token.map(|t| t.encode()),
        Some(&pkce),
        true,
    )
}

/// Revokes the grant a reused code made (RFC 9700 §4.2.4, BCP-22, TM-10).
async fn revoke_reused(state: &AppState, grant_id: &str, now: i64) -> Result<(), OAuthError> {
    state
        .store
        .revoke_grant(grant_id, now)
        .await
        .map_err(|e| store_failure(&e))?;
    tracing::warn!(event = "code_reuse", grant_id = %grant_id, "authorization code reused; grant revoked");
    Ok(())
}

/// RFC 6749 §4.1.3, RFC 7636 §4.6, RFC 8707 §2.2: the checks on a consumed code.
async fn check_redemption(
    state: &AppState,
    stored: &latchkey_core::model::AuthorizationCode,
    authenticated: &ClientAuthenticated,
    redirect_uri: Option<&str>,
    verifier: Option<&str>,
    resource: Option<&str>,
) -> Result<(PkceVerified, Arc<User>), OAuthError> {
    if resource.is_some() && resource != stored.resource.as_deref() {
        return Err(OAuthError::new(
            latchkey_core::ErrorCode::InvalidTarget,
            "resource differs from the one in the authorization request",
        ));
    }
    let pkce = check_code_redemption(stored, authenticated, redirect_uri, verifier)?;
    let user = active_user(state, &stored.user_id).await?;
    Ok((pkce, user))
}

async fn refresh(
    state: &AppState,
    client: &Client,
    authenticated: &ClientAuthenticated,
    presented: &str,
    scope: Option<&str>,
    resource: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    let now = state.now();
    let invalid = || OAuthError::invalid_grant("the refresh token is not valid");
    let token = RefreshToken::parse(presented).ok_or_else(invalid)?;
    let next = successor(state, &token);
    // The common case, the current token without a narrower scope, in one statement
    // whose conditions are the checks below; anything else takes the long way.
    if scope.is_none() {
        let rotated = state
            .store
            .rotate_current_refresh(&CurrentRefresh {
                grant_id: &token.grant_id,
                client_id: authenticated.client_id(),
                generation: token.generation,
                current_hash: &digest(&token.secret),
                new_hash: &digest(&next.secret),
                audience: resource,
                now,
                absolute_ttl: state.config.refresh_ttl,
                idle_ttl: state.config.refresh_idle_ttl,
            })
            .await
            .map_err(|e| store_failure(&e))?;
        if let Some(grant) = rotated {
            let scope = grant.scope.clone();
            return mint_refreshed(state, client, grant, scope, &next).await;
        }
    }
    let grant = state
        .store
        .grant(&token.grant_id)
        .await
        .map_err(|e| store_failure(&e))?
        .ok_or_else(invalid)?;
    // RFC 6749 §6: a refresh token is bound to the client it was issued to.
    if grant.client_id != authenticated.client_id() {
        return Err(invalid());
    }
    if !grant.is_active(UnixTime(now)) {
        return Err(OAuthError::invalid_grant(
            "the grant was revoked or has expired",
        ));
    }
    let current_hash = grant.refresh_hash.as_deref().ok_or_else(invalid)?;
    if resource.is_some() && resource != grant.audience.as_deref() {
        return Err(OAuthError::new(
            latchkey_core::ErrorCode::InvalidTarget,
            "resource differs from the one the grant was made for",
        ));
    }
    // RFC 6749 §6: the requested scope must not exceed the grant.
    let scope = match scope {
        None => grant.scope.clone(),
        Some(s) => {
            let wanted = Scope::parse(s)?;
            if !wanted.is_subset(&grant.scope) {
                return Err(OAuthError::invalid_scope(
                    "the requested scope exceeds the grant",
                ));
            }
            wanted
        }
    };
    let is_current =
        token.generation == grant.refresh_generation && digest_matches(&token.secret, current_hash);
    if is_current {
        let expires_at =
            (grant.created_at + state.config.refresh_ttl).min(now + state.config.refresh_idle_ttl);
        let rotated = state
            .store
            .rotate_refresh(
                &grant.grant_id,
                token.generation,
                &digest(&next.secret),
                now,
                expires_at,
            )
            .await
            .map_err(|e| store_failure(&e))?;
        if !rotated {
            // Another request rotated (or revoked) the grant between our read and our
            // write: from here on this token is the previous generation.
            let fresh = state
                .store
                .grant(&grant.grant_id)
                .await
                .map_err(|e| store_failure(&e))?
                .ok_or_else(invalid)?;
            return previous_generation(state, client, fresh, &token, next, scope).await;
        }
        return mint_refreshed(state, client, grant, scope, &next).await;
    }
    previous_generation(state, client, grant, &token, next, scope).await
}

/// A refresh token that is not the current one. If it is the generation just before
/// the current one, within the grace window, and the grace retry is unspent, the client
/// lost the answer to its refresh and retries: it gets the same successor again
/// (REL-02). A genuine older token is reuse and revokes the grant (RFC 9700 §4.14.2).
/// Anything else is merely invalid.
async fn previous_generation(
    state: &AppState,
    client: &Client,
    grant: Grant,
    token: &RefreshToken,
    next: RefreshToken,
    scope: Scope,
) -> Result<TokenResponse, OAuthError> {
    let now = state.now();
    let invalid = || OAuthError::invalid_grant("the refresh token is not valid");
    if !grant.is_active(UnixTime(now)) {
        return Err(OAuthError::invalid_grant(
            "the grant was revoked or has expired",
        ));
    }
    let current_hash = grant.refresh_hash.as_deref().ok_or_else(invalid)?;
    let is_previous = token.generation + 1 == grant.refresh_generation
        && digest_matches(&next.secret, current_hash);
    if is_previous
        && state.config.refresh_grace_seconds > 0
        && now - grant.last_used_at <= state.config.refresh_grace_seconds
        && state
            .store
            .use_refresh_grace(&grant.grant_id, grant.refresh_generation)
            .await
            .map_err(|e| store_failure(&e))?
    {
        tracing::info!(event = "refresh_grace_retry", grant_id = %grant.grant_id, "refresh retried within the grace window");
        return mint_refreshed(state, client, grant, scope, &next).await;
    }
    if is_previous || is_superseded(state, token, &grant, current_hash) {
        state
            .store
            .revoke_grant(&grant.grant_id, now)
            .await
            .map_err(|e| store_failure(&e))?;
        tracing::warn!(event = "refresh_reuse", grant_id = %grant.grant_id, "superseded refresh token presented; grant revoked");
    }
    Err(invalid())
}

/// The answer to a refresh: tokens for `scope` (at most the grant's), with `next` as
/// the new refresh token.
async fn mint_refreshed(
    state: &AppState,
    client: &Client,
    grant: Grant,
    scope: Scope,
    next: &RefreshToken,
) -> Result<TokenResponse, OAuthError> {
    let user = active_user(state, &grant.user_id).await?;
    let narrowed = Grant { scope, ..grant };
    mint(
        state,
        client,
        &narrowed,
        &user,
        Some(next.encode()),
        None,
        false,
    )
}

/// The refresh secret chain: each generation's secret is a MAC of the previous token,
/// so an old token can be recognised, and its successor recomputed, without storing
/// either. A database dump holds only the digest of the current secret.
fn successor(state: &AppState, token: &RefreshToken) -> RefreshToken {
    RefreshToken {
        grant_id: token.grant_id.clone(),
        generation: token.generation + 1,
        secret: state.mac("refresh", &token.encode()),
    }
}

fn is_superseded(
    state: &AppState,
    token: &RefreshToken,
    grant: &Grant,
    current_hash: &str,
) -> bool {
    let distance = grant.refresh_generation - token.generation;
    if !(1..=MAX_CHAIN_WALK).contains(&distance) {
        return false;
    }
    let mut t = token.clone();
    for _ in 0..distance {
        t = successor(state, &t);
    }
    digest_matches(&t.secret, current_hash)
}

fn client_credentials(
    state: &AppState,
    client: &Client,
    _auth: &ClientAuthenticated,
    scope: Option<&str>,
    resource: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    let scope = client.permitted_scope(scope)?;
    let audience = client.permitted_resource(resource)?;
    // The user-facing scopes mean nothing without a user.
    let scope = Scope::from_tokens(
        scope
            .iter()
            .filter(|s| !matches!(*s, "openid" | "profile" | "email" | "offline_access")),
    );
    let now = state.now();
    let claims = AccessTokenClaims {
        iss: state.issuer.clone(),
        // BCP-17: client subjects live in their own namespace.
        sub: format!("client:{}", client.client_id),
        aud: audience.unwrap_or_else(|| state.audience().to_owned()),
        client_id: client.client_id.clone(),
        scope: scope.to_string(),
        iat: now,
        exp: now + access_ttl(state, client),
        jti: state.random_token()?,
        gid: None,
        auth_time: None,
    };
    let access_token = sign(
        state,
        state.config.access_token_alg(),
        ACCESS_TOKEN_TYP,
        &claims,
    )?;
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: access_ttl(state, client),
        scope: claims.scope,
        refresh_token: None,
        id_token: None,
    })
}

/// Issues the access token (and the ID token for OpenID requests) for a grant.
fn mint(
    state: &AppState,
    client: &Client,
    grant: &Grant,
    user: &User,
    refresh_token: Option<String>,
    _pkce: Option<&PkceVerified>,
    with_nonce: bool,
) -> Result<TokenResponse, OAuthError> {
    let now = state.now();
    let scope = grant.scope.to_string();
    let claims = AccessTokenClaims {
        iss: state.issuer.clone(),
        sub: user.user_id.clone(),
        aud: grant
            .audience
            .clone()
            .unwrap_or_else(|| state.audience().to_owned()),
        client_id: client.client_id.clone(),
        scope: scope.clone(),
        iat: now,
        exp: now + access_ttl(state, client),
        jti: state.random_token()?,
        gid: Some(grant.grant_id.clone()),
        auth_time: Some(grant.auth_time),
    };
    let access_token = sign(
        state,
        state.config.access_token_alg(),
        ACCESS_TOKEN_TYP,
        &claims,
    )?;
    let id_token = if grant.scope.contains("openid") {
        let id = IdTokenClaims {
            iss: state.issuer.clone(),
            sub: user.user_id.clone(),
            aud: client.client_id.clone(),
            exp: now + state.config.id_token_ttl,
            iat: now,
            auth_time: grant.auth_time,
            // OIDC Core §12.2: a refreshed ID token carries no nonce.
            nonce: if with_nonce {
                grant.nonce.clone()
            } else {
                None
            },
            at_hash: Some(at_hash(client.id_token_alg, &access_token)),
            azp: client.client_id.clone(),
            sid: None,
        };
        Some(sign(state, client.id_token_alg, "JWT", &id)?)
    } else {
        None
    };
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: access_ttl(state, client),
        scope,
        refresh_token,
        id_token,
    })
}

fn sign<C: Serialize>(
    state: &AppState,
    alg: Alg,
    typ: &str,
    claims: &C,
) -> Result<String, OAuthError> {
    let ring = state.keys();
    let key = ring.signer(alg).ok_or_else(|| {
        tracing::error!(alg = alg.as_str(), "no active signing key");
        OAuthError::server_error()
    })?;
    key.sign(typ, claims)
        .map_err(|_| OAuthError::server_error())
}

async fn active_user(state: &AppState, user_id: &str) -> Result<Arc<User>, OAuthError> {
    match state.user(user_id).await.map_err(|e| store_failure(&e))? {
        Some(u) if !u.disabled => Ok(u),
        _ => Err(OAuthError::invalid_grant(
            "the user no longer exists or is disabled",
        )),
    }
}

/// Where a presented refresh token stands in its grant's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RefreshStanding {
    Current,
    Superseded,
    Unknown,
}

pub(super) fn refresh_standing(
    state: &AppState,
    token: &RefreshToken,
    grant: &Grant,
) -> RefreshStanding {
    let Some(current_hash) = grant.refresh_hash.as_deref() else {
        return RefreshStanding::Unknown;
    };
    if token.generation == grant.refresh_generation && digest_matches(&token.secret, current_hash) {
        RefreshStanding::Current
    } else if is_superseded(state, token, grant, current_hash) {
        RefreshStanding::Superseded
    } else {
        RefreshStanding::Unknown
    }
}

/// A client's access-token lifetime, never above the server's, which bounds the
/// revocation feed window.
fn access_ttl(state: &AppState, client: &Client) -> i64 {
    client.access_token_ttl.min(state.config.access_token_ttl)
}
