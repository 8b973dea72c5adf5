//! Verifications per second on one core, per algorithm: the bare aws-lc-rs signature
//! check, latchkey-core's `jose::verify`, and the `Verifier` without and with its
//! verified-token cache.
//!
//! ```sh
//! CARGO_TARGET_DIR=/var/tmp/latchkey-target cargo bench -p latchkey-verify --bench verify \
//!     -- --warm-up-time 1 --measurement-time 3
//! ```

#![allow(
    clippy::panic,
    reason = "a benchmark whose setup fails has nothing to measure"
)]

use std::future::Future;
use std::hint::black_box;
use std::task::{Context, Poll, Waker};

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use latchkey_core::jose::{self, Alg, Jwk, SigningKey, VerifyingKey};
use latchkey_verify::{Clock, Policy, SystemClock, Verifier};

const ISSUER: &str = "https://id.example";
const AUD: &str = "https://api.example";

/// Drives a future that never waits (a static-JWKS verifier does no I/O).
fn run_now<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn decode(s: &Option<String>) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(s.as_deref().unwrap_or_default())
        .unwrap_or_default()
}

/// The public key parsed once, as the verifier holds it.
fn parsed(jwk: &Jwk, alg: Alg) -> ParsedPublicKey {
    let key = match alg {
        Alg::EdDSA => ParsedPublicKey::new(&signature::ED25519, decode(&jwk.x)),
        Alg::ES256 => {
            let mut point = vec![4u8];
            point.extend(decode(&jwk.x));
            point.extend(decode(&jwk.y));
            ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
        }
        Alg::RS256 => {
            let (n, e) = (decode(&jwk.n), decode(&jwk.e));
            RsaPublicKeyComponents { n: &n, e: &e }
                .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
        }
    };
    key.unwrap_or_else(|e| panic!("bench key: {e:?}"))
}

fn bench(c: &mut Criterion) {
    let now = SystemClock.now().0;
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": "e100a68ae904c4a5eb30f2474d285acb", "aud": AUD,
        "client_id": "b5d0f3a1c2e4", "scope": "openid profile api:read api:write",
        "iat": now, "exp": now + 3600, "jti": "0f8fad5bd9cb469fa16570867728950e",
        "gid": "46456706197640cb8926811d174a9587", "auth_time": now - 60,
    });
    for alg in Alg::ALL {
        let key = SigningKey::generate(alg, format!("bench-{}", alg.as_str()))
            .unwrap_or_else(|e| panic!("{e}"))
            .0;
        let jwk = key.public_jwk();
        let token = key
            .sign("at+jwt", &claims)
            .unwrap_or_else(|e| panic!("{e}"));
        let (input, sig_b64) = token.rsplit_once('.').unwrap_or_default();
        let sig = URL_SAFE_NO_PAD.decode(sig_b64).unwrap_or_default();
        let jwks = serde_json::json!({ "keys": [&jwk] }).to_string();
        let build = |capacity: usize| {
            run_now(
                Verifier::from_jwks(ISSUER, AUD, &jwks)
                    .cache_capacity(capacity)
                    .build(),
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let (uncached, cached) = (build(0), build(1000));
        let policy = Policy::scope("api:read");
        assert!(run_now(cached.verify(&token, &policy)).is_ok());
        let parsed_key = parsed(&jwk, alg);
        let core_key = VerifyingKey::from_jwk(&jwk).unwrap_or_else(|e| panic!("{e}"));
        let unparsed_alg: &'static dyn signature::VerificationAlgorithm = match alg {
            Alg::EdDSA => &signature::ED25519,
            Alg::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
            Alg::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        };
        let public_bytes = parsed_key.as_ref().to_vec();

        let mut g = c.benchmark_group(alg.as_str());
        g.throughput(Throughput::Elements(1));
        g.bench_function("aws-lc-rs ParsedPublicKey::verify_sig", |b| {
            b.iter(|| {
                parsed_key
                    .verify_sig(black_box(input.as_bytes()), black_box(&sig))
                    .is_ok()
            })
        });
        if alg != Alg::RS256 {
            // UnparsedPublicKey parses the key on every call (what latchkey-core does).
            // Its RSA form wants DER, so RSA is measured through jose::verify below.
            g.bench_function("aws-lc-rs UnparsedPublicKey::verify", |b| {
                let key = UnparsedPublicKey::new(unparsed_alg, &public_bytes);
                b.iter(|| {
                    key.verify(black_box(input.as_bytes()), black_box(&sig))
                        .is_ok()
                })
            });
        }
        g.bench_function("latchkey_core::jose::verify", |b| {
            b.iter(|| {
                jose::verify(black_box(&token), std::slice::from_ref(&core_key), "at+jwt").is_ok()
            })
        });
        g.bench_function("Verifier::verify, no cache", |b| {
            b.iter(|| run_now(uncached.verify(black_box(&token), &policy)).is_ok())
        });
        g.bench_function("Verifier::verify, cache hit", |b| {
            b.iter(|| run_now(cached.verify(black_box(&token), &policy)).is_ok())
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
