//! Grants end to end: revocation (RFC 7009), introspection (RFC 7662), the revocation
//! feed, the refresh grace window and reuse detection, the account page, RP-initiated
//! logout, and the `grant` and `user delete` commands, all against the real binary.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use serde_json::{Value, json};
use url::Url;

use crate::support::*;

/// Where the test clients that may be sent back after logout go.
const LOGGED_OUT_URI: &str = "https://app.example/logged-out";

/// The scope most code flows here ask for.
const FULL_SCOPE: &str = "openid profile email";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The wall clock, to compare with the times the server (another process) reports.
#[allow(
    clippy::disallowed_methods,
    reason = "the server under test runs on the system clock; the tests read the same one"
)]
fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("seconds fit in i64")
}

/// A back-channel answer whose body may be empty (revocation) or JSON.
#[derive(Debug)]
struct Answer {
    what: String,
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: {} with a body that is not JSON {:?}: {e}",
                self.what, self.status, self.body
            )
        })
    }

    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header").to_owned())
            .unwrap_or_default()
    }

    fn assert_no_store(&self) {
        let cc = self.header("cache-control");
        assert!(
            cc.to_ascii_lowercase().contains("no-store"),
            "{}: Cache-Control {cc:?} lacks no-store",
            self.what
        );
    }

    /// 200 with `Cache-Control: no-store`.
    fn assert_ok(&self) {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "{}: body {:?}",
            self.what,
            self.body
        );
        self.assert_no_store();
    }

    /// 200 and a JSON body.
    fn ok_json(&self) -> Value {
        self.assert_ok();
        self.json()
    }

    fn assert_error(&self, status: StatusCode, error: &str) {
        assert_eq!(self.status, status, "{}: body {:?}", self.what, self.body);
        assert_eq!(
            self.json()["error"].as_str(),
            Some(error),
            "{}: body {}",
            self.what,
            self.body
        );
        self.assert_no_store();
    }

    /// 200, and exactly `{"active": false}` (RFC 7662 §2.2: nothing else for an
    /// inactive token).
    fn assert_inactive(&self) {
        let json = self.ok_json();
        assert_eq!(
            json,
            json!({ "active": false }),
            "{}: expected exactly {{\"active\":false}}",
            self.what
        );
    }

    /// 200 and `"active": true`; returns the JSON.
    fn active(&self) -> Value {
        let json = self.ok_json();
        assert_eq!(
            json["active"],
            Value::Bool(true),
            "{}: expected an active token, got {json}",
            self.what
        );
        json
    }
}

/// `Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1).
fn basic(id: &str, secret: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

/// POSTs a form to `path` with client authentication `auth` (none when `None`).
async fn post_backchannel(
    server: &TestServer,
    path: &str,
    auth: Option<Auth<'_>>,
    params: &[(&str, &str)],
) -> Answer {
    let mut form: Vec<(&str, &str)> = params.to_vec();
    let mut req = backchannel().post(server.url(path));
    match auth {
        Some(Auth::Basic(id, secret)) => req = req.header(header::AUTHORIZATION, basic(id, secret)),
        Some(Auth::Post(id, secret)) => {
            form.push(("client_id", id));
            form.push(("client_secret", secret));
        }
        Some(Auth::PublicId(id)) => form.push(("client_id", id)),
        None => {}
    }
    let resp = req
        .form(&form)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    read_answer(format!("POST {path}"), resp).await
}

async fn read_answer(what: String, resp: reqwest::Response) -> Answer {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .text()
        .await
        .unwrap_or_else(|e| panic!("{what}: read body: {e}"));
    Answer {
        what,
        status,
        headers,
        body,
    }
}

/// POST /revoke.
async fn revoke(
    server: &TestServer,
    auth: Option<Auth<'_>>,
    token: &str,
    hint: Option<&str>,
) -> Answer {
    let mut params = vec![("token", token)];
    if let Some(h) = hint {
        params.push(("token_type_hint", h));
    }
    post_backchannel(server, "/revoke", auth, &params).await
}

/// POST /introspect.
async fn introspect(server: &TestServer, auth: Option<Auth<'_>>, token: &str) -> Answer {
    post_backchannel(server, "/introspect", auth, &[("token", token)]).await
}

/// GET /revocations[?since=N] with HTTP Basic credentials when given.
async fn feed(server: &TestServer, creds: Option<(&str, &str)>, since: Option<i64>) -> Answer {
    let path = match since {
        Some(s) => format!("/revocations?since={s}"),
        None => "/revocations".to_owned(),
    };
    let mut req = backchannel().get(server.url(&path));
    if let Some((id, secret)) = creds {
        req = req.header(header::AUTHORIZATION, basic(id, secret));
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    read_answer(format!("GET {path}"), resp).await
}

/// The `(kind, id)` pairs of a feed answer, in order, with their `revoked_at`.
fn feed_entries(json: &Value) -> Vec<(String, String, i64)> {
    json["revoked"]
        .as_array()
        .unwrap_or_else(|| panic!("no `revoked` array in {json}"))
        .iter()
        .map(|e| {
            (
                e["kind"]
                    .as_str()
                    .unwrap_or_else(|| panic!("entry without kind: {e}"))
                    .to_owned(),
                e["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("entry without id: {e}"))
                    .to_owned(),
                e["revoked_at"]
                    .as_i64()
                    .unwrap_or_else(|| panic!("entry without revoked_at: {e}")),
            )
        })
        .collect()
}

fn feed_lists(json: &Value, kind: &str, id: &str) -> bool {
    feed_entries(json)
        .iter()
        .any(|(k, i, _)| k == kind && i == id)
}

/// A confidential client's HTTP Basic credentials.
fn creds(client: &TestClient) -> (&str, &str) {
    (
        client.id.as_str(),
        client.secret.as_deref().expect("a confidential client"),
    )
}

/// The tokens of one grant.
#[derive(Debug, Clone)]
struct Tokens {
    access: String,
    refresh: String,
    id_token: Option<String>,
    grant_id: String,
}

impl Tokens {
    /// Reads a successful token response; checks that the grant id is both the refresh
    /// token's prefix and the access token's `gid`.
    fn from_json(json: &Value) -> Tokens {
        let access = json["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {json}"))
            .to_owned();
        let refresh = json["refresh_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no refresh_token in {json}"))
            .to_owned();
        let grant_id = refresh
            .split('.')
            .next()
            .filter(|g| !g.is_empty() && refresh.contains('.'))
            .unwrap_or_else(|| panic!("refresh token {refresh:?} has no grant id prefix"))
            .to_owned();
        let (_, claims) = decode_jwt(&access);
        assert_eq!(
            claims["gid"].as_str(),
            Some(grant_id.as_str()),
            "the access token's gid is not the refresh token's grant id: {claims}"
        );
        Tokens {
            access,
            refresh,
            id_token: json["id_token"].as_str().map(str::to_owned),
            grant_id,
        }
    }
}

/// The code flow for `client` in `browser` as `username`: signs in and consents only
/// when the server asks (a signed-in browser, remembered consent). Returns the tokens.
async fn code_flow(
    server: &TestServer,
    browser: &Browser,
    client: &TestClient,
    username: &str,
    scope: &str,
) -> Tokens {
    let req = authz_request(&server.issuer, &client.id, scope);
    let mut page = browser.visit(&req.url).await;
    if page.is_login_page() {
        page = browser.login(&page, username, PASSWORD).await;
    }
    finish_flow(server, browser, client, &req, page).await
}

/// Like [`code_flow`] in a browser that is not signed in yet; also returns the cookies
/// the sign-in set (`name=value; ...`), to replay them later from another client.
async fn code_flow_keeping_cookies(
    server: &TestServer,
    browser: &Browser,
    client: &TestClient,
    username: &str,
) -> (Tokens, String) {
    let req = authz_request(&server.issuer, &client.id, FULL_SCOPE);
    let page = browser.visit(&req.url).await;
    assert!(
        page.is_login_page(),
        "expected the login page: {}",
        page.body
    );
    let answer = browser.submit_login(&page, username, PASSWORD).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let cookies: Vec<String> = answer
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
        .collect();
    assert!(!cookies.is_empty(), "signing in set no cookie");
    let page = browser.follow(answer).await;
    let tokens = finish_flow(server, browser, client, &req, page).await;
    (tokens, cookies.join("; "))
}

/// From the page after sign-in (a consent page or the redirect to the client) to tokens.
async fn finish_flow(
    server: &TestServer,
    browser: &Browser,
    client: &TestClient,
    req: &AuthzRequest,
    page: Page,
) -> Tokens {
    let location = if page.is_consent_page() {
        browser.consent(&page, "allow").await
    } else {
        assert_eq!(
            page.status,
            StatusCode::SEE_OTHER,
            "expected login, consent or a redirect to the client: {} {}",
            page.status,
            page.body
        );
        page.location().expect("Location")
    };
    let code = assert_authz_code(&location, &server.issuer, &req.state);
    let answer = redeem(&server.issuer, client, &code, &req.verifier).await;
    Tokens::from_json(answer.ok())
}

/// Does the server still honour the session behind `cookies`? Replays them, from a
/// client other than the browser, on an authorization request for `client` (which the
/// user authorized before): straight back to the client means yes, a login page no.
async fn session_alive(server: &TestServer, client: &TestClient, cookies: &str) -> bool {
    let req = authz_request(&server.issuer, &client.id, "openid");
    let resp = backchannel()
        .get(&req.url)
        .header(header::COOKIE, cookies)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /authorize: {e}"));
    let status = resp.status();
    let location = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.text().await.unwrap_or_default();
    if status == StatusCode::OK && find_form(&body, "/login").is_some() {
        return false;
    }
    assert!(
        status == StatusCode::SEE_OTHER
            && location
                .as_deref()
                .is_some_and(|l| l.starts_with(REDIRECT_URI)),
        "replayed session: expected a login page or a redirect to the client, got {status} {location:?} {body}"
    );
    true
}

/// Refreshes `rt`, asserting success.
async fn refreshed(server: &TestServer, client: &TestClient, rt: &str) -> Tokens {
    let answer = refresh(&server.issuer, client, rt).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "refresh of {rt:?} refused: {}",
        answer.json
    );
    Tokens::from_json(answer.ok())
}

