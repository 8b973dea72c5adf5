//! Signing keys end to end: the master key guards start-up, rotation by schedule and
//! by hand keeps every client working, and a revoked key stops verifying.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use openidconnect::core::{CoreClient, CoreIdToken, CoreProviderMetadata};
use openidconnect::{ClientId, ClientSecret, IssuerUrl, Nonce, RedirectUrl};
use serde_json::Value;

use crate::support::*;

fn library_http() -> openidconnect::reqwest::Client {
    openidconnect::reqwest::ClientBuilder::new()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .expect("build the openidconnect HTTP client")
}

/// Verifies an ID token the way a relying party does: discovery, JWKS, signature,
/// issuer, audience, nonce.
async fn verify_id_token(
    issuer: &str,
    client: &TestClient,
    id_token: &str,
    nonce: Option<&str>,
) -> Result<String, String> {
    let http = library_http();
    let metadata = CoreProviderMetadata::discover_async(
        IssuerUrl::new(issuer.to_owned()).expect("issuer"),
        &http,
    )
    .await
    .map_err(|e| format!("discovery: {e:?}"))?;
    let oidc = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(client.id.clone()),
        client.secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT_URI.to_owned()).expect("redirect"));
    let token: CoreIdToken = id_token.parse().map_err(|e| format!("parse: {e:?}"))?;
    let verifier = oidc.id_token_verifier();
    let claims = match nonce {
        Some(n) => token.claims(&verifier, &Nonce::new(n.to_owned())),
        None => token.claims(&verifier, |_: Option<&Nonce>| Ok(())),
    }
    .map_err(|e| format!("claims: {e:?}"))?;
    Ok(claims.subject().to_string())
}

