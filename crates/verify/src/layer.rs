//! axum and tower integration: a layer that checks the bearer token before a route runs,
//! and an extractor that hands the route the verified claims.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use latchkey_verify::{Policy, Verified, Verifier};
//!
//! async fn read(token: Verified) -> String {
//!     format!("hello {}", token.subject)
//! }
//!
//! fn app(verifier: &Verifier) -> Router {
//!     Router::new().route("/read", get(read).layer(verifier.require(Policy::scope("api:read"))))
//! }
//! ```

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::claims::Claims;
use crate::error::VerifyError;
use crate::policy::Policy;
use crate::verifier::Verifier;

impl Verifier {
    /// A tower layer that answers a request without a valid token meeting `policy` with
    /// the RFC 6750 error, and otherwise passes it on with the [`Verified`] claims in its
    /// extensions.
    pub fn require(&self, policy: Policy) -> RequireLayer {
        RequireLayer {
            verifier: self.clone(),
            policy,
        }
    }
}

/// The layer made by [`Verifier::require`].
#[derive(Debug, Clone)]
pub struct RequireLayer {
    verifier: Verifier,
    policy: Policy,
}

impl<S> tower::Layer<S> for RequireLayer {
    type Service = Require<S>;

    fn layer(&self, inner: S) -> Require<S> {
        Require {
            inner,
            verifier: self.verifier.clone(),
            policy: self.policy.clone(),
        }
    }
}

/// The service made by [`RequireLayer`].
#[derive(Debug, Clone)]
pub struct Require<S> {
    inner: S,
    verifier: Verifier,
    policy: Policy,
}

impl<S, B> tower::Service<Request<B>> for Require<S>
where
    S: tower::Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone is not ready; the ready one goes into the future (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        let policy = self.policy.clone();
        Box::pin(async move {
            let mut values = request.headers().get_all(header::AUTHORIZATION).iter();
            let first = values.next();
            let outcome = if values.next().is_some() {
                Err(VerifyError::InvalidRequest(
                    "Authorization header is repeated",
                ))
            } else {
                match first.map(HeaderValue::to_str) {
                    Some(Err(_)) => Err(VerifyError::InvalidRequest(
                        "Authorization header is not visible ASCII",
                    )),
                    Some(Ok(value)) => verifier.authorize(Some(value), &policy).await,
                    None => verifier.authorize(None, &policy).await,
                }
            };
            match outcome {
                Ok(claims) => {
                    request.extensions_mut().insert(Verified(claims));
                    inner.call(request).await
                }
                Err(e) => Ok(e.into_response()),
            }
        })
    }
}

/// The claims of the request's verified token, for a route behind
/// [`Verifier::require`]. Without that layer it answers 500: a route that forgot its
/// layer fails closed.
#[derive(Debug, Clone)]
pub struct Verified(pub Arc<Claims>);

impl Deref for Verified {
    type Target = Claims;
    fn deref(&self) -> &Claims {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Verified {
    type Rejection = NotVerified;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Verified, NotVerified> {
        parts
            .extensions
            .get::<Verified>()
            .cloned()
            .ok_or(NotVerified)
    }
}

/// The rejection of [`Verified`] on a route without [`Verifier::require`].
#[derive(Debug, Clone, Copy)]
pub struct NotVerified;

impl IntoResponse for NotVerified {
    fn into_response(self) -> Response {
        tracing::error!("a route extracts Verified but has no Verifier::require layer");
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    }
}

/// RFC 6750 §3: the status, the `WWW-Authenticate` challenge, and the description as a
/// short plain-text body.
impl IntoResponse for VerifyError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        let challenge = HeaderValue::try_from(self.www_authenticate())
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
        (
            status,
            [
                (header::WWW_AUTHENTICATE, challenge),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            self.to_string(),
        )
            .into_response()
    }
}