/// Asserts that refreshing `rt` is refused with `invalid_grant`.
async fn assert_refresh_refused(server: &TestServer, client: &TestClient, rt: &str, why: &str) {
    let answer = refresh(&server.issuer, client, rt).await;
    assert_eq!(
        answer.status,
        StatusCode::BAD_REQUEST,
        "{why}: refresh should fail with invalid_grant, got {} {}",
        answer.status,
        answer.json
    );
    answer.assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
}

/// Asserts `/userinfo` accepts `access`.
async fn assert_userinfo_ok(server: &TestServer, access: &str, why: &str) {
    let info = userinfo(&server.issuer, Some(access)).await;
    assert_eq!(info.status, StatusCode::OK, "{why}: userinfo {}", info.body);
}

/// Asserts `/userinfo` answers 401 `invalid_token` for `access`.
async fn assert_userinfo_revoked(server: &TestServer, access: &str, why: &str) {
    let info = userinfo(&server.issuer, Some(access)).await;
    assert_eq!(
        info.status,
        StatusCode::UNAUTHORIZED,
        "{why}: userinfo should refuse the token, got {}",
        info.body
    );
    let www = info.www_authenticate.unwrap_or_default();
    assert!(
        www.starts_with("Bearer") && www.contains("error=\"invalid_token\""),
        "{why}: WWW-Authenticate {www:?}"
    );
}

/// Is `browser` signed in? Visits an authorization request for `client` (which the user
/// authorized before): a login page means no.
async fn signed_in(server: &TestServer, browser: &Browser, client: &TestClient) -> bool {
    let req = authz_request(&server.issuer, &client.id, "openid");
    let page = browser.visit(&req.url).await;
    if page.is_login_page() {
        return false;
    }
    let to_client = page.status == StatusCode::SEE_OTHER
        && page
            .location()
            .is_some_and(|l| l.as_str().starts_with(REDIRECT_URI));
    assert!(
        to_client || page.is_consent_page(),
        "expected a login page, a consent page or a redirect to the client: {} {}",
        page.status,
        page.body
    );
    true
}

/// `latchkey grant list --json ARGS`, parsed.
fn grant_list(server: &TestServer, args: &[&str]) -> Vec<Value> {
    let mut all = args.to_vec();
    all.push("--json");
    let stdout = server.cli_ok(&["grant", "list"], &all, None);
    match serde_json::from_str::<Value>(stdout.trim()) {
        Ok(Value::Array(a)) => a,
        other => panic!("`grant list --json` printed no JSON array: {other:?}\n{stdout}"),
    }
}

fn grant_ids(list: &[Value]) -> BTreeSet<String> {
    list.iter()
        .map(|g| {
            g["grant_id"]
                .as_str()
                .unwrap_or_else(|| panic!("no grant_id in {g}"))
                .to_owned()
        })
        .collect()
}

fn set<S: AsRef<str>>(ids: &[S]) -> BTreeSet<String> {
    ids.iter().map(|s| s.as_ref().to_owned()).collect()
}

/// Every form on `html` posting to `action`, in document order, each with the page text
/// since the end of the previous form (what the user reads before that button).
fn forms_with_text(html: &str, action: &str) -> Vec<(Form, String)> {
    let lower = html.to_ascii_lowercase();
    let starts: Vec<usize> = lower.match_indices("<form").map(|(i, _)| i).collect();
    let mut out = Vec::new();
    let mut text_from = 0;
    for (n, &start) in starts.iter().enumerate() {
        let next = starts.get(n + 1).copied().unwrap_or(html.len());
        let form_end = lower[start..next]
            .find("</form")
            .map_or(next, |p| start + p);
        if let Some(form) = find_form(&html[start..next], action) {
            out.push((form, html[text_from..form_end].to_owned()));
        }
        text_from = form_end;
    }
    out
}

fn hidden(form: &Form, name: &str) -> Option<String> {
    form.hidden
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// `issuer/logout?params`.
fn logout_url(server: &TestServer, params: &[(&str, &str)]) -> String {
    Url::parse_with_params(&server.url("/logout"), params)
        .expect("logout URL")
        .to_string()
}

// ---------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_lists_the_grant_endpoints_and_they_answer() {
    let server = TestServer::start();
    let doc: Value = backchannel()
        .get(server.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (member, path) in [
        ("revocation_endpoint", "/revoke"),
        ("introspection_endpoint", "/introspect"),
        ("end_session_endpoint", "/logout"),
    ] {
        assert_eq!(
            doc[member].as_str(),
            Some(server.url(path).as_str()),
            "{member} in {doc}"
        );
    }

    // Each advertised endpoint exists: without credentials the back-channel ones refuse
    // the caller (401 invalid_client), the browser ones show a page.
    let revoke = revoke(&server, None, "some-token", None).await;
    revoke.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    let intro = introspect(&server, None, "some-token").await;
    intro.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    let feed = feed(&server, None, None).await;
    feed.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    let browser = Browser::new(&server.issuer);
    for path in ["/account", "/logout"] {
        let page = browser.get(&server.url(path)).await;
        assert_eq!(page.status, StatusCode::OK, "GET {path}: {}", page.body);
    }
}

// ---------------------------------------------------------------------------
// Revocation (RFC 7009)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Which {
    /// The refresh token of the grant, current generation.
    Refresh,
    /// A refresh token superseded by one rotation.
    SupersededRefresh,
    /// An access token of the grant.
    Access,
}

#[derive(Debug, Clone, Copy)]
enum Method {
    Basic,
    Post,
    Public,
}

