//! HTTP: thin handlers that extract, call one flow function and render its outcome.

pub mod account;
pub mod authorize;
pub mod backchannel;
pub mod demo;
pub mod discovery;
pub mod pages;
pub mod token;
pub mod userinfo;

use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use latchkey_core::OAuthError;
use latchkey_core::metadata::paths;
use tower_http::limit::RequestBodyLimitLayer;

use crate::state::AppState;

/// Largest request body accepted on any endpoint (REL-05).
pub const MAX_BODY: usize = 64 * 1024;

/// The whole application; `main` and the tests share it.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(discovery::metadata),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(discovery::metadata),
        )
        .route(paths::JWKS, get(discovery::jwks))
        .route(
            paths::AUTHORIZE,
            get(authorize::authorize_get).post(authorize::authorize_post),
        )
        .route("/login", post(authorize::login))
        .route("/consent", post(authorize::consent))
        .route(paths::TOKEN, post(token::token).fallback(post_only))
        .route(
            paths::USERINFO,
            get(userinfo::userinfo_get).post(userinfo::userinfo_post),
        )
        .route(paths::REVOKE, post(backchannel::revoke).fallback(post_only))
        .route(
            paths::INTROSPECT,
            post(backchannel::introspect).fallback(post_only),
        )
        .route(paths::REVOCATION_FEED, get(backchannel::revocation_feed))
        .route(
            paths::END_SESSION,
            get(account::logout_get).post(account::logout_post),
        )
        .route(paths::ACCOUNT, get(account::account))
        .route("/account/revoke", post(account::revoke_app))
        .route("/", get(pages::home))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .fallback(pages::not_found);
    if state.demo.is_some() {
        router = router
            .route("/demo", get(demo::start))
            .route("/demo/callback", get(demo::callback));
    }
    router
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(axum::middleware::from_fn(limit_headers))
        .with_state(state)
}

/// Largest total size of request headers accepted (REL-05).
pub const MAX_HEADERS: usize = 16 * 1024;
/// Longest request target (path and query) accepted.
pub const MAX_URI: usize = 16 * 1024;

/// Refuses oversized headers or URIs up front with 431 / 414, before any handler parses
/// them.
async fn limit_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > MAX_HEADERS {
        return (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request headers are larger than 16 KiB\n",
        )
            .into_response();
    }
    if req.uri().path().len() + req.uri().query().map_or(0, str::len) > MAX_URI {
        return (
            StatusCode::URI_TOO_LONG,
            "request URI is longer than 16 KiB\n",
        )
            .into_response();
    }
    next.run(req).await
}

/// Headers for every HTML page (BCP-20, BCP-21): no framing, no referrer, no caching,
/// nothing loaded from elsewhere.
pub fn html_headers() -> [(HeaderName, HeaderValue); 5] {
    [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ]
}

pub fn html(status: StatusCode, body: String) -> Response {
    (status, html_headers(), body).into_response()
}

/// A 303 See Other (never 307 after a credential POST, BCP-18).
pub fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, v),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
        )
            .into_response(),
        Err(_) => pages::error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            &OAuthError::server_error(),
        ),
    }
}

/// A JSON error for the token, userinfo and other back-channel endpoints
/// (RFC 6749 §5.2), always with `Cache-Control: no-store`.
pub fn json_error(err: &OAuthError) -> Response {
    let status = StatusCode::from_u16(err.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if status == StatusCode::UNAUTHORIZED && err.code == latchkey_core::ErrorCode::InvalidClient {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"latchkey\""),
        );
    }
    (status, headers, axum::Json(err.to_json())).into_response()
}

/// Any other method at the token, revocation and introspection endpoints, which take
/// POST only (RFC 6749 §3.2, RFC 7009 §2.1, RFC 7662 §2.1): 405, with the `Allow`
/// header axum adds (RFC 9110 §15.5.6), and the error as JSON like the endpoint's
/// other errors, so that a client reading it learns what went wrong.
async fn post_only() -> Response {
    let mut answer = json_error(&OAuthError::invalid_request(
        "this endpoint takes POST only",
    ));
    *answer.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    answer
}

/// Reads a back-channel request: a form body and the client's credentials (RFC 6749
/// §2.3), authenticated. Used by the token, revocation and introspection endpoints.
pub async fn authenticate_client(
    state: &AppState,
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<
    (
        latchkey_core::params::Params,
        std::sync::Arc<latchkey_core::client::Client>,
        latchkey_core::client::ClientAuthenticated,
    ),
    OAuthError,
> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let params = latchkey_core::params::Params::parse(body)?;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| {
            v.to_str()
                .map_err(|_| OAuthError::invalid_client("malformed Authorization header"))
        })
        .transpose()?;
    let presented = latchkey_core::client::PresentedCredentials::from_request(
        authorization,
        params.get("client_id"),
        params.get("client_secret"),
    )?;
    let client = state
        .client(&presented.client_id)
        .await
        .map_err(|e| store_failure(&e))?
        .ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
    // Failed authentications of a client id from one address slow further attempts
    // from that address down (TM-06). Keyed by address too: the client id is public, so
    // anyone could otherwise slow a client down for everyone.
    let ip = crate::net::client_ip(peer, headers, &state.config.trusted_proxies);
    let key = format!(
        "client:{}:{}",
        presented.client_id,
        crate::net::limit_key(ip)
    );
    let delay = state.throttle.delay(&key);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match client.authenticate(&presented) {
        Ok(authenticated) => Ok((params, client, authenticated)),
        Err(e) => {
            state.throttle.fail(&key);
            Err(e)
        }
    }
}

/// Logs a storage failure (never with secrets: store errors carry none) and returns the
/// error to show: storage trouble is `temporarily_unavailable`, never a success (REL-06).
pub fn store_failure(e: &latchkey_store::StoreError) -> OAuthError {
    tracing::error!(error = %e, "storage failure");
    OAuthError::temporarily_unavailable()
}
