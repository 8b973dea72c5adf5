//! What must fail, and how: each case checks the exact error, where it is delivered
//! (error page, redirect to the client, or JSON), and the headers that go with it.

use reqwest::StatusCode;
use url::Url;

use crate::support::*;

/// A server with user `alice` and one confidential client.
fn setup() -> (TestServer, TestClient) {
    let server = TestServer::start();
    server.create_user("alice", "alice@example.com", "Alice Liddell");
    let app = server.create_client("App", &[]);
    (server, app)
}

/// The standard valid authorization parameters for `client_id`, minus `drop`, with
/// `set` overriding or adding values.
fn params_with<'a>(
    client_id: &'a str,
    challenge: &'a str,
    drop: &[&str],
    set: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut p = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT_URI),
        ("scope", "openid profile email"),
        ("state", "st-123"),
        ("nonce", "n-456"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ];
    p.retain(|(k, _)| !drop.contains(k));
    for (k, v) in set {
        match p.iter_mut().find(|(pk, _)| pk == k) {
            Some(slot) => slot.1 = v,
            None => p.push((k, v)),
        }
    }
    p
}

/// Sends an authorization request (in a fresh browser unless one is given) and
/// expects an immediate redirect to the client with `error`, `state` and `iss`.
async fn expect_authz_error(
    server: &TestServer,
    browser: &Browser,
    params: &[(&str, &str)],
    error: &str,
) {
    let url = authorize_url(&server.issuer, params);
    let page = browser.get(&url).await;
    assert_eq!(
        page.status,
        StatusCode::SEE_OTHER,
        "GET {url}: expected 303 with error={error}, got {} {:?}\n{}",
        page.status,
        page.headers.get("location"),
        page.body
    );
    let location: Url = page.location().expect("Location");
    let state = params
        .iter()
        .find(|(k, _)| *k == "state")
        .map(|(_, v)| *v)
        .unwrap_or_default();
    assert_authz_error(&location, &server.issuer, state, error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pkce_verifier_is_invalid_grant() {
    let (server, app) = setup();
    let browser = Browser::new(&server.issuer);
    let (code, _req) = first_code(&server, &browser, &app, "alice").await;
    let (_, other_verifier) = pkce();
    let answer = redeem(&server.issuer, &app, &code, &other_verifier).await;
    answer.assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_pkce_verifier_is_refused() {
    let (server, app) = setup();
    let browser = Browser::new(&server.issuer);
    let (code, _req) = first_code(&server, &browser, &app, "alice").await;
    let answer = token_request(
        &server.issuer,
        app.auth(),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
        ],
    )
    .await;
    // RFC 6749 §5.2 allows either reading; the core treats it as a failed grant check.
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.json);
    let err = answer.json["error"].as_str().unwrap_or_default();
    assert!(
        err == "invalid_grant" || err == "invalid_request",
        "error {err}"
    );
    answer.assert_no_store();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_code_is_invalid_grant_and_revokes_the_first_grant() {
    let (server, app) = setup();
    let browser = Browser::new(&server.issuer);
    let (code, req) = first_code(&server, &browser, &app, "alice").await;

    let first = redeem(&server.issuer, &app, &code, &req.verifier).await;
    let json = first.ok().clone();
    let access_token = json["access_token"].as_str().unwrap().to_owned();
    let refresh_token = json["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();
    let info = userinfo(&server.issuer, Some(&access_token)).await;
    assert_eq!(
        info.status,
        StatusCode::OK,
        "userinfo before the reuse: {}",
        info.body
    );

    let second = redeem(&server.issuer, &app, &code, &req.verifier).await;
    second.assert_error(StatusCode::BAD_REQUEST, "invalid_grant");

    // The grant the first redemption made is revoked.
    let after = refresh(&server.issuer, &app, &refresh_token).await;
    after.assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    let info = userinfo(&server.issuer, Some(&access_token)).await;
    assert_eq!(
        info.status,
        StatusCode::UNAUTHORIZED,
        "userinfo with the revoked grant's access token: {}",
        info.body
    );
    let www = info.www_authenticate.unwrap_or_default();
    assert!(www.starts_with("Bearer"), "WWW-Authenticate {www:?}");
    assert!(
        www.contains("error=\"invalid_token\""),
        "WWW-Authenticate {www:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_refresh_token_revokes_the_grant() {
    let server = TestServer::start_with(&[("LATCHKEY_REFRESH_GRACE_SECONDS", "0")]);
    server.create_user("alice", "alice@example.com", "Alice Liddell");
    let app = server.create_client("App", &[]);
    let browser = Browser::new(&server.issuer);
    let (code, req) = first_code(&server, &browser, &app, "alice").await;
    let rt1 = redeem(&server.issuer, &app, &code, &req.verifier)
        .await
        .ok()["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();

    let second = refresh(&server.issuer, &app, &rt1).await;
    let rt2 = second.ok()["refresh_token"]
        .as_str()
        .expect("rotated refresh token")
        .to_owned();
    assert_ne!(rt1, rt2);

    // The superseded token is reuse: refused, and the whole grant is revoked.
    refresh(&server.issuer, &app, &rt1)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    refresh(&server.issuer, &app, &rt2)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_or_missing_redirect_uri_shows_error_page() {
    let (server, app) = setup();
    let browser = Browser::new(&server.issuer);
    let (challenge, _) = pkce();
    let evil = authorize_url(
        &server.issuer,
        &params_with(
            &app.id,
            &challenge,
            &[],
            &[("redirect_uri", "https://evil.example/cb")],
        ),
    );
    assert_error_page(&browser.get(&evil).await);
    // A registered URI with something appended is not the registered URI.
    let suffixed = authorize_url(
        &server.issuer,
        &params_with(
            &app.id,
            &challenge,
            &[],
            &[("redirect_uri", "https://app.example/cb/../evil")],
        ),
    );
    assert_error_page(&browser.get(&suffixed).await);
    let missing = authorize_url(
        &server.issuer,
        &params_with(&app.id, &challenge, &["redirect_uri"], &[]),
    );
    assert_error_page(&browser.get(&missing).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_client_shows_error_page() {
    let (server, _app) = setup();
    let browser = Browser::new(&server.issuer);
    let (challenge, _) = pkce();
    let url = authorize_url(
        &server.issuer,
        &params_with("no-such-client", &challenge, &[], &[]),
    );
    assert_error_page(&browser.get(&url).await);
    let url = authorize_url(
        &server.issuer,
        &params_with("", &challenge, &["client_id"], &[]),
    );
    assert_error_page(&browser.get(&url).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_client_secret_is_invalid_client() {
    let (server, app) = setup();
    let browser = Browser::new(&server.issuer);
    let (code, req) = first_code(&server, &browser, &app, "alice").await;
    let params = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", req.verifier.as_str()),
    ];
    let wrong = "x".repeat(43);

    let basic = token_request(&server.issuer, Auth::Basic(&app.id, &wrong), &params).await;
    basic.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    let www = basic.header("www-authenticate").unwrap_or_default();
    assert!(
        www.starts_with("Basic"),
        "WWW-Authenticate after failed Basic auth: {www:?}"
    );

    let post = token_request(&server.issuer, Auth::Post(&app.id, &wrong), &params).await;
    assert!(
        post.status == StatusCode::UNAUTHORIZED || post.status == StatusCode::BAD_REQUEST,
        "client_secret_post with a wrong secret: {}",
        post.status
    );
    assert_eq!(
        post.json["error"].as_str(),
        Some("invalid_client"),
        "{}",
        post.json
    );
    post.assert_no_store();

    // A confidential client cannot pretend to be public.
    let none = token_request(&server.issuer, Auth::PublicId(&app.id), &params).await;
    assert!(
        none.status == StatusCode::UNAUTHORIZED || none.status == StatusCode::BAD_REQUEST,
        "{}",
        none.status
    );
    assert_eq!(
        none.json["error"].as_str(),
        Some("invalid_client"),
        "{}",
        none.json
    );

    // Failed client authentication did not consume the code.
    redeem(&server.issuer, &app, &code, &req.verifier)
        .await
        .ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_pkce_redirects_with_invalid_request() {
    let (server, app) = setup();
    let browser = Browser::new(&server.issuer);
    let p = params_with(
        &app.id,
        "",
        &["code_challenge", "code_challenge_method"],
        &[],
    );
    expect_authz_error(&server, &browser, &p, "invalid_request").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_pkce_method_is_invalid_request() {
    let (server, app) = setup();
    let browser = Browser::new(&server.issuer);
    let verifier = "a".repeat(43);
    let p = params_with(
        &app.id,
        &verifier,
        &[],
        &[("code_challenge_method", "plain")],
    );
    expect_authz_error(&server, &browser, &p, "invalid_request").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_type_token_is_unsupported_response_type() {
    let (server, app) = setup();
    let browser = Browser::new(&server.issuer);
    let (challenge, _) = pkce();
    let p = params_with(&app.id, &challenge, &[], &[("response_type", "token")]);
    expect_authz_error(&server, &browser, &p, "unsupported_response_type").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_none_without_session_is_login_required() {
    let (server, app) = setup();
    let browser = Browser::new(&server.issuer);
    let (challenge, _) = pkce();
    let p = params_with(&app.id, &challenge, &[], &[("prompt", "none")]);
    expect_authz_error(&server, &browser, &p, "login_required").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_consent_is_access_denied() {
    let (server, app) = setup();
    let browser = Browser::new(&server.issuer);
    let req = authz_request(&server.issuer, &app.id, "openid profile email");
    let page = browser.visit(&req.url).await;
    assert!(
        page.is_login_page(),
        "expected the login page: {} {}",
        page.status,
        page.body
    );
    let page = browser.login(&page, "alice", PASSWORD).await;
    assert!(
        page.is_consent_page(),
        "expected the consent page: {} {}",
        page.status,
        page.body
    );
    let location = browser.consent(&page, "deny").await;
    assert_authz_error(&location, &server.issuer, &req.state, "access_denied");

    // Denying remembered nothing: the next request asks again.
    let again = authz_request(&server.issuer, &app.id, "openid profile email");
    let page = browser.visit(&again.url).await;
    assert!(
        page.is_consent_page(),
        "after a denial the consent page must come again: {} {}",
        page.status,
        page.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_shows_login_form_again() {
    let (server, app) = setup();
    let browser = Browser::new(&server.issuer);
    let req = authz_request(&server.issuer, &app.id, "openid profile email");
    let page = browser.visit(&req.url).await;
    assert!(
        page.is_login_page(),
        "expected the login page: {} {}",
        page.status,
        page.body
    );
    let answer = browser
        .submit_login(&page, "alice", "not the password")
        .await;
    assert!(
        answer.status == StatusCode::OK || answer.status == StatusCode::UNAUTHORIZED,
        "wrong password: status {}",
        answer.status
    );
    assert!(
        answer.headers.get("location").is_none(),
        "wrong password redirected"
    );
    assert!(
        answer.body.contains("Wrong username or password"),
        "no message: {}",
        answer.body
    );
    assert!(
        answer.form("/login").is_some(),
        "the login form is not shown again: {}",
        answer.body
    );
    // An unknown user gets the same answer.
    let unknown = browser.submit_login(&page, "mallory", PASSWORD).await;
    assert_eq!(unknown.status, answer.status);
    assert!(
        unknown.body.contains("Wrong username or password"),
        "{}",
        unknown.body
    );
    // And no session came of it: prompt=none still needs a login.
    let (challenge, _) = pkce();
    let p = params_with(&app.id, &challenge, &[], &[("prompt", "none")]);
    expect_authz_error(&server, &browser, &p, "login_required").await;
    // The form shown again works with the right password.
    let page = browser.login(&answer, "alice", PASSWORD).await;
    assert!(
        page.is_consent_page(),
        "expected the consent page: {} {}",
        page.status,
        page.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_without_or_with_bad_token_is_401() {
    let (server, _app) = setup();
    let none = userinfo(&server.issuer, None).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{}", none.body);
    let www = none.www_authenticate.unwrap_or_default();
    assert!(www.starts_with("Bearer"), "WWW-Authenticate {www:?}");

    let bad = userinfo(&server.issuer, Some("not.a.token")).await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED, "{}", bad.body);
    let www = bad.www_authenticate.unwrap_or_default();
    assert!(www.starts_with("Bearer"), "WWW-Authenticate {www:?}");
    assert!(
        www.contains("error=\"invalid_token\""),
        "WWW-Authenticate {www:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_access_token_is_rejected_by_userinfo() {
    let (server, app) = setup();
    let browser = Browser::new(&server.issuer);
    let (code, req) = first_code(&server, &browser, &app, "alice").await;
    let at = redeem(&server.issuer, &app, &code, &req.verifier)
        .await
        .ok()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // Same header and claims, signature of another token: must not verify.
    let parts: Vec<&str> = at.split('.').collect();
    let mut sig = parts[2].as_bytes().to_vec();
    sig[0] = if sig[0] == b'A' { b'B' } else { b'A' };
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        String::from_utf8(sig).unwrap()
    );
    let answer = userinfo(&server.issuer, Some(&forged)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    assert!(
        answer
            .www_authenticate
            .unwrap_or_default()
            .contains("invalid_token")
    );
    // alg none.
    let none_header = base64_url(br#"{"alg":"none","typ":"at+jwt"}"#);
    let unsigned = format!("{none_header}.{}.", parts[1]);
    let answer = userinfo(&server.issuer, Some(&unsigned)).await;
    assert_eq!(
        answer.status,
        StatusCode::UNAUTHORIZED,
        "alg none accepted: {}",
        answer.body
    );
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_grant_is_unsupported_grant_type() {
    let (server, app) = setup();
    let answer = token_request(
        &server.issuer,
        app.auth(),
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", PASSWORD),
        ],
    )
    .await;
    answer.assert_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    let implicit = token_request(&server.issuer, app.auth(), &[("grant_type", "implicit")]).await;
    implicit.assert_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_code_and_refresh_token_are_invalid_grant() {
    let (server, app) = setup();
    let (_, verifier) = pkce();
    let answer = redeem(&server.issuer, &app, &"A".repeat(43), &verifier).await;
    answer.assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    let answer = refresh(&server.issuer, &app, "not-a-refresh-token").await;
    answer.assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
}
