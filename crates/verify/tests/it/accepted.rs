//! Tokens that must pass, and the per-route policy (scopes, maximum age).

use std::sync::Arc;

use latchkey_core::jose::Alg;
use latchkey_verify::{Policy, TokenError, VerifyError};
use serde_json::json;

use crate::support::{self, NOW, STATIC_ISSUER, Signer, TestClock};

#[tokio::test]
async fn each_algorithm_and_the_previous_key_during_rotation() {
    let previous = Signer::new(Alg::EdDSA, "2025-11");
    let current = Signer::new(Alg::EdDSA, "2025-12");
    let es = Signer::new(Alg::ES256, "es");
    let rs = Signer::new(Alg::RS256, "rs");
    let v = support::static_verifier(&[&current, &previous, &es, &rs]).await;
    let c = support::claims(STATIC_ISSUER);
    for signer in [&previous, &current, &es, &rs] {
        let claims = v
            .verify(&signer.token(&c), &Policy::any())
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", signer.kid()));
        assert_eq!(claims.key_id, signer.kid());
        assert_eq!(claims.subject, "u-1");
        assert_eq!(claims.client_id, "c-1");
        assert_eq!(claims.grant_id.as_deref(), Some("g-1"));
        assert_eq!(claims.scopes, vec!["openid", "api:read"]);
        assert_eq!(claims.expires_at, NOW + 290);
        assert_eq!(claims.issued_at, NOW - 10);
        assert_eq!(claims.auth_time, Some(NOW - 600));
        assert_eq!(claims.token_id, "j-1");
        assert_eq!(claims.audience, vec![support::AUD]);
    }
}

#[tokio::test]
async fn accepted_variants() {
    let k = Signer::new(Alg::EdDSA, "k");
    let v = support::static_verifier(&[&k]).await;
    let c = support::claims(STATIC_ISSUER);
    let mut cc = c.clone();
    cc.as_object_mut().unwrap().remove("gid");
    cc["sub"] = json!("client:c-1");
    let mut aud_array = c.clone();
    aud_array["aud"] = json!(["https://other.example", support::AUD]);
    let mut in_leeway = c.clone();
    in_leeway["exp"] = json!(NOW - 9);
    in_leeway["iat"] = json!(NOW - 309);
    let mut extra = c.clone();
    extra["acr"] = json!("urn:mace:incommon:iap:silver");
    extra["tenant"] = json!({"id": 7});
    let mut nbf_now = c.clone();
    nbf_now["nbf"] = json!(NOW);
    let mut no_scope = c.clone();
    no_scope.as_object_mut().unwrap().remove("scope");
    let cases = [
        ("client credentials, no gid", k.token(&cc)),
        ("aud array", k.token(&aud_array)),
        ("expired within the leeway", k.token(&in_leeway)),
        ("extra claims", k.token(&extra)),
        ("nbf now", k.token(&nbf_now)),
        ("no scope claim", k.token(&no_scope)),
        (
            "typ application/at+jwt",
            k.raw(
                &json!({"alg": "EdDSA", "typ": "application/at+jwt", "kid": "k"}),
                c.to_string().as_bytes(),
            ),
        ),
        (
            "unknown harmless header member",
            k.raw(
                &json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "k", "x5t#S256": "abc"}),
                c.to_string().as_bytes(),
            ),
        ),
    ];
    for (name, token) in cases {
        let claims = v
            .verify(&token, &Policy::any())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        match name {
            "client credentials, no gid" => assert_eq!(claims.grant_id, None),
            "extra claims" => {
                assert_eq!(claims.extra["tenant"]["id"], 7);
                assert!(!claims.extra.contains_key("sub"));
            }
            "no scope claim" => assert!(claims.scopes.is_empty()),
            _ => {}
        }
    }
}

