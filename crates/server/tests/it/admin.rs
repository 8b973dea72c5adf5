//! Admin commands run against the data directory of a running server, which must see
//! their effect at once, without a restart.

use reqwest::StatusCode;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_created_while_serving_works_at_once() {
    let server = TestServer::start();
    server.create_user("alice", "alice@example.com", "Alice Liddell");
    let browser = Browser::new(&server.issuer);

    // Warm the server up with one client, so any cache of clients is populated.
    let first = server.create_client("First", &[]);
    let (code, req) = first_code(&server, &browser, &first, "alice").await;
    redeem(&server.issuer, &first, &code, &req.verifier)
        .await
        .ok();

    // A client created now, while the server runs, is usable right away.
    let second = server.create_client("Second", &[]);
    assert_ne!(second.id, first.id);
    let req = authz_request(&server.issuer, &second.id, "openid profile email");
    let page = browser.visit(&req.url).await;
    assert!(
        page.is_consent_page(),
        "new client: expected the consent page (already signed in), got {} {}",
        page.status,
        page.body
    );
    let location = browser.consent(&page, "allow").await;
    let code = assert_authz_code(&location, &server.issuer, &req.state);
    let json = redeem(&server.issuer, &second, &code, &req.verifier)
        .await
        .ok()
        .clone();
    let (_, claims) = decode_jwt(json["access_token"].as_str().unwrap());
    assert_eq!(claims["client_id"].as_str(), Some(second.id.as_str()));

    // A user created while serving can sign in at once too.
    server.create_user("bob", "bob@example.com", "Bob");
    let bob = Browser::new(&server.issuer);
    let (code, req) = first_code(&server, &bob, &second, "bob").await;
    let json = redeem(&server.issuer, &second, &code, &req.verifier)
        .await
        .ok()
        .clone();
    let info = userinfo(&server.issuer, json["access_token"].as_str()).await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.body);
    let info: serde_json::Value = serde_json::from_str(&info.body).unwrap();
    assert_eq!(info["email"].as_str(), Some("bob@example.com"));
    assert_eq!(info["preferred_username"].as_str(), Some("bob"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_deleted_while_serving_is_refused() {
    let server = TestServer::start();
    server.create_user("alice", "alice@example.com", "Alice Liddell");
    let app = server.create_client("Doomed", &[]);
    let browser = Browser::new(&server.issuer);

    // The client works before the deletion (and is now known to the server).
    let (code, req) = first_code(&server, &browser, &app, "alice").await;
    let before = redeem(&server.issuer, &app, &code, &req.verifier).await;
    let refresh_token = before.ok()["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();

    server.cli_ok(&["client", "delete"], &[&app.id], None);

    // Servers see the deletion within one check of the clients version.
    let req = authz_request(&server.issuer, &app.id, "openid profile email");
    eventually(
        "the deleted client's authorization request is refused",
        || async { browser.get(&req.url).await.status == StatusCode::BAD_REQUEST },
    )
    .await;
    let page = browser.get(&req.url).await;
    assert_error_page(&page);

    // Nor can it authenticate at the token endpoint any more.
    let answer = refresh(&server.issuer, &app, &refresh_token).await;
    answer.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");

    // Deleting an unknown client is an error, not a silent success.
    let out = server.cli(&["client", "delete"], &["no-such-client"], None);
    assert!(
        !out.status.success(),
        "deleting an unknown client succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_create_rejects_duplicate_username() {
    let server = TestServer::start();
    server.create_user("alice", "alice@example.com", "Alice Liddell");
    let out = server.cli(
        &["user", "create"],
        &["--username", "alice", "--password-stdin", "--json"],
        Some("another password\n"),
    );
    assert!(
        !out.status.success(),
        "a second user named alice was created: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// TM-14: a client secret can be rotated while the server runs; the old one stops
/// within one check of the clients version, and with --revoke-grants so do the client's grants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secret_rotation_while_serving() {
    let server = TestServer::start();
    server.create_user("alice", "alice@example.com", "Alice");
    let app = server.create_client(
        "App",
        &[
            "--grant-types",
            "authorization_code,refresh_token,client_credentials",
        ],
    );
    let (code, req) = first_code(&server, &Browser::new(&server.issuer), &app, "alice").await;
    let tokens = redeem(&server.issuer, &app, &code, &req.verifier)
        .await
        .ok()
        .clone();
    let rt = tokens["refresh_token"].as_str().unwrap().to_owned();

    let out = server.cli_ok(&["client", "rotate-secret"], &[&app.id, "--json"], None);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let rotated = TestClient {
        id: app.id.clone(),
        secret: Some(v["client_secret"].as_str().unwrap().to_owned()),
    };
    assert_ne!(rotated.secret, app.secret);
    eventually("the old secret is refused", || async {
        token_request(
            &server.issuer,
            app.auth(),
            &[("grant_type", "client_credentials")],
        )
        .await
        .status
            == reqwest::StatusCode::UNAUTHORIZED
    })
    .await;
    token_request(
        &server.issuer,
        app.auth(),
        &[("grant_type", "client_credentials")],
    )
    .await
    .assert_error(reqwest::StatusCode::UNAUTHORIZED, "invalid_client");
    let rt = refresh(&server.issuer, &rotated, &rt).await.ok()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let out = server.cli_ok(
        &["client", "rotate-secret"],
        &[&app.id, "--revoke-grants", "--json"],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["revoked_grants"], 1, "{v}");
    let newest = TestClient {
        id: app.id.clone(),
        secret: Some(v["client_secret"].as_str().unwrap().to_owned()),
    };
    eventually("the newest secret is accepted", || async {
        token_request(
            &server.issuer,
            newest.auth(),
            &[("grant_type", "client_credentials")],
        )
        .await
        .status
            == reqwest::StatusCode::OK
    })
    .await;
    refresh(&server.issuer, &newest, &rt)
        .await
        .assert_error(reqwest::StatusCode::BAD_REQUEST, "invalid_grant");
    let public = server.create_client("Native", &["--public"]);
    assert!(
        !server
            .cli(&["client", "rotate-secret"], &[&public.id], None)
            .status
            .success(),
        "a public client has no secret"
    );
}
