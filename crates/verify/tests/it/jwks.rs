//! Discovery, the JWKS cache lifetime, the rate-limited refetch on an unknown `kid`, and
//! key rotation.

use std::time::Duration;

use latchkey_core::jose::Alg;
use latchkey_verify::{Policy, SetupError, TokenError, Verifier, VerifyError};

use crate::support::{self, Signer, TestIssuer};

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_at_most_once_per_interval() {
    let k = Signer::new(Alg::EdDSA, "k");
    let issuer = TestIssuer::start(&[&k]).await;
    let c = support::claims(&issuer.url);
    let forged: Vec<String> = (0..50)
        .map(|i| Signer::new(Alg::EdDSA, &format!("forged-{i}")).token(&c))
        .collect();
    let interval = Duration::from_secs(1);
    let v = issuer
        .builder()
        .key_refetch_interval(interval)
        .build()
        .await
        .unwrap();
    assert_eq!(issuer.with(|s| s.jwks_hits), 1);

    // Right after build: the JWKS is fresh, no refetch at all.
    for t in &forged {
        assert_eq!(
            v.verify(t, &Policy::any()).await,
            Err(VerifyError::InvalidToken(TokenError::UnknownKey))
        );
    }
    assert_eq!(issuer.with(|s| s.jwks_hits), 1);

    // After the interval: 50 concurrent forged kids cause exactly one fetch.
    tokio::time::sleep(interval + Duration::from_millis(50)).await;
    let mut tasks = Vec::new();
    for t in forged.clone() {
        let v = v.clone();
        tasks.push(tokio::spawn(
            async move { v.verify(&t, &Policy::any()).await },
        ));
    }
    for t in tasks {
        assert_eq!(
            t.await.unwrap(),
            Err(VerifyError::InvalidToken(TokenError::UnknownKey))
        );
    }
    assert_eq!(issuer.with(|s| s.jwks_hits), 2);
    for t in &forged {
        assert!(v.verify(t, &Policy::any()).await.is_err());
    }
    assert_eq!(issuer.with(|s| s.jwks_hits), 2);
}

#[tokio::test]
async fn a_new_key_is_picked_up_by_the_refetch_and_a_removed_one_dropped() {
    let old = Signer::new(Alg::EdDSA, "old");
    let new = Signer::new(Alg::ES256, "new");
    let issuer = TestIssuer::start(&[&old]).await;
    let interval = Duration::from_millis(100);
    let v = issuer
        .builder()
        .key_refetch_interval(interval)
        .build()
        .await
        .unwrap();
    let c = support::claims(&issuer.url);
    let old_token = old.token(&c);
    assert!(v.verify(&old_token, &Policy::any()).await.is_ok());

    // Rotation: the issuer publishes the new key next to the old one.
    issuer.with(|s| s.jwks = support::jwks(&[&new, &old]));
    tokio::time::sleep(interval).await;
    assert!(v.verify(&new.token(&c), &Policy::any()).await.is_ok());
    assert!(v.verify(&old_token, &Policy::any()).await.is_ok());
    assert_eq!(issuer.with(|s| s.jwks_hits), 2);

    // The old key is withdrawn; the next fetch forgets it, and the cached old token.
    issuer.with(|s| s.jwks = support::jwks(&[&new]));
    tokio::time::sleep(interval).await;
    let stranger = Signer::new(Alg::EdDSA, "other").token(&c);
    assert!(v.verify(&stranger, &Policy::any()).await.is_err());
    assert_eq!(issuer.with(|s| s.jwks_hits), 3);
    assert_eq!(
        v.verify(&old_token, &Policy::any()).await,
        Err(VerifyError::InvalidToken(TokenError::UnknownKey))
    );
}

#[tokio::test]
async fn the_jwks_is_refreshed_when_its_max_age_ends() {
    let k = Signer::new(Alg::EdDSA, "k");
    let issuer = TestIssuer::start(&[&k]).await;
    issuer.with(|s| s.cache_control = "public, max-age=1".into());
    let _v = issuer
        .builder()
        .key_refetch_interval(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let hits = issuer.with(|s| s.jwks_hits);
    assert!(
        (2..=4).contains(&hits),
        "{hits} fetches in 2.5 s with max-age=1"
    );

    let issuer = TestIssuer::start(&[&k]).await;
    let _v = issuer.builder().build().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(issuer.with(|s| s.jwks_hits), 1, "max-age=300 is honoured");
}

#[tokio::test]
async fn refresh_stops_when_the_verifier_is_dropped() {
    let k = Signer::new(Alg::EdDSA, "k");
    let issuer = TestIssuer::start(&[&k]).await;
    issuer.with(|s| s.cache_control = "max-age=0".into());
    let v = issuer
        .builder()
        .key_refetch_interval(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    drop(v);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let after_drop = issuer.with(|s| s.jwks_hits);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(issuer.with(|s| s.jwks_hits), after_drop);
}

#[tokio::test]
async fn discovery_must_name_the_configured_issuer() {
    let k = Signer::new(Alg::EdDSA, "k");
    let issuer = TestIssuer::start(&[&k]).await;
    issuer.with(|s| s.claimed_issuer = Some("https://evil.example".into()));
    let e = issuer.builder().build().await.unwrap_err();
    assert!(matches!(e, SetupError::Discovery(_)), "{e}");

    // A trailing slash on the configured issuer is tolerated.
    let issuer = TestIssuer::start(&[&k]).await;
    let v = Verifier::from_issuer(&format!("{}/", issuer.url), support::AUD)
        .build()
        .await
        .unwrap();
    assert_eq!(v.issuer(), issuer.url);
}

#[tokio::test]
async fn plain_http_is_refused_off_loopback() {
    let e = Verifier::from_issuer("http://id.example", support::AUD)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(e, SetupError::Issuer(..)), "{e}");
    let e = Verifier::from_issuer("http://127.0.0.1:9", support::AUD)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(e, SetupError::Http { .. }), "{e}");
}