async fn jwks_kids(issuer: &str) -> Vec<String> {
    let body: Value = backchannel()
        .get(format!("{issuer}/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

fn kid_of(jwt: &str) -> String {
    decode_jwt(jwt).0["kid"].as_str().unwrap().to_owned()
}

fn keys_list(server: &TestServer) -> Vec<Value> {
    let out = server.cli_ok(&["keys", "list"], &["--json"], None);
    serde_json::from_str::<Value>(out.trim())
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Runs `latchkey serve` on `data_dir` expecting it to refuse to start.
fn serve_fails(data_dir: &std::path::Path, env: &[(&str, &str)]) -> String {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env_remove("LATCHKEY_MASTER_KEY")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            assert!(
                !status.success(),
                "serve started with a bad master key: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            return String::from_utf8_lossy(&out.stderr).into_owned();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve with a bad master key neither started nor failed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_master_key_stops_start_up_and_changes_nothing() {
    let server = TestServer::start();
    let master_file = server.data_dir.join("master.key");
    let master =
        std::fs::read_to_string(&master_file).expect("the embedded store generates master.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&master_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "master.key must be private");
    }
    let before = keys_list(&server);
    assert_eq!(before.len(), 3, "one key per algorithm: {before:?}");

    // A wrong key given in the environment.
    let wrong = "ab".repeat(32);
    let err = serve_fails(&server.data_dir, &[("LATCHKEY_MASTER_KEY", &wrong)]);
    assert!(
        err.contains("master key"),
        "the error names the problem: {err}"
    );
    // A malformed one.
    let err = serve_fails(&server.data_dir, &[("LATCHKEY_MASTER_KEY", "not-a-key")]);
    assert!(err.contains("LATCHKEY_MASTER_KEY"), "{err}");
    // The file gone while sealed keys exist: never a silent new key.
    let aside = server.data_dir.join("master.key.aside");
    std::fs::rename(&master_file, &aside).unwrap();
    let err = serve_fails(&server.data_dir, &[]);
    assert!(err.contains("missing"), "{err}");
    assert!(!master_file.exists(), "no new master key was generated");
    std::fs::rename(&aside, &master_file).unwrap();

    assert_eq!(keys_list(&server), before, "the keys are unchanged");
    assert_eq!(std::fs::read_to_string(&master_file).unwrap(), master);
    // And the server that was running with the right key still works.
    assert_eq!(jwks_kids(&server.issuer).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_rotation_keeps_the_openidconnect_client_working() {
    let server = TestServer::start_with(&[("LATCHKEY_KEY_CHECK_INTERVAL", "1")]);
    server.create_user("alice", "alice@example.com", "Alice");
    let app = server.create_client("App", &[]);
    let browser = Browser::new(&server.issuer);
    let (code, req) = first_code(&server, &browser, &app, "alice").await;
    let first = redeem(&server.issuer, &app, &code, &req.verifier).await;
    let first = first.ok().clone();
    let old_id = first["id_token"].as_str().unwrap().to_owned();
    let old_at = first["access_token"].as_str().unwrap().to_owned();
    let old_kids = (kid_of(&old_id), kid_of(&old_at));
    let sub = verify_id_token(&server.issuer, &app, &old_id, Some(&req.nonce))
        .await
        .unwrap();

    let out = server.cli_ok(&["keys", "rotate"], &["--now"], None);
    assert!(out.contains("signs now"), "{out}");

    // Within a key check interval the server signs with the new keys.
    let mut rt = first["refresh_token"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    let fresh = loop {
        let answer = refresh(&server.issuer, &app, &rt).await;
        let body = answer.ok().clone();
        rt = body["refresh_token"].as_str().unwrap().to_owned();
        let id = body["id_token"].as_str().unwrap().to_owned();
        if kid_of(&id) != old_kids.0 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the server still signs with the old key"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let new_id = fresh["id_token"].as_str().unwrap();
    let new_at = fresh["access_token"].as_str().unwrap();
    assert_ne!(
        kid_of(new_at),
        old_kids.1,
        "access tokens moved to the new key too"
    );
    let kids = jwks_kids(&server.issuer).await;
    assert!(
        kids.contains(&old_kids.0) && kids.contains(&kid_of(new_id)),
        "both keys are published: {kids:?}"
    );

    // A relying party validates both the new ID token and the one from before.
    assert_eq!(
        verify_id_token(&server.issuer, &app, new_id, None)
            .await
            .unwrap(),
        sub
    );
    assert_eq!(
        verify_id_token(&server.issuer, &app, &old_id, Some(&req.nonce))
            .await
            .unwrap(),
        sub
    );
    // Access tokens signed by either key are accepted.
    assert_eq!(
        userinfo(&server.issuer, Some(&old_at)).await.status,
        reqwest::StatusCode::OK
    );
    assert_eq!(
        userinfo(&server.issuer, Some(new_at)).await.status,
        reqwest::StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_rotation_publishes_a_key_before_it_signs() {
    // Short settings: prepublish = max-age 1 + check 1 = 2 s; rotate every 6 s.
    let server = TestServer::start_with(&[
        ("LATCHKEY_KEY_ROTATION_INTERVAL", "6"),
        ("LATCHKEY_JWKS_MAX_AGE", "1"),
        ("LATCHKEY_KEY_CHECK_INTERVAL", "1"),
        ("LATCHKEY_ACCESS_TOKEN_TTL", "3"),
        ("LATCHKEY_ID_TOKEN_TTL", "3"),
    ]);
    let api = server.create_client(
        "Batch",
        &["--grant-types", "client_credentials", "--scopes", "api"],
    );
    let start = Instant::now();
    let mut first_published: HashMap<String, Duration> = HashMap::new();
    let mut first_signing: HashMap<String, Duration> = HashMap::new();
    let mut early_token = None;
    while start.elapsed() < Duration::from_secs(11) {
        for kid in jwks_kids(&server.issuer).await {
            first_published.entry(kid).or_insert(start.elapsed());
        }
        let answer = token_request(
            &server.issuer,
            api.auth(),
            &[("grant_type", "client_credentials")],
        )
        .await;
        let at = answer.ok()["access_token"].as_str().unwrap().to_owned();
        first_signing.entry(kid_of(&at)).or_insert(start.elapsed());
        early_token.get_or_insert(at);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        first_signing.len() >= 2,
        "a scheduled rotation happened: {first_signing:?}"
    );
    let initial = kid_of(early_token.as_ref().unwrap());
    for (kid, signed) in &first_signing {
        if *kid == initial {
            continue;
        }
        let published = first_published
            .get(kid)
            .unwrap_or_else(|| panic!("{kid} signed but never appeared in the JWKS"));
        // Published at least one JWKS max-age (1 s) before it signed; sampling is every
        // ~0.3 s, so allow that much.
        assert!(
            *signed >= *published + Duration::from_millis(700),
            "{kid} published at {published:?}, signing at {signed:?}"
        );
    }
    // The token signed by the first key still has its key published.
    assert!(
        jwks_kids(&server.issuer).await.contains(&initial),
        "the previous key stays published while its tokens live"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_leaves_the_jwks_and_its_tokens_stop_working() {
    let server = TestServer::start_with(&[("LATCHKEY_KEY_CHECK_INTERVAL", "1")]);
    server.create_user("alice", "alice@example.com", "Alice");
    let app = server.create_client("App", &["--serves-audience", "unused"]);
    let browser = Browser::new(&server.issuer);
    let (code, req) = first_code(&server, &browser, &app, "alice").await;
    let tokens = redeem(&server.issuer, &app, &code, &req.verifier)
        .await
        .ok()
        .clone();
    let at = tokens["access_token"].as_str().unwrap().to_owned();
    let kid = kid_of(&at);
    assert_eq!(
        userinfo(&server.issuer, Some(&at)).await.status,
        reqwest::StatusCode::OK
    );

    let out = server.cli_ok(&["keys", "revoke"], &[&kid], None);
    assert!(out.contains("revoked"), "{out}");
    let listed = keys_list(&server);
    let state = |k: &str| {
        listed
            .iter()
            .find(|v| v["kid"] == k)
            .map(|v| v["state"].as_str().unwrap().to_owned())
    };
    assert_eq!(state(&kid).as_deref(), Some("retired"));

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let gone = !jwks_kids(&server.issuer).await.contains(&kid);
        let refused =
            userinfo(&server.issuer, Some(&at)).await.status == reqwest::StatusCode::UNAUTHORIZED;
        if gone && refused {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the revoked key is still in use (in JWKS: {})",
            !gone
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // New tokens are signed by a replacement key and work.
    let rt = tokens["refresh_token"].as_str().unwrap();
    let again = refresh(&server.issuer, &app, rt).await.ok().clone();
    let new_at = again["access_token"].as_str().unwrap();
    assert_ne!(kid_of(new_at), kid);
    assert_eq!(
        userinfo(&server.issuer, Some(new_at)).await.status,
        reqwest::StatusCode::OK
    );
    // The feed tells APIs to drop the key at once.
    let feed: Value = backchannel()
        .get(format!("{}/revocations", server.issuer))
        .basic_auth(&app.id, app.secret.as_deref())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        feed["revoked"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "key" && e["id"] == kid.as_str()),
        "{feed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_tokens_use_the_algorithm_the_client_registered() {
    use openidconnect::core::CoreJwsSigningAlgorithm;
    let server = TestServer::start();
    server.create_user("alice", "alice@example.com", "Alice");
    for (flag, alg) in [
        (None, "RS256"),
        (Some("ES256"), "ES256"),
        (Some("EdDSA"), "EdDSA"),
    ] {
        let extra: Vec<&str> = flag.map(|f| vec!["--id-token-alg", f]).unwrap_or_default();
        let app = server.create_client(&format!("App {alg}"), &extra);
        let (code, req) = first_code(&server, &Browser::new(&server.issuer), &app, "alice").await;
        let tokens = redeem(&server.issuer, &app, &code, &req.verifier)
            .await
            .ok()
            .clone();
        let id = tokens["id_token"].as_str().unwrap();
        assert_eq!(
            decode_jwt(id).0["alg"],
            alg,
            "ID token of a client registered for {alg}"
        );
        assert_eq!(
            decode_jwt(tokens["access_token"].as_str().unwrap()).0["alg"],
            "EdDSA",
            "access tokens use the server default"
        );
        // A relying party verifies the ID token and its at_hash (SHA-512 for EdDSA).
        let http = library_http();
        let metadata = CoreProviderMetadata::discover_async(
            IssuerUrl::new(server.issuer.clone()).unwrap(),
            &http,
        )
        .await
        .unwrap();
        let oidc = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(app.id.clone()),
            app.secret.clone().map(ClientSecret::new),
        );
        let token: CoreIdToken = id.parse().unwrap();
        let allowed = match alg {
            "ES256" => CoreJwsSigningAlgorithm::EcdsaP256Sha256,
            "EdDSA" => CoreJwsSigningAlgorithm::EdDsa,
            _ => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        };
        let verifier = oidc.id_token_verifier().set_allowed_algs(vec![allowed]);
        let claims = token
            .claims(&verifier, &Nonce::new(req.nonce.clone()))
            .unwrap_or_else(|e| panic!("{alg} ID token: {e:?}"));
        let access =
            openidconnect::AccessToken::new(tokens["access_token"].as_str().unwrap().to_owned());
        let actual = openidconnect::AccessTokenHash::from_token(
            &access,
            token.signing_alg().unwrap(),
            token.signing_key(&verifier).unwrap(),
        )
        .unwrap();
        assert_eq!(Some(&actual), claims.access_token_hash(), "{alg} at_hash");
    }
    let out = server.cli(
        &["client", "create"],
        &[
            "--name",
            "Bad",
            "--redirect-uri",
            REDIRECT_URI,
            "--id-token-alg",
            "none",
        ],
        None,
    );
    assert!(!out.status.success(), "alg none is refused at registration");
}
