//! Test fixtures: real keys and real tokens (latchkey-core's `SigningKey`), and a small
//! HTTP issuer that serves the documented discovery, JWKS and revocation-feed formats.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use latchkey_core::jose::{Alg, SigningKey};
use latchkey_verify::{Clock, UnixTime, Verifier, VerifierBuilder};
use serde_json::{Value, json};

/// The tests' "now": 2025-12-03, as in the feed example of docs/state-and-revocation.md.
pub const NOW: i64 = 1_764_780_000;
pub const AUD: &str = "https://api.example";
pub const STATIC_ISSUER: &str = "https://id.example";
pub const FEED_CLIENT: &str = "orders api";
pub const FEED_SECRET: &str = "s3cret:with/odd+chars";

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A clock the test moves by hand.
#[derive(Clone)]
pub struct TestClock(pub Arc<AtomicI64>);

impl TestClock {
    pub fn at(now: i64) -> TestClock {
        TestClock(Arc::new(AtomicI64::new(now)))
    }
    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> UnixTime {
        UnixTime(self.0.load(Ordering::SeqCst))
    }
}

/// A signing key, and the same key able to sign arbitrary bytes (to forge headers with
/// a valid signature).
pub struct Signer {
    pub key: SigningKey,
    der: Vec<u8>,
}

impl Signer {
    pub fn new(alg: Alg, kid: &str) -> Signer {
        let (key, der) = SigningKey::generate(alg, kid.to_owned()).unwrap();
        Signer { key, der }
    }

    pub fn kid(&self) -> &str {
        self.key.kid()
    }

    pub fn jwk(&self) -> Value {
        serde_json::to_value(self.key.public_jwk()).unwrap()
    }

    /// A token exactly as Latchkey signs it.
    pub fn token(&self, claims: &Value) -> String {
        self.key.sign("at+jwt", claims).unwrap()
    }

    pub fn sign_bytes(&self, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self.key.alg() {
            Alg::EdDSA => Ed25519KeyPair::from_pkcs8_maybe_unchecked(&self.der)
                .unwrap()
                .sign(input)
                .as_ref()
                .to_vec(),
            Alg::ES256 => {
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &self.der)
                    .unwrap()
                    .sign(&rng, input)
                    .unwrap()
                    .as_ref()
                    .to_vec()
            }
            Alg::RS256 => {
                let pair = RsaKeyPair::from_pkcs8(&self.der).unwrap();
                let mut sig = vec![0u8; pair.public_modulus_len()];
                pair.sign(&signature::RSA_PKCS1_SHA256, &rng, input, &mut sig)
                    .unwrap();
                sig
            }
        }
    }

    /// A validly signed token with any header and payload bytes.
    pub fn raw(&self, header: &Value, payload: &[u8]) -> String {
        let input = format!("{}.{}", b64(header.to_string()), b64(payload));
        let sig = self.sign_bytes(input.as_bytes());
        format!("{input}.{}", b64(sig))
    }

    /// The header Latchkey writes for this key.
    pub fn header(&self) -> Value {
        json!({"alg": self.key.alg().as_str(), "typ": "at+jwt", "kid": self.kid()})
    }
}

/// Valid RFC 9068 claims as Latchkey issues them for a user's grant.
pub fn claims(issuer: &str) -> Value {
    json!({
        "iss": issuer,
        "sub": "u-1",
        "aud": AUD,
        "client_id": "c-1",
        "scope": "openid api:read",
        "iat": NOW - 10,
        "exp": NOW + 290,
        "jti": "j-1",
        "gid": "g-1",
        "auth_time": NOW - 600,
    })
}

pub fn jwks(signers: &[&Signer]) -> Value {
    json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()})
}

/// A verifier with a fixed JWKS at `NOW`.
pub async fn static_verifier(signers: &[&Signer]) -> Verifier {
    static_builder(signers).build().await.unwrap()
}

pub fn static_builder(signers: &[&Signer]) -> VerifierBuilder {
    Verifier::from_jwks(STATIC_ISSUER, AUD, &jwks(signers).to_string()).clock(TestClock::at(NOW))
}

