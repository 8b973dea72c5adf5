//! latchkey-verify against the real server: audiences from RFC 8707 resource
//! indicators, and the revocation feed reaching an API within one poll.

use std::time::{Duration, Instant};

use latchkey_verify::{Policy, TokenError, Verifier, VerifyError};

use crate::support::*;

const API: &str = "https://api.example.com";
const OTHER: &str = "https://other.example.com";

async fn verifier(server: &TestServer, audience: &str, feed: Option<&TestClient>) -> Verifier {
    let mut b =
        Verifier::from_issuer(&server.issuer, audience).poll_interval(Duration::from_millis(300));
    if let Some(c) = feed {
        b = b.follow_revocations(&c.id, c.secret.as_deref().unwrap());
    }
    b.build()
        .await
        .expect("verifier from the issuer's discovery and JWKS")
}

async fn code_flow_tokens(
    server: &TestServer,
    app: &TestClient,
    resource: Option<&str>,
) -> serde_json::Value {
    let browser = Browser::new(&server.issuer);
    let (challenge, verifier) = pkce();
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", app.id.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("scope", "openid email"),
        ("state", "s1"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    if let Some(r) = resource {
        params.push(("resource", r));
    }
    // Consent is asked the first time only: this confidential client keeps it.
    let page = browser.visit(&authorize_url(&server.issuer, &params)).await;
    let page = browser.login(&page, "alice", PASSWORD).await;
    let location = if page.is_consent_page() {
        browser.consent(&page, "allow").await
    } else {
        page.location().expect("a redirect to the client")
    };
    let code = assert_authz_code(&location, &server.issuer, "s1");
    redeem(&server.issuer, app, &code, &verifier)
        .await
        .ok()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_one_api_fails_at_another_and_revocation_reaches_the_api() {
    let server = TestServer::start_with(&[("LATCHKEY_KEY_CHECK_INTERVAL", "1")]);
    server.create_user("alice", "alice@example.com", "Alice");
    let app = server.create_client("App", &["--resource", API]);
    let api = server.create_client(
        "Orders API",
        &[
            "--grant-types",
            "client_credentials",
            "--scopes",
            "",
            "--serves-audience",
            API,
        ],
    );

    let tokens = code_flow_tokens(&server, &app, Some(API)).await;
    let at = tokens["access_token"].as_str().unwrap();
    assert_eq!(
        decode_jwt(at).1["aud"],
        API,
        "the resource indicator is the audience"
    );

    let at_api = verifier(&server, API, Some(&api)).await;
    let claims = at_api
        .verify(at, &Policy::scope("email"))
        .await
        .expect("valid at the API it names");
    assert_eq!(claims.client_id, app.id);
    assert!(claims.grant_id.is_some());
    match at_api.verify(at, &Policy::scope("api:write")).await {
        Err(VerifyError::InsufficientScope { .. }) => {}
        other => panic!("a missing scope is insufficient_scope, got {other:?}"),
    }

    // RFC 8707: the same token fails at another API, and a token without a resource
    // (audience: the issuer) fails at this one.
    let at_other = verifier(&server, OTHER, None).await;
    match at_other.verify(at, &Policy::any()).await {
        Err(VerifyError::InvalidToken(TokenError::WrongAudience)) => {}
        other => panic!("a token for {API} at {OTHER}: {other:?}"),
    }
    let plain = code_flow_tokens(&server, &app, None).await;
    match at_api
        .verify(plain["access_token"].as_str().unwrap(), &Policy::any())
        .await
    {
        Err(VerifyError::InvalidToken(TokenError::WrongAudience)) => {}
        other => panic!("a token without a resource at {API}: {other:?}"),
    }
    // A resource the client may not ask for is refused at the authorization endpoint.
    let browser = Browser::new(&server.issuer);
    let (challenge, _) = pkce();
    let url = authorize_url(
        &server.issuer,
        &[
            ("response_type", "code"),
            ("client_id", &app.id),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "openid"),
            ("state", "s2"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("resource", OTHER),
        ],
    );
    let page = browser.get(&url).await;
    assert_authz_error(
        &page.location().expect("an error redirect"),
        &server.issuer,
        "s2",
        "invalid_target",
    );

    // Revoking the grant reaches the API through the feed within a poll or two.
    let rt = tokens["refresh_token"].as_str().unwrap();
    let revoked = backchannel()
        .post(format!("{}/revoke", server.issuer))
        .basic_auth(&app.id, app.secret.as_deref())
        .form(&[("token", rt)])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), reqwest::StatusCode::OK);
    let start = Instant::now();
    loop {
        match at_api.verify(at, &Policy::any()).await {
            Err(VerifyError::InvalidToken(TokenError::Revoked(_))) => break,
            Ok(_) => assert!(
                start.elapsed() < Duration::from_secs(5),
                "the API still accepts a revoked grant's token"
            ),
            Err(e) => panic!("unexpected rejection: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("revocation reached the API after {:?}", start.elapsed());

    // A revoked signing key's tokens stop at the API too.
    let again = code_flow_tokens(&server, &app, Some(API)).await;
    let fresh = again["access_token"].as_str().unwrap();
    at_api
        .verify(fresh, &Policy::any())
        .await
        .expect("a fresh grant's token");
    let kid = decode_jwt(fresh).0["kid"].as_str().unwrap().to_owned();
    server.cli_ok(&["keys", "revoke"], &[&kid], None);
    let start = Instant::now();
    loop {
        match at_api.verify(fresh, &Policy::any()).await {
            Err(VerifyError::InvalidToken(_)) => break,
            Ok(_) => assert!(
                start.elapsed() < Duration::from_secs(5),
                "the API still accepts a token of a revoked key"
            ),
            Err(e) => panic!("unexpected rejection: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