#[tokio::test]
async fn scopes_and_maximum_age() {
    let k = Signer::new(Alg::ES256, "k");
    let v = support::static_verifier(&[&k]).await;
    let token = k.token(&support::claims(STATIC_ISSUER)); // iat = NOW - 10
    assert!(v.verify(&token, &Policy::scope("api:read")).await.is_ok());
    assert!(
        v.verify(&token, &Policy::scope("openid api:read"))
            .await
            .is_ok()
    );
    let e = v
        .verify(&token, &Policy::scope("api:read api:write"))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        VerifyError::InsufficientScope {
            scope: "api:read api:write".into()
        }
    );
    assert_eq!(e.status(), 403);
    assert_eq!(
        e.www_authenticate(),
        "Bearer error=\"insufficient_scope\", error_description=\"token lacks the scope this \
         resource requires\", scope=\"api:read api:write\""
    );
    // Scope tokens compare exactly (RFC 6749 §3.3).
    assert!(v.verify(&token, &Policy::scope("API:READ")).await.is_err());
    assert!(v.verify(&token, &Policy::scope("api")).await.is_err());

    assert!(v.verify(&token, &Policy::any().max_age(10)).await.is_ok());
    let e = v
        .verify(&token, &Policy::scope("api:read").max_age(9))
        .await
        .unwrap_err();
    assert_eq!(e, VerifyError::InvalidToken(TokenError::TooOld));
    assert!(
        e.www_authenticate()
            .contains("token is too old for this resource")
    );
}

#[tokio::test]
async fn cache_hits_return_the_same_claims_and_respect_expiry() {
    let k = Signer::new(Alg::EdDSA, "k");
    let clock = TestClock::at(NOW);
    let v = support::static_builder(&[&k])
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    let token = k.token(&support::claims(STATIC_ISSUER));
    let first = v.verify(&token, &Policy::any()).await.unwrap();
    let second = v.verify(&token, &Policy::any()).await.unwrap();
    assert!(
        Arc::ptr_eq(&first, &second),
        "the second call is a cache hit"
    );
    // The route policy still applies on a hit.
    assert!(v.verify(&token, &Policy::scope("api:write")).await.is_err());
    // At exp the cache entry is dead; within the leeway the full check still accepts.
    clock.set(NOW + 290);
    let third = v.verify(&token, &Policy::any()).await.unwrap();
    assert!(!Arc::ptr_eq(&first, &third));
    clock.set(NOW + 300);
    assert_eq!(
        v.verify(&token, &Policy::any()).await.unwrap_err(),
        VerifyError::InvalidToken(TokenError::Expired)
    );

    let uncached = support::static_builder(&[&k])
        .cache_capacity(0)
        .build()
        .await
        .unwrap();
    let a = uncached.verify(&token, &Policy::any()).await.unwrap();
    let b = uncached.verify(&token, &Policy::any()).await.unwrap();
    assert!(!Arc::ptr_eq(&a, &b));
    assert_eq!(a, b);
}

#[tokio::test]
async fn configured_algorithms_pin_the_keys() {
    let ed = Signer::new(Alg::EdDSA, "ed");
    let rs = Signer::new(Alg::RS256, "rs");
    let v = support::static_builder(&[&ed, &rs])
        .algorithms(&[Alg::RS256])
        .build()
        .await
        .unwrap();
    let c = support::claims(STATIC_ISSUER);
    assert!(v.verify(&rs.token(&c), &Policy::any()).await.is_ok());
    assert_eq!(
        v.verify(&ed.token(&c), &Policy::any()).await.unwrap_err(),
        VerifyError::InvalidToken(TokenError::UnknownKey)
    );
    // A JWKS with no key of an allowed algorithm is refused at build time.
    assert!(
        support::static_builder(&[&ed])
            .algorithms(&[Alg::ES256])
            .build()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn authorize_reads_the_authorization_header() {
    let k = Signer::new(Alg::EdDSA, "k");
    let v = support::static_verifier(&[&k]).await;
    let token = k.token(&support::claims(STATIC_ISSUER));
    let p = Policy::any();
    assert!(
        v.authorize(Some(&format!("Bearer {token}")), &p)
            .await
            .is_ok()
    );
    assert!(
        v.authorize(Some(&format!("bearer {token}")), &p)
            .await
            .is_ok()
    );
    assert_eq!(
        v.authorize(None, &p).await.unwrap_err(),
        VerifyError::MissingToken
    );
    let e = v.authorize(Some("Basic dTpw"), &p).await.unwrap_err();
    assert_eq!(
        (e.status(), e.www_authenticate()),
        (401, "Bearer".to_owned())
    );
    let e = v.authorize(Some("Bearer "), &p).await.unwrap_err();
    assert_eq!(e.status(), 400);
    assert!(
        e.www_authenticate()
            .starts_with("Bearer error=\"invalid_request\"")
    );
}