/// What the test issuer serves, and what it has seen.
pub struct IssuerState {
    pub jwks: Value,
    pub cache_control: String,
    pub jwks_hits: usize,
    /// Feed entries: (kind, id, revoked_at).
    pub revoked: Vec<(String, String, i64)>,
    pub feed_hits: usize,
    pub feed_sinces: Vec<Option<i64>>,
    pub page_size: usize,
    pub server_time: i64,
    pub window: i64,
    /// When set, discovery names this issuer instead of the real one.
    pub claimed_issuer: Option<String>,
}

/// A small HTTP issuer on 127.0.0.1 serving RFC 8414 metadata, a JWKS and the revocation
/// feed of docs/state-and-revocation.md. Stops when dropped.
pub struct TestIssuer {
    pub url: String,
    pub state: Arc<Mutex<IssuerState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Shared {
    url: String,
    state: Arc<Mutex<IssuerState>>,
}

impl TestIssuer {
    pub async fn start(signers: &[&Signer]) -> TestIssuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let state = Arc::new(Mutex::new(IssuerState {
            jwks: jwks(signers),
            cache_control: "public, max-age=300".into(),
            jwks_hits: 0,
            revoked: Vec::new(),
            feed_hits: 0,
            feed_sinces: Vec::new(),
            page_size: 1000,
            server_time: NOW,
            window: 360,
            claimed_issuer: None,
        }));
        let shared = Shared {
            url: url.clone(),
            state: Arc::clone(&state),
        };
        let app = axum::Router::new()
            .route("/.well-known/oauth-authorization-server", get(metadata))
            .route("/jwks.json", get(serve_jwks))
            .route("/revocations", get(feed))
            .with_state(shared);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TestIssuer { url, state, task }
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut IssuerState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    pub fn revoke(&self, kind: &str, id: &str, at: i64) {
        self.with(|s| s.revoked.push((kind.into(), id.into(), at)));
    }

    pub fn builder(&self) -> VerifierBuilder {
        Verifier::from_issuer(&self.url, AUD).clock(TestClock::at(NOW))
    }
}

async fn metadata(State(s): State<Shared>) -> Response {
    let claimed = s.state.lock().unwrap().claimed_issuer.clone();
    axum::Json(json!({
        "issuer": claimed.unwrap_or_else(|| s.url.clone()),
        "jwks_uri": format!("{}/jwks.json", s.url),
    }))
    .into_response()
}

async fn serve_jwks(State(s): State<Shared>) -> Response {
    let mut st = s.state.lock().unwrap();
    st.jwks_hits += 1;
    (
        [(header::CACHE_CONTROL, st.cache_control.clone())],
        axum::Json(st.jwks.clone()),
    )
        .into_response()
}

/// The feed as crates/server/src/http/backchannel.rs serves it: HTTP Basic with
/// form-encoded credentials, entries since the cursor (bounded by the window), pages of
/// `page_size`, `next_since` overlapping by 10 s.
async fn feed(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!(
            "{}:{}",
            url::form_urlencoded::byte_serialize(FEED_CLIENT.as_bytes()).collect::<String>(),
            url::form_urlencoded::byte_serialize(FEED_SECRET.as_bytes()).collect::<String>()
        ))
    );
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(&expected)
    {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let mut st = s.state.lock().unwrap();
    st.feed_hits += 1;
    let since_param = q.get("since").map(|v| v.parse::<i64>().unwrap());
    st.feed_sinces.push(since_param);
    let now = st.server_time;
    let since = since_param.unwrap_or(0).max(now - st.window);
    let mut entries: Vec<_> = st
        .revoked
        .iter()
        .filter(|e| e.2 >= since)
        .cloned()
        .collect();
    entries.sort_by_key(|e| e.2);
    let full = entries.len() >= st.page_size;
    entries.truncate(st.page_size);
    let next_since = match (full, entries.last()) {
        (true, Some(last)) => last.2,
        _ => (now - 10).max(since),
    };
    axum::Json(json!({
        "revoked": entries.iter().map(|(k, i, at)| json!({"kind": k, "id": i, "revoked_at": at})).collect::<Vec<_>>(),
        "next_since": next_since,
        "more": full,
        "window": st.window,
        "server_time": now,
    }))
    .into_response()
}
