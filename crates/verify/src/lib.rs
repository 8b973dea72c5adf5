//! Checks Latchkey access tokens offline, in the API that receives them.
//!
//! A [`Verifier`] knows one issuer and one audience. It verifies RFC 9068 JWT access
//! tokens with the issuer's published keys, the way RFC 8725 asks (pinned algorithms,
//! keys chosen by `kid` but never by the token's header, explicit `typ`), checks `iss`,
//! `aud`, `exp`, `nbf` and `iat`, follows the issuer's revocation feed so a revoked grant
//! stops working within seconds, and remembers recently verified tokens so a repeated
//! token costs a hash lookup, not a signature check.
//!
//! A route states its needs as a [`Policy`]; a refusal is a [`VerifyError`] that knows
//! its RFC 6750 §3 answer (status and `WWW-Authenticate`).
//!
//! - axum: `get(handler).layer(verifier.require(Policy::scope("api:read")))`, and the
//!   handler takes a [`Verified`] argument.
//! - anything else: [`Verifier::authorize`] with the `Authorization` header's value.
//!
//! Tokens are never logged and never part of an error.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cache;
mod claims;
mod error;
mod jwks;
mod jws;
#[cfg(feature = "axum")]
mod layer;
mod policy;
mod remote;
mod revocation;
mod verifier;

pub use claims::Claims;
pub use error::{RevokedBy, SetupError, TokenError, VerifyError};
pub use jws::MAX_TOKEN_LEN;
pub use latchkey_core::UnixTime;
pub use latchkey_core::jose::Alg;
#[cfg(feature = "axum")]
pub use layer::{NotVerified, Require, RequireLayer, Verified};
pub use policy::Policy;
pub use verifier::{
    Clock, DEFAULT_CACHE_CAPACITY, DEFAULT_KEY_REFETCH_INTERVAL, DEFAULT_LEEWAY,
    DEFAULT_POLL_INTERVAL, SystemClock, Verifier, VerifierBuilder,
};
