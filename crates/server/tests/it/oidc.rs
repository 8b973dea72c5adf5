//! OpenID Connect details the conformance suite checks: userinfo by POST (OIDC-40) and
//! the discovery document's members (DISC-02, DISC-03).

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_answers_post_with_the_token_in_the_header_or_the_body() {
    let server = TestServer::start();
    let user_id = server.create_user("alice", "alice@example.com", "Alice");
    let app = server.create_client("App", &[]);
    let (code, req) = first_code(&server, &Browser::new(&server.issuer), &app, "alice").await;
    let tokens = redeem(&server.issuer, &app, &code, &req.verifier)
        .await
        .ok()
        .clone();
    let at = tokens["access_token"].as_str().unwrap();
    let http = backchannel();
    let by_header = http
        .post(server.url("/userinfo"))
        .bearer_auth(at)
        .send()
        .await
        .unwrap();
    let by_body = http
        .post(server.url("/userinfo"))
        .form(&[("access_token", at)])
        .send()
        .await
        .unwrap();
    for (how, answer) in [("header", by_header), ("body", by_body)] {
        assert_eq!(
            answer.status(),
            StatusCode::OK,
            "POST with the token in the {how}"
        );
        let v: Value = answer.json().await.unwrap();
        assert_eq!(v["sub"], user_id.as_str(), "{how}: {v}");
        assert_eq!(v["email"], "alice@example.com", "{how}: {v}");
    }
    // A token in the query string is refused (RFC 6750 §2.3 is not offered: TM-18).
    let in_query = http
        .get(format!("{}?access_token={at}", server.url("/userinfo")))
        .send()
        .await
        .unwrap();
    assert_eq!(in_query.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_has_the_required_members_and_nothing_unknown() {
    let server = TestServer::start();
    let doc: Value = backchannel()
        .get(server.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let obj = doc.as_object().unwrap();
    // Registered names (OIDC Discovery §3, RFC 8414 §2, RFC 9207, RP-initiated logout).
    let known: BTreeSet<&str> = [
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "registration_endpoint",
        "scopes_supported",
        "response_types_supported",
        "response_modes_supported",
        "grant_types_supported",
        "acr_values_supported",
        "subject_types_supported",
        "id_token_signing_alg_values_supported",
        "token_endpoint_auth_methods_supported",
        "claims_supported",
        "claims_parameter_supported",
        "request_parameter_supported",
        "request_uri_parameter_supported",
        "code_challenge_methods_supported",
        "revocation_endpoint",
        "introspection_endpoint",
        "end_session_endpoint",
        "revocation_endpoint_auth_methods_supported",
        "introspection_endpoint_auth_methods_supported",
        "prompt_values_supported",
        "authorization_response_iss_parameter_supported",
    ]
    .into_iter()
    .collect();
    let unknown: Vec<&String> = obj.keys().filter(|k| !known.contains(k.as_str())).collect();
    assert!(
        unknown.is_empty(),
        "unregistered metadata members: {unknown:?}"
    );
    for required in [
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "response_types_supported",
        "subject_types_supported",
        "id_token_signing_alg_values_supported",
    ] {
        assert!(
            obj.contains_key(required),
            "DISC-02: {required} is required"
        );
    }
    assert_eq!(doc["issuer"], server.issuer.as_str());
    let algs: Vec<&str> = doc["id_token_signing_alg_values_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        algs.contains(&"RS256") && !algs.iter().any(|a| a.eq_ignore_ascii_case("none")),
        "{algs:?}"
    );
    assert_eq!(
        doc["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert!(
        doc["scopes_supported"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "openid")
    );
    // Every endpoint is under the issuer (so https exactly when the issuer is).
    for (k, v) in obj {
        if k.ends_with("_endpoint") || k == "jwks_uri" {
            assert!(v.as_str().unwrap().starts_with(&server.issuer), "{k} = {v}");
        }
    }
    // The JWKS: distinct kids, public members only.
    let jwks: Value = backchannel()
        .get(doc["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    let kids: BTreeSet<&str> = keys.iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(kids.len(), keys.len(), "kids are distinct");
    for k in keys {
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(k.get(private).is_none(), "JWKS leaks {private}: {k}");
        }
    }
    let oauth: Value = backchannel()
        .get(server.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(oauth, doc, "RFC 8414 metadata is the same document");
}
