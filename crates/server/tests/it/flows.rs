//! The flows that must work: the code flow end to end with an independent OpenID
//! Connect client library, refresh, client credentials, and remembered consent.

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreErrorResponseType, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreTokenType, CoreUserInfoClaims,
};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    RedirectUrl, RequestTokenError, Scope, TokenResponse,
};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::*;

/// The client type `from_provider_metadata` yields: authorization endpoint set, token
/// and userinfo endpoints as discovered.
type OidcClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The HTTP client the `openidconnect` crate uses for its own calls: no redirects.
fn library_http() -> openidconnect::reqwest::Client {
    openidconnect::reqwest::ClientBuilder::new()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .expect("build the openidconnect HTTP client")
}

async fn discover(http: &openidconnect::reqwest::Client, issuer: &str) -> CoreProviderMetadata {
    let issuer_url = IssuerUrl::new(issuer.to_owned()).expect("issuer URL");
    CoreProviderMetadata::discover_async(issuer_url, http)
        .await
        .unwrap_or_else(|e| panic!("OpenID Connect discovery failed: {e:?}"))
}

fn oidc_client(metadata: CoreProviderMetadata, client: &TestClient) -> OidcClient {
    CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(client.id.clone()),
        client.secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT_URI.to_owned()).expect("redirect URL"))
}

