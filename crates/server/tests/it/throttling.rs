//! Online guessing (TM-06): sign-ins are limited per address, and a forged
//! `X-Forwarded-For` from a client that is not a trusted proxy changes nothing
//! (RFC 9700 §4.13).

use reqwest::StatusCode;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_attempts_are_limited_per_address() {
    let server = TestServer::start();
    let app = server.create_client("App", &[]);
    let browser = Browser::new(&server.issuer);
    let req = authz_request(&server.issuer, &app.id, "openid");
    let page = browser.visit(&req.url).await;
    let form = page.form("/login").expect("login form");
    let mut statuses = Vec::new();
    for i in 0..40 {
        // Distinct unknown usernames: only the per-address limit applies, not the
        // per-account slowdown.
        let mut fields = form.hidden.clone();
        fields.push(("username".into(), format!("nobody-{i}")));
        fields.push(("password".into(), "wrong".into()));
        let forged = format!("198.51.100.{i}");
        statuses.push(
            browser
                .post_form_with_header(&server.url("/login"), &fields, ("x-forwarded-for", &forged))
                .await,
        );
    }
    assert!(
        statuses[..30]
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED),
        "30 attempts are allowed: {statuses:?}"
    );
    // Then 429, whatever X-Forwarded-For says. The bucket refills one attempt per 2 s,
    // so a slow machine may see one or two more go through.
    let refused = statuses[30..]
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(refused >= 6, "the limit holds: {statuses:?}");
}
