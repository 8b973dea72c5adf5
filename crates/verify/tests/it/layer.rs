//! The axum layer and extractor: one line per route, RFC 6750 answers.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::{get, post};
use latchkey_core::jose::Alg;
use latchkey_verify::{Policy, Verified, Verifier};
use serde_json::json;
use tower::ServiceExt;

use crate::support::{self, NOW, STATIC_ISSUER, Signer};

async fn whoami(token: Verified) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::to_value(&*token.0).unwrap_or_default())
}

fn app(v: &Verifier) -> Router {
    Router::new()
        .route(
            "/read",
            get(async || "read").layer(v.require(Policy::scope("api:read"))),
        )
        .route(
            "/write",
            post(async || "written").layer(v.require(Policy::scope("api:write"))),
        )
        .route("/whoami", get(whoami).layer(v.require(Policy::any())))
        .route(
            "/fresh",
            get(async || "fresh").layer(v.require(Policy::any().max_age(5))),
        )
        .route("/forgot-the-layer", get(whoami))
}

async fn call(
    app: &Router,
    method: &str,
    path: &str,
    auth: &[&str],
) -> (StatusCode, Option<String>, String) {
    let mut req = Request::builder().method(method).uri(path);
    for a in auth {
        req = req.header(header::AUTHORIZATION, *a);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let challenge = res
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, challenge, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn routes_answer_rfc6750() {
    let k = Signer::new(Alg::EdDSA, "k");
    let v = support::static_verifier(&[&k]).await;
    let app = app(&v);
    let token = k.token(&support::claims(STATIC_ISSUER));
    let bearer = format!("Bearer {token}");

    let (s, c, body) = call(&app, "GET", "/read", &[&bearer]).await;
    assert_eq!((s, c, body.as_str()), (StatusCode::OK, None, "read"));

    let (s, c, _) = call(&app, "GET", "/read", &[]).await;
    assert_eq!(
        (s, c.as_deref()),
        (StatusCode::UNAUTHORIZED, Some("Bearer"))
    );

    let (s, c, _) = call(&app, "POST", "/write", &[&bearer]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        c.as_deref(),
        Some(
            "Bearer error=\"insufficient_scope\", error_description=\"token lacks the scope \
             this resource requires\", scope=\"api:write\""
        )
    );

    let mut expired = support::claims(STATIC_ISSUER);
    expired["exp"] = json!(NOW - 100);
    let (s, c, body) = call(
        &app,
        "GET",
        "/read",
        &[&format!("Bearer {}", k.token(&expired))],
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        c.as_deref(),
        Some("Bearer error=\"invalid_token\", error_description=\"token has expired\"")
    );
    assert_eq!(body, "token has expired");

    let (s, c, _) = call(&app, "GET", "/fresh", &[&bearer]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(c.unwrap().contains("token is too old for this resource"));

    let (s, c, _) = call(&app, "GET", "/read", &[&bearer, &bearer]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(c.unwrap().starts_with("Bearer error=\"invalid_request\""));

    let (s, _, body) = call(&app, "GET", "/whoami", &[&bearer]).await;
    assert_eq!(s, StatusCode::OK);
    let who: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(who["subject"], "u-1");
    assert_eq!(who["client_id"], "c-1");
    assert_eq!(who["scopes"], json!(["openid", "api:read"]));
    assert_eq!(who["grant_id"], "g-1");
    assert_eq!(who["expires_at"], NOW + 290);

    // A route that extracts `Verified` without the layer fails closed.
    let (s, _, _) = call(&app, "GET", "/forgot-the-layer", &[&bearer]).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
}
