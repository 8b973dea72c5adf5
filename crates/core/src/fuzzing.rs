//! Entry points for the fuzz targets (crates/core/fuzz) and for the stable fuzz smoke
//! test: each takes arbitrary bytes, drives one parser, and checks invariants that must
//! hold for every input. A panic is a finding.
#![allow(clippy::panic, reason = "a failed invariant must stop the fuzzer")]

use crate::authorize;
use crate::client::{AuthMethod, Client, ClientKind, GrantType, PresentedCredentials};
use crate::jose::{self, Alg};
use crate::params::Params;
use crate::redirect_uri::RedirectUri;
use crate::scope::Scope;
use crate::token::{RefreshToken, TokenRequest};

/// Form and query parsing, then the authorization and token request parsers on top.
pub fn request_parsers(data: &[u8]) {
    let Ok(params) = Params::parse(data) else {
        return;
    };
    for (k, v) in params.iter() {
        assert!(
            !v.is_empty(),
            "empty values are absent (RFC 6749 §3.1), got {k}"
        );
    }
    let client = fuzz_client();
    match authorize::validate(&params, Some(&client)) {
        Ok(req) => {
            assert!(
                client.redirect_uri(&req.redirect_uri).is_some(),
                "a valid request names a registered redirect URI"
            );
            assert!(req.scope.is_subset(&client.scopes));
            assert_eq!(req.code_challenge.as_str().len(), 43);
        }
        Err(authorize::AuthorizeError::Redirect {
            redirect_uri,
            error,
            ..
        }) => {
            assert!(
                client.redirect_uri(&redirect_uri).is_some(),
                "errors go only to a registered redirect URI (BCP-02)"
            );
            assert!(
                error
                    .description()
                    .bytes()
                    .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
            );
        }
        Err(authorize::AuthorizeError::Page(_)) => {}
    }
    let _ = TokenRequest::parse(&params);
    let _ = PresentedCredentials::from_request(
        params.get("authorization"),
        params.get("client_id"),
        params.get("client_secret"),
    );
    if let Some(Ok(scope)) = params.get("scope").map(Scope::parse) {
        assert_eq!(
            Scope::parse(&scope.to_string()).ok(),
            Some(scope),
            "scope round-trips"
        );
    }
}

/// Redirect URI registration and matching: matching is exact but for the loopback
/// port, and a URI never matches one with a different host.
pub fn redirect_uris(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let (registered, presented) = s.split_once('\n').unwrap_or((&s, &s));
    let Ok(r) = RedirectUri::register(registered) else {
        return;
    };
    assert!(r.matches(registered), "a registered URI matches itself");
    if r.matches(presented) && presented != registered {
        assert!(
            presented.starts_with("http://127.0.0.1") || presented.starts_with("http://[::1]"),
            "only loopback may differ: {registered:?} vs {presented:?}"
        );
        let strip = |u: &str| {
            url::Url::parse(u).ok().map(|u| {
                (
                    u.host_str().map(str::to_owned),
                    u.path().to_owned(),
                    u.query().map(str::to_owned),
                )
            })
        };
        assert_eq!(
            strip(registered),
            strip(presented),
            "{registered:?} vs {presented:?}"
        );
    }
    let _ = crate::redirect_uri::with_query(registered, &[("code", presented)]);
}

/// The JWS parser and verifier against a fixed key set: no input verifies except one
/// signed by those keys, and nothing panics.
pub fn jws(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    let keys = fuzz_keys();
    if let Ok(claims) = jose::verify(&token, &keys, "at+jwt") {
        panic!("an arbitrary input verified: {claims:?}");
    }
    let _ = RefreshToken::parse(&token);
}

fn fuzz_client() -> Client {
    Client {
        client_id: "c1".into(),
        name: "fuzz".into(),
        kind: ClientKind::Confidential,
        secret_hash: None,
        redirect_uris: [
            "https://app.example/cb",
            "http://127.0.0.1/cb",
            "com.example.app:/cb",
        ]
        .into_iter()
        .filter_map(|u| RedirectUri::register(u).ok())
        .collect(),
        grant_types: vec![GrantType::AuthorizationCode],
        scopes: Scope::from_tokens(["openid", "email"]),
        auth_methods: vec![AuthMethod::ClientSecretBasic],
        first_party: false,
        post_logout_redirect_uris: vec![],
        audiences: vec![],
        resources: vec!["https://api.example.com".into()],
        access_token_ttl: 300,
        id_token_alg: Alg::RS256,
        created_at: 0,
    }
}

fn fuzz_keys() -> Vec<jose::VerifyingKey> {
    // Fixed public keys (RFC 8037 A.2 Ed25519 test key; a P-256 point), so a run is
    // reproducible and no private key exists in the process.
    let jwks = [
        r#"{"kty":"OKP","crv":"Ed25519","kid":"k-EdDSA","alg":"EdDSA","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#,
        r#"{"kty":"EC","crv":"P-256","kid":"k-ES256","alg":"ES256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#,
    ];
    jwks.iter()
        .filter_map(|j| serde_json::from_str::<jose::Jwk>(j).ok())
        .filter_map(|j| jose::VerifyingKey::from_jwk(&j).ok())
        .collect()
}
