//! No secret in logs (REL-07): the server runs with every log level on through full
//! flows (sign-in, a failed sign-in, code, tokens, refresh, userinfo, introspection,
//! revocation, logout), and its log must contain none of the secrets that crossed it.
//! Nor may the database (TM-05): it keeps digests only.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_code_secret_or_password_reaches_the_log() {
    let server = TestServer::start_with(&[
        ("LATCHKEY_LOG", "trace"),
        ("LATCHKEY_REFRESH_GRACE_SECONDS", "0"),
    ]);
    server.create_user("alice", "alice@example.com", "Alice");
    let app = server.create_client(
        "App",
        &["--post-logout-redirect-uri", "https://app.example/bye"],
    );
    let secret = app.secret.clone().unwrap();
    let mut secrets: Vec<(String, String)> = vec![
        ("password".into(), PASSWORD.into()),
        ("client secret".into(), secret.clone()),
    ];

    // A failed sign-in with a different password, then the real flow.
    let browser = Browser::new(&server.issuer);
    let req = authz_request(&server.issuer, &app.id, "openid profile email");
    let page = browser.visit(&req.url).await;
    let wrong = "wrong-password-7f3a9c";
    let _ = browser.submit_login(&page, "alice", wrong).await;
    secrets.push(("wrong password".into(), wrong.into()));
    let (code, req) = first_code(&server, &browser, &app, "alice").await;
    secrets.push(("code".into(), code.clone()));
    secrets.push(("code_verifier".into(), req.verifier.clone()));
    let tokens = redeem(&server.issuer, &app, &code, &req.verifier)
        .await
        .ok()
        .clone();
    let at = tokens["access_token"].as_str().unwrap().to_owned();
    let rt = tokens["refresh_token"].as_str().unwrap().to_owned();
    let id = tokens["id_token"].as_str().unwrap().to_owned();
    // A reused code and a reused refresh token take the error paths that log events.
    let _ = redeem(&server.issuer, &app, &code, &req.verifier).await;
    let (code2, req2) = first_code(&server, &Browser::new(&server.issuer), &app, "alice").await;
    let second = redeem(&server.issuer, &app, &code2, &req2.verifier)
        .await
        .ok()
        .clone();
    let rt2 = second["refresh_token"].as_str().unwrap().to_owned();
    let rotated = refresh(&server.issuer, &app, &rt2).await.ok().clone();
    let _ = refresh(&server.issuer, &app, &rt2).await;
    let _ = userinfo(&server.issuer, Some(&at)).await;
    let http = backchannel();
    let _ = http
        .post(format!("{}/introspect", server.issuer))
        .basic_auth(&app.id, Some(&secret))
        .form(&[("token", at.as_str())])
        .send()
        .await
        .unwrap();
    let _ = http
        .post(format!("{}/revoke", server.issuer))
        .basic_auth(&app.id, Some("not-the-secret-e81b"))
        .form(&[("token", rt.as_str())])
        .send()
        .await
        .unwrap();
    let _ = http
        .post(format!("{}/revoke", server.issuer))
        .basic_auth(&app.id, Some(&secret))
        .form(&[("token", rt.as_str())])
        .send()
        .await
        .unwrap();
    let _ = browser
        .get(&format!(
            "{}/logout?id_token_hint={id}&post_logout_redirect_uri=https%3A%2F%2Fapp.example%2Fbye",
            server.issuer
        ))
        .await;
    for (name, v) in [
        ("access token", &at),
        ("refresh token", &rt),
        ("ID token", &id),
        ("second refresh token", &rt2),
        (
            "rotated access token",
            &rotated["access_token"].as_str().unwrap().to_owned(),
        ),
        (
            "rotated refresh token",
            &rotated["refresh_token"].as_str().unwrap().to_owned(),
        ),
    ] {
        secrets.push((name.into(), v.clone()));
    }
    // The secret part of a refresh token and the signature of a JWT on their own.
    secrets.push((
        "refresh secret".into(),
        rt.rsplit('.').next().unwrap().to_owned(),
    ));
    secrets.push((
        "access token signature".into(),
        at.rsplit('.').next().unwrap().to_owned(),
    ));

    // Give the log writer a moment, then read it all.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let log = server.log();
    assert!(
        log.len() > 2000,
        "trace logging produced output ({} bytes)",
        log.len()
    );
    assert!(
        log.contains("login_failed") && log.contains("code_reuse"),
        "the security events themselves are logged"
    );
    let leaked: Vec<&str> = secrets
        .iter()
        .filter(|(_, v)| log.contains(v.as_str()))
        .map(|(n, _)| n.as_str())
        .collect();
    assert!(leaked.is_empty(), "secrets in the log: {leaked:?}");

    // TM-05: nor in the database, main file or write-ahead log.
    let mut db = Vec::new();
    for f in ["latchkey.db", "latchkey.db-wal"] {
        db.extend(std::fs::read(server.data_dir.join(f)).unwrap_or_default());
    }
    assert!(db.len() > 10_000, "read the database ({} bytes)", db.len());
    let db = String::from_utf8_lossy(&db);
    assert!(
        db.contains(&app.id),
        "the scan sees stored values (the client id)"
    );
    let stored: Vec<&str> = secrets
        .iter()
        .filter(|(_, v)| db.contains(v.as_str()))
        .map(|(n, _)| n.as_str())
        .collect();
    assert!(
        stored.is_empty(),
        "secrets stored in the database: {stored:?}"
    );
}
