//! Following the revocation feed (docs/state-and-revocation.md) over HTTP.

use std::time::Duration;

use latchkey_core::jose::Alg;
use latchkey_verify::{Policy, RevokedBy, SetupError, TokenError, VerifyError};
use serde_json::json;

use crate::support::{self, FEED_CLIENT, FEED_SECRET, NOW, Signer, TestIssuer};

const POLL: Duration = Duration::from_millis(50);

async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..100 {
        if check().await {
            return true;
        }
        tokio::time::sleep(POLL).await;
    }
    false
}

#[tokio::test]
async fn a_revoked_grant_is_refused_within_a_poll_even_when_cached() {
    let k = Signer::new(Alg::EdDSA, "k");
    let issuer = TestIssuer::start(&[&k]).await;
    let v = issuer
        .builder()
        .follow_revocations(FEED_CLIENT, FEED_SECRET)
        .poll_interval(POLL)
        .build()
        .await
        .unwrap();
    assert!(v.follows_revocations());
    let c = support::claims(&issuer.url);
    let token = k.token(&c);
    let mut other = c.clone();
    other["gid"] = json!("g-other");
    let other = k.token(&other);
    assert!(v.verify(&token, &Policy::any()).await.is_ok());
    assert!(v.verify(&token, &Policy::any()).await.is_ok(), "now cached");

    issuer.revoke("grant", "g-1", NOW);
    let refused = eventually(async || {
        v.verify(&token, &Policy::any()).await
            == Err(VerifyError::InvalidToken(TokenError::Revoked(
                RevokedBy::Grant,
            )))
    })
    .await;
    assert!(refused, "the cached token of the revoked grant is refused");
    assert!(
        v.verify(&other, &Policy::any()).await.is_ok(),
        "other grants are untouched"
    );

    let e = v.verify(&token, &Policy::any()).await.unwrap_err();
    assert_eq!(
        e.www_authenticate(),
        "Bearer error=\"invalid_token\", error_description=\"token has been revoked\""
    );

    // The cursor moves: the first poll has no `since`, later ones send `next_since`.
    let sinces = issuer.with(|s| s.feed_sinces.clone());
    assert_eq!(sinces[0], None);
    assert!(
        sinces[1..].iter().all(|s| *s == Some(NOW - 10)),
        "{sinces:?}"
    );
}

#[tokio::test]
async fn entries_are_forgotten_after_the_window() {
    let k = Signer::new(Alg::EdDSA, "k");
    let issuer = TestIssuer::start(&[&k]).await;
    issuer.revoke("user", "u-1", NOW - 100);
    let v = issuer
        .builder()
        .follow_revocations(FEED_CLIENT, FEED_SECRET)
        .poll_interval(POLL)
        .build()
        .await
        .unwrap();
    let token = k.token(&support::claims(&issuer.url));
    assert_eq!(
        v.verify(&token, &Policy::any()).await,
        Err(VerifyError::InvalidToken(TokenError::Revoked(
            RevokedBy::User
        )))
    );
    // The server's clock passes revoked_at + window: the entry is dropped (every token it
    // concerned has expired by then; this one only lives on because our clock is fixed).
    issuer.with(|s| s.server_time = NOW - 100 + 361);
    assert!(eventually(async || v.verify(&token, &Policy::any()).await.is_ok()).await);
}

#[tokio::test]
async fn pages_are_followed_until_more_is_false() {
    let k = Signer::new(Alg::EdDSA, "k");
    let issuer = TestIssuer::start(&[&k]).await;
    for i in 0..7 {
        issuer.revoke("grant", &format!("g-{i}"), NOW - 60 + i);
    }
    issuer.with(|s| s.page_size = 2);
    let v = issuer
        .builder()
        .follow_revocations(FEED_CLIENT, FEED_SECRET)
        .poll_interval(Duration::from_secs(3600))
        .build()
        .await
        .unwrap();
    // All seven were read by `build` alone, over several pages.
    assert!(issuer.with(|s| s.feed_hits) >= 4);
    let c = support::claims(&issuer.url);
    for i in 0..7 {
        let mut ci = c.clone();
        ci["gid"] = json!(format!("g-{i}"));
        assert_eq!(
            v.verify(&k.token(&ci), &Policy::any()).await,
            Err(VerifyError::InvalidToken(TokenError::Revoked(
                RevokedBy::Grant
            ))),
            "g-{i}"
        );
    }
}

#[tokio::test]
async fn wrong_credentials_fail_the_build() {
    let k = Signer::new(Alg::EdDSA, "k");
    let issuer = TestIssuer::start(&[&k]).await;
    let e = issuer
        .builder()
        .follow_revocations(FEED_CLIENT, "wrong")
        .build()
        .await
        .unwrap_err();
    assert!(matches!(e, SetupError::Feed(_)), "{e}");
    assert!(
        e.to_string().contains("refused the client credentials"),
        "{e}"
    );
    assert!(
        !e.to_string().contains("wrong"),
        "the secret is not in the error"
    );
}

#[tokio::test]
async fn a_static_jwks_can_follow_the_feed_too() {
    let k = Signer::new(Alg::EdDSA, "k");
    let issuer = TestIssuer::start(&[&k]).await;
    issuer.revoke("client", "c-1", NOW - 1);
    let v = latchkey_verify::Verifier::from_jwks(
        &issuer.url,
        support::AUD,
        &support::jwks(&[&k]).to_string(),
    )
    .clock(support::TestClock::at(NOW))
    .follow_revocations(FEED_CLIENT, FEED_SECRET)
    .build()
    .await
    .unwrap();
    assert_eq!(issuer.with(|s| s.jwks_hits), 0);
    let token = k.token(&support::claims(&issuer.url));
    assert_eq!(
        v.verify(&token, &Policy::any()).await,
        Err(VerifyError::InvalidToken(TokenError::Revoked(
            RevokedBy::Client
        )))
    );
}
