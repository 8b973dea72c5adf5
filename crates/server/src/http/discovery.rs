//! Metadata (RFC 8414, OIDC Discovery) and the JWKS.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

pub async fn metadata(State(state): State<AppState>) -> Response {
    (
        [
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            ),
        ],
        axum::Json(latchkey_core::metadata::document(&state.issuer)),
    )
        .into_response()
}

/// The JWKS, with a cache lifetime no longer than the pre-publication window of a new
/// key (so a verifier honouring it always has a key before it signs) and an ETag.
pub async fn jwks(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let ring = state.keys();
    let etag =
        HeaderValue::from_str(ring.etag()).unwrap_or_else(|_| HeaderValue::from_static("\"\""));
    let max_age = HeaderValue::from_str(&format!("public, max-age={}", state.config.jwks_max_age))
        .unwrap_or_else(|_| HeaderValue::from_static("no-cache"));
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return (
            axum::http::StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag), (header::CACHE_CONTROL, max_age)],
        )
            .into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, max_age),
            (header::ETAG, etag),
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            ),
        ],
        ring.jwks_json().to_owned(),
    )
        .into_response()
}