/// Is `err` the token endpoint's `invalid_grant`?
fn is_invalid_grant<RE: std::error::Error>(
    err: &RequestTokenError<RE, openidconnect::StandardErrorResponse<CoreErrorResponseType>>,
) -> bool {
    matches!(err, RequestTokenError::ServerResponse(r) if *r.error() == CoreErrorResponseType::InvalidGrant)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_flow_with_openidconnect_crate() {
    // No refresh grace window: the old refresh token must be refused at once.
    let server = TestServer::start_with(&[("LATCHKEY_REFRESH_GRACE_SECONDS", "0")]);
    let user_id = server.create_user("alice", "alice@example.com", "Alice Liddell");
    let app = server.create_client("Happy App", &[]);
    let http = library_http();

    // Discovery, through the library (which checks that `issuer` matches) and raw.
    let metadata = discover(&http, &server.issuer).await;
    assert_eq!(metadata.issuer().as_str(), server.issuer);
    assert_eq!(
        metadata.authorization_endpoint().as_str(),
        server.url("/authorize")
    );
    assert_eq!(
        metadata.token_endpoint().map(|u| u.as_str().to_owned()),
        Some(server.url("/token"))
    );
    assert_eq!(
        metadata.userinfo_endpoint().map(|u| u.as_str().to_owned()),
        Some(server.url("/userinfo"))
    );
    assert_eq!(metadata.jwks_uri().as_str(), server.url("/jwks.json"));
    assert!(
        !metadata.jwks().keys().is_empty(),
        "the JWKS has no key the library understands"
    );
    assert!(
        metadata
            .id_token_signing_alg_values_supported()
            .contains(&CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256),
        "RS256 missing from id_token_signing_alg_values_supported"
    );
    let raw: Value = backchannel()
        .get(server.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        raw["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(
        raw["authorization_response_iss_parameter_supported"],
        Value::Bool(true)
    );
    let oauth_doc = backchannel()
        .get(server.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    assert_eq!(oauth_doc.status(), StatusCode::OK);
    let oauth_doc: Value = oauth_doc.json().await.unwrap();
    assert_eq!(
        oauth_doc, raw,
        "the RFC 8414 document differs from the OpenID one"
    );

    // Authorization request built by the library, with PKCE S256 and a nonce.
    let client = oidc_client(metadata, &app);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, csrf, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".to_owned()))
        .add_scope(Scope::new("profile".to_owned()))
        .set_pkce_challenge(challenge)
        .url();
    assert!(
        auth_url.as_str().starts_with(&server.url("/authorize?")),
        "{auth_url}"
    );

    // The user signs in and consents through the real HTML forms.
    let browser = Browser::new(&server.issuer);
    let location = browser
        .login_and_consent(auth_url.as_str(), "alice", PASSWORD)
        .await;
    let code = assert_authz_code(&location, &server.issuer, csrf.secret());

    // Code exchange, by the library (client_secret_basic).
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .expect("token endpoint is known")
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .unwrap_or_else(|e| panic!("code exchange failed: {e:?}"));
    assert_eq!(*tokens.token_type(), CoreTokenType::Bearer);
    let expires_in = tokens.expires_in().expect("expires_in").as_secs();
    assert!((1..=300).contains(&expires_in), "expires_in {expires_in}");
    let mut granted: Vec<String> = tokens
        .scopes()
        .expect("scope in the token response")
        .iter()
        .map(|s| s.to_string())
        .collect();
    granted.sort();
    assert_eq!(granted, vec!["email", "openid", "profile"]);
    let refresh_token = tokens.refresh_token().expect("a refresh token").clone();

    // ID token: signature, iss, aud, exp and nonce checked by the library.
    let id_token = tokens.id_token().expect("an ID token");
    let verifier = client.id_token_verifier();
    let claims = id_token
        .claims(&verifier, &nonce)
        .unwrap_or_else(|e| panic!("ID token rejected: {e:?}"));
    assert_eq!(
        id_token.signing_alg().unwrap(),
        &CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        "ID token alg"
    );
    assert_eq!(claims.issuer().as_str(), server.issuer);
    assert_eq!(
        claims
            .audiences()
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>(),
        vec![app.id.as_str()]
    );
    assert_eq!(
        claims.nonce().map(|n| n.secret().as_str()),
        Some(nonce.secret().as_str())
    );
    let auth_time = claims.auth_time().expect("auth_time in the ID token");
    let age = claims
        .issue_time()
        .signed_duration_since(auth_time)
        .num_seconds();
    assert!((0..60).contains(&age), "auth_time is {age} s before iat");
    let sub = claims.subject().clone();
    assert!(!sub.as_str().is_empty());
    let expected_at_hash = claims.access_token_hash().expect("at_hash in the ID token");
    let actual_at_hash = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&verifier).unwrap(),
    )
    .unwrap();
    assert_eq!(
        &actual_at_hash, expected_at_hash,
        "at_hash does not match the access token"
    );

    // The access token is an RFC 9068 JWT about the same user.
    let (at_header, at_claims) = decode_jwt(tokens.access_token().secret());
    assert_eq!(at_header["typ"], "at+jwt");
    assert_eq!(at_header["alg"], "EdDSA");
    assert!(
        at_header["kid"].is_string(),
        "access token header has no kid: {at_header}"
    );
    assert_eq!(at_claims["iss"], Value::String(server.issuer.clone()));
    assert_eq!(at_claims["sub"].as_str(), Some(sub.as_str()));
    assert_eq!(at_claims["client_id"].as_str(), Some(app.id.as_str()));
    assert_eq!(
        scope_set(at_claims["scope"].as_str().unwrap_or_default()),
        vec!["email", "openid", "profile"]
    );
    assert!(
        !at_claims["aud"].is_null(),
        "access token has no aud: {at_claims}"
    );
    assert!(
        at_claims["jti"].as_str().is_some_and(|j| !j.is_empty()),
        "access token has no jti"
    );
    let (iat, exp) = (
        at_claims["iat"].as_i64().unwrap(),
        at_claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 300, "access token lifetime");

    // Userinfo, by the library, bound to the ID token's subject.
    let info: CoreUserInfoClaims = client
        .user_info(tokens.access_token().clone(), Some(sub.clone()))
        .expect("userinfo endpoint is known")
        .request_async(&http)
        .await
        .unwrap_or_else(|e| panic!("userinfo failed: {e:?}"));
    assert_eq!(info.subject(), &sub);
    assert_eq!(info.email().map(|e| e.as_str()), Some("alice@example.com"));
    assert_eq!(info.preferred_username().map(|u| u.as_str()), Some("alice"));
    assert_eq!(
        info.name().and_then(|n| n.get(None)).map(|n| n.as_str()),
        Some("Alice Liddell")
    );
    // The subject is stable but need not be the internal user id; just record both.
    let _ = user_id;

    // Refresh, by the library: rotation, and the old refresh token is refused.
    let refreshed = client
        .exchange_refresh_token(&refresh_token)
        .expect("token endpoint is known")
        .request_async(&http)
        .await
        .unwrap_or_else(|e| panic!("refresh failed: {e:?}"));
    let new_refresh = refreshed
        .refresh_token()
        .expect("refresh rotates: a new refresh token")
        .clone();
    assert_ne!(
        new_refresh.secret(),
        refresh_token.secret(),
        "the refresh token was not rotated"
    );
    assert_ne!(
        refreshed.access_token().secret(),
        tokens.access_token().secret()
    );
    let (_, new_at_claims) = decode_jwt(refreshed.access_token().secret());
    assert_eq!(new_at_claims["sub"].as_str(), Some(sub.as_str()));
    let again = userinfo(&server.issuer, Some(refreshed.access_token().secret())).await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "userinfo with the refreshed access token: {}",
        again.body
    );
    let old = client
        .exchange_refresh_token(&refresh_token)
        .expect("token endpoint is known")
        .request_async(&http)
        .await;
    match old {
        Err(ref e) if is_invalid_grant(e) => {}
        Err(e) => panic!("old refresh token: expected invalid_grant, got {e:?}"),
        Ok(t) => panic!(
            "old refresh token was accepted: {:?}",
            t.access_token().secret()
        ),
    }

    // Client credentials, by the library, for a client allowed that grant.
    let service = server.create_client(
        "Service",
        &[
            "--grant-types",
            "authorization_code,refresh_token,client_credentials",
            "--scopes",
            "api:read api:write",
        ],
    );
    let service_client = oidc_client(discover(&http, &server.issuer).await, &service);
    let cc = service_client
        .exchange_client_credentials()
        .expect("token endpoint is known")
        .add_scope(Scope::new("api:read".to_owned()))
        .request_async(&http)
        .await
        .unwrap_or_else(|e| panic!("client credentials failed: {e:?}"));
    assert_eq!(*cc.token_type(), CoreTokenType::Bearer);
    assert!(
        cc.id_token().is_none(),
        "client credentials must not yield an ID token"
    );
    assert!(
        cc.refresh_token().is_none(),
        "client credentials should not yield a refresh token (RFC 6749 §4.4.3)"
    );
    let (cc_header, cc_claims) = decode_jwt(cc.access_token().secret());
    assert_eq!(cc_header["typ"], "at+jwt");
    assert_eq!(cc_header["alg"], "EdDSA");
    assert_eq!(cc_claims["client_id"].as_str(), Some(service.id.as_str()));
    assert_eq!(cc_claims["scope"].as_str(), Some("api:read"));
    assert_eq!(cc_claims["iss"], Value::String(server.issuer.clone()));
    // A client without the grant type is refused.
    let refused = token_request(
        &server.issuer,
        app.auth(),
        &[("grant_type", "client_credentials")],
    )
    .await;
    refused.assert_error(StatusCode::BAD_REQUEST, "unauthorized_client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secret_post_works_too() {
    let server = TestServer::start();
    server.create_user("alice", "alice@example.com", "Alice Liddell");
    let app = server.create_client("Post App", &[]);
    let browser = Browser::new(&server.issuer);
    let (code, req) = first_code(&server, &browser, &app, "alice").await;
    let secret = app.secret.as_deref().unwrap();
    let answer = token_request(
        &server.issuer,
        Auth::Post(&app.id, secret),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", &req.verifier),
        ],
    )
    .await;
    let json = answer.ok();
    assert!(json["id_token"].is_string(), "no ID token: {json}");
    assert!(
        json["refresh_token"].is_string(),
        "no refresh token: {json}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confidential_client_with_prior_consent_skips_consent_page() {
    let server = TestServer::start();
    server.create_user("alice", "alice@example.com", "Alice Liddell");
    let app = server.create_client("Remembered App", &[]);
    let browser = Browser::new(&server.issuer);

    let (code, req) = first_code(&server, &browser, &app, "alice").await;
    let first = redeem(&server.issuer, &app, &code, &req.verifier).await;
    let (_, first_claims) = decode_jwt(first.ok()["access_token"].as_str().unwrap());
    let first_sub = first_claims["sub"].clone();
    assert!(first_sub.is_string(), "no sub in {first_claims}");

    // Same browser (signed in), same client, same scopes: no login, no consent page.
    let second = authz_request(&server.issuer, &app.id, "openid profile email");
    let location = browser.expect_redirect_to_client(&second.url).await;
    let code2 = assert_authz_code(&location, &server.issuer, &second.state);
    assert_ne!(code2, code);
    let answer = redeem(&server.issuer, &app, &code2, &second.verifier).await;
    let json = answer.ok();
    let (_, claims) = decode_jwt(json["access_token"].as_str().unwrap());
    assert_eq!(
        claims["sub"], first_sub,
        "second authorization is for another subject"
    );
    // The ID token carries the second request's nonce.
    let (_, id_claims) = decode_jwt(json["id_token"].as_str().expect("ID token"));
    assert_eq!(id_claims["nonce"].as_str(), Some(second.nonce.as_str()));

    // prompt=consent still asks.
    let third = authz_request_with(
        &server.issuer,
        &app.id,
        "openid profile email",
        &[("prompt", "consent")],
    );
    let page = browser.visit(&third.url).await;
    assert!(
        page.is_consent_page(),
        "prompt=consent did not show the consent page: {} {}",
        page.status,
        page.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_client_is_asked_for_consent_every_time() {
    let server = TestServer::start();
    server.create_user("alice", "alice@example.com", "Alice Liddell");
    let app = server.create_client("Public App", &["--public"]);
    assert!(app.secret.is_none());
    let browser = Browser::new(&server.issuer);

    let (code, req) = first_code(&server, &browser, &app, "alice").await;
    // Public client: client_id only, no secret.
    let answer = redeem(&server.issuer, &app, &code, &req.verifier).await;
    let json = answer.ok();
    assert!(json["id_token"].is_string(), "no ID token: {json}");
    let (_, claims) = decode_jwt(json["access_token"].as_str().unwrap());
    assert_eq!(claims["client_id"].as_str(), Some(app.id.as_str()));

    // Signed in and consented before, yet the consent page comes again (no login page).
    let second = authz_request(&server.issuer, &app.id, "openid profile email");
    let page = browser.visit(&second.url).await;
    assert!(
        page.is_consent_page(),
        "a public client must be asked for consent every time; got {} Location {:?}\n{}",
        page.status,
        page.location().map(|u| u.to_string()),
        page.body
    );
    let location = browser.consent(&page, "allow").await;
    let code2 = assert_authz_code(&location, &server.issuer, &second.state);
    redeem(&server.issuer, &app, &code2, &second.verifier)
        .await
        .ok();

    // A public client's refresh works with client_id only, and rotates.
    let rt = json["refresh_token"]
        .as_str()
        .expect("refresh token for a public client")
        .to_owned();
    let refreshed = refresh(&server.issuer, &app, &rt).await;
    let new_rt = refreshed.ok()["refresh_token"]
        .as_str()
        .expect("rotated refresh token")
        .to_owned();
    assert_ne!(new_rt, rt);
}
