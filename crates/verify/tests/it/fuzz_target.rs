//! The body of the fuzz target, shared by `crates/verify/fuzz` (cargo fuzz, libFuzzer)
//! and the stable fuzz smoke test in this suite, so both run exactly the same checks.
//!
//! Oracle: no input panics, and the verifier accepts nothing but the genuine tokens it
//! was given; in particular no edit of a genuine token is accepted.

use std::future::Future;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use latchkey_core::jose::{Alg, SigningKey};
use latchkey_verify::{Clock, Policy, UnixTime, Verifier};

pub const NOW: i64 = 1_764_780_000;
const ISSUER: &str = "https://id.example";
const AUD: &str = "https://api.example";

pub struct Target {
    pub verifier: Verifier,
    /// Genuine tokens: one per algorithm, plus a client-credentials token.
    pub valid: Vec<String>,
}

struct Fixed;

impl Clock for Fixed {
    fn now(&self) -> UnixTime {
        UnixTime(NOW)
    }
}

/// Drives a future that never waits. A verifier with a static JWKS does no I/O, so
/// `verify` and `build` complete on their first poll; no runtime is needed.
pub fn run_now<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

pub fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let keys: Vec<SigningKey> = Alg::ALL
            .iter()
            .map(|a| SigningKey::generate(*a, format!("k-{}", a.as_str())).unwrap().0)
            .collect();
        let jwks = serde_json::json!({"keys": keys.iter().map(SigningKey::public_jwk).collect::<Vec<_>>()});
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": "u-1", "aud": AUD, "client_id": "c-1",
            "scope": "openid api:read", "iat": NOW - 10, "exp": NOW + 290,
            "jti": "j-1", "gid": "g-1", "auth_time": NOW - 600,
        });
        let cc = serde_json::json!({
            "iss": ISSUER, "sub": "client:c-2", "aud": AUD, "client_id": "c-2",
            "scope": "api:read", "iat": NOW - 10, "exp": NOW + 290, "jti": "j-2",
        });
        let mut valid: Vec<String> = keys
            .iter()
            .map(|k| k.sign("at+jwt", &claims).unwrap())
            .collect();
        valid.push(keys[0].sign("at+jwt", &cc).unwrap());
        let verifier = run_now(
            Verifier::from_jwks(ISSUER, AUD, &jwks.to_string())
                .clock(Fixed)
                .build(),
        )
        .unwrap();
        for t in &valid {
            assert!(run_now(verifier.verify(t, &Policy::any())).is_ok());
        }
        Target { verifier, valid }
    })
}

fn accepted(text: &str) -> bool {
    run_now(target().verifier.verify(text, &Policy::any())).is_ok()
}

/// Applies `edits` (4 bytes each: operation, position high, position low, byte) to a
/// genuine token.
pub fn edit(original: &str, edits: &[u8]) -> Vec<u8> {
    let mut bytes = original.as_bytes().to_vec();
    for e in edits.chunks(4) {
        let [op, hi, lo, b] = e else {
            bytes.truncate(bytes.len() / 2);
            continue;
        };
        let at = usize::from(u16::from_be_bytes([*hi, *lo]));
        let len = bytes.len();
        match (op % 4, len) {
            (0, 1..) => bytes[at % len] = *b,
            (1, _) => bytes.insert(at % (len + 1), *b),
            (2, 1..) => {
                bytes.remove(at % len);
            }
            (3, 2..) => bytes.swap(at % len, usize::from(*b) % len),
            _ => {}
        }
    }
    bytes
}

/// One fuzz input.
pub fn check(data: &[u8]) {
    let t = target();
    if let Ok(text) = std::str::from_utf8(data) {
        assert!(
            !accepted(text) || t.valid.iter().any(|v| v == text),
            "accepted a token that was never issued"
        );
        let _ = run_now(t.verifier.authorize(Some(text), &Policy::scope("api:read")));
    }
    if let Some((which, edits)) = data.split_first() {
        let original = &t.valid[usize::from(*which) % t.valid.len()];
        let edited = edit(original, edits);
        if edited != original.as_bytes()
            && let Ok(text) = std::str::from_utf8(&edited)
        {
            assert!(!accepted(text), "accepted an edited token");
        }
    }
}