/// One revocation case: what the client presents, how it authenticates, the hint.
type RevokeCase<'a> = (&'a str, Which, Method, Option<&'a str>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_refresh_token_revokes_the_grant() {
    check_revocations(&[
        ("refresh token, Basic", Which::Refresh, Method::Basic, None),
        (
            "refresh token, client_secret_post, with hint",
            Which::Refresh,
            Method::Post,
            Some("refresh_token"),
        ),
        (
            "refresh token with the wrong hint",
            Which::Refresh,
            Method::Basic,
            Some("access_token"),
        ),
        (
            "superseded refresh token",
            Which::SupersededRefresh,
            Method::Basic,
            None,
        ),
        (
            "public client, refresh token",
            Which::Refresh,
            Method::Public,
            None,
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_access_token_revokes_the_grant() {
    check_revocations(&[
        ("access token, Basic", Which::Access, Method::Basic, None),
        (
            "access token, client_secret_post, with hint",
            Which::Access,
            Method::Post,
            Some("access_token"),
        ),
        (
            "access token with the wrong hint",
            Which::Access,
            Method::Basic,
            Some("refresh_token"),
        ),
        (
            "public client, access token",
            Which::Access,
            Method::Public,
            None,
        ),
    ])
    .await;
}

/// For each case, a fresh grant of alice's; the client revokes it through the token
/// the case names; then the refresh token, userinfo and introspection all fail, and
/// the feed lists the grant.
async fn check_revocations(cases: &[RevokeCase<'_>]) {
    let server = TestServer::start();
    server.create_user("alice", "alice@example.com", "Alice Liddell");
    let app = server.create_client("Confidential App", &[]);
    let native = server.create_client("Native App", &["--public"]);
    // An API that serves the default audience: it sees every access token's status.
    let api = server.create_client(
        "Orders API",
        &[
            "--grant-types",
            "client_credentials",
            "--serves-audience",
            &server.issuer,
        ],
    );
    let browser = Browser::new(&server.issuer);

    for &(name, which, method, hint) in cases {
        let client = match method {
            Method::Public => &native,
            _ => &app,
        };
        let issued = code_flow(&server, &browser, client, "alice", FULL_SCOPE).await;
        // What the client holds now, and what it sends to /revoke.
        let (current, presented) = match which {
            Which::Refresh => (issued.clone(), issued.refresh.clone()),
            Which::Access => (issued.clone(), issued.access.clone()),
            Which::SupersededRefresh => {
                let next = refreshed(&server, client, &issued.refresh).await;
                (next, issued.refresh.clone())
            }
        };
        introspect(&server, Some(api.auth()), &current.access)
            .await
            .active();

        let auth = match method {
            Method::Basic => client.auth(),
            Method::Post => Auth::Post(&client.id, client.secret.as_deref().unwrap()),
            Method::Public => Auth::PublicId(&client.id),
        };
        let answer = revoke(&server, Some(auth), &presented, hint).await;
        answer.assert_ok();

        assert_refresh_refused(&server, client, &current.refresh, name).await;
        assert_userinfo_revoked(&server, &current.access, name).await;
        let intro = introspect(&server, Some(api.auth()), &current.access).await;
        intro.assert_inactive();
        let feed = feed(&server, Some(creds(&api)), None).await.ok_json();
        assert!(
            feed_lists(&feed, "grant", &issued.grant_id),
            "{name}: the revoked grant {} is not in the feed {feed}",
            issued.grant_id
        );
        // Revoking again is still a success (RFC 7009 §2.2).
        revoke(&server, Some(auth), &presented, hint)
            .await
            .assert_ok();
    }
}

/// Tokens a client may present that must not revoke anything.
#[derive(Debug, Clone, Copy)]
enum Harmless {
    Garbage,
    /// A well-formed refresh token naming no grant.
    UnknownGrant,
    /// The victim's grant id with a made-up generation and secret.
    ForgedRefresh,
    /// The victim's access token with its signature changed.
    TamperedAccess,
    /// The victim's ID token (a JWT, but not an access token).
    IdToken,
    /// The victim's real refresh token, presented by the other client.
    OtherClientsRefresh,
    /// The victim's real access token, presented by the other client.
    OtherClientsAccess,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_unknown_or_foreign_tokens_succeeds_and_revokes_nothing() {
    let server = TestServer::start();
    server.create_user("alice", "alice@example.com", "Alice Liddell");
    server.create_user("bob", "bob@example.com", "Bob");
    let victim_app = server.create_client("Victim App", &[]);
    let other_app = server.create_client("Other App", &[]);
    let mut victim = code_flow(
        &server,
        &Browser::new(&server.issuer),
        &victim_app,
        "alice",
        FULL_SCOPE,
    )
    .await;
    let mut other = code_flow(
        &server,
        &Browser::new(&server.issuer),
        &other_app,
        "bob",
        FULL_SCOPE,
    )
    .await;

    let cases: &[(&str, Harmless, Option<&str>)] = &[
        ("garbage", Harmless::Garbage, None),
        (
            "garbage with a hint",
            Harmless::Garbage,
            Some("refresh_token"),
        ),
        ("unknown grant", Harmless::UnknownGrant, None),
        ("forged refresh token", Harmless::ForgedRefresh, None),
        ("tampered access token", Harmless::TamperedAccess, None),
        ("ID token", Harmless::IdToken, None),
        (
            "another client's refresh token",
            Harmless::OtherClientsRefresh,
            None,
        ),
        (
            "another client's access token",
            Harmless::OtherClientsAccess,
            Some("access_token"),
        ),
    ];
    for &(name, kind, hint) in cases {
        // The victim's own client presents the fakes; the other client presents the
        // victim's real tokens.
        let (caller, token) = match kind {
            Harmless::Garbage => (&victim_app, "not-a-token".to_owned()),
            Harmless::UnknownGrant => (
                &victim_app,
                format!("{}.1.{}", "0".repeat(32), "A".repeat(43)),
            ),
            Harmless::ForgedRefresh => (
                &victim_app,
                format!("{}.1.{}", victim.grant_id, "A".repeat(43)),
            ),
            Harmless::TamperedAccess => {
                let mut t = victim.access.clone();
                let last = t.pop().unwrap();
                t.push(if last == 'A' { 'B' } else { 'A' });
                (&victim_app, t)
            }
            Harmless::IdToken => (&victim_app, victim.id_token.clone().expect("an ID token")),
            Harmless::OtherClientsRefresh => (&other_app, victim.refresh.clone()),
            Harmless::OtherClientsAccess => (&other_app, victim.access.clone()),
        };
        revoke(&server, Some(caller.auth()), &token, hint)
            .await
            .assert_ok();

        // Both grants still work.
        victim = refreshed(&server, &victim_app, &victim.refresh).await;
        other = refreshed(&server, &other_app, &other.refresh).await;
        assert_userinfo_ok(&server, &victim.access, name).await;
        introspect(&server, Some(victim_app.auth()), &victim.access)
            .await
            .active();
        introspect(&server, Some(other_app.auth()), &other.access)
            .await
            .active();
    }
    let api = server.create_client(
        "API",
        &[
            "--grant-types",
            "client_credentials",
            "--serves-audience",
            &server.issuer,
        ],
    );
    let feed = feed(&server, Some(creds(&api)), None).await.ok_json();
    assert!(
        feed_entries(&feed).is_empty(),
        "nothing was revoked, yet the feed lists {feed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_introspection_require_client_authentication() {
    let server = TestServer::start();
    server.create_user("alice", "alice@example.com", "Alice Liddell");
    let app = server.create_client("App", &[]);
    let native = server.create_client("Native", &["--public"]);
    let mut tokens = code_flow(
        &server,
        &Browser::new(&server.issuer),
        &app,
        "alice",
        FULL_SCOPE,
    )
    .await;
    let wrong = "x".repeat(43);

    let cases: &[(&str, Option<Auth>)] = &[
        ("no authentication", None),
        ("wrong secret, Basic", Some(Auth::Basic(&app.id, &wrong))),
        (
            "wrong secret, client_secret_post",
            Some(Auth::Post(&app.id, &wrong)),
        ),
        (
            "confidential client without its secret",
            Some(Auth::PublicId(&app.id)),
        ),
        (
            "unknown client",
            Some(Auth::Basic("no-such-client", &wrong)),
        ),
    ];
    for (name, auth) in cases {
        for token in [tokens.refresh.clone(), tokens.access.clone()] {
            let answer = revoke(&server, *auth, &token, None).await;
            answer.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
            let answer = introspect(&server, *auth, &token).await;
            answer.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
        }
        // Nothing was revoked.
        tokens = refreshed(&server, &app, &tokens.refresh).await;
        assert_userinfo_ok(&server, &tokens.access, name).await;
    }

    // A public client has no credentials, so it may not introspect, not even its own
    // tokens.
    let public = code_flow(
        &server,
        &Browser::new(&server.issuer),
        &native,
        "alice",
        FULL_SCOPE,
    )
    .await;
    for token in [&public.access, &public.refresh] {
        introspect(&server, Some(native.auth()), token)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    // The same token introspected by a confidential client that may see it is active:
    // the refusal above was about the caller.
    introspect(&server, Some(app.auth()), &tokens.access)
        .await
        .active();
}

// ---------------------------------------------------------------------------
// Introspection (RFC 7662)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_describes_active_tokens_of_the_caller() {
    let server = TestServer::start();
    let alice_id = server.create_user("alice", "alice@example.com", "Alice Liddell");
    let app = server.create_client("App", &[]);
    let tokens = code_flow(
        &server,
        &Browser::new(&server.issuer),
        &app,
        "alice",
        FULL_SCOPE,
    )
    .await;
    let (_, claims) = decode_jwt(&tokens.access);
    let secret = app.secret.as_deref().unwrap();

    for auth in [Auth::Basic(&app.id, secret), Auth::Post(&app.id, secret)] {
        let at = introspect(&server, Some(auth), &tokens.access)
            .await
            .active();
        assert_eq!(at["token_type"].as_str(), Some("Bearer"), "{at}");
        assert_eq!(
            scope_set(at["scope"].as_str().unwrap_or_default()),
            vec!["email", "openid", "profile"],
            "{at}"
        );
        assert_eq!(at["client_id"].as_str(), Some(app.id.as_str()), "{at}");
        assert_eq!(at["sub"].as_str(), Some(alice_id.as_str()), "{at}");
        assert_eq!(at["aud"].as_str(), Some(server.issuer.as_str()), "{at}");
        assert_eq!(at["iss"].as_str(), Some(server.issuer.as_str()), "{at}");
        assert_eq!(at["jti"], claims["jti"], "{at}");
        assert_eq!(at["iat"], claims["iat"], "{at}");
        assert_eq!(at["exp"], claims["exp"], "{at}");
        let (iat, exp) = (at["iat"].as_i64().unwrap(), at["exp"].as_i64().unwrap());
        assert_eq!(exp - iat, 300, "default access token lifetime: {at}");
        assert!((iat - unix_now()).abs() <= 5, "iat {iat} is not now");
        assert_eq!(
            at["grant_id"].as_str(),
            Some(tokens.grant_id.as_str()),
            "{at}"
        );

        let rt = introspect(&server, Some(auth), &tokens.refresh)
            .await
            .active();
        assert_eq!(rt["token_type"].as_str(), Some("refresh_token"), "{rt}");
        assert_eq!(rt["client_id"].as_str(), Some(app.id.as_str()), "{rt}");
        assert_eq!(rt["sub"].as_str(), Some(alice_id.as_str()), "{rt}");
        assert_eq!(
            rt["grant_id"].as_str(),
            Some(tokens.grant_id.as_str()),
            "{rt}"
        );
        assert_eq!(
            scope_set(rt["scope"].as_str().unwrap_or_default()),
            vec!["email", "openid", "profile"],
            "{rt}"
        );
        assert!(
            rt["exp"].as_i64().is_some_and(|e| e > unix_now()),
            "refresh token exp: {rt}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_says_only_inactive_for_everything_else() {
    let server = TestServer::start_with(&[("LATCHKEY_REFRESH_GRACE_SECONDS", "0")]);
    server.create_user("alice", "alice@example.com", "Alice Liddell");
    server.create_user("bob", "bob@example.com", "Bob");
    let app = server.create_client("App", &[]);
    let other = server.create_client("Other", &[]);
    let alice = Browser::new(&server.issuer);

    let live = code_flow(&server, &alice, &app, "alice", FULL_SCOPE).await;
    let rotated_from = code_flow(&server, &alice, &app, "alice", FULL_SCOPE).await;
    let rotated_to = refreshed(&server, &app, &rotated_from.refresh).await;
    let revoked = code_flow(&server, &alice, &app, "alice", FULL_SCOPE).await;
    introspect(&server, Some(app.auth()), &revoked.access)
        .await
        .active();
    revoke(&server, Some(app.auth()), &revoked.refresh, None)
        .await
        .assert_ok();
    let others = code_flow(
        &server,
        &Browser::new(&server.issuer),
        &other,
        "bob",
        FULL_SCOPE,
    )
    .await;
    let mut tampered = live.access.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });

    let cases: &[(&str, &TestClient, String)] = &[
        ("garbage", &app, "garbage".to_owned()),
        (
            "unknown grant",
            &app,
            format!("{}.1.{}", "0".repeat(32), "A".repeat(43)),
        ),
        (
            "forged refresh token of a live grant",
            &app,
            format!("{}.1.{}", live.grant_id, "A".repeat(43)),
        ),
        ("tampered access token", &app, tampered),
        (
            "ID token",
            &app,
            live.id_token.clone().expect("an ID token"),
        ),
        (
            "superseded refresh token",
            &app,
            rotated_from.refresh.clone(),
        ),
        (
            "revoked grant's refresh token",
            &app,
            revoked.refresh.clone(),
        ),
        ("revoked grant's access token", &app, revoked.access.clone()),
        ("another client's access token", &other, live.access.clone()),
        (
            "another client's refresh token",
            &other,
            live.refresh.clone(),
        ),
        (
            "a client asking about the other's token",
            &app,
            others.access.clone(),
        ),
    ];
    for (name, caller, token) in cases {
        let answer = introspect(&server, Some(caller.auth()), token).await;
        assert_eq!(answer.status, StatusCode::OK, "{name}: {}", answer.body);
        assert_eq!(
            answer.json(),
            json!({ "active": false }),
            "{name}: expected exactly {{\"active\":false}}"
        );
        answer.assert_no_store();
    }

    // Introspection is read-only: the live grants are untouched, and the rotated
    // grant's current refresh token is active (asking about the superseded one did not
    // count as reuse).
    introspect(&server, Some(app.auth()), &live.refresh)
        .await
        .active();
    introspect(&server, Some(app.auth()), &rotated_to.refresh)
        .await
        .active();
    refreshed(&server, &app, &rotated_to.refresh).await;
    introspect(&server, Some(other.auth()), &others.access)
        .await
        .active();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_of_an_expired_grant_is_inactive() {
    // A grant lives two seconds.
    let server = TestServer::start_with(&[("LATCHKEY_REFRESH_TTL", "2")]);
    server.create_user("alice", "alice@example.com", "Alice Liddell");
    let app = server.create_client("App", &[]);
    let tokens = code_flow(
        &server,
        &Browser::new(&server.issuer),
        &app,
        "alice",
        FULL_SCOPE,
    )
    .await;
    introspect(&server, Some(app.auth()), &tokens.refresh)
        .await
        .active();
    tokio::time::sleep(Duration::from_millis(3100)).await;
    introspect(&server, Some(app.auth()), &tokens.refresh)
        .await
        .assert_inactive();
    // Its access token (not itself expired) dies with the grant.
    introspect(&server, Some(app.auth()), &tokens.access)
        .await
        .assert_inactive();
    assert_refresh_refused(&server, &app, &tokens.refresh, "expired grant").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_introspects_the_tokens_of_the_audience_it_serves() {
    const API_AUD: &str = "https://api.example";
    // (default audience setting, the caller serves, active?)
    let cases: &[(Option<&str>, Option<&str>, bool)] = &[
        (None, Some("ISSUER"), true),
        (None, Some(API_AUD), false),
        (None, None, false),
        (Some(API_AUD), Some(API_AUD), true),
        (Some(API_AUD), Some("ISSUER"), false),
    ];
    for default_audience in [None, Some(API_AUD)] {
        let env: Vec<(&str, &str)> = default_audience
            .map(|a| ("LATCHKEY_DEFAULT_AUDIENCE", a))
            .into_iter()
            .collect();
        let server = TestServer::start_with(&env);
        let alice_id = server.create_user("alice", "alice@example.com", "Alice Liddell");
        let app = server.create_client("App", &[]);
        let tokens = code_flow(
            &server,
            &Browser::new(&server.issuer),
            &app,
            "alice",
            FULL_SCOPE,
        )
        .await;
        let expected_aud = default_audience
            .unwrap_or(server.issuer.as_str())
            .to_owned();
        let (_, claims) = decode_jwt(&tokens.access);
        assert_eq!(claims["aud"].as_str(), Some(expected_aud.as_str()));

        for &(_, serves, active) in cases.iter().filter(|(d, _, _)| *d == default_audience) {
            let serves = serves.map(|s| {
                if s == "ISSUER" {
                    server.issuer.as_str()
                } else {
                    s
                }
            });
            let mut args = vec!["--grant-types", "client_credentials"];
            if let Some(aud) = serves {
                args.extend(["--serves-audience", aud]);
            }
            let api = server.create_client("API", &args);
            let what = format!("default audience {default_audience:?}, caller serves {serves:?}");
            let answer = introspect(&server, Some(api.auth()), &tokens.access).await;
            if active {
                let json = answer.active();
                assert_eq!(json["aud"].as_str(), Some(expected_aud.as_str()), "{what}");
                assert_eq!(json["client_id"].as_str(), Some(app.id.as_str()), "{what}");
                assert_eq!(json["sub"].as_str(), Some(alice_id.as_str()), "{what}");
                assert_eq!(
                    json["grant_id"].as_str(),
                    Some(tokens.grant_id.as_str()),
                    "{what}"
                );
            } else {
                assert_eq!(answer.ok_json(), json!({ "active": false }), "{what}");
            }
            // A refresh token is only ever active to its own client.
            introspect(&server, Some(api.auth()), &tokens.refresh)
                .await
                .assert_inactive();
        }

        // Once the grant is revoked, the API sees it inactive too.
        revoke(&server, Some(app.auth()), &tokens.refresh, None)
            .await
            .assert_ok();
        let serves = default_audience
            .unwrap_or(server.issuer.as_str())
            .to_owned();
        let api = server.create_client(
            "API after revocation",
            &[
                "--grant-types",
                "client_credentials",
                "--serves-audience",
                &serves,
            ],
        );
        introspect(&server, Some(api.auth()), &tokens.access)
            .await
            .assert_inactive();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_tokens_are_active_until_the_client_is_deleted() {
    let server = TestServer::start();
    let batch = server.create_client(
        "Batch",
        &[
            "--grant-types",
            "client_credentials",
            "--scopes",
            "api:read",
        ],
    );
    let api = server.create_client(
        "API",
        &[
            "--grant-types",
            "client_credentials",
            "--serves-audience",
            &server.issuer,
        ],
    );
    let bystander = server.create_client("Bystander", &[]);
    let answer = token_request(
        &server.issuer,
        batch.auth(),
        &[("grant_type", "client_credentials"), ("scope", "api:read")],
    )
    .await;
    let token = answer.ok()["access_token"].as_str().unwrap().to_owned();

    for caller in [&batch, &api] {
        let json = introspect(&server, Some(caller.auth()), &token)
            .await
            .active();
        assert_eq!(json["token_type"].as_str(), Some("Bearer"), "{json}");
        assert_eq!(
            json["client_id"].as_str(),
            Some(batch.id.as_str()),
            "{json}"
        );
        assert_eq!(json["scope"].as_str(), Some("api:read"), "{json}");
        assert_eq!(json["aud"].as_str(), Some(server.issuer.as_str()), "{json}");
        let sub = json["sub"].as_str().unwrap_or_default();
        assert!(
            !sub.is_empty() && sub.contains(&batch.id),
            "sub of a client-credentials token: {json}"
        );
        assert!(
            json.get("grant_id").is_none_or(Value::is_null),
            "a client-credentials token has no grant: {json}"
        );
    }
    introspect(&server, Some(bystander.auth()), &token)
        .await
        .assert_inactive();

    server.cli_ok(&["client", "delete"], &[&batch.id], None);
    eventually("the deleted client's token is inactive", || async {
        introspect(&server, Some(api.auth()), &token)
            .await
            .ok_json()
            == json!({ "active": false })
    })
    .await;
    introspect(&server, Some(api.auth()), &token)
        .await
        .assert_inactive();
    let feed = feed(&server, Some(creds(&api)), None).await.ok_json();
    assert!(
        feed_lists(&feed, "client", &batch.id),
        "the deleted client is not in the feed {feed}"
    );
}

// ---------------------------------------------------------------------------
// The revocation feed
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_feed_lists_grants_users_and_clients() {
    // A 120 s access-token lifetime makes the feed window 120 + 60 s.
    let server = TestServer::start_with(&[("LATCHKEY_ACCESS_TOKEN_TTL", "120")]);
    server.create_user("alice", "alice@example.com", "Alice Liddell");
    let bob_id = server.create_user("bob", "bob@example.com", "Bob");
    let app = server.create_client("App", &[]);
    let native = server.create_client("Native", &["--public"]);
    let doomed = server.create_client("Doomed", &[]);
    let api = server.create_client(
        "Orders API",
        &[
            "--grant-types",
            "client_credentials",
            "--serves-audience",
            &server.issuer,
        ],
    );

    // Only confidential clients read the feed, with HTTP Basic.
    let wrong = "x".repeat(43);
    let refused: &[(&str, Option<(&str, &str)>)] = &[
        ("no credentials", None),
        ("wrong secret", Some((api.id.as_str(), wrong.as_str()))),
        ("unknown client", Some(("no-such-client", wrong.as_str()))),
        ("public client", Some((native.id.as_str(), ""))),
    ];
    for (name, c) in refused {
        let answer = feed(&server, *c, None).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{name}: {}",
            answer.body
        );
        answer.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }

    // An app that is not registered as an API may not read it (it names users).
    feed(&server, Some(creds(&app)), None)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "unauthorized_client");

    let start = unix_now();
    let empty = feed(&server, Some(creds(&api)), None).await.ok_json();
    assert_eq!(empty["revoked"], json!([]), "fresh server: {empty}");
    assert_eq!(empty["window"].as_i64(), Some(180), "{empty}");
    assert_eq!(empty["more"], Value::Bool(false), "{empty}");
    let server_time = empty["server_time"].as_i64().unwrap();
    assert!(
        (start - 2..=unix_now() + 2).contains(&server_time),
        "server_time {server_time} is not now ({start})"
    );
    let first_cursor = empty["next_since"].as_i64().unwrap();
    assert!(
        (server_time - 180..=server_time).contains(&first_cursor),
        "next_since {first_cursor} outside [server_time - window, server_time]: {empty}"
    );

    // One revocation of each kind.
    let tokens = code_flow(
        &server,
        &Browser::new(&server.issuer),
        &app,
        "alice",
        FULL_SCOPE,
    )
    .await;
    revoke(&server, Some(app.auth()), &tokens.refresh, None)
        .await
        .assert_ok();
    server.cli_ok(&["user", "delete"], &["bob"], None);
    server.cli_ok(&["client", "delete"], &[&doomed.id], None);
    let end = unix_now();

    let full = feed(&server, Some(creds(&api)), None).await.ok_json();
    let entries = feed_entries(&full);
    let mut kinds: Vec<(String, String)> = entries
        .iter()
        .map(|(k, i, _)| (k.clone(), i.clone()))
        .collect();
    kinds.sort();
    let mut expected = vec![
        ("client".to_owned(), doomed.id.clone()),
        ("grant".to_owned(), tokens.grant_id.clone()),
        ("user".to_owned(), bob_id.clone()),
    ];
    expected.sort();
    assert_eq!(kinds, expected, "feed {full}");
    for (kind, id, at) in &entries {
        assert!(
            (start - 1..=end + 1).contains(at),
            "{kind} {id} revoked_at {at} outside [{start}, {end}]"
        );
    }
    assert!(
        entries.windows(2).all(|w| w[0].2 <= w[1].2),
        "entries are not in revoked_at order: {full}"
    );
    assert_eq!(full["more"], Value::Bool(false), "{full}");

    // Any confidential client may read it.
    let by_app = feed(&server, Some(creds(&feed_reader(&server))), None)
        .await
        .ok_json();
    assert_eq!(
        feed_entries(&by_app),
        entries,
        "feed read by another client"
    );

    // Cursors: from the first answer's cursor all three are new; older cursors are
    // clamped to the window and give the same list; after the last entry, nothing.
    let now = full["server_time"].as_i64().unwrap();
    for since in [first_cursor, 0, now - 180, now - 10_000, -5] {
        let page = feed(&server, Some(creds(&api)), Some(since))
            .await
            .ok_json();
        assert_eq!(feed_entries(&page), entries, "since={since}: {page}");
        let next = page["next_since"].as_i64().unwrap();
        assert!(
            next >= now - 180 && next <= page["server_time"].as_i64().unwrap(),
            "since={since}: next_since {next} not clamped into the window: {page}"
        );
    }
    let last = entries.iter().map(|e| e.2).max().unwrap();
    let after = feed(&server, Some(creds(&api)), Some(last + 1))
        .await
        .ok_json();
    assert_eq!(after["revoked"], json!([]), "since={}: {after}", last + 1);
    let future = now + 100;
    let ahead = feed(&server, Some(creds(&api)), Some(future))
        .await
        .ok_json();
    assert_eq!(ahead["revoked"], json!([]), "since={future}: {ahead}");
    assert_eq!(
        ahead["next_since"].as_i64(),
        Some(future),
        "a cursor ahead of the server is kept: {ahead}"
    );
}

// ---------------------------------------------------------------------------
// Refresh: grace window and reuse detection
// ---------------------------------------------------------------------------

/// A server with the refresh grace window set to `grace` seconds, alice, and a client.
fn grace_fixture(grace: &str) -> (TestServer, TestClient) {
    let server = TestServer::start_with(&[("LATCHKEY_REFRESH_GRACE_SECONDS", grace)]);
    server.create_user("alice", "alice@example.com", "Alice Liddell");
    let app = server.create_client("App", &[]);
    (server, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_retry_within_grace_window_gets_the_same_successor_once() {
    let (server, app) = grace_fixture("2");
    let browser = Browser::new(&server.issuer);
    let first = code_flow(&server, &browser, &app, "alice", FULL_SCOPE).await;
    let second = refreshed(&server, &app, &first.refresh).await;
    assert_ne!(second.refresh, first.refresh);

    // The client lost the answer and retries with RT1: it gets RT2 again, and a new
    // access token.
    let retry = refreshed(&server, &app, &first.refresh).await;
    assert_eq!(
        retry.refresh, second.refresh,
        "a retry within the grace window must return the same successor"
    );
    assert_eq!(retry.grant_id, first.grant_id);
    assert_ne!(
        retry.access, second.access,
        "the retry should mint a fresh access token"
    );
    let (_, a) = decode_jwt(&retry.access);
    let (_, b) = decode_jwt(&second.access);
    assert_ne!(a["jti"], b["jti"]);
    assert_userinfo_ok(&server, &retry.access, "grace retry").await;

    // A second retry is reuse: the grant is revoked, RT2 with it.
    assert_refresh_refused(&server, &app, &first.refresh, "second retry").await;
    assert_refresh_refused(&server, &app, &second.refresh, "after reuse").await;
    assert_userinfo_revoked(&server, &retry.access, "after reuse").await;
    introspect(&server, Some(app.auth()), &retry.access)
        .await
        .assert_inactive();
    let feed = feed(&server, Some(creds(&feed_reader(&server))), None)
        .await
        .ok_json();
    assert!(feed_lists(&feed, "grant", &first.grant_id), "{feed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_grace_retry_the_successor_keeps_working() {
    let (server, app) = grace_fixture("2");
    let browser = Browser::new(&server.issuer);
    let first = code_flow(&server, &browser, &app, "alice", FULL_SCOPE).await;
    let second = refreshed(&server, &app, &first.refresh).await;
    let retry = refreshed(&server, &app, &first.refresh).await;
    assert_eq!(retry.refresh, second.refresh);
    let third = refreshed(&server, &app, &second.refresh).await;
    let fourth = refreshed(&server, &app, &third.refresh).await;
    assert_eq!(fourth.grant_id, first.grant_id);
    assert_userinfo_ok(&server, &fourth.access, "after the retry").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_token_two_generations_old_is_reuse_even_within_the_window() {
    let (server, app) = grace_fixture("5");
    let browser = Browser::new(&server.issuer);
    let first = code_flow(&server, &browser, &app, "alice", FULL_SCOPE).await;
    let second = refreshed(&server, &app, &first.refresh).await;
    let third = refreshed(&server, &app, &second.refresh).await;
    assert_refresh_refused(&server, &app, &first.refresh, "two generations old").await;
    assert_refresh_refused(&server, &app, &third.refresh, "current, after reuse").await;
    introspect(&server, Some(app.auth()), &third.access)
        .await
        .assert_inactive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_refresh_token_after_the_grace_window_is_reuse() {
    let (server, app) = grace_fixture("1");
    let browser = Browser::new(&server.issuer);
    let first = code_flow(&server, &browser, &app, "alice", FULL_SCOPE).await;
    let second = refreshed(&server, &app, &first.refresh).await;
    // Whole seconds: 2.2 s later the rotation is at least 2 s old, beyond a 1 s window.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_refresh_refused(&server, &app, &first.refresh, "after the window").await;
    assert_refresh_refused(&server, &app, &second.refresh, "after reuse").await;
    introspect(&server, Some(app.auth()), &second.access)
        .await
        .assert_inactive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_revokes_that_grant_only() {
    // With no window the previous token is reuse at once; with one, a token two
    // generations old is.
    for grace in ["0", "5"] {
        let (server, app) = grace_fixture(grace);
        server.create_user("bob", "bob@example.com", "Bob");
        let alice = Browser::new(&server.issuer);
        let victim = code_flow(&server, &alice, &app, "alice", FULL_SCOPE).await;
        // The same user's second sign-in with the same client: a second grant.
        let sibling = code_flow(&server, &alice, &app, "alice", FULL_SCOPE).await;
        assert_ne!(sibling.grant_id, victim.grant_id);
        let bobs = code_flow(
            &server,
            &Browser::new(&server.issuer),
            &app,
            "bob",
            FULL_SCOPE,
        )
        .await;

        let second = refreshed(&server, &app, &victim.refresh).await;
        let current = if grace == "0" {
            // No window: the previous token at once is reuse.
            assert_refresh_refused(&server, &app, &victim.refresh, "grace 0, RT1 again").await;
            second
        } else {
            // With a window: two generations back is reuse.
            let third = refreshed(&server, &app, &second.refresh).await;
            assert_refresh_refused(&server, &app, &victim.refresh, "RT1 after RT3").await;
            third
        };
        let why = format!("grace {grace}: reused grant");
        assert_refresh_refused(&server, &app, &current.refresh, &why).await;
        assert_userinfo_revoked(&server, &current.access, &why).await;

        for (name, other) in [("alice's second grant", &sibling), ("bob's grant", &bobs)] {
            let why = format!("grace {grace}: {name}");
            let next = refreshed(&server, &app, &other.refresh).await;
            assert_userinfo_ok(&server, &next.access, &why).await;
            introspect(&server, Some(app.auth()), &next.access)
                .await
                .active();
        }
        let active = grant_ids(&grant_list(&server, &["--client", &app.id]));
        assert_eq!(
            active,
            set(&[&sibling.grant_id, &bobs.grant_id]),
            "grace {grace}: active grants"
        );
    }
}

// ---------------------------------------------------------------------------
// The account page
// ---------------------------------------------------------------------------

/// The apps listed on an account page: client id, the form's CSRF token, and the text
/// shown for the app.
fn account_apps(page: &Page) -> Vec<(String, String, String)> {
    forms_with_text(&page.body, "/account/revoke")
        .into_iter()
        .map(|(form, text)| {
            assert_eq!(form.method, "post", "revoke form method");
            let client_id = hidden(&form, "client_id")
                .unwrap_or_else(|| panic!("revoke form without client_id: {form:?}"));
            let csrf = hidden(&form, "csrf_token")
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| panic!("revoke form without csrf_token: {form:?}"));
            (client_id, csrf, text)
        })
        .collect()
}

/// The text shown for `client_id` among `apps`.
fn app_text<'a>(apps: &'a [(String, String, String)], client_id: &str) -> &'a str {
    apps.iter()
        .find(|a| a.0 == client_id)
        .map(|a| a.2.as_str())
        .unwrap_or_else(|| panic!("{client_id} is not listed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_page_lists_authorized_apps_and_revokes_them() {
    let server = TestServer::start();
    server.create_user("alice", "alice@example.com", "Alice Liddell");
    server.create_user("bob", "bob@example.com", "Bob");
    let photos = server.create_client("Photo Album", &[]);
    let calendar = server.create_client("Team Calendar", &[]);
    let bobs_tool = server.create_client("Bob Only Tool", &[]);

    // Alice signs in to Photo Album twice (two grants) and to Team Calendar with fewer
    // scopes; Bob uses Photo Album and a tool of his own.
    let alice_apps = Browser::new(&server.issuer);
    let mut p1 = code_flow(&server, &alice_apps, &photos, "alice", FULL_SCOPE).await;
    let p2 = code_flow(&server, &alice_apps, &photos, "alice", FULL_SCOPE).await;
    let mut cal = code_flow(&server, &alice_apps, &calendar, "alice", "openid email").await;
    let bob = Browser::new(&server.issuer);
    let mut bob_photos = code_flow(&server, &bob, &photos, "bob", FULL_SCOPE).await;
    code_flow(&server, &bob, &bobs_tool, "bob", FULL_SCOPE).await;

    // A browser without a session gets the sign-in form, for no client.
    let browser = Browser::new(&server.issuer);
    let page = browser.get(&server.url("/account")).await;
    assert!(
        page.is_login_page(),
        "GET /account without a session: {} {}",
        page.status,
        page.body
    );
    let login = page.form("/login").unwrap();
    assert!(
        hidden(&login, "csrf_token").is_some_and(|t| !t.is_empty()),
        "login form csrf_token: {login:?}"
    );
    assert_eq!(
        hidden(&login, "authz").as_deref(),
        Some(""),
        "the account sign-in carries no authorization request: {login:?}"
    );
    let answer = browser.submit_login(&page, "alice", PASSWORD).await;
    assert_eq!(
        answer.status,
        StatusCode::SEE_OTHER,
        "POST /login: {}",
        answer.body
    );
    let location = answer.location().expect("Location after login");
    assert_eq!(location.as_str(), server.url("/account"));

    let page = browser.get(location.as_str()).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let apps = account_apps(&page);
    let listed: BTreeSet<String> = apps.iter().map(|a| a.0.clone()).collect();
    assert_eq!(
        listed,
        set(&[&photos.id, &calendar.id]),
        "apps on alice's page:\n{}",
        page.body
    );
    let photo_text = app_text(&apps, &photos.id);
    assert!(photo_text.contains("Photo Album"), "{photo_text}");
    for words in [
        "Know who you are",
        "See your name and profile details",
        "See your email address",
    ] {
        assert!(
            photo_text.contains(words),
            "Photo Album lacks {words:?}: {photo_text}"
        );
    }
    let calendar_text = app_text(&apps, &calendar.id);
    assert!(calendar_text.contains("Team Calendar"), "{calendar_text}");
    assert!(
        calendar_text.contains("See your email address"),
        "{calendar_text}"
    );
    assert!(
        !calendar_text.contains("See your name and profile details"),
        "Team Calendar was not given the profile scope: {calendar_text}"
    );
    assert!(
        !page.body.contains("Bob Only Tool"),
        "alice's page lists bob's app"
    );
    let csrf = apps[0].1.clone();

    // Without a valid CSRF token nothing is revoked.
    let bob_page = bob.get(&server.url("/account")).await;
    let bobs_csrf = account_apps(&bob_page)
        .first()
        .map(|a| a.1.clone())
        .expect("bob's page lists his apps");
    for (name, token) in [
        ("no token", None),
        ("empty token", Some(String::new())),
        ("forged token", Some("A".repeat(43))),
        ("another browser's token", Some(bobs_csrf)),
    ] {
        let mut fields = vec![("client_id".to_owned(), photos.id.clone())];
        if let Some(t) = token {
            fields.push(("csrf_token".to_owned(), t));
        }
        let answer = browser
            .post_form(&server.url("/account/revoke"), &fields)
            .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{name}: {}",
            answer.body
        );
        p1 = refreshed(&server, &photos, &p1.refresh).await;
    }

    // The real form revokes every grant alice gave Photo Album, nothing else.
    let fields = vec![
        ("csrf_token".to_owned(), csrf),
        ("client_id".to_owned(), photos.id.clone()),
    ];
    let answer = browser
        .post_form(&server.url("/account/revoke"), &fields)
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(
        answer.location().map(|l| l.to_string()),
        Some(server.url("/account"))
    );
    for (name, g) in [("first photo grant", &p1), ("second photo grant", &p2)] {
        assert_refresh_refused(&server, &photos, &g.refresh, name).await;
        assert_userinfo_revoked(&server, &g.access, name).await;
    }
    cal = refreshed(&server, &calendar, &cal.refresh).await;
    bob_photos = refreshed(&server, &photos, &bob_photos.refresh).await;
    assert_userinfo_ok(&server, &cal.access, "alice's calendar").await;
    assert_userinfo_ok(&server, &bob_photos.access, "bob's photos").await;

    let page = browser.get(&server.url("/account")).await;
    assert_eq!(page.status, StatusCode::OK);
    let listed: Vec<String> = account_apps(&page).into_iter().map(|a| a.0).collect();
    assert_eq!(
        listed,
        vec![calendar.id.clone()],
        "after revoking:\n{}",
        page.body
    );
    assert!(
        !page.body.contains("Photo Album"),
        "still listed:\n{}",
        page.body
    );

    let feed = feed(&server, Some(creds(&feed_reader(&server))), None)
        .await
        .ok_json();
    for g in [&p1, &p2] {
        assert!(feed_lists(&feed, "grant", &g.grant_id), "{feed}");
    }
    assert!(!feed_lists(&feed, "grant", &bob_photos.grant_id), "{feed}");
}

// ---------------------------------------------------------------------------
// RP-initiated logout
// ---------------------------------------------------------------------------

/// A server with alice and bob and a client that registered [`LOGGED_OUT_URI`].
fn logout_fixture(env: &[(&str, &str)]) -> (TestServer, TestClient) {
    let server = TestServer::start_with(env);
    server.create_user("alice", "alice@example.com", "Alice Liddell");
    server.create_user("bob", "bob@example.com", "Bob");
    let app = server.create_client("Notes", &["--post-logout-redirect-uri", LOGGED_OUT_URI]);
    (server, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_with_id_token_hint_ends_the_session_and_redirects() {
    let (server, app) = logout_fixture(&[]);
    // (how the RP sends the request, with a post_logout_redirect_uri?)
    for (post, with_redirect) in [(false, true), (true, true), (false, false)] {
        let what = format!("POST {post}, redirect {with_redirect}");
        let browser = Browser::new(&server.issuer);
        let (tokens, cookies) = code_flow_keeping_cookies(&server, &browser, &app, "alice").await;
        assert!(signed_in(&server, &browser, &app).await, "{what}");
        assert!(session_alive(&server, &app, &cookies).await, "{what}");
        let hint = tokens.id_token.clone().expect("an ID token");
        let state = format!("st-{post}-{with_redirect}");
        let mut params = vec![
            ("id_token_hint", hint.as_str()),
            ("client_id", app.id.as_str()),
        ];
        if with_redirect {
            params.extend([
                ("post_logout_redirect_uri", LOGGED_OUT_URI),
                ("state", state.as_str()),
            ]);
        }
        let page = if post {
            let fields: Vec<(String, String)> = params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            browser.post_form(&server.url("/logout"), &fields).await
        } else {
            browser.get(&logout_url(&server, &params)).await
        };
        if with_redirect {
            assert_eq!(page.status, StatusCode::SEE_OTHER, "{what}: {}", page.body);
            assert_eq!(
                page.location().map(|l| l.to_string()),
                Some(format!("{LOGGED_OUT_URI}?state={state}")),
                "{what}"
            );
        } else {
            assert_eq!(page.status, StatusCode::OK, "{what}: {}", page.body);
            assert!(page.headers.get(header::LOCATION).is_none(), "{what}");
        }

        // Signed out at once: the session is gone on the server (its cookie, replayed,
        // no longer works), the next authorization request asks to sign in again, and
        // so does the account page.
        assert!(
            !session_alive(&server, &app, &cookies).await,
            "{what}: the session still works after logout"
        );
        assert!(
            !signed_in(&server, &browser, &app).await,
            "{what}: still signed in after logout"
        );
        let account = browser.get(&server.url("/account")).await;
        assert!(account.is_login_page(), "{what}: /account after logout");
        // By default logout leaves the grants alone.
        let next = refreshed(&server, &app, &tokens.refresh).await;
        assert_userinfo_ok(&server, &next.access, &what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_refuses_unregistered_post_logout_redirect_uris() {
    let (server, app) = logout_fixture(&[]);
    let other = server.create_client(
        "Other",
        &["--post-logout-redirect-uri", "https://other.example/bye"],
    );
    let browser = Browser::new(&server.issuer);
    let tokens = code_flow(&server, &browser, &app, "alice", FULL_SCOPE).await;
    let hint = tokens.id_token.clone().unwrap();

    let with_hint = |uri: &'static str| -> Vec<(&'static str, String)> {
        vec![
            ("id_token_hint", hint.clone()),
            ("post_logout_redirect_uri", uri.to_owned()),
            ("state", "s".to_owned()),
        ]
    };
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        (
            "trailing slash",
            with_hint("https://app.example/logged-out/"),
        ),
        (
            "extra query",
            with_hint("https://app.example/logged-out?next=x"),
        ),
        (
            "other path case",
            with_hint("https://app.example/Logged-out"),
        ),
        ("other host", with_hint("https://evil.example/logged-out")),
        (
            "the redirect_uri, not a logout URI",
            with_hint(REDIRECT_URI),
        ),
        (
            "another client's logout URI",
            with_hint("https://other.example/bye"),
        ),
        (
            "registered for another client, named by client_id",
            vec![
                ("client_id", other.id.clone()),
                ("post_logout_redirect_uri", LOGGED_OUT_URI.to_owned()),
            ],
        ),
        (
            "no hint and no client_id",
            vec![("post_logout_redirect_uri", LOGGED_OUT_URI.to_owned())],
        ),
        (
            "a hint that is no ID token of ours",
            vec![
                ("id_token_hint", "eyJhbGciOiJub25lIn0.e30.".to_owned()),
                ("post_logout_redirect_uri", LOGGED_OUT_URI.to_owned()),
            ],
        ),
        (
            "an access token as hint",
            vec![
                ("id_token_hint", tokens.access.clone()),
                ("post_logout_redirect_uri", LOGGED_OUT_URI.to_owned()),
            ],
        ),
    ];
    for (name, params) in &cases {
        let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page = browser.get(&logout_url(&server, &pairs)).await;
        assert_eq!(
            page.status,
            StatusCode::BAD_REQUEST,
            "{name}: {}",
            page.body
        );
        assert_error_page(&page);
        assert!(
            signed_in(&server, &browser, &app).await,
            "{name}: a refused logout request ended the session"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_without_a_matching_hint_asks_the_user_first() {
    let (server, app) = logout_fixture(&[]);
    let browser = Browser::new(&server.issuer);
    let (_, cookies) = code_flow_keeping_cookies(&server, &browser, &app, "alice").await;
    let bobs = code_flow(
        &server,
        &Browser::new(&server.issuer),
        &app,
        "bob",
        FULL_SCOPE,
    )
    .await;
    let bobs_hint = bobs.id_token.clone().unwrap();

    let cases: &[(&str, Vec<(&str, &str)>)] = &[
        (
            "no hint",
            vec![
                ("client_id", app.id.as_str()),
                ("post_logout_redirect_uri", LOGGED_OUT_URI),
                ("state", "s1"),
            ],
        ),
        (
            "another user's hint",
            vec![
                ("id_token_hint", bobs_hint.as_str()),
                ("post_logout_redirect_uri", LOGGED_OUT_URI),
                ("state", "s2"),
            ],
        ),
        ("nothing at all", vec![]),
    ];
    let mut confirm_forms = Vec::new();
    for (name, params) in cases {
        let page = browser.get(&logout_url(&server, params)).await;
        assert_eq!(page.status, StatusCode::OK, "{name}: {}", page.body);
        let form = page
            .form("/logout")
            .unwrap_or_else(|| panic!("{name}: no confirmation form: {}", page.body));
        assert_eq!(form.method, "post", "{name}");
        assert!(
            hidden(&form, "csrf_token").is_some_and(|t| !t.is_empty()),
            "{name}: {form:?}"
        );
        assert!(hidden(&form, "request").is_some(), "{name}: {form:?}");
        assert!(
            form.buttons
                .iter()
                .any(|(n, v)| n == "confirm" && v == "yes"),
            "{name}: no confirm=yes button: {form:?}"
        );
        assert!(
            signed_in(&server, &browser, &app).await,
            "{name}: signed out without confirmation"
        );
        confirm_forms.push(form);
    }

    // The confirmation with a bad CSRF token does nothing.
    let form = &confirm_forms[0];
    let forged = vec![
        ("csrf_token".to_owned(), "A".repeat(43)),
        ("request".to_owned(), hidden(form, "request").unwrap()),
        ("confirm".to_owned(), "yes".to_owned()),
    ];
    let page = browser.post_form(&server.url("/logout"), &forged).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(
        signed_in(&server, &browser, &app).await,
        "forged confirmation signed out"
    );

    // The real confirmation signs out and goes back to the client with its state.
    let mut fields = form.hidden.clone();
    fields.push(("confirm".to_owned(), "yes".to_owned()));
    let page = browser.post_form(&server.url("/logout"), &fields).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(
        page.location().map(|l| l.to_string()),
        Some(format!("{LOGGED_OUT_URI}?state=s1"))
    );
    assert!(!signed_in(&server, &browser, &app).await, "still signed in");
    assert!(
        !session_alive(&server, &app, &cookies).await,
        "the session still works after the confirmed logout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_the_sessions_grants_only_when_configured() {
    for setting in [None, Some("false"), Some("true")] {
        let env: Vec<(&str, &str)> = setting
            .map(|s| ("LATCHKEY_LOGOUT_REVOKES_GRANTS", s))
            .into_iter()
            .collect();
        let (server, app) = logout_fixture(&env);
        let revokes = setting == Some("true");
        let what = format!("LATCHKEY_LOGOUT_REVOKES_GRANTS={setting:?}");
        // Two grants in this browser's session, one from another browser.
        let here = Browser::new(&server.issuer);
        let g1 = code_flow(&server, &here, &app, "alice", FULL_SCOPE).await;
        let g2 = code_flow(&server, &here, &app, "alice", "openid").await;
        let elsewhere = code_flow(
            &server,
            &Browser::new(&server.issuer),
            &app,
            "alice",
            FULL_SCOPE,
        )
        .await;
        // A code issued in this session, redeemed only after the logout.
        let pending_req = authz_request(&server.issuer, &app.id, "openid");
        let pending = here.visit(&pending_req.url).await;
        assert_eq!(
            pending.status,
            StatusCode::SEE_OTHER,
            "{what}: {}",
            pending.body
        );
        let pending_code = assert_authz_code(
            &pending.location().expect("Location"),
            &server.issuer,
            &pending_req.state,
        );

        let hint = g1.id_token.clone().unwrap();
        let page = here
            .get(&logout_url(
                &server,
                &[
                    ("id_token_hint", hint.as_str()),
                    ("post_logout_redirect_uri", LOGGED_OUT_URI),
                ],
            ))
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{what}: {}", page.body);
        assert_eq!(
            page.location().map(|l| l.to_string()),
            Some(LOGGED_OUT_URI.to_owned()),
            "{what}"
        );

        for g in [&g1, &g2] {
            if revokes {
                assert_refresh_refused(&server, &app, &g.refresh, &what).await;
                assert_userinfo_revoked(&server, &g.access, &what).await;
            } else {
                refreshed(&server, &app, &g.refresh).await;
            }
        }
        // With the session's grants revoked, its codes end with it too.
        let late = redeem(&server.issuer, &app, &pending_code, &pending_req.verifier).await;
        if revokes {
            assert_eq!(
                late.status,
                StatusCode::BAD_REQUEST,
                "{what}: {}",
                late.json
            );
            assert_eq!(late.json["error"], "invalid_grant", "{what}: {}", late.json);
        } else {
            late.ok();
        }
        let kept = refreshed(&server, &app, &elsewhere.refresh).await;
        assert_userinfo_ok(&server, &kept.access, &what).await;
        let feed = feed(&server, Some(creds(&feed_reader(&server))), None)
            .await
            .ok_json();
        assert_eq!(
            feed_lists(&feed, "grant", &g1.grant_id),
            revokes,
            "{what}: {feed}"
        );
        assert!(
            !feed_lists(&feed, "grant", &elsewhere.grant_id),
            "{what}: {feed}"
        );
    }
}

// ---------------------------------------------------------------------------
// Admin commands
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_cli_lists_and_revokes_grants_while_serving() {
    let server = TestServer::start();
    let alice_id = server.create_user("alice", "alice@example.com", "Alice Liddell");
    let bob_id = server.create_user("bob", "bob@example.com", "Bob");
    let app = server.create_client("App", &[]);
    let other = server.create_client("Other", &[]);
    let alice = Browser::new(&server.issuer);
    let start = unix_now();
    let a1 = code_flow(&server, &alice, &app, "alice", FULL_SCOPE).await;
    let a2 = code_flow(&server, &alice, &other, "alice", "openid email").await;
    let b1 = code_flow(
        &server,
        &Browser::new(&server.issuer),
        &app,
        "bob",
        FULL_SCOPE,
    )
    .await;
    let end = unix_now();

    let all = grant_list(&server, &[]);
    assert_eq!(
        grant_ids(&all),
        set(&[&a1.grant_id, &a2.grant_id, &b1.grant_id]),
        "{all:?}"
    );
    for (g, user, client, scope) in [
        (&a1, &alice_id, &app, vec!["email", "openid", "profile"]),
        (&a2, &alice_id, &other, vec!["email", "openid"]),
        (&b1, &bob_id, &app, vec!["email", "openid", "profile"]),
    ] {
        let row = all
            .iter()
            .find(|r| r["grant_id"].as_str() == Some(g.grant_id.as_str()))
            .unwrap();
        assert_eq!(row["user_id"].as_str(), Some(user.as_str()), "{row}");
        assert_eq!(row["client_id"].as_str(), Some(client.id.as_str()), "{row}");
        assert_eq!(
            scope_set(row["scope"].as_str().unwrap_or_default()),
            scope,
            "{row}"
        );
        let created = row["created_at"].as_i64().unwrap();
        assert!(
            (start - 1..=end + 1).contains(&created),
            "created_at: {row}"
        );
        assert_eq!(row["last_used_at"].as_i64(), Some(created), "{row}");
        assert_eq!(
            row["expires_at"].as_i64(),
            Some(created + 14 * 24 * 3600),
            "a new grant lives refresh_idle_ttl: {row}"
        );
        assert!(row["revoked_at"].is_null(), "{row}");
        assert_eq!(row["refresh_generation"].as_i64(), Some(1), "{row}");
        // The sub of the access token is the grant's user.
        let (_, claims) = decode_jwt(&g.access);
        assert_eq!(claims["sub"].as_str(), Some(user.as_str()));
    }

    // Filters.
    let (g1, g2, g3) = (
        a1.grant_id.as_str(),
        a2.grant_id.as_str(),
        b1.grant_id.as_str(),
    );
    let filters: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["--user", "alice"], vec![g1, g2]),
        (vec!["--user", &alice_id], vec![g1, g2]),
        (vec!["--user", "bob"], vec![g3]),
        (vec!["--client", &app.id], vec![g1, g3]),
        (vec!["--client", &other.id], vec![g2]),
        (vec!["--user", "alice", "--client", &app.id], vec![g1]),
        (vec!["--user", "bob", "--client", &other.id], vec![]),
    ];
    for (args, expected) in &filters {
        assert_eq!(
            grant_ids(&grant_list(&server, args)),
            set(expected),
            "grant list {args:?}"
        );
    }

    // A refresh shows in the list.
    let a1 = refreshed(&server, &app, &a1.refresh).await;
    let row = grant_list(&server, &["--user", "alice", "--client", &app.id]);
    assert_eq!(row.len(), 1);
    assert_eq!(
        row[0]["refresh_generation"].as_i64(),
        Some(2),
        "{:?}",
        row[0]
    );
    assert!(row[0]["last_used_at"].as_i64().unwrap() >= row[0]["created_at"].as_i64().unwrap());

    // Revoke a1 while the server runs: effective at once.
    introspect(&server, Some(app.auth()), &a1.access)
        .await
        .active();
    let out = server.cli_ok(&["grant", "revoke"], &[&a1.grant_id], None);
    assert!(out.contains(&a1.grant_id), "grant revoke printed {out:?}");
    let revoked_by = unix_now();
    assert_refresh_refused(&server, &app, &a1.refresh, "grant revoke").await;
    introspect(&server, Some(app.auth()), &a1.access)
        .await
        .assert_inactive();
    assert_userinfo_revoked(&server, &a1.access, "grant revoke").await;
    // The others are untouched.
    refreshed(&server, &other, &a2.refresh).await;
    refreshed(&server, &app, &b1.refresh).await;

    assert_eq!(
        grant_ids(&grant_list(&server, &[])),
        set(&[&a2.grant_id, &b1.grant_id]),
        "active grants after the revocation"
    );
    let with_revoked = grant_list(&server, &["--all"]);
    assert_eq!(
        grant_ids(&with_revoked),
        set(&[&a1.grant_id, &a2.grant_id, &b1.grant_id])
    );
    let row = with_revoked
        .iter()
        .find(|r| r["grant_id"].as_str() == Some(a1.grant_id.as_str()))
        .unwrap();
    let at = row["revoked_at"]
        .as_i64()
        .unwrap_or_else(|| panic!("revoked_at: {row}"));
    assert!(
        (start..=revoked_by + 1).contains(&at),
        "revoked_at {at}: {row}"
    );

    // An unknown grant is an error.
    let out = server.cli(&["grant", "revoke"], &["no-such-grant"], None);
    assert!(
        !out.status.success(),
        "revoking an unknown grant succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_delete_revokes_the_users_grants() {
    let server = TestServer::start();
    let alice_id = server.create_user("alice", "alice@example.com", "Alice Liddell");
    server.create_user("bob", "bob@example.com", "Bob");
    let app = server.create_client("App", &[]);
    let other = server.create_client("Other", &[]);
    let alice = Browser::new(&server.issuer);
    let a1 = code_flow(&server, &alice, &app, "alice", FULL_SCOPE).await;
    let a2 = code_flow(&server, &alice, &other, "alice", FULL_SCOPE).await;
    let b1 = code_flow(
        &server,
        &Browser::new(&server.issuer),
        &app,
        "bob",
        FULL_SCOPE,
    )
    .await;
    assert_userinfo_ok(&server, &a1.access, "before").await;

    server.cli_ok(&["user", "delete"], &["alice"], None);

    for (g, client) in [(&a1, &app), (&a2, &other)] {
        assert_refresh_refused(&server, client, &g.refresh, "deleted user").await;
        assert_userinfo_revoked(&server, &g.access, "deleted user").await;
        introspect(&server, Some(client.auth()), &g.access)
            .await
            .assert_inactive();
        introspect(&server, Some(client.auth()), &g.refresh)
            .await
            .assert_inactive();
    }
    let b = refreshed(&server, &app, &b1.refresh).await;
    assert_userinfo_ok(&server, &b.access, "bob").await;

    // The feed names the user by the sub of their tokens.
    let (_, claims) = decode_jwt(&a1.access);
    assert_eq!(claims["sub"].as_str(), Some(alice_id.as_str()));
    let feed = feed(&server, Some(creds(&feed_reader(&server))), None)
        .await
        .ok_json();
    assert!(feed_lists(&feed, "user", &alice_id), "{feed}");
    // Her session ended too: the browser must sign in again (and cannot).
    assert!(!signed_in(&server, &alice, &app).await);
}

/// A client registered as an API, which may read the revocation feed.
fn feed_reader(server: &TestServer) -> TestClient {
    server.create_client(
        "Feed reader",
        &[
            "--grant-types",
            "client_credentials",
            "--serves-audience",
            "urn:latchkey:feed-reader",
        ],
    )
}
