//! The attack suite: table-driven attacks over real HTTP, grouped by kind.
//!
//! Each kind is one test that starts one server and runs every case of its table. A
//! case names the attack (with the SECURITY-CHECKLIST.md id or the RFC section it
//! checks), the request, and the precise outcome the specification demands: status,
//! error code, where the answer goes (error page, redirect to the validated redirect
//! URI, JSON) and the headers and parameters that must or must not come with it. A
//! kind does not stop at the first mismatch: it collects them all, prints how many
//! cases it ran, and fails at the end with the complete list.
//!
//! Run with `cargo test -p latchkey-server --test it attacks -- --nocapture` to see
//! the per-kind counts of a passing run.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use serde_json::Value;

use crate::support::*;

// ---------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------

/// One kind's run: how many cases, and every case whose answer was wrong.
struct Report {
    kind: &'static str,
    cases: usize,
    failures: Vec<String>,
    started: Instant,
}

impl Report {
    fn new(kind: &'static str) -> Report {
        Report {
            kind,
            cases: 0,
            failures: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Records one case: `Ok` when the server answered as specified, else what differed.
    fn case(&mut self, name: &str, outcome: Result<(), String>) {
        self.cases += 1;
        if let Err(why) = outcome {
            self.failures.push(format!("{name}: {why}"));
        }
    }

    /// Prints the count and fails with every mismatch.
    fn finish(self) {
        println!(
            "attack suite: {}: {} cases, {} failed, {:.1} s",
            self.kind,
            self.cases,
            self.failures.len(),
            self.started.elapsed().as_secs_f64()
        );
        assert!(
            self.failures.is_empty(),
            "{} of {} {} cases failed:\n  - {}",
            self.failures.len(),
            self.cases,
            self.kind,
            self.failures.join("\n  - ")
        );
    }
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// Sends a request and reads the whole answer; transport failures are mismatches too.
async fn send(req: reqwest::RequestBuilder) -> Result<Page, String> {
    let resp = req
        .send()
        .await
        .map_err(|e| format!("request failed: {}", e.without_url()))?;
    let url = resp.url().clone();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .text()
        .await
        .map_err(|e| format!("reading the body failed: {e}"))?;
    Ok(Page {
        url,
        status,
        headers,
        body,
    })
}

/// Every value of header `name`, joined with ", ".
fn header_of(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

fn describe(page: &Page) -> String {
    let location = header_of(&page.headers, "location");
    let body: String = page.body.chars().take(240).collect();
    format!("{} (Location: {location:?}) {body:?}", page.status)
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
async fn post_form(
    server: &TestServer,
    path: &str,
    auth: Option<Auth<'_>>,
    params: &[(&str, &str)],
) -> Result<Page, String> {
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
    send(req.form(&form)).await
}

/// POSTs a raw body to `path` with the given headers.
async fn post_raw(
    server: &TestServer,
    path: &str,
    headers: &[(&str, String)],
    body: String,
) -> Result<Page, String> {
    let mut req = backchannel().post(server.url(path));
    for (name, value) in headers {
        req = req.header(*name, value.as_str());
    }
    send(req.body(body)).await
}

const FORM: &str = "application/x-www-form-urlencoded";

fn to_answer(page: Page) -> Result<TokenAnswer, String> {
    let json = serde_json::from_str(&page.body).map_err(|e| {
        format!(
            "{} with a body that is not JSON ({e}): {:?}",
            page.status, page.body
        )
    })?;
    Ok(TokenAnswer {
        status: page.status,
        headers: page.headers,
        json,
    })
}

async fn token_call(
    server: &TestServer,
    auth: Option<Auth<'_>>,
    params: &[(&str, &str)],
) -> Result<TokenAnswer, String> {
    to_answer(post_form(server, "/token", auth, params).await?)
}

async fn metadata(server: &TestServer) -> Value {
    backchannel()
        .get(server.url("/.well-known/openid-configuration"))
        .send()
        .await
        .expect("GET metadata")
        .json()
        .await
        .expect("metadata JSON")
}

async fn introspect(
    server: &TestServer,
    caller: &TestClient,
    token: &str,
) -> Result<Value, String> {
    let page = post_form(
        server,
        "/introspect",
        Some(caller.auth()),
        &[("token", token)],
    )
    .await?;
    ensure!(
        page.status == StatusCode::OK,
        "introspection answered {}",
        describe(&page)
    );
    serde_json::from_str(&page.body).map_err(|e| format!("introspection body {:?}: {e}", page.body))
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/// `latchkey client create --name NAME [--redirect-uri U]... EXTRA --json`; `Err` with
/// the command's stderr when registration is refused.
fn register(
    server: &TestServer,
    name: &str,
    uris: &[&str],
    extra: &[&str],
) -> Result<TestClient, String> {
    let mut args = vec!["--name", name];
    for u in uris {
        args.push("--redirect-uri");
        args.push(u);
    }
    args.extend_from_slice(extra);
    args.push("--json");
    let out = server.cli(&["client", "create"], &args, None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "exit {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let v = stdout
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<Value>(l.trim())
                .ok()
                .filter(Value::is_object)
        })
        .ok_or_else(|| format!("no JSON object in {stdout:?}"))?;
    let id = v["client_id"]
        .as_str()
        .ok_or_else(|| format!("no client_id in {v}"))?
        .to_owned();
    let secret = v["client_secret"].as_str().map(str::to_owned);
    Ok(TestClient { id, secret })
}

fn must_register(server: &TestServer, name: &str, uris: &[&str], extra: &[&str]) -> TestClient {
    register(server, name, uris, extra).unwrap_or_else(|e| panic!("registering {name}: {e}"))
}

/// A confidential client for the client-credentials grant only.
fn service_client(server: &TestServer, name: &str) -> TestClient {
    must_register(
        server,
        name,
        &[],
        &[
            "--grant-types",
            "client_credentials",
            "--scopes",
            "api:read",
        ],
    )
}

// ---------------------------------------------------------------------------
// Authorization requests and what must come back
// ---------------------------------------------------------------------------

/// An authorization request under construction: parameters in order (a name may be
/// repeated), raw text appended verbatim, and the PKCE verifier of its challenge.
#[derive(Debug, Clone)]
struct Authz {
    pairs: Vec<(String, String)>,
    raw: String,
    verifier: String,
}

impl Authz {
    /// A valid code-flow request: PKCE S256, `state`, `nonce`, scope `openid profile email`.
    fn new(client_id: &str, redirect_uri: &str, state: &str) -> Authz {
        let (challenge, verifier) = pkce();
        let pairs = [
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", redirect_uri),
            ("scope", "openid profile email"),
            ("state", state),
            ("nonce", "n-attack-suite"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        Authz {
            pairs,
            raw: String::new(),
            verifier,
        }
    }

    /// Replaces `name` (or adds it).
    fn set(mut self, name: &str, value: &str) -> Authz {
        match self.pairs.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => value.clone_into(&mut slot.1),
            None => self.pairs.push((name.to_owned(), value.to_owned())),
        }
        self
    }

    fn set_all(self, params: &[(&str, &str)]) -> Authz {
        params.iter().fold(self, |a, (k, v)| a.set(k, v))
    }

    fn without(mut self, name: &str) -> Authz {
        self.pairs.retain(|(k, _)| k != name);
        self
    }

    /// Sends `name` a second time.
    fn twice(mut self, name: &str, value: &str) -> Authz {
        self.pairs.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Appends `suffix` (like `&nonce=%FF`) to the query as it is.
    fn raw(mut self, suffix: &str) -> Authz {
        self.raw.push_str(suffix);
        self
    }

    /// The first value of `name`, if it is not empty.
    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn state(&self) -> Option<&str> {
        self.get("state")
    }

    fn redirect_uri(&self) -> &str {
        self.get("redirect_uri").unwrap_or("")
    }

    fn query(&self) -> String {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.pairs {
            ser.append_pair(k, v);
        }
        let mut q = ser.finish();
        q.push_str(&self.raw);
        q
    }

    fn url(&self, issuer: &str) -> String {
        format!("{issuer}/authorize?{}", self.query())
    }
}

/// What an authorization request must get.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// An error page: 400, HTML, no `Location`, no meta refresh or script (BCP-02).
    Page,
    /// 303 to the presented redirect URI with this `error`, the request's `state` (and
    /// none when it sent none), `iss`, no `code` and nothing else (OIDC-11, BCP-23).
    Error(&'static str),
    /// The same, where the specification allows several codes.
    ErrorOneOf(&'static [&'static str]),
    /// 303 to the presented redirect URI with `code`, `state` and `iss`.
    Code,
    /// The login page: 200 with the form posting to /login.
    Login,
    /// The consent page: 200 with the form posting to /consent.
    Consent,
}

/// Checks `page` against `expect`; returns the code for [`Expect::Code`].
fn check_authz(
    page: &Page,
    issuer: &str,
    redirect_uri: &str,
    state: Option<&str>,
    expect: Expect,
) -> Result<Option<String>, String> {
    match expect {
        Expect::Page => check_error_page(page).map(|()| None),
        Expect::Login => {
            ensure!(
                page.is_login_page(),
                "expected the login page, got {}",
                describe(page)
            );
            Ok(None)
        }
        Expect::Consent => {
            ensure!(
                page.is_consent_page(),
                "expected the consent page, got {}",
                describe(page)
            );
            Ok(None)
        }
        Expect::Error(e) => {
            check_error_redirect(page, issuer, redirect_uri, state, &[e]).map(|()| None)
        }
        Expect::ErrorOneOf(es) => {
            check_error_redirect(page, issuer, redirect_uri, state, es).map(|()| None)
        }
        Expect::Code => check_code_redirect(page, issuer, redirect_uri, state).map(Some),
    }
}

fn check_error_page(page: &Page) -> Result<(), String> {
    ensure!(
        page.status == StatusCode::BAD_REQUEST,
        "expected a 400 error page (no redirect), got {}",
        describe(page)
    );
    ensure!(
        page.headers.get(header::LOCATION).is_none(),
        "an error page carries a Location: {}",
        describe(page)
    );
    let ct = header_of(&page.headers, "content-type").unwrap_or_default();
    ensure!(
        ct.starts_with("text/html"),
        "error page Content-Type {ct:?}"
    );
    let lower = page.body.to_ascii_lowercase();
    ensure!(
        !lower.contains("http-equiv=\"refresh\"") && !lower.contains("<script"),
        "the error page moves the browser on by itself: {}",
        describe(page)
    );
    Ok(())
}

/// The parameters the server appended to `redirect_uri` in the `Location` of a 303,
/// which must start with the presented redirect URI exactly.
fn response_params(
    page: &Page,
    redirect_uri: &str,
) -> Result<(String, Vec<(String, String)>), String> {
    ensure!(
        page.status == StatusCode::SEE_OTHER,
        "expected 303 to {redirect_uri}, got {}",
        describe(page)
    );
    let location = header_of(&page.headers, "location").ok_or("303 without Location")?;
    let rest = location.strip_prefix(redirect_uri).ok_or_else(|| {
        format!("redirected to {location}, which is not the presented redirect URI {redirect_uri}")
    })?;
    let sep = if redirect_uri.contains('?') { '&' } else { '?' };
    let query = rest.strip_prefix(sep).ok_or_else(|| {
        format!("redirected to {location}: the response is not appended to {redirect_uri}")
    })?;
    ensure!(!query.contains('#'), "a fragment in {location}");
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    for (i, (k, _)) in pairs.iter().enumerate() {
        ensure!(
            !pairs[..i].iter().any(|(p, _)| p == k),
            "parameter {k} twice in {location}"
        );
    }
    Ok((location, pairs))
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn check_state_and_iss(
    pairs: &[(String, String)],
    location: &str,
    issuer: &str,
    state: Option<&str>,
) -> Result<(), String> {
    let got = param(pairs, "state");
    ensure!(
        got == state,
        "state {got:?} in {location}, expected {state:?} exactly (OIDC-04, TM-16)"
    );
    let iss = param(pairs, "iss");
    ensure!(
        iss == Some(issuer),
        "iss {iss:?} in {location}, expected {issuer} (RFC 9207, BCP-23)"
    );
    Ok(())
}

/// RFC 6749 §5.2 `error_description`: `%x20-21 / %x23-5B / %x5D-7E`.
fn check_description(d: &str) -> Result<(), String> {
    ensure!(
        d.bytes()
            .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5b | 0x5d..=0x7e)),
        "error_description {d:?} has characters outside RFC 6749 §5.2 (OIDC-11)"
    );
    Ok(())
}

fn check_error_redirect(
    page: &Page,
    issuer: &str,
    redirect_uri: &str,
    state: Option<&str>,
    allowed: &[&str],
) -> Result<(), String> {
    let (location, pairs) = response_params(page, redirect_uri)?;
    let error = param(&pairs, "error").ok_or_else(|| format!("no error in {location}"))?;
    ensure!(
        allowed.contains(&error),
        "error={error} in {location}, expected {}",
        allowed.join(" or ")
    );
    ensure!(
        param(&pairs, "code").is_none(),
        "an error response carries a code: {location}"
    );
    check_state_and_iss(&pairs, &location, issuer, state)?;
    if let Some(d) = param(&pairs, "error_description") {
        check_description(d)?;
    }
    for (k, _) in &pairs {
        ensure!(
            ["error", "error_description", "error_uri", "state", "iss"].contains(&k.as_str()),
            "unexpected parameter {k} in the error response {location} (OIDC-11)"
        );
    }
    Ok(())
}

fn check_code_redirect(
    page: &Page,
    issuer: &str,
    redirect_uri: &str,
    state: Option<&str>,
) -> Result<String, String> {
    let (location, pairs) = response_params(page, redirect_uri)?;
    ensure!(
        param(&pairs, "error").is_none(),
        "expected a code, got an error: {location}"
    );
    check_state_and_iss(&pairs, &location, issuer, state)?;
    for (k, _) in &pairs {
        ensure!(
            ["code", "state", "iss"].contains(&k.as_str()),
            "unexpected parameter {k} in {location}"
        );
    }
    let code = param(&pairs, "code").ok_or_else(|| format!("no code in {location}"))?;
    ensure!(
        code.len() >= 22,
        "code {code:?} is too short for 128 bits (TM-04)"
    );
    Ok(code.to_owned())
}

/// Sends `req` to /authorize from `browser`, as a GET or as a form POST.
async fn authorize(
    server: &TestServer,
    browser: &Browser,
    req: &Authz,
    post: bool,
) -> Result<Page, String> {
    if post {
        send(
            browser
                .http
                .post(server.url("/authorize"))
                .header(header::CONTENT_TYPE, FORM)
                .body(req.query()),
        )
        .await
    } else {
        send(browser.http.get(req.url(&server.issuer))).await
    }
}

/// Sends `req` and checks the answer against `expect`.
async fn authz_case(
    server: &TestServer,
    browser: &Browser,
    req: &Authz,
    expect: Expect,
) -> Result<Option<String>, String> {
    let page = authorize(server, browser, req, false).await?;
    check_authz(
        &page,
        &server.issuer,
        req.redirect_uri(),
        req.state(),
        expect,
    )
}

// ---------------------------------------------------------------------------
// Flows
// ---------------------------------------------------------------------------

/// Submits the login form on `page` as `user` and follows the server's redirects.
async fn sign_in(browser: &Browser, page: &Page, user: &str) -> Result<Page, String> {
    let answer = browser.submit_login(page, user, PASSWORD).await;
    ensure!(
        answer.status == StatusCode::SEE_OTHER,
        "POST /login answered {}",
        describe(&answer)
    );
    Ok(browser.follow(answer).await)
}

/// Submits the consent form on `page` with `decision`; returns the raw answer.
async fn submit_consent(browser: &Browser, page: &Page, decision: &str) -> Result<Page, String> {
    let form = page
        .form("/consent")
        .ok_or_else(|| format!("no consent form in {}", describe(page)))?;
    let mut fields = form.hidden.clone();
    fields.push(("decision".to_owned(), decision.to_owned()));
    let action = page.url.join(&form.action).map_err(|e| e.to_string())?;
    Ok(browser.post_form(action.as_str(), &fields).await)
}

/// Takes `req` through `browser` until it leaves the server: signs in as `user` when
/// the login page comes, allows when the consent page comes.
async fn run_flow(
    server: &TestServer,
    browser: &Browser,
    req: &Authz,
    user: &str,
) -> Result<Page, String> {
    let mut page = browser.visit(&req.url(&server.issuer)).await;
    if page.is_login_page() {
        page = sign_in(browser, &page, user).await?;
    }
    if page.is_consent_page() {
        page = submit_consent(browser, &page, "allow").await?;
    }
    Ok(page)
}

/// A code for `req` (see [`run_flow`]), its redirect checked.
async fn code_via(
    server: &TestServer,
    browser: &Browser,
    req: &Authz,
    user: &str,
) -> Result<String, String> {
    let page = run_flow(server, browser, req, user).await?;
    check_code_redirect(&page, &server.issuer, req.redirect_uri(), req.state())
}

/// What a successful token response carried.
#[derive(Debug, Clone)]
struct Tokens {
    access: String,
    refresh: Option<String>,
    id_token: Option<String>,
    scope: String,
}

fn tokens(a: &TokenAnswer) -> Result<Tokens, String> {
    check_token(a, Tok::Ok)?;
    let s = |k: &str| a.json[k].as_str().map(str::to_owned);
    Ok(Tokens {
        access: s("access_token").unwrap_or_default(),
        refresh: s("refresh_token"),
        id_token: s("id_token"),
        scope: s("scope").unwrap_or_default(),
    })
}

async fn redeem_at(
    server: &TestServer,
    client: &TestClient,
    code: &str,
    redirect_uri: Option<&str>,
    verifier: Option<&str>,
) -> Result<TokenAnswer, String> {
    let mut p = vec![("grant_type", "authorization_code"), ("code", code)];
    if let Some(r) = redirect_uri {
        p.push(("redirect_uri", r));
    }
    if let Some(v) = verifier {
        p.push(("code_verifier", v));
    }
    token_call(server, Some(client.auth()), &p).await
}

/// The whole flow for `req` and the code's redemption by `client`.
async fn tokens_via(
    server: &TestServer,
    browser: &Browser,
    client: &TestClient,
    req: &Authz,
    user: &str,
) -> Result<Tokens, String> {
    Ok(code_and_tokens_via(server, browser, client, req, user)
        .await?
        .1)
}

/// [`tokens_via`], keeping the code (to present it again).
async fn code_and_tokens_via(
    server: &TestServer,
    browser: &Browser,
    client: &TestClient,
    req: &Authz,
    user: &str,
) -> Result<(String, Tokens), String> {
    let code = code_via(server, browser, req, user).await?;
    let a = redeem_at(
        server,
        client,
        &code,
        Some(req.redirect_uri()),
        Some(&req.verifier),
    )
    .await?;
    Ok((code, tokens(&a)?))
}

async fn refresh_call(
    server: &TestServer,
    auth: Option<Auth<'_>>,
    rt: &str,
    scope: Option<&str>,
) -> Result<TokenAnswer, String> {
    let mut p = vec![("grant_type", "refresh_token"), ("refresh_token", rt)];
    if let Some(s) = scope {
        p.push(("scope", s));
    }
    token_call(server, auth, &p).await
}

// ---------------------------------------------------------------------------
// Token endpoint answers
// ---------------------------------------------------------------------------

/// What a token request must get.
#[derive(Debug, Clone, Copy)]
enum Tok {
    /// 200, JSON, `token_type` Bearer, an access token.
    Ok,
    /// This status and `error`.
    Err(u16, &'static str),
    /// This status and any of these errors, where the specification allows several.
    ErrOneOf(u16, &'static [&'static str]),
}

/// Checks a token-endpoint answer; every one, success or error, is JSON with
/// `Cache-Control: no-store` (RFC 6749 §5.1, OIDC-21, REL-09).
fn check_token(a: &TokenAnswer, expect: Tok) -> Result<(), String> {
    let (status, allowed): (u16, Vec<&str>) = match expect {
        Tok::Ok => {
            ensure!(
                a.status == StatusCode::OK,
                "expected 200, got {} {}",
                a.status,
                a.json
            );
            ensure!(
                a.json["token_type"]
                    .as_str()
                    .is_some_and(|t| t.eq_ignore_ascii_case("bearer")),
                "token_type in {}",
                a.json
            );
            ensure!(
                a.json["access_token"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty()),
                "no access_token in {}",
                a.json
            );
            return check_json_no_store(a);
        }
        Tok::Err(s, e) => (s, vec![e]),
        Tok::ErrOneOf(s, es) => (s, es.to_vec()),
    };
    let error = a.json["error"].as_str().unwrap_or("");
    ensure!(
        a.status.as_u16() == status && allowed.contains(&error),
        "expected {status} {}, got {} {}",
        allowed.join(" or "),
        a.status,
        a.json
    );
    for k in ["access_token", "refresh_token", "id_token"] {
        ensure!(
            a.json.get(k).is_none(),
            "an error answer carries {k}: {}",
            a.json
        );
    }
    if let Some(d) = a.json.get("error_description") {
        check_description(
            d.as_str()
                .ok_or_else(|| format!("error_description is not a string: {}", a.json))?,
        )?;
    }
    check_json_no_store(a)
}

fn check_json_no_store(a: &TokenAnswer) -> Result<(), String> {
    let cc = header_of(&a.headers, "cache-control").unwrap_or_default();
    ensure!(
        cc.to_ascii_lowercase().contains("no-store"),
        "Cache-Control {cc:?} lacks no-store (RFC 6749 §5.1, REL-09)"
    );
    let ct = header_of(&a.headers, "content-type").unwrap_or_default();
    ensure!(
        ct.starts_with("application/json"),
        "Content-Type {ct:?} is not JSON (OIDC-21)"
    );
    Ok(())
}

/// For a 401 after HTTP Basic: `WWW-Authenticate: Basic ...` (RFC 6749 §5.2).
fn check_basic_challenge(a: &TokenAnswer) -> Result<(), String> {
    let www = header_of(&a.headers, "www-authenticate").unwrap_or_default();
    ensure!(
        www.to_ascii_lowercase().starts_with("basic"),
        "401 after HTTP Basic without WWW-Authenticate: Basic (got {www:?}; RFC 6749 §5.2)"
    );
    Ok(())
}

/// The claims of a JWT (signature not checked).
fn claims(jwt: &str) -> Value {
    decode_jwt(jwt).1
}

/// `jwt` with one character of its signature changed.
fn tampered_signature(jwt: &str) -> String {
    let (rest, sig) = jwt.rsplit_once('.').expect("a JWS");
    let mut sig = sig.to_owned();
    let first = if sig.starts_with('A') { "B" } else { "A" };
    sig.replace_range(..1, first);
    format!("{rest}.{sig}")
}

/// `jwt`'s claims under an `alg: none` header, unsigned.
fn unsigned_copy(jwt: &str) -> String {
    let payload = jwt.split('.').nth(1).expect("a JWS payload");
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    format!("{header}.{payload}.")
}

/// `token` with one character in the middle changed (to another of the same alphabet).
fn flip_middle(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let i = chars.len() / 2 + 3;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

// ===========================================================================
// Redirect URI comparison
// ===========================================================================

/// BCP-01, BCP-02, BCP-15, TM-13, RFC 8252 §7.3 and §8.3: registration rules, then
/// exact string comparison at /authorize (the only leeway: the port of a loopback IP
/// literal over http). A presented URI that does not match gets an error page; one that
/// matches gets the answer itself (here `login_required`, as nobody is signed in), at
/// exactly the presented URI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_redirect_uri() {
    let mut report = Report::new("redirect URI comparison");
    let server = TestServer::start();

    #[rustfmt::skip]
    const REGISTRATION: &[(&str, &str, bool)] = &[
        ("https", "https://c.example/cb", true),
        ("https with a query", "https://c.example/cb?x=1", true),
        ("RFC 8252 §7.3 loopback IPv4 over http", "http://127.0.0.1/cb", true),
        ("RFC 8252 §7.3 loopback IPv4 with a port", "http://127.0.0.1:8080/cb", true),
        ("RFC 8252 §7.3 loopback IPv6 over http", "http://[::1]/cb", true),
        ("RFC 8252 §7.1 private-use scheme", "com.example.app:/cb", true),
        ("BCP-15 plain http", "http://c.example/cb", false),
        ("RFC 8252 §8.3 http://localhost", "http://localhost/cb", false),
        ("RFC 8252 §8.3 http://localhost with a port", "http://localhost:8080/cb", false),
        ("BCP-15 loopback look-alike host", "http://127.0.0.1.evil.example/cb", false),
        ("BCP-15 http to a private address", "http://10.0.0.1/cb", false),
        ("BCP-15 http to 0.0.0.0", "http://0.0.0.0/cb", false),
        ("BCP-15 http to IPv4-mapped loopback", "http://[::ffff:127.0.0.1]/cb", false),
        ("BCP-15 http to 127.1", "http://127.1/cb", false),
        ("RFC 6749 §3.1.2 fragment", "https://c.example/cb#f", false),
        ("RFC 6749 §3.1.2 empty fragment", "https://c.example/cb#", false),
        ("user information", "https://user@c.example/cb", false),
        ("user information with a password", "https://user:pw@c.example/cb", false),
        ("loopback with user information", "http://127.0.0.1:8080@evil.example/cb", false),
        ("javascript: scheme", "javascript:alert(1)", false),
        ("data: scheme", "data:text/html,hi", false),
        ("file: scheme", "file:///etc/passwd", false),
        ("custom scheme without a period", "myapp:/cb", false),
        ("relative reference", "/cb", false),
        ("no scheme", "c.example/cb", false),
        ("a space", "https://c.example/c b", false),
        ("a line feed", "https://c.example/cb\n", false),
    ];
    for (name, uri, ok) in REGISTRATION {
        let outcome = match (register(&server, "reg", &[uri], &[]), ok) {
            (Ok(_), true) | (Err(_), false) => Ok(()),
            (Ok(_), false) => Err(format!("{uri:?} was registered; it must be refused")),
            (Err(e), true) => Err(format!("{uri:?} was refused: {e}")),
        };
        report.case(&format!("register: {name}"), outcome);
    }

    let web = must_register(&server, "web", &["https://c.example/cb"], &[]);
    let query = must_register(&server, "query", &["https://c.example/cbq?x=1"], &[]);
    let two = must_register(
        &server,
        "two",
        &["https://c.example/one", "https://c.example/two"],
        &[],
    );
    let ip4 = must_register(&server, "ip4", &["https://192.0.2.1/cb"], &[]);
    let ip6 = must_register(&server, "ip6", &["https://[2001:db8::1]/cb"], &[]);
    let idn = must_register(&server, "idn", &["https://xn--bcher-kva.example/cb"], &[]);
    let lo4 = must_register(&server, "lo4", &["http://127.0.0.1/cb"], &["--public"]);
    let lo4p = must_register(
        &server,
        "lo4p",
        &["http://127.0.0.1:8080/cb"],
        &["--public"],
    );
    let lo6 = must_register(&server, "lo6", &["http://[::1]/cb"], &["--public"]);
    let tls_lo = must_register(&server, "tls-lo", &["https://127.0.0.1/cb"], &[]);
    let native = must_register(&server, "native", &["com.example.app:/cb"], &["--public"]);

    // (case, client, presented redirect_uri (None: left out), accepted)
    #[rustfmt::skip]
    let cases: Vec<(&str, &TestClient, Option<&str>, bool)> = vec![
        ("BCP-01 exact match", &web, Some("https://c.example/cb"), true),
        ("BCP-01 path in upper case", &web, Some("https://c.example/CB"), false),
        ("BCP-01 host in upper case", &web, Some("https://C.EXAMPLE/cb"), false),
        ("BCP-01 scheme in upper case", &web, Some("HTTPS://c.example/cb"), false),
        ("BCP-01 trailing slash", &web, Some("https://c.example/cb/"), false),
        ("BCP-01 added query", &web, Some("https://c.example/cb?x=1"), false),
        ("BCP-01 added empty query", &web, Some("https://c.example/cb?"), false),
        ("BCP-01 added fragment", &web, Some("https://c.example/cb#f"), false),
        ("BCP-01 added empty fragment", &web, Some("https://c.example/cb#"), false),
        ("BCP-01 percent-encoded path character", &web, Some("https://c.example/c%62"), false),
        ("BCP-01 percent-encoded first character", &web, Some("https://c.example/%63b"), false),
        ("BCP-01 encoded slash appended", &web, Some("https://c.example/cb%2F"), false),
        ("BCP-01 explicit default port 443", &web, Some("https://c.example:443/cb"), false),
        ("BCP-01 other port", &web, Some("https://c.example:8443/cb"), false),
        ("BCP-01 user information", &web, Some("https://x@c.example/cb"), false),
        ("BCP-01 registered host as user information", &web, Some("https://c.example@evil.example/cb"), false),
        ("BCP-01 registered host as a subdomain", &web, Some("https://c.example.evil.example/cb"), false),
        ("BCP-01 other host", &web, Some("https://evil.example/cb"), false),
        ("BCP-15 scheme downgraded to http", &web, Some("http://c.example/cb"), false),
        ("BCP-01 dot-dot segment", &web, Some("https://c.example/x/../cb"), false),
        ("BCP-01 dot segment", &web, Some("https://c.example/./cb"), false),
        ("BCP-01 trailing dot in the host", &web, Some("https://c.example./cb"), false),
        ("BCP-01 leading space", &web, Some(" https://c.example/cb"), false),
        ("BCP-01 trailing space", &web, Some("https://c.example/cb "), false),
        ("BCP-01 protocol-relative", &web, Some("//c.example/cb"), false),
        ("BCP-01 path parameter", &web, Some("https://c.example/cb;x=1"), false),
        ("BCP-01 backslash instead of slash", &web, Some("https://c.example\\cb"), false),
        ("OIDC-02 redirect_uri left out (one registered)", &web, None, false),
        ("oidcc-redirect-uri-query-OK: registered query repeated", &query, Some("https://c.example/cbq?x=1"), true),
        ("oidcc-redirect-uri-query-mismatch", &query, Some("https://c.example/cbq?x=2"), false),
        ("oidcc-redirect-uri-query-added", &query, Some("https://c.example/cbq?x=1&y=2"), false),
        ("registered query left out", &query, Some("https://c.example/cbq"), false),
        ("two registered: the first", &two, Some("https://c.example/one"), true),
        ("two registered: the second", &two, Some("https://c.example/two"), true),
        ("oidcc-ensure-redirect-uri-in-authorization-request: two registered, none sent", &two, None, false),
        ("two registered: a mix of both", &two, Some("https://c.example/onetwo"), false),
        ("IP literal: exact", &ip4, Some("https://192.0.2.1/cb"), true),
        ("IP literal: zero-padded octets", &ip4, Some("https://192.000.002.001/cb"), false),
        ("IP literal: one decimal number", &ip4, Some("https://3221225985/cb"), false),
        ("IP literal: hexadecimal octet", &ip4, Some("https://0xc0.0.2.1/cb"), false),
        ("IPv6 literal: exact", &ip6, Some("https://[2001:db8::1]/cb"), true),
        ("IPv6 literal: zero-padded group", &ip6, Some("https://[2001:0db8::1]/cb"), false),
        ("IPv6 literal: upper case", &ip6, Some("https://[2001:DB8::1]/cb"), false),
        ("IDN: registered A-label", &idn, Some("https://xn--bcher-kva.example/cb"), true),
        ("IDN: the same name as a U-label", &idn, Some("https://bücher.example/cb"), false),
        ("IDN: A-label in upper case", &idn, Some("https://XN--BCHER-KVA.example/cb"), false),
        ("IDN: homograph with a Cyrillic letter", &web, Some("https://\u{0441}.example/cb"), false),
        ("RFC 8252 §7.3 loopback: registered form", &lo4, Some("http://127.0.0.1/cb"), true),
        ("RFC 8252 §7.3 loopback: any port", &lo4, Some("http://127.0.0.1:51004/cb"), true),
        ("RFC 8252 §7.3 loopback: port 1", &lo4, Some("http://127.0.0.1:1/cb"), true),
        ("RFC 8252 §7.3 loopback: port 65535", &lo4, Some("http://127.0.0.1:65535/cb"), true),
        ("loopback: port 0", &lo4, Some("http://127.0.0.1:0/cb"), false),
        ("loopback: port 65536", &lo4, Some("http://127.0.0.1:65536/cb"), false),
        ("loopback: six-digit port", &lo4, Some("http://127.0.0.1:100000/cb"), false),
        ("BCP-01 loopback with a port and an added query", &lo4, Some("http://127.0.0.1:51004/cb?x=1"), false),
        ("loopback with a port and a trailing slash", &lo4, Some("http://127.0.0.1:51004/cb/"), false),
        ("loopback with a port and the path in upper case", &lo4, Some("http://127.0.0.1:51004/CB"), false),
        ("loopback with a port and a fragment", &lo4, Some("http://127.0.0.1:51004/cb#f"), false),
        ("BCP-01 RFC 8252 §8.3 localhost instead of 127.0.0.1", &lo4, Some("http://localhost:51004/cb"), false),
        ("RFC 8252 §8.3 localhost without a port", &lo4, Some("http://localhost/cb"), false),
        ("loopback: IPv6 for a registered IPv4", &lo4, Some("http://[::1]:51004/cb"), false),
        ("loopback: https instead of http", &lo4, Some("https://127.0.0.1:51004/cb"), false),
        ("loopback: port then user information", &lo4, Some("http://127.0.0.1:51004@evil.example/cb"), false),
        ("loopback: 127.0.0.2", &lo4, Some("http://127.0.0.2:51004/cb"), false),
        ("loopback: 127.1", &lo4, Some("http://127.1:51004/cb"), false),
        ("loopback: hexadecimal first octet", &lo4, Some("http://0x7f.0.0.1:51004/cb"), false),
        ("loopback: signed port", &lo4, Some("http://127.0.0.1:+80/cb"), false),
        ("RFC 8252 §7.3 loopback registered with a port: other port", &lo4p, Some("http://127.0.0.1:9090/cb"), true),
        ("RFC 8252 §7.3 loopback registered with a port: no port", &lo4p, Some("http://127.0.0.1/cb"), true),
        ("RFC 8252 §7.3 loopback IPv6: any port", &lo6, Some("http://[::1]:51004/cb"), true),
        ("loopback IPv6: written out in full", &lo6, Some("http://[0:0:0:0:0:0:0:1]:51004/cb"), false),
        ("loopback IPv6: IPv4 for a registered IPv6", &lo6, Some("http://127.0.0.1:51004/cb"), false),
        ("https to a loopback address: exact", &tls_lo, Some("https://127.0.0.1/cb"), true),
        ("https to a loopback address gets no port leeway", &tls_lo, Some("https://127.0.0.1:8443/cb"), false),
        ("private-use scheme: exact", &native, Some("com.example.app:/cb"), true),
        ("private-use scheme: trailing slash", &native, Some("com.example.app:/cb/"), false),
        ("private-use scheme: upper case", &native, Some("COM.EXAMPLE.APP:/cb"), false),
        ("private-use scheme: authority form", &native, Some("com.example.app://cb"), false),
        ("private-use scheme: added query", &native, Some("com.example.app:/cb?x=1"), false),
    ];
    let browser = Browser::new(&server.issuer);
    for (i, (name, client, presented, accepted)) in cases.iter().enumerate() {
        let state = format!("rs-{i}");
        let mut req = Authz::new(&client.id, presented.unwrap_or(""), &state).set("prompt", "none");
        if presented.is_none() {
            req = req.without("redirect_uri");
        }
        let expect = if *accepted {
            Expect::Error("login_required")
        } else {
            Expect::Page
        };
        let outcome = authz_case(&server, &browser, &req, expect)
            .await
            .map(|_| ());
        report.case(name, outcome);
    }
    report.finish();
}

// ===========================================================================
// PKCE
// ===========================================================================

/// RFC 7636 §4.6 test vector.
const RFC7636_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const RFC7636_CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// BCP-03..BCP-06, RFC 7636: PKCE with S256 is required of every client; a code is
/// redeemed only with the verifier of its own challenge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_pkce() {
    let mut report = Report::new("PKCE");
    let server = TestServer::start();
    server.create_user("alice", "alice@example.com", "Alice");
    let app = server.create_client("App", &[]);
    let native = server.create_client("Native", &["--public"]);
    let browser = Browser::new(&server.issuer);
    // Alice allows App once; after that App gets codes without any page in between.
    tokens_via(
        &server,
        &browser,
        &app,
        &Authz::new(&app.id, REDIRECT_URI, "setup"),
        "alice",
    )
    .await
    .expect("setup flow");

    let meta = metadata(&server).await;
    report.case(
        "BCP-05 metadata code_challenge_methods_supported is exactly [S256]",
        if meta["code_challenge_methods_supported"] == serde_json::json!(["S256"]) {
            Ok(())
        } else {
            Err(format!("got {}", meta["code_challenge_methods_supported"]))
        },
    );

    // Authorization requests that must not yield a code: redirected invalid_request.
    let padded = format!("{}=", &RFC7636_CHALLENGE[..42]);
    let std_b64 = RFC7636_CHALLENGE.replace('-', "+").replace('_', "/");
    let long_challenge = "a".repeat(128);
    let longer = format!("{RFC7636_CHALLENGE}A");
    #[rustfmt::skip]
    let authz_cases: Vec<(&str, &TestClient, Option<&str>, Option<&str>)> = vec![
        ("BCP-04 no code_challenge at all (downgrade)", &app, None, None),
        ("BCP-04 public client without code_challenge", &native, None, None),
        ("BCP-05 challenge without a method (RFC 7636 §4.3 default plain)", &app, Some(RFC7636_CHALLENGE), None),
        ("BCP-05 method plain", &app, Some(RFC7636_VERIFIER), Some("plain")),
        ("BCP-05 method plain for a public client", &native, Some(RFC7636_VERIFIER), Some("plain")),
        ("RFC 7636 §4.4.1 method s256 in lower case", &app, Some(RFC7636_CHALLENGE), Some("s256")),
        ("RFC 7636 §4.4.1 unknown method S512", &app, Some(RFC7636_CHALLENGE), Some("S512")),
        ("empty method (treated as absent, so plain)", &app, Some(RFC7636_CHALLENGE), Some("")),
        ("method S256 without a challenge", &app, None, Some("S256")),
        ("empty challenge", &app, Some(""), Some("S256")),
        ("challenge of 42 characters", &app, Some(&RFC7636_CHALLENGE[..42]), Some("S256")),
        ("challenge of 44 characters", &app, Some(&longer), Some("S256")),
        ("challenge with base64 padding", &app, Some(&padded), Some("S256")),
        ("challenge in standard base64 (+ and /)", &app, Some(&std_b64), Some("S256")),
        ("a 128-character verifier sent as the S256 challenge", &app, Some(&long_challenge), Some("S256")),
    ];
    for (i, (name, client, challenge, method)) in authz_cases.iter().enumerate() {
        let state = format!("pk-{i}");
        let mut req = Authz::new(&client.id, REDIRECT_URI, &state)
            .without("code_challenge")
            .without("code_challenge_method");
        if let Some(c) = challenge {
            req = req.set("code_challenge", c);
        }
        if let Some(m) = method {
            req = req.set("code_challenge_method", m);
        }
        let outcome = authz_case(&server, &browser, &req, Expect::Error("invalid_request")).await;
        report.case(name, outcome.map(|_| ()));
    }

    // Token requests for a code bound to a challenge.
    type Verifier = fn(&str, &str) -> Option<String>;
    const EITHER: &[&str] = &["invalid_grant", "invalid_request"];
    #[rustfmt::skip]
    let token_cases: &[(&str, Verifier, Tok)] = &[
        ("its own verifier", |v, _| Some(v.to_owned()), Tok::Ok),
        ("BCP-03 verifier left out", |_, _| None, Tok::Err(400, "invalid_grant")),
        ("BCP-03 empty verifier", |_, _| Some(String::new()), Tok::Err(400, "invalid_grant")),
        ("BCP-03 another valid verifier", |_, _| Some(pkce().1), Tok::Err(400, "invalid_grant")),
        ("plain downgrade: the challenge sent as the verifier", |_, c| Some(c.to_owned()), Tok::Err(400, "invalid_grant")),
        ("the verifier in upper case", |v, _| Some(v.to_ascii_uppercase()), Tok::Err(400, "invalid_grant")),
        ("the verifier with a character added", |v, _| Some(format!("{v}A")), Tok::Err(400, "invalid_grant")),
        ("RFC 7636 §4.1 verifier of 42 characters", |v, _| Some(v[..42].to_owned()), Tok::ErrOneOf(400, EITHER)),
        ("RFC 7636 §4.1 verifier of 129 characters", |v, _| Some(format!("{v}{}", "a".repeat(129 - v.len()))), Tok::ErrOneOf(400, EITHER)),
        ("RFC 7636 §4.1 verifier with a character outside the alphabet", |v, _| Some(format!("{}+", &v[..v.len() - 1])), Tok::ErrOneOf(400, EITHER)),
        ("RFC 7636 §4.1 verifier with a trailing space", |v, _| Some(format!("{v} ")), Tok::ErrOneOf(400, EITHER)),
    ];
    for (i, (name, verifier, expect)) in token_cases.iter().enumerate() {
        let outcome = async {
            let req = Authz::new(&app.id, REDIRECT_URI, &format!("pt-{i}"));
            let code = code_via(&server, &browser, &req, "alice").await?;
            let challenge = req.get("code_challenge").unwrap_or_default();
            let v = verifier(&req.verifier, challenge);
            let a = redeem_at(&server, &app, &code, Some(REDIRECT_URI), v.as_deref()).await?;
            check_token(&a, *expect)
        }
        .await;
        report.case(name, outcome);
    }

    report.case(
        "a wrong verifier burns the code: the right one afterwards is invalid_grant",
        async {
            let req = Authz::new(&app.id, REDIRECT_URI, "burn");
            let code = code_via(&server, &browser, &req, "alice").await?;
            let wrong =
                redeem_at(&server, &app, &code, Some(REDIRECT_URI), Some(&pkce().1)).await?;
            check_token(&wrong, Tok::Err(400, "invalid_grant"))?;
            let right = redeem_at(
                &server,
                &app,
                &code,
                Some(REDIRECT_URI),
                Some(&req.verifier),
            )
            .await?;
            check_token(&right, Tok::Err(400, "invalid_grant"))
        }
        .await,
    );
    report.case(
        "verifiers of two flows in progress swapped",
        async {
            let one = Authz::new(&app.id, REDIRECT_URI, "swap-1");
            let two = Authz::new(&app.id, REDIRECT_URI, "swap-2");
            let code_one = code_via(&server, &browser, &one, "alice").await?;
            let code_two = code_via(&server, &browser, &two, "alice").await?;
            let a = redeem_at(
                &server,
                &app,
                &code_one,
                Some(REDIRECT_URI),
                Some(&two.verifier),
            )
            .await?;
            check_token(&a, Tok::Err(400, "invalid_grant"))?;
            let b = redeem_at(
                &server,
                &app,
                &code_two,
                Some(REDIRECT_URI),
                Some(&two.verifier),
            )
            .await?;
            check_token(&b, Tok::Ok)
        }
        .await,
    );
    report.case(
        "BCP-06 one challenge in two flows: each code still redeems once only",
        async {
            let one = Authz::new(&app.id, REDIRECT_URI, "same-1")
                .set("code_challenge", RFC7636_CHALLENGE);
            let two = Authz::new(&app.id, REDIRECT_URI, "same-2")
                .set("code_challenge", RFC7636_CHALLENGE);
            let code_one = code_via(&server, &browser, &one, "alice").await?;
            let code_two = code_via(&server, &browser, &two, "alice").await?;
            for code in [&code_one, &code_two] {
                let a = redeem_at(
                    &server,
                    &app,
                    code,
                    Some(REDIRECT_URI),
                    Some(RFC7636_VERIFIER),
                )
                .await?;
                check_token(&a, Tok::Ok)?;
            }
            let again = redeem_at(
                &server,
                &app,
                &code_one,
                Some(REDIRECT_URI),
                Some(RFC7636_VERIFIER),
            )
            .await?;
            check_token(&again, Tok::Err(400, "invalid_grant"))
        }
        .await,
    );
    report.case(
        "BCP-03 public client: verifier left out",
        async {
            let req = Authz::new(&native.id, REDIRECT_URI, "pub");
            let code = code_via(&server, &browser, &req, "alice").await?;
            let a = redeem_at(&server, &native, &code, Some(REDIRECT_URI), None).await?;
            check_token(&a, Tok::Err(400, "invalid_grant"))
        }
        .await,
    );
    report.finish();
}

// ===========================================================================
// Authorization codes
// ===========================================================================

/// The code lifetime of the server in this kind; the default is 60 s (TM-01), shortened
/// here so that the expiry case does not wait a minute.
const SHORT_CODE_TTL: u64 = 5;

/// TM-01..TM-03, BCP-22, REL-01, RFC 6749 §4.1.2 and §4.1.3: a code is single-use (a
/// second use revokes what the first made), bound to its client and to the exact
/// redirect URI of its request, and short-lived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_codes() {
    let mut report = Report::new("authorization codes");
    let ttl = SHORT_CODE_TTL.to_string();
    let server = TestServer::start_with(&[("LATCHKEY_CODE_TTL", &ttl)]);
    server.create_user("alice", "alice@example.com", "Alice");
    let app = server.create_client("App", &[]);
    let other = server.create_client("Other", &[]);
    let public = server.create_client("Public", &["--public"]);
    let two = must_register(
        &server,
        "Two",
        &[REDIRECT_URI, "https://app.example/cb2"],
        &[],
    );
    let loopback = must_register(&server, "Loopback", &["http://127.0.0.1/cb"], &["--public"]);
    let browser = Browser::new(&server.issuer);

    // Issued first, redeemed last, once its lifetime is over.
    let expiring_req = Authz::new(&app.id, REDIRECT_URI, "expiring");
    let expiring = code_via(&server, &browser, &expiring_req, "alice")
        .await
        .expect("setup: a code");
    let expiring_issued = Instant::now();
    // Redeemed at once, presented again once its lifetime is over.
    let late_req = Authz::new(&app.id, REDIRECT_URI, "late-reuse");
    let late_first = code_and_tokens_via(&server, &browser, &app, &late_req, "alice").await;

    let fresh =
        |client: &TestClient, redirect: &str, state: &str| Authz::new(&client.id, redirect, state);

    report.case(
        "TM-01 a fresh code redeems, with no-store, an ID token and a refresh token",
        async {
            let req = fresh(&app, REDIRECT_URI, "once");
            let t = tokens_via(&server, &browser, &app, &req, "alice").await?;
            ensure!(
                t.id_token.is_some() && t.refresh.is_some(),
                "no id_token or refresh_token"
            );
            Ok(())
        }
        .await,
    );

    report.case(
        "OIDC-05 a code for a request with a 4096-character nonce redeems, and the ID token carries the nonce",
        async {
            let nonce = "n\"é".repeat(1024);
            let req = fresh(&app, REDIRECT_URI, "long-nonce").set("nonce", &nonce);
            let t = tokens_via(&server, &browser, &app, &req, "alice").await?;
            let id = claims(t.id_token.as_deref().unwrap_or_default());
            ensure!(id["nonce"] == nonce.as_str(), "the ID token's nonce is {}", id["nonce"]);
            Ok(())
        }
        .await,
    );

    // BCP-22 / TM-10: the second redemption fails and revokes what the first made.
    let reuse = async {
        let req = fresh(&app, REDIRECT_URI, "reuse");
        let (code, first) = code_and_tokens_via(&server, &browser, &app, &req, "alice").await?;
        let second = redeem_at(
            &server,
            &app,
            &code,
            Some(REDIRECT_URI),
            Some(&req.verifier),
        )
        .await?;
        Ok::<_, String>((first, second))
    }
    .await;
    match reuse {
        Err(e) => report.case("BCP-22 code reuse (setup)", Err(e)),
        Ok((first, second)) => {
            report.case(
                "BCP-22 second redemption is invalid_grant",
                check_token(&second, Tok::Err(400, "invalid_grant")),
            );
            let info = userinfo(&server.issuer, Some(&first.access)).await;
            report.case(
                "BCP-22 after reuse the first access token is refused at userinfo",
                if info.status == StatusCode::UNAUTHORIZED {
                    Ok(())
                } else {
                    Err(format!("userinfo answered {} {}", info.status, info.body))
                },
            );
            let rt = first.refresh.clone().unwrap_or_default();
            report.case(
                "BCP-22 after reuse the first refresh token is invalid_grant",
                async {
                    check_token(
                        &refresh_call(&server, Some(app.auth()), &rt, None).await?,
                        Tok::Err(400, "invalid_grant"),
                    )
                }
                .await,
            );
            report.case(
                "BCP-22 after reuse the first access token introspects as inactive",
                async {
                    let v = introspect(&server, &app, &first.access).await?;
                    ensure!(
                        v == serde_json::json!({"active": false}),
                        "introspection said {v}"
                    );
                    Ok(())
                }
                .await,
            );
        }
    }

    // (case, issuing client, redirect_uri in the request, redeeming auth, redirect_uri
    // at the token endpoint, expected)
    let public_id = Auth::PublicId(&public.id);
    let app_as_public = Auth::PublicId(&app.id);
    type CodeCase<'a> = (
        &'a str,
        &'a TestClient,
        &'a str,
        Auth<'a>,
        Option<&'a str>,
        Tok,
    );
    #[rustfmt::skip]
    let cases: Vec<CodeCase<'_>> = vec![
        ("TM-02 another confidential client redeems the code", &app, REDIRECT_URI, other.auth(), Some(REDIRECT_URI), Tok::Err(400, "invalid_grant")),
        ("TM-02 a public client redeems a confidential client's code", &app, REDIRECT_URI, public_id, Some(REDIRECT_URI), Tok::Err(400, "invalid_grant")),
        ("TM-02 a confidential client redeems a public client's code", &public, REDIRECT_URI, app.auth(), Some(REDIRECT_URI), Tok::Err(400, "invalid_grant")),
        ("BCP-14 the code's own client without its secret", &app, REDIRECT_URI, app_as_public, Some(REDIRECT_URI), Tok::Err(401, "invalid_client")),
        ("TM-03 redirect_uri with a trailing slash", &app, REDIRECT_URI, app.auth(), Some("https://app.example/cb/"), Tok::Err(400, "invalid_grant")),
        ("TM-03 redirect_uri left out", &app, REDIRECT_URI, app.auth(), None, Tok::Err(400, "invalid_grant")),
        ("TM-03 redirect_uri percent-encoded differently", &app, REDIRECT_URI, app.auth(), Some("https://app.example/c%62"), Tok::Err(400, "invalid_grant")),
        ("TM-03 redirect_uri with the host in upper case", &app, REDIRECT_URI, app.auth(), Some("https://APP.EXAMPLE/cb"), Tok::Err(400, "invalid_grant")),
        ("TM-03 the client's other registered redirect_uri", &two, REDIRECT_URI, two.auth(), Some("https://app.example/cb2"), Tok::Err(400, "invalid_grant")),
        ("TM-03 the same redirect_uri as in the request", &two, "https://app.example/cb2", two.auth(), Some("https://app.example/cb2"), Tok::Ok),
        ("RFC 8252 §7.3 loopback: code sent to the port asked for, redeemed with it", &loopback, "http://127.0.0.1:51004/cb", loopback.auth(), Some("http://127.0.0.1:51004/cb"), Tok::Ok),
        ("TM-03 loopback code redeemed with the registered URI (no port)", &loopback, "http://127.0.0.1:51004/cb", loopback.auth(), Some("http://127.0.0.1/cb"), Tok::Err(400, "invalid_grant")),
        ("TM-03 loopback code redeemed with another port", &loopback, "http://127.0.0.1:51004/cb", loopback.auth(), Some("http://127.0.0.1:51005/cb"), Tok::Err(400, "invalid_grant")),
    ];
    for (i, (name, issuer_client, redirect, auth, token_redirect, expect)) in
        cases.into_iter().enumerate()
    {
        let outcome = async {
            let req = fresh(issuer_client, redirect, &format!("cc-{i}"));
            let code = code_via(&server, &browser, &req, "alice").await?;
            let mut p = vec![
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("code_verifier", req.verifier.as_str()),
            ];
            if let Some(r) = token_redirect {
                p.push(("redirect_uri", r));
            }
            check_token(&token_call(&server, Some(auth), &p).await?, expect)
        }
        .await;
        report.case(name, outcome);
    }

    // Codes that were never issued.
    let real = code_via(
        &server,
        &browser,
        &fresh(&app, REDIRECT_URI, "real"),
        "alice",
    )
    .await
    .expect("setup: a code");
    let (_, verifier) = pkce();
    #[rustfmt::skip]
    let forged: Vec<(&str, String, Tok)> = vec![
        ("unknown code", "A".repeat(43), Tok::Err(400, "invalid_grant")),
        ("a code with one character changed", flip_middle(&real), Tok::Err(400, "invalid_grant")),
        ("RFC 6749 §3.1 empty code is a missing parameter", String::new(), Tok::Err(400, "invalid_request")),
        ("a code of 4 KiB", "A".repeat(4096), Tok::Err(400, "invalid_grant")),
    ];
    for (name, code, expect) in forged {
        let outcome = async {
            check_token(
                &redeem_at(&server, &app, &code, Some(REDIRECT_URI), Some(&verifier)).await?,
                expect,
            )
        }
        .await;
        report.case(name, outcome);
    }
    report.case(
        "a code presented as a refresh token",
        async {
            check_token(
                &refresh_call(&server, Some(app.auth()), &real, None).await?,
                Tok::Err(400, "invalid_grant"),
            )
        }
        .await,
    );
    let info = userinfo(&server.issuer, Some(&real)).await;
    report.case(
        "a code presented as an access token at userinfo",
        if info.status == StatusCode::UNAUTHORIZED {
            Ok(())
        } else {
            Err(format!("userinfo answered {} {}", info.status, info.body))
        },
    );

    report.case(
        "REL-01 four concurrent redemptions of one code: exactly one succeeds",
        async {
            let req = fresh(&app, REDIRECT_URI, "race");
            let code = code_via(&server, &browser, &req, "alice").await?;
            let mut handles = Vec::new();
            for _ in 0..4 {
                let (issuer, code, verifier) =
                    (server.issuer.clone(), code.clone(), req.verifier.clone());
                let (id, secret) = (app.id.clone(), app.secret.clone().unwrap_or_default());
                handles.push(tokio::spawn(async move {
                    token_request(
                        &issuer,
                        Auth::Basic(&id, &secret),
                        &[
                            ("grant_type", "authorization_code"),
                            ("code", &code),
                            ("redirect_uri", REDIRECT_URI),
                            ("code_verifier", &verifier),
                        ],
                    )
                    .await
                }));
            }
            let mut ok = 0;
            for h in handles {
                let a = h.await.map_err(|e| format!("task: {e}"))?;
                if a.status == StatusCode::OK {
                    ok += 1;
                } else {
                    check_token(&a, Tok::Err(400, "invalid_grant"))?;
                }
            }
            ensure!(ok == 1, "{ok} of 4 concurrent redemptions succeeded");
            Ok(())
        }
        .await,
    );

    let wait = Duration::from_secs(SHORT_CODE_TTL + 1).saturating_sub(expiring_issued.elapsed());
    tokio::time::sleep(wait).await;
    report.case(
        "TM-01 a code redeemed after code_ttl is invalid_grant",
        async {
            let a = redeem_at(
                &server,
                &app,
                &expiring,
                Some(REDIRECT_URI),
                Some(&expiring_req.verifier),
            )
            .await?;
            check_token(&a, Tok::Err(400, "invalid_grant"))
        }
        .await,
    );
    report.case(
        "BCP-22 a redeemed code presented again after code_ttl is invalid_grant and revokes its grant",
        async {
            let (code, first) = late_first?;
            let a = redeem_at(
                &server,
                &app,
                &code,
                Some(REDIRECT_URI),
                Some(&late_req.verifier),
            )
            .await?;
            check_token(&a, Tok::Err(400, "invalid_grant"))?;
            let v = introspect(&server, &app, &first.access).await?;
            ensure!(
                v == serde_json::json!({"active": false}),
                "introspection of the first access token said {v}"
            );
            Ok(())
        }
        .await,
    );
    report.finish();
}

// ===========================================================================
// Refresh tokens
// ===========================================================================

/// BCP-08..BCP-11, OIDC-23, RFC 6749 §6: a refresh token is bound to its client and its
/// grant's scope, rotates at every use, and a superseded one revokes the grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_refresh() {
    let mut report = Report::new("refresh tokens");
    let server = TestServer::start_with(&[("LATCHKEY_REFRESH_GRACE_SECONDS", "0")]);
    server.create_user("alice", "alice@example.com", "Alice");
    let app = server.create_client("App", &[]);
    let other = server.create_client("Other", &[]);
    let public = server.create_client("Public", &["--public"]);
    let no_refresh = server.create_client("No refresh", &["--grant-types", "authorization_code"]);
    let browser = Browser::new(&server.issuer);

    let flow = |client: &TestClient, scope: &str, state: &str| {
        Authz::new(&client.id, REDIRECT_URI, state).set("scope", scope)
    };
    let main = tokens_via(
        &server,
        &browser,
        &app,
        &flow(&app, "openid profile email", "main"),
        "alice",
    )
    .await
    .expect("setup: tokens");
    let mut current = main.refresh.clone().expect("setup: a refresh token");

    report.case(
        "BCP-08 a refresh rotates the refresh token",
        async {
            let t = tokens(&refresh_call(&server, Some(app.auth()), &current, None).await?)?;
            let next = t.refresh.ok_or("no new refresh token")?;
            ensure!(next != current, "the refresh token did not rotate");
            current = next;
            Ok(())
        }
        .await,
    );
    let current_before = current.clone();
    let wrong_secret = "x".repeat(43);
    #[rustfmt::skip]
    let foreign: Vec<(&str, Option<Auth<'_>>, Tok)> = vec![
        ("BCP-09 another confidential client presents it", Some(other.auth()), Tok::Err(400, "invalid_grant")),
        ("BCP-09 a public client presents it", Some(Auth::PublicId(&public.id)), Tok::Err(400, "invalid_grant")),
        ("BCP-14 its client without the secret", Some(Auth::PublicId(&app.id)), Tok::Err(401, "invalid_client")),
        ("its client with a wrong secret", Some(Auth::Basic(&app.id, &wrong_secret)), Tok::Err(401, "invalid_client")),
        ("no client authentication at all", None, Tok::Err(401, "invalid_client")),
    ];
    for (name, auth, expect) in foreign {
        let outcome = async {
            check_token(
                &refresh_call(&server, auth, &current_before, None).await?,
                expect,
            )
        }
        .await;
        report.case(name, outcome);
    }
    report.case(
        "the refused attempts did not revoke the grant: its client still refreshes",
        async {
            let t = tokens(&refresh_call(&server, Some(app.auth()), &current, None).await?)?;
            current = t.refresh.ok_or("no new refresh token")?;
            Ok(())
        }
        .await,
    );

    // BCP-09, RFC 6749 §6: the scope.
    let narrow = tokens_via(
        &server,
        &browser,
        &app,
        &flow(&app, "openid profile", "narrow"),
        "alice",
    )
    .await
    .expect("setup: tokens");
    let mut narrow_rt = narrow.refresh.clone().expect("setup: a refresh token");
    report.case(
        "BCP-09 scope widened beyond what the client may ask for",
        async {
            check_token(
                &refresh_call(
                    &server,
                    Some(app.auth()),
                    &narrow_rt,
                    Some("openid profile admin"),
                )
                .await?,
                Tok::Err(400, "invalid_scope"),
            )
        }
        .await,
    );
    report.case(
        "BCP-09 scope widened beyond the grant (within the client's scopes)",
        async {
            check_token(
                &refresh_call(
                    &server,
                    Some(app.auth()),
                    &narrow_rt,
                    Some("openid profile email"),
                )
                .await?,
                Tok::Err(400, "invalid_scope"),
            )
        }
        .await,
    );
    report.case(
        "RFC 6749 §6 a narrower scope is granted",
        async {
            let t = tokens(
                &refresh_call(&server, Some(app.auth()), &narrow_rt, Some("openid")).await?,
            )?;
            ensure!(
                scope_set(&t.scope) == scope_set("openid"),
                "scope {:?}",
                t.scope
            );
            narrow_rt = t.refresh.ok_or("no new refresh token")?;
            Ok(())
        }
        .await,
    );
    report.case(
        "RFC 6749 §6 the rotated refresh token keeps the grant's scope",
        async {
            let t = tokens(&refresh_call(&server, Some(app.auth()), &narrow_rt, None).await?)?;
            ensure!(
                scope_set(&t.scope) == scope_set("openid profile"),
                "scope {:?}, expected the original openid profile",
                t.scope
            );
            Ok(())
        }
        .await,
    );

    // Tokens that are not this grant's current refresh token.
    let bumped = {
        let mut parts: Vec<String> = current.split('.').map(str::to_owned).collect();
        if parts.len() == 3 {
            parts[1] = parts[1]
                .parse::<u64>()
                .map_or_else(|_| "9".to_owned(), |g| (g + 1).to_string());
        }
        parts.join(".")
    };
    let id_token = main.id_token.clone().unwrap_or_default();
    #[rustfmt::skip]
    let forged: Vec<(&str, String, Tok)> = vec![
        ("BCP-10 one character of the refresh token changed", flip_middle(&current), Tok::Err(400, "invalid_grant")),
        ("the generation of the refresh token bumped", bumped, Tok::Err(400, "invalid_grant")),
        ("a random string", "not-a-refresh-token".to_owned(), Tok::Err(400, "invalid_grant")),
        ("RFC 6749 §3.1 empty refresh_token is a missing parameter", String::new(), Tok::Err(400, "invalid_request")),
        ("an access token as the refresh token", main.access.clone(), Tok::Err(400, "invalid_grant")),
        ("an ID token as the refresh token", id_token, Tok::Err(400, "invalid_grant")),
    ];
    for (name, rt, expect) in forged {
        let outcome = async {
            check_token(
                &refresh_call(&server, Some(app.auth()), &rt, None).await?,
                expect,
            )
        }
        .await;
        report.case(name, outcome);
    }
    report.case(
        "forged refresh tokens did not revoke the grant",
        async {
            let t = tokens(&refresh_call(&server, Some(app.auth()), &current, None).await?)?;
            current = t.refresh.ok_or("no new refresh token")?;
            Ok(())
        }
        .await,
    );

    // BCP-08: reuse of a superseded token revokes the family.
    let reuse = async {
        let t = tokens_via(
            &server,
            &browser,
            &app,
            &flow(&app, "openid profile email", "reuse"),
            "alice",
        )
        .await?;
        let rt1 = t.refresh.ok_or("no refresh token")?;
        let t2 = tokens(&refresh_call(&server, Some(app.auth()), &rt1, None).await?)?;
        let replay = refresh_call(&server, Some(app.auth()), &rt1, None).await?;
        Ok::<_, String>((t2, replay))
    }
    .await;
    match reuse {
        Err(e) => report.case("BCP-08 reuse (setup)", Err(e)),
        Ok((t2, replay)) => {
            report.case(
                "BCP-08 a superseded refresh token is invalid_grant",
                check_token(&replay, Tok::Err(400, "invalid_grant")),
            );
            let rt2 = t2.refresh.clone().unwrap_or_default();
            report.case(
                "BCP-08 after reuse the current refresh token is revoked",
                async {
                    check_token(
                        &refresh_call(&server, Some(app.auth()), &rt2, None).await?,
                        Tok::Err(400, "invalid_grant"),
                    )
                }
                .await,
            );
            let info = userinfo(&server.issuer, Some(&t2.access)).await;
            report.case(
                "BCP-08 after reuse the current access token is refused at userinfo",
                if info.status == StatusCode::UNAUTHORIZED {
                    Ok(())
                } else {
                    Err(format!("userinfo answered {} {}", info.status, info.body))
                },
            );
        }
    }

    report.case(
        "BCP-08 a public client's refresh token rotates, and its reuse revokes the grant",
        async {
            let t = tokens_via(
                &server,
                &browser,
                &public,
                &flow(&public, "openid profile", "pub"),
                "alice",
            )
            .await?;
            let rt1 = t.refresh.ok_or("no refresh token for the public client")?;
            let t2 = tokens(&refresh_call(&server, Some(public.auth()), &rt1, None).await?)?;
            let rt2 = t2.refresh.ok_or("no rotated refresh token")?;
            ensure!(
                rt2 != rt1,
                "the public client's refresh token did not rotate"
            );
            check_token(
                &refresh_call(&server, Some(public.auth()), &rt1, None).await?,
                Tok::Err(400, "invalid_grant"),
            )?;
            check_token(
                &refresh_call(&server, Some(public.auth()), &rt2, None).await?,
                Tok::Err(400, "invalid_grant"),
            )
        }
        .await,
    );
    report.case(
        "BCP-11 a client without the refresh_token grant gets no refresh token",
        async {
            let t = tokens_via(
                &server,
                &browser,
                &no_refresh,
                &flow(&no_refresh, "openid", "norefresh"),
                "alice",
            )
            .await?;
            ensure!(t.refresh.is_none(), "a refresh token was issued");
            Ok(())
        }
        .await,
    );
    report.case(
        "BCP-11 a client without the refresh_token grant cannot refresh",
        async {
            check_token(
                &refresh_call(&server, Some(no_refresh.auth()), &current, None).await?,
                Tok::Err(400, "unauthorized_client"),
            )
        }
        .await,
    );
    report.case(
        "OIDC-23 a refreshed ID token keeps iss, sub, aud and auth_time, and has no nonce",
        async {
            let t = tokens(&refresh_call(&server, Some(app.auth()), &current, None).await?)?;
            current = t.refresh.clone().ok_or("no new refresh token")?;
            let before = claims(main.id_token.as_deref().ok_or("no first ID token")?);
            let after = claims(
                t.id_token
                    .as_deref()
                    .ok_or("no ID token from the refresh")?,
            );
            for k in ["iss", "sub", "aud", "auth_time"] {
                ensure!(
                    before[k] == after[k],
                    "{k} changed from {} to {}",
                    before[k],
                    after[k]
                );
            }
            ensure!(
                after.get("nonce").is_none(),
                "the refreshed ID token carries a nonce"
            );
            Ok(())
        }
        .await,
    );
    report.case(
        "RFC 7009 a refresh token revoked by its client is invalid_grant",
        async {
            let page =
                post_form(&server, "/revoke", Some(app.auth()), &[("token", &current)]).await?;
            ensure!(
                page.status == StatusCode::OK,
                "revocation answered {}",
                describe(&page)
            );
            check_token(
                &refresh_call(&server, Some(app.auth()), &current, None).await?,
                Tok::Err(400, "invalid_grant"),
            )
        }
        .await,
    );
    report.finish();
}

// ===========================================================================
// Client authentication
// ===========================================================================

/// How a client-authentication case presents itself.
#[derive(Debug, Clone)]
enum Present {
    /// `Authorization: <value>` (Basic unless the case says otherwise).
    Header(String),
    /// Body parameters.
    Body(Vec<(&'static str, String)>),
    /// Both.
    Both(String, Vec<(&'static str, String)>),
    /// `client_id`/`client_secret` in the query string of the POST, not the body.
    Query(String, String),
}

/// BCP-14, OIDC-22, RFC 6749 §2.3 and §5.2, REL-08, REL-09: every way of presenting
/// client credentials, right and wrong. Each failing case uses its own fresh client, so
/// that the per-client slowdown after repeated failures (TM-06) never adds up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_client_authentication() {
    let mut report = Report::new("client authentication");
    let server = TestServer::start();
    let app = server.create_client("App", &[]);
    let public = server.create_client("Public", &["--public"]);
    let other = service_client(&server, "Other service");

    let cc = "grant_type=client_credentials";
    let bogus_code = format!(
        "grant_type=authorization_code&code={}&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&code_verifier={}",
        "A".repeat(43),
        "a".repeat(43)
    );
    let other_secret = other.secret.clone().unwrap_or_default();

    /// Which client a case authenticates as.
    #[derive(Clone, Copy)]
    enum Who {
        /// A fresh client-credentials client.
        Service,
        /// The public authorization-code client.
        Public,
        /// The confidential authorization-code client.
        App,
    }
    type Make = fn(&str, &str, &str) -> Present;
    // (case, who, credentials from (id, secret, another client's secret), body, expected)
    #[rustfmt::skip]
    let cases: Vec<(&str, Who, Make, &str, Tok)> = vec![
        ("client_secret_basic", Who::Service, |id, s, _| Present::Header(basic(id, s)), cc, Tok::Ok),
        ("client_secret_post", Who::Service, |id, s, _| Present::Body(vec![("client_id", id.into()), ("client_secret", s.into())]), cc, Tok::Ok),
        ("RFC 9110 §11.1 Basic scheme in lower case", Who::Service, |id, s, _| Present::Header(basic(id, s).replacen("Basic", "basic", 1)), cc, Tok::Ok),
        ("RFC 9110 §11.1 Basic scheme in upper case", Who::Service, |id, s, _| Present::Header(basic(id, s).replacen("Basic", "BASIC", 1)), cc, Tok::Ok),
        ("Basic plus the same client_id in the body", Who::Service, |id, s, _| Present::Both(basic(id, s), vec![("client_id", id.into())]), cc, Tok::Ok),
        ("Basic with a wrong secret", Who::Service, |id, _, _| Present::Header(basic(id, &"x".repeat(43))), cc, Tok::Err(401, "invalid_client")),
        ("Basic with the secret's last character changed", Who::Service, |id, s, _| Present::Header(basic(id, &flip_last(s))), cc, Tok::Err(401, "invalid_client")),
        ("Basic with the secret truncated by one", Who::Service, |id, s, _| Present::Header(basic(id, &s[..s.len() - 1])), cc, Tok::Err(401, "invalid_client")),
        ("Basic with the secret plus one character", Who::Service, |id, s, _| Present::Header(basic(id, &format!("{s}x"))), cc, Tok::Err(401, "invalid_client")),
        ("Basic with an empty secret", Who::Service, |id, _, _| Present::Header(basic(id, "")), cc, Tok::Err(401, "invalid_client")),
        ("Basic with a 4 KiB secret", Who::Service, |id, _, _| Present::Header(basic(id, &"x".repeat(4096))), cc, Tok::Err(401, "invalid_client")),
        ("Basic with another client's secret", Who::Service, |id, _, o| Present::Header(basic(id, o)), cc, Tok::Err(401, "invalid_client")),
        ("Basic with the secret in upper case", Who::Service, |id, s, _| Present::Header(basic(id, &s.to_ascii_uppercase())), cc, Tok::Err(401, "invalid_client")),
        ("Basic for an unknown client", Who::Service, |_, s, _| Present::Header(basic("no-such-client", s)), cc, Tok::Err(401, "invalid_client")),
        ("client_id in another letter case, with the right secret", Who::Service, |id, s, _| Present::Header(basic(&id.to_ascii_uppercase(), s)), cc, Tok::Err(401, "invalid_client")),
        ("client_secret_post with a wrong secret", Who::Service, |id, _, _| Present::Body(vec![("client_id", id.into()), ("client_secret", "x".repeat(43))]), cc, Tok::Err(401, "invalid_client")),
        ("client_secret_post with the secret's last character changed", Who::Service, |id, s, _| Present::Body(vec![("client_id", id.into()), ("client_secret", flip_last(s))]), cc, Tok::Err(401, "invalid_client")),
        ("BCP-14 confidential client posing as public (client_id only)", Who::Service, |id, _, _| Present::Body(vec![("client_id", id.into())]), cc, Tok::Err(401, "invalid_client")),
        ("BCP-14 confidential client with an empty client_secret (= none)", Who::Service, |id, _, _| Present::Body(vec![("client_id", id.into()), ("client_secret", String::new())]), cc, Tok::Err(401, "invalid_client")),
        ("BCP-14 confidential authorization-code client posing as public", Who::App, |id, _, _| Present::Body(vec![("client_id", id.into())]), &bogus_code, Tok::Err(401, "invalid_client")),
        ("no client credentials at all", Who::Service, |_, _, _| Present::Body(vec![]), cc, Tok::Err(401, "invalid_client")),
        ("RFC 6749 §2.3 two methods at once (Basic and client_secret)", Who::Service, |id, s, _| Present::Both(basic(id, s), vec![("client_id", id.into()), ("client_secret", s.into())]), cc, Tok::Err(400, "invalid_request")),
        ("RFC 6749 §2.3 Basic and another client_id in the body", Who::Service, |id, s, _| Present::Both(basic(id, s), vec![("client_id", "someone-else".into())]), cc, Tok::Err(400, "invalid_request")),
        ("Basic that is not base64", Who::Service, |_, _, _| Present::Header("Basic !!!not-base64!!!".into()), cc, Tok::Err(401, "invalid_client")),
        ("Basic without a colon", Who::Service, |id, _, _| Present::Header(format!("Basic {}", STANDARD.encode(id))), cc, Tok::Err(401, "invalid_client")),
        ("Bearer instead of Basic", Who::Service, |_, s, _| Present::Header(format!("Bearer {s}")), cc, Tok::Err(401, "invalid_client")),
        ("credentials in the query string of the POST are not read", Who::Service, |id, s, _| Present::Query(id.into(), s.into()), cc, Tok::Err(401, "invalid_client")),
        ("public client with none (baseline: authenticated; the code is bogus)", Who::Public, |id, _, _| Present::Body(vec![("client_id", id.into())]), &bogus_code, Tok::Err(400, "invalid_grant")),
        ("OIDC-22 public client using client_secret_post (method not registered)", Who::Public, |id, _, _| Present::Body(vec![("client_id", id.into()), ("client_secret", "guess".into())]), &bogus_code, Tok::Err(401, "invalid_client")),
        ("OIDC-22 public client using Basic with a secret (method not registered)", Who::Public, |id, _, _| Present::Header(basic(id, "guess")), &bogus_code, Tok::Err(401, "invalid_client")),
        ("OIDC-22 public client using Basic with an empty secret", Who::Public, |id, _, _| Present::Header(basic(id, "")), &bogus_code, Tok::Err(401, "invalid_client")),
        ("RFC 6749 §4.4 public client asks for client_credentials", Who::Public, |id, _, _| Present::Body(vec![("client_id", id.into())]), cc, Tok::Err(400, "unauthorized_client")),
        ("RFC 6749 §5.2 client without client_credentials asks for it", Who::App, |id, s, _| Present::Header(basic(id, s)), cc, Tok::Err(400, "unauthorized_client")),
        ("RFC 6749 §5.2 client-credentials client redeems a code", Who::Service, |id, s, _| Present::Header(basic(id, s)), &bogus_code, Tok::Err(400, "unauthorized_client")),
    ];

    // The answers to wrong secrets of every shape, compared below.
    let mut wrong_secret_answers: Vec<(String, String)> = Vec::new();
    for (name, who, make, body, expect) in &cases {
        let outcome = async {
            let client = match who {
                Who::Service => service_client(&server, "svc"),
                Who::Public => public.clone(),
                Who::App => app.clone(),
            };
            let secret = client.secret.clone().unwrap_or_default();
            let presented = make(&client.id, &secret, &other_secret);
            let mut path = "/token".to_owned();
            let mut headers = vec![("content-type", FORM.to_owned())];
            let mut form = (*body).to_owned();
            let mut add = |params: &[(&str, String)]| {
                for (k, v) in params {
                    form.push('&');
                    form.push_str(
                        &url::form_urlencoded::Serializer::new(String::new())
                            .append_pair(k, v)
                            .finish(),
                    );
                }
            };
            let used_basic = match &presented {
                Present::Header(h) => {
                    headers.push(("authorization", h.clone()));
                    h.to_ascii_lowercase().starts_with("basic")
                }
                Present::Body(p) => {
                    add(p);
                    false
                }
                Present::Both(h, p) => {
                    headers.push(("authorization", h.clone()));
                    add(p);
                    true
                }
                Present::Query(id, s) => {
                    path = format!(
                        "/token?{}",
                        url::form_urlencoded::Serializer::new(String::new())
                            .append_pair("client_id", id)
                            .append_pair("client_secret", s)
                            .finish()
                    );
                    false
                }
            };
            let a = to_answer(post_raw(&server, &path, &headers, form).await?)?;
            check_token(&a, *expect)?;
            if a.status == StatusCode::UNAUTHORIZED && used_basic {
                check_basic_challenge(&a)?;
            }
            if name.starts_with("Basic with ")
                && matches!(expect, Tok::Err(401, _))
                && !name.contains("unknown")
            {
                wrong_secret_answers.push((
                    name.to_string(),
                    format!(
                        "{} {} {:?}",
                        a.status,
                        a.json,
                        header_of(&a.headers, "www-authenticate")
                    ),
                ));
            }
            Ok(())
        }
        .await;
        report.case(name, outcome);
    }

    // REL-08: secret comparison is a digest compared in constant time (core
    // secret::digest_matches); what a test over HTTP can check without timing is that
    // no code path is told apart: every wrong secret, whatever its length or however
    // much of the real one it shares, gets the same answer.
    report.case(
        "REL-08 wrong secrets of any length or shared prefix get identical answers",
        match wrong_secret_answers.split_first() {
            None => Err("no wrong-secret answers were collected".to_owned()),
            Some(((_, first), rest)) => match rest.iter().find(|(_, a)| a != first) {
                None if rest.len() >= 6 => Ok(()),
                None => Err(format!("only {} answers compared", rest.len() + 1)),
                Some((name, a)) => Err(format!("{name:?} answered {a}, the others {first}")),
            },
        },
    );

    // The other endpoints that authenticate clients.
    let svc = service_client(&server, "svc");
    let wrong = Auth::Basic(&svc.id, "wrong-secret-wrong-secret-wrong-secret-xx");
    #[rustfmt::skip]
    let endpoints: Vec<(&str, &str, Option<Auth<'_>>, Tok)> = vec![
        ("RFC 7662 §2.1 introspection with a wrong secret", "/introspect", Some(wrong), Tok::Err(401, "invalid_client")),
        ("RFC 7662 §2.1 introspection without credentials", "/introspect", None, Tok::Err(401, "invalid_client")),
        ("RFC 7662 §2.1 introspection by a public client", "/introspect", Some(public.auth()), Tok::Err(401, "invalid_client")),
        ("RFC 7009 §2.1 revocation with a wrong secret", "/revoke", Some(wrong), Tok::Err(401, "invalid_client")),
        ("RFC 7009 §2.1 revocation without credentials", "/revoke", None, Tok::Err(401, "invalid_client")),
        ("RFC 7009 §2.1 BCP-14 revocation by a confidential client posing as public", "/revoke", Some(Auth::PublicId(&svc.id)), Tok::Err(401, "invalid_client")),
    ];
    for (name, path, auth, expect) in endpoints {
        let outcome = async {
            check_token(
                &to_answer(post_form(&server, path, auth, &[("token", "x")]).await?)?,
                expect,
            )
        }
        .await;
        report.case(name, outcome);
    }
    report.case(
        "revocation feed with a wrong secret",
        async {
            let page = send(
                backchannel()
                    .get(server.url("/revocations"))
                    .header(header::AUTHORIZATION, basic(&other.id, "wrong-secret")),
            )
            .await?;
            ensure!(
                page.status == StatusCode::UNAUTHORIZED,
                "answered {}",
                describe(&page)
            );
            let v: Value =
                serde_json::from_str(&page.body).map_err(|e| format!("{e}: {}", page.body))?;
            ensure!(v["error"] == "invalid_client", "answered {v}");
            Ok(())
        }
        .await,
    );
    report.finish();
}

/// `s` with its last character replaced by another of the base64url alphabet.
fn flip_last(s: &str) -> String {
    let mut out = s[..s.len() - 1].to_owned();
    out.push(if s.ends_with('A') { 'B' } else { 'A' });
    out
}

// ===========================================================================
// Parameters
// ===========================================================================

/// OIDC-02, OIDC-03, OIDC-09, REL-05, TM-16, TM-18, RFC 6749 §3.1 and §3.2: repeated,
/// empty, oversized, unknown and badly encoded parameters, and the wrong HTTP methods.
/// Nobody is signed in, so a request that passes validation is answered with
/// `login_required` (under `prompt=none`) at the redirect URI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_parameters() {
    let mut report = Report::new("parameters");
    let server = TestServer::start();
    server.create_user("alice", "alice@example.com", "Alice");
    let app = server.create_client("App", &[]);
    let svc = service_client(&server, "Service");
    let browser = Browser::new(&server.issuer);
    let base = |state: &str| Authz::new(&app.id, REDIRECT_URI, state).set("prompt", "none");
    let accepted = Expect::Error("login_required");

    let long = |n: usize| "s".repeat(n);
    let special_state = "a b+c&d=e/f?g#h%i\"<>'\\é😀";
    let crlf_state = "x\r\nSet-Cookie: evil=1";
    let many_scopes: String = (0..51)
        .map(|i| format!("s{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let long_redirect = format!("https://app.example/{}", "c".repeat(2100));
    #[rustfmt::skip]
    let cases: Vec<(&str, Authz, Expect)> = vec![
        ("OIDC-03 repeated client_id", base("d1").twice("client_id", &app.id), Expect::Page),
        ("OIDC-03 repeated redirect_uri", base("d2").twice("redirect_uri", REDIRECT_URI), Expect::Page),
        ("RFC 6749 §4.1.2.1 repeated scope", base("d3").twice("scope", "openid"), Expect::Error("invalid_request")),
        ("RFC 6749 §4.1.2.1 repeated response_type", base("d4").twice("response_type", "code"), Expect::Error("invalid_request")),
        ("RFC 6749 §4.1.2.1 repeated code_challenge", base("d5").twice("code_challenge", RFC7636_CHALLENGE), Expect::Error("invalid_request")),
        // Two values of `state` cannot both be echoed, and an error redirect without the
        // state it was sent (OIDC-11) is no answer either: an error page.
        ("repeated state", base("d6").twice("state", "d6-again"), Expect::Page),
        ("RFC 6749 §3.1 empty state counts as absent: none comes back", base("").set("state", ""), accepted),
        ("RFC 6749 §3.1 empty client_id", base("e1").set("client_id", ""), Expect::Page),
        ("RFC 6749 §3.1 empty redirect_uri", base("e2").set("redirect_uri", ""), Expect::Page),
        ("RFC 6749 §3.1 empty response_type", base("e3").set("response_type", ""), Expect::Error("invalid_request")),
        ("RFC 6749 §3.1 empty code_challenge", base("e4").set("code_challenge", ""), Expect::Error("invalid_request")),
        ("RFC 6749 §3.1 empty prompt counts as absent: the login page", base("e5").set("prompt", ""), Expect::Login),
        ("RFC 6749 §3.3 scope left out: the client's default scope", base("e6").without("scope"), accepted),
        ("OIDC-03 unknown parameter ignored", base("u1").set("extra", "foobar"), accepted),
        ("OIDC-09 display=page", base("u2").set("display", "page"), accepted),
        ("OIDC-09 display=popup", base("u3").set("display", "popup"), accepted),
        ("OIDC-09 ui_locales", base("u4").set("ui_locales", "fr-CA fr en"), accepted),
        ("OIDC-09 claims_locales", base("u5").set("claims_locales", "de"), accepted),
        ("OIDC-09 login_hint", base("u6").set("login_hint", "alice"), accepted),
        ("OIDC-09 acr_values", base("u7").set("acr_values", "urn:mace:incommon:iap:silver"), accepted),
        ("OIDC-43 claims with an essential claim", base("u8").set("claims", r#"{"id_token":{"name":{"essential":true}}}"#), accepted),
        ("response_mode=query", base("u9").set("response_mode", "query"), accepted),
        ("oidcc-alternate-happy-flow scope order reversed", base("u10").set("scope", "email profile openid"), accepted),
        ("REL-05 state of 384 characters comes back intact", base(&long(384)), accepted),
        ("REL-05 state of 4096 characters comes back intact", base(&long(4096)), accepted),
        ("REL-05 nonce of 384 characters", base("l1").set("nonce", &long(384)), accepted),
        ("REL-05 state over 4 KiB", base(&long(4097)), Expect::Page),
        ("REL-05 nonce over 4 KiB", base("l2").set("nonce", &long(4097)), Expect::Error("invalid_request")),
        ("REL-05 scope over 1 KiB", base("l3").set("scope", &format!("openid {}", long(1100))), Expect::Error("invalid_scope")),
        ("REL-05 scope of 51 values", base("l4").set("scope", &many_scopes), Expect::Error("invalid_scope")),
        ("REL-05 redirect_uri over 2 KiB", base("l5").set("redirect_uri", &long_redirect), Expect::Page),
        ("TM-16 state with reserved and non-ASCII characters comes back byte for byte", base(special_state), accepted),
        ("TM-16 state with CR LF comes back encoded", base(crlf_state), accepted),
        ("bad UTF-8 in nonce", base("b1").without("nonce").raw("&nonce=%FF%FE"), Expect::Error("invalid_request")),
        ("bad UTF-8 in client_id", base("b2").without("client_id").raw("&client_id=%C3%28"), Expect::Page),
        ("bad UTF-8 in redirect_uri", base("b3").without("redirect_uri").raw("&redirect_uri=https%3A%2F%2Fapp.example%2Fcb%FF"), Expect::Page),
    ];
    for (name, req, expect) in &cases {
        let outcome = async {
            let page = authorize(&server, &browser, req, false).await?;
            check_authz(
                &page,
                &server.issuer,
                req.redirect_uri(),
                req.state(),
                *expect,
            )?;
            let injected = page
                .headers
                .get_all(header::SET_COOKIE)
                .iter()
                .any(|v| String::from_utf8_lossy(v.as_bytes()).contains("evil"));
            ensure!(!injected, "a header was injected through a parameter");
            Ok(())
        }
        .await;
        report.case(name, outcome);
    }
    report.case(
        "TM-16 bad UTF-8 in state is refused, or echoed with the same bytes",
        async {
            let req = base("").without("state").raw("&state=%C3%28");
            let page = authorize(&server, &browser, &req, false).await?;
            if page.status == StatusCode::BAD_REQUEST {
                return check_error_page(&page);
            }
            let (location, _) = response_params(&page, REDIRECT_URI)?;
            ensure!(
                location.contains("state=%C3%28"),
                "state came back as something else than the bytes sent: {location}"
            );
            Ok(())
        }
        .await,
    );
    report.case(
        "OIDC-02 the authorization endpoint accepts POST",
        async {
            let req = base("post");
            let page = authorize(&server, &browser, &req, true).await?;
            check_authz(&page, &server.issuer, REDIRECT_URI, req.state(), accepted).map(|_| ())
        }
        .await,
    );
    report.case(
        "REL-05 a request URI of 40 KB is refused cleanly",
        async {
            let req = base(&long(40_000));
            let page = authorize(&server, &browser, &req, false).await?;
            ensure!(
                [400, 414, 431].contains(&page.status.as_u16())
                    && page.headers.get(header::LOCATION).is_none(),
                "answered {}",
                describe(&page)
            );
            let after = authorize(&server, &browser, &base("after"), false).await?;
            check_authz(
                &after,
                &server.issuer,
                REDIRECT_URI,
                Some("after"),
                accepted,
            )
            .map(|_| ())
        }
        .await,
    );

    // Wrong HTTP methods: RFC 6749 §3.2 (POST only at the token endpoint), RFC 7009
    // §2.1, RFC 7662 §2.1; RFC 9110 §15.5.6: 405 comes with Allow.
    let token_query = format!(
        "/token?grant_type=client_credentials&client_id={}&client_secret={}",
        svc.id,
        svc.secret.clone().unwrap_or_default()
    );
    #[rustfmt::skip]
    let methods: Vec<(&str, reqwest::Method, String)> = vec![
        ("RFC 6749 §3.2 GET /token (credentials in the query)", reqwest::Method::GET, token_query),
        ("RFC 7009 §2.1 GET /revoke", reqwest::Method::GET, "/revoke?token=x".to_owned()),
        ("RFC 7662 §2.1 GET /introspect", reqwest::Method::GET, "/introspect?token=x".to_owned()),
        ("GET /login", reqwest::Method::GET, "/login?username=alice&password=x".to_owned()),
        ("GET /consent", reqwest::Method::GET, "/consent?decision=allow".to_owned()),
        ("PUT /authorize", reqwest::Method::PUT, "/authorize".to_owned()),
        ("DELETE /token", reqwest::Method::DELETE, "/token".to_owned()),
    ];
    for (name, method, path) in methods {
        let outcome = async {
            let page = send(backchannel().request(method, server.url(&path))).await?;
            ensure!(
                page.status == StatusCode::METHOD_NOT_ALLOWED,
                "answered {}",
                describe(&page)
            );
            ensure!(
                !page.body.contains("access_token"),
                "a token came back: {}",
                page.body
            );
            let allow = header_of(&page.headers, "allow").unwrap_or_default();
            ensure!(
                !allow.is_empty(),
                "405 without an Allow header (RFC 9110 §15.5.6)"
            );
            // The back-channel endpoints answer every error as JSON (RFC 6749 §5.2).
            let backchannel_endpoint = ["/token", "/revoke", "/introspect"]
                .iter()
                .any(|p| path.starts_with(p));
            if backchannel_endpoint {
                ensure!(allow.contains("POST"), "Allow does not name POST: {allow}");
                let error: Value = serde_json::from_str(&page.body)
                    .map_err(|e| format!("not JSON ({e}): {}", page.body))?;
                ensure!(
                    error["error"] == "invalid_request"
                        && error["error_description"]
                            .as_str()
                            .is_some_and(|d| d.contains("POST")),
                    "not the RFC 6749 §5.2 error naming POST: {error}"
                );
            }
            Ok(())
        }
        .await;
        report.case(name, outcome);
    }

    // Token endpoint bodies.
    let secret = svc.secret.clone().unwrap_or_default();
    let auth = vec![("authorization", basic(&svc.id, &secret))];
    let with_form = |mut h: Vec<(&'static str, String)>| {
        h.push(("content-type", FORM.to_owned()));
        h
    };
    let big = format!(
        "grant_type=client_credentials&pad={}",
        "x".repeat(70 * 1024)
    );
    let mut json_headers = auth.clone();
    json_headers.push(("content-type", "application/json".to_owned()));
    type BodyCase<'a> = (&'a str, Vec<(&'a str, String)>, String, Tok);
    #[rustfmt::skip]
    let bodies: Vec<BodyCase<'_>> = vec![
        ("JSON body at the token endpoint", json_headers, r#"{"grant_type":"client_credentials"}"#.to_owned(), Tok::Err(400, "invalid_request")),
        ("body without a Content-Type", auth.clone(), "grant_type=client_credentials".to_owned(), Tok::Err(400, "invalid_request")),
        ("RFC 6749 §3.1 repeated grant_type", with_form(auth.clone()), "grant_type=client_credentials&grant_type=client_credentials".to_owned(), Tok::Err(400, "invalid_request")),
        ("RFC 6749 §3.1 repeated scope", with_form(auth.clone()), "grant_type=client_credentials&scope=api:read&scope=api:read".to_owned(), Tok::Err(400, "invalid_request")),
        ("RFC 6749 §3.1 repeated client_id in the body", with_form(vec![]), format!("grant_type=client_credentials&client_id={0}&client_id={0}&client_secret={secret}", svc.id), Tok::Err(400, "invalid_request")),
        ("RFC 6749 §3.1 empty grant_type", with_form(auth.clone()), "grant_type=".to_owned(), Tok::Err(400, "invalid_request")),
        ("grant_type left out", with_form(auth.clone()), "scope=api:read".to_owned(), Tok::Err(400, "invalid_request")),
        ("unknown grant_type", with_form(auth.clone()), "grant_type=magic".to_owned(), Tok::Err(400, "unsupported_grant_type")),
        ("BCP-13 password grant", with_form(auth.clone()), "grant_type=password&username=alice&password=x".to_owned(), Tok::Err(400, "unsupported_grant_type")),
        ("BCP-07 implicit as a grant_type", with_form(auth.clone()), "grant_type=implicit".to_owned(), Tok::Err(400, "unsupported_grant_type")),
        ("device_code grant (not offered)", with_form(auth.clone()), "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&device_code=x".to_owned(), Tok::Err(400, "unsupported_grant_type")),
        ("grant_type in upper case", with_form(auth.clone()), "grant_type=CLIENT_CREDENTIALS".to_owned(), Tok::Err(400, "unsupported_grant_type")),
        ("OIDC-03 unknown parameter at the token endpoint ignored", with_form(auth.clone()), "grant_type=client_credentials&extra=foobar".to_owned(), Tok::Ok),
        ("bad UTF-8 in grant_type", with_form(auth.clone()), "grant_type=client_credentials%FF".to_owned(), Tok::ErrOneOf(400, &["invalid_request", "unsupported_grant_type"])),
        ("bad UTF-8 in scope", with_form(auth.clone()), "grant_type=client_credentials&scope=api%3Aread%C3%28".to_owned(), Tok::ErrOneOf(400, &["invalid_request", "invalid_scope"])),
    ];
    for (name, headers, body, expect) in bodies {
        let outcome = async {
            check_token(
                &to_answer(post_raw(&server, "/token", &headers, body).await?)?,
                expect,
            )
        }
        .await;
        report.case(name, outcome);
    }
    report.case(
        "REL-05 token request body over 64 KiB",
        async {
            let page = post_raw(&server, "/token", &with_form(auth.clone()), big).await?;
            ensure!(
                page.status == StatusCode::PAYLOAD_TOO_LARGE,
                "answered {}",
                describe(&page)
            );
            ensure!(!page.body.contains("access_token"), "a token came back");
            Ok(())
        }
        .await,
    );
    report.case(
        "RFC 6749 §3.2 parameters in the query string of a POST to /token are not read",
        async {
            let page = post_raw(
                &server,
                "/token?grant_type=client_credentials",
                &with_form(auth.clone()),
                String::new(),
            )
            .await?;
            check_token(&to_answer(page)?, Tok::Err(400, "invalid_request"))
        }
        .await,
    );

    // Bearer tokens at userinfo (TM-18, RFC 6750 §2).
    let access = tokens_via(
        &server,
        &Browser::new(&server.issuer),
        &app,
        &Authz::new(&app.id, REDIRECT_URI, "ui"),
        "alice",
    )
    .await
    .expect("setup: tokens")
    .access;
    report.case(
        "TM-18 access token in the userinfo query string is refused",
        async {
            let page = send(
                backchannel().get(format!("{}?access_token={access}", server.url("/userinfo"))),
            )
            .await?;
            ensure!(
                page.status == StatusCode::BAD_REQUEST,
                "answered {}",
                describe(&page)
            );
            ensure!(
                !page.body.contains("\"sub\""),
                "claims came back: {}",
                page.body
            );
            Ok(())
        }
        .await,
    );
    report.case(
        "RFC 6750 §2 access token in both the header and the body",
        async {
            let page = send(
                backchannel()
                    .post(server.url("/userinfo"))
                    .bearer_auth(&access)
                    .form(&[("access_token", access.as_str())]),
            )
            .await?;
            ensure!(
                page.status == StatusCode::BAD_REQUEST,
                "answered {}",
                describe(&page)
            );
            ensure!(
                !page.body.contains("\"sub\""),
                "claims came back: {}",
                page.body
            );
            Ok(())
        }
        .await,
    );
    report.finish();
}

// ===========================================================================
// Error responses
// ===========================================================================

/// BCP-02, BCP-07, BCP-23, OIDC-10..OIDC-13, RFC 6749 §4.1.2.1, RFC 9207: an error is
/// redirected only to a validated redirect URI, always with `iss` and the request's
/// `state`, never with a `code`; anything wrong with the client or the redirect URI is
/// an error page, whatever else is wrong too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_error_responses() {
    let mut report = Report::new("error responses");
    let server = TestServer::start();
    server.create_user("alice", "alice@example.com", "Alice");
    let app = server.create_client("App", &[]);
    let query = must_register(&server, "Query", &["https://app.example/cbq?x=1"], &[]);
    let browser = Browser::new(&server.issuer);

    let meta = metadata(&server).await;
    let issuer = meta["issuer"].as_str().unwrap_or_default().to_owned();
    report.case(
        "BCP-23 metadata: issuer is the server's and authorization_response_iss_parameter_supported is true",
        if issuer == server.issuer && meta["authorization_response_iss_parameter_supported"] == Value::Bool(true) {
            Ok(())
        } else {
            Err(format!(
                "issuer {issuer:?}, authorization_response_iss_parameter_supported {}",
                meta["authorization_response_iss_parameter_supported"]
            ))
        },
    );

    let evil = "https://evil.example/cb";
    let base = |state: &str| Authz::new(&app.id, REDIRECT_URI, state);
    #[rustfmt::skip]
    let cases: Vec<(&str, Authz, Expect)> = vec![
        ("BCP-07 response_type=token", base("r1").set("response_type", "token"), Expect::Error("unsupported_response_type")),
        ("BCP-07 response_type=id_token token", base("r2").set("response_type", "id_token token"), Expect::Error("unsupported_response_type")),
        ("BCP-07 response_type=code token", base("r3").set("response_type", "code token"), Expect::Error("unsupported_response_type")),
        ("BCP-07 response_type=code id_token", base("r4").set("response_type", "code id_token"), Expect::Error("unsupported_response_type")),
        ("BCP-07 response_type=id_token", base("r5").set("response_type", "id_token"), Expect::Error("unsupported_response_type")),
        ("response_type=CODE (values are case-sensitive)", base("r6").set("response_type", "CODE"), Expect::Error("unsupported_response_type")),
        ("OIDC-12 response_type left out", base("r7").without("response_type"), Expect::ErrorOneOf(&["invalid_request", "unsupported_response_type"])),
        ("RFC 6749 §4.1.2.1 scope the client may not ask for", base("r8").set("scope", "openid admin"), Expect::Error("invalid_scope")),
        ("OIDC-06 prompt=none login", base("r9").set("prompt", "none login"), Expect::Error("invalid_request")),
        ("OIDC-07 max_age=-1", base("r10").set("max_age", "-1"), Expect::Error("invalid_request")),
        ("OIDC-13 request object", base("r11").set("request", "eyJhbGciOiJub25lIn0.eyJzY29wZSI6Im9wZW5pZCJ9."), Expect::Error("request_not_supported")),
        ("OIDC-13 request_uri", base("r12").set("request_uri", "https://app.example/request.jwt"), Expect::Error("request_uri_not_supported")),
        ("RFC 8707 §2 resource not registered for the client", base("r13").set("resource", "https://api.evil.example"), Expect::Error("invalid_target")),
        ("BCP-05 plain PKCE", base("r14").set("code_challenge_method", "plain"), Expect::Error("invalid_request")),
        ("OIDC-06 prompt=none without a session", base("r15").set("prompt", "none"), Expect::Error("login_required")),
        ("fapi2 no state sent: none comes back", base("").without("state").set("response_type", "token"), Expect::Error("unsupported_response_type")),
        ("RFC 6749 §3.1.2 registered query kept, error appended", Authz::new(&query.id, "https://app.example/cbq?x=1", "r17").set("response_type", "token"), Expect::Error("unsupported_response_type")),
        ("BCP-02 response_type=token to an unregistered redirect_uri", base("p1").set("response_type", "token").set("redirect_uri", evil), Expect::Page),
        ("BCP-02 request object to an unregistered redirect_uri", base("p2").set("request", "x.y.z").set("redirect_uri", evil), Expect::Page),
        ("BCP-02 prompt=none to an unregistered redirect_uri", base("p3").set("prompt", "none").set("redirect_uri", evil), Expect::Page),
        ("BCP-02 bad scope to an unregistered redirect_uri", base("p4").set("scope", "admin").set("redirect_uri", evil), Expect::Page),
        ("BCP-02 plain PKCE to an unregistered redirect_uri", base("p5").set("code_challenge_method", "plain").set("redirect_uri", evil), Expect::Page),
        ("BCP-02 unknown client_id", base("p6").set("client_id", "no-such-client").set("response_type", "token"), Expect::Page),
        ("BCP-02 client_id in another letter case", base("p6a").set("client_id", &app.id.to_ascii_uppercase()).set("response_type", "token"), Expect::Page),
        ("BCP-02 client_id with a trailing space", base("p6b").set("client_id", &format!("{} ", app.id)).set("response_type", "token"), Expect::Page),
        ("BCP-02 client_id left out", base("p7").without("client_id").set("response_type", "token"), Expect::Page),
        ("BCP-02 redirect_uri left out", base("p8").without("redirect_uri").set("response_type", "token"), Expect::Page),
        ("BCP-02 another client's redirect_uri", base("p9").set("redirect_uri", "https://app.example/cbq?x=1").set("prompt", "none"), Expect::Page),
        ("BCP-02 javascript: redirect_uri", base("p10").set("redirect_uri", "javascript:alert(1)").set("response_type", "token"), Expect::Page),
    ];
    for (name, req, expect) in &cases {
        let outcome = async {
            let page = authorize(&server, &browser, req, false).await?;
            check_authz(&page, &issuer, req.redirect_uri(), req.state(), *expect).map(|_| ())
        }
        .await;
        report.case(name, outcome);
    }
    report.case(
        "OIDC-02 an error through POST /authorize is redirected the same way",
        async {
            let req = base("post").set("response_type", "token");
            let page = authorize(&server, &browser, &req, true).await?;
            check_authz(
                &page,
                &issuer,
                REDIRECT_URI,
                req.state(),
                Expect::Error("unsupported_response_type"),
            )
            .map(|_| ())
        }
        .await,
    );
    report.case(
        "BCP-02 an unregistered redirect_uri through POST /authorize",
        async {
            let req = base("post-evil")
                .set("redirect_uri", evil)
                .set("prompt", "none");
            let page = authorize(&server, &browser, &req, true).await?;
            check_error_page(&page)
        }
        .await,
    );
    report.case(
        "OIDC-10 denied consent is access_denied with state and iss",
        async {
            let req = base("deny");
            let page = browser.visit(&req.url(&server.issuer)).await;
            ensure!(
                page.is_login_page(),
                "expected the login page, got {}",
                describe(&page)
            );
            let page = sign_in(&browser, &page, "alice").await?;
            ensure!(
                page.is_consent_page(),
                "expected the consent page, got {}",
                describe(&page)
            );
            let answer = submit_consent(&browser, &page, "deny").await?;
            check_authz(
                &answer,
                &issuer,
                REDIRECT_URI,
                req.state(),
                Expect::Error("access_denied"),
            )
            .map(|_| ())
        }
        .await,
    );
    report.case(
        "OIDC-21 a token error is JSON with no-store and a clean error_description",
        async {
            let a = redeem_at(
                &server,
                &app,
                &"A".repeat(43),
                Some(REDIRECT_URI),
                Some(RFC7636_VERIFIER),
            )
            .await?;
            check_token(&a, Tok::Err(400, "invalid_grant"))?;
            let pragma = header_of(&a.headers, "pragma").unwrap_or_default();
            ensure!(pragma.contains("no-cache"), "Pragma {pragma:?} (OIDC-21)");
            Ok(())
        }
        .await,
    );
    report.case(
        "OIDC-42 a userinfo error is 401 with WWW-Authenticate: Bearer error=\"invalid_token\"",
        async {
            let info = userinfo(&server.issuer, Some("not.a.token")).await;
            ensure!(
                info.status == StatusCode::UNAUTHORIZED,
                "answered {} {}",
                info.status,
                info.body
            );
            let www = info.www_authenticate.unwrap_or_default();
            ensure!(
                www.starts_with("Bearer") && www.contains("error=\"invalid_token\""),
                "WWW-Authenticate {www:?}"
            );
            Ok(())
        }
        .await,
    );
    report.finish();
}

// ===========================================================================
// prompt, max_age, id_token_hint
// ===========================================================================

/// The error codes OIDC Core §3.1.2.6 offers when the hinted user is not the one
/// signed in (OIDC-08).
const HINT_MISMATCH: &[&str] = &[
    "login_required",
    "interaction_required",
    "account_selection_required",
];
/// A hint that is not an ID token of ours: refused (OIDC-08, JWT-02, JWT-12).
const HINT_INVALID: &[&str] = &["invalid_request", "login_required", "interaction_required"];

/// OIDC-06..OIDC-08, TM-12, RFC 8252 §8.6: `prompt`, `max_age` and `id_token_hint`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_prompt_max_age_id_token_hint() {
    let mut report = Report::new("prompt, max_age, id_token_hint");
    let server = TestServer::start();
    server.create_user("alice", "alice@example.com", "Alice");
    server.create_user("bob", "bob@example.com", "Bob");
    let app = server.create_client("App", &[]);
    let fresh = server.create_client("Never allowed", &[]);
    let public = server.create_client("Public", &["--public"]);
    let first_party = server.create_client("First party", &["--first-party"]);

    // Alice allows App and the public client; Bob allows App.
    let alice = Browser::new(&server.issuer);
    let alice_tokens = tokens_via(
        &server,
        &alice,
        &app,
        &Authz::new(&app.id, REDIRECT_URI, "setup-a"),
        "alice",
    )
    .await
    .expect("setup: Alice's tokens");
    tokens_via(
        &server,
        &alice,
        &public,
        &Authz::new(&public.id, REDIRECT_URI, "setup-p"),
        "alice",
    )
    .await
    .expect("setup: Alice allows the public client");
    let bob = Browser::new(&server.issuer);
    let bob_tokens = tokens_via(
        &server,
        &bob,
        &app,
        &Authz::new(&app.id, REDIRECT_URI, "setup-b"),
        "bob",
    )
    .await
    .expect("setup: Bob's tokens");
    let nobody = Browser::new(&server.issuer);
    let alice_id = alice_tokens.id_token.clone().expect("an ID token");
    let bob_id = bob_tokens.id_token.clone().expect("an ID token");
    let alice_sub = claims(&alice_id)["sub"].clone();
    let alice_auth_time = claims(&alice_id)["auth_time"].as_i64().unwrap_or_default();

    let none = ("prompt", "none");
    let unsigned = unsigned_copy(&alice_id);
    let tampered = tampered_signature(&alice_id);
    // (case, browser, client, extra parameters, expected)
    type PromptCase<'a> = (
        &'a str,
        &'a Browser,
        &'a TestClient,
        Vec<(&'a str, &'a str)>,
        Expect,
    );
    #[rustfmt::skip]
    let cases: Vec<PromptCase<'_>> = vec![
        ("OIDC-06 prompt=none without a session", &nobody, &app, vec![none], Expect::Error("login_required")),
        ("OIDC-06 prompt=none, signed in, client never allowed", &alice, &fresh, vec![none], Expect::Error("consent_required")),
        ("OIDC-06 prompt=none, signed in, client allowed before", &alice, &app, vec![none], Expect::Code),
        ("TM-12 prompt=none for a public client allowed before", &alice, &public, vec![none], Expect::Error("consent_required")),
        ("TM-12 a public client allowed before is asked again", &alice, &public, vec![], Expect::Consent),
        ("prompt=none for a first-party client never allowed", &alice, &first_party, vec![none], Expect::Code),
        ("OIDC-06 prompt=login with a session shows the login page", &alice, &app, vec![("prompt", "login")], Expect::Login),
        ("prompt=select_account shows the login page", &alice, &app, vec![("prompt", "select_account")], Expect::Login),
        ("OIDC-06 prompt=consent after an earlier allow shows the consent page", &alice, &app, vec![("prompt", "consent")], Expect::Consent),
        ("OIDC-06 prompt=none combined with login", &alice, &app, vec![("prompt", "none login")], Expect::Error("invalid_request")),
        ("OIDC-06 prompt=none combined with consent", &alice, &app, vec![("prompt", "consent none")], Expect::Error("invalid_request")),
        ("unknown prompt value", &alice, &app, vec![("prompt", "bogus")], Expect::Error("invalid_request")),
        ("oidcc-max-age-10000 with a fresh session", &alice, &app, vec![("max_age", "10000")], Expect::Code),
        ("OIDC-07 max_age=-1", &alice, &app, vec![("max_age", "-1")], Expect::Error("invalid_request")),
        ("OIDC-07 max_age=abc", &alice, &app, vec![("max_age", "abc")], Expect::Error("invalid_request")),
        ("OIDC-07 max_age=1.5", &alice, &app, vec![("max_age", "1.5")], Expect::Error("invalid_request")),
        ("oidcc-id-token-hint prompt=none with the user's own ID token", &alice, &app, vec![none, ("id_token_hint", alice_id.as_str())], Expect::Code),
        ("OIDC-08 prompt=none with another user's ID token", &alice, &app, vec![none, ("id_token_hint", bob_id.as_str())], Expect::ErrorOneOf(HINT_MISMATCH)),
        ("OIDC-08 prompt=none with a hint that is no JWT", &alice, &app, vec![none, ("id_token_hint", "garbage")], Expect::ErrorOneOf(HINT_INVALID)),
        ("JWT-02 prompt=none with an unsigned (alg none) copy of the user's ID token", &alice, &app, vec![none, ("id_token_hint", unsigned.as_str())], Expect::ErrorOneOf(HINT_INVALID)),
        ("OIDC-08 prompt=none with the user's ID token, signature changed", &alice, &app, vec![none, ("id_token_hint", tampered.as_str())], Expect::ErrorOneOf(HINT_INVALID)),
        ("JWT-12 prompt=none with an access token as id_token_hint", &alice, &app, vec![none, ("id_token_hint", alice_tokens.access.as_str())], Expect::ErrorOneOf(HINT_INVALID)),
        ("OIDC-08 prompt=none with a valid hint but no session", &nobody, &app, vec![none, ("id_token_hint", alice_id.as_str())], Expect::Error("login_required")),
    ];
    for (i, (name, browser, client, extra, expect)) in cases.iter().enumerate() {
        let req = Authz::new(&client.id, REDIRECT_URI, &format!("pr-{i}")).set_all(extra);
        let outcome = authz_case(&server, browser, &req, *expect)
            .await
            .map(|_| ());
        report.case(name, outcome);
    }

    report.case(
        "oidcc-id-token-hint the ID token from a hinted prompt=none has the same sub",
        async {
            let req = Authz::new(&app.id, REDIRECT_URI, "hint-sub")
                .set_all(&[none, ("id_token_hint", alice_id.as_str())]);
            let code = authz_case(&server, &alice, &req, Expect::Code)
                .await?
                .unwrap_or_default();
            let t = tokens(
                &redeem_at(
                    &server,
                    &app,
                    &code,
                    Some(REDIRECT_URI),
                    Some(&req.verifier),
                )
                .await?,
            )?;
            let sub = claims(t.id_token.as_deref().ok_or("no ID token")?)["sub"].clone();
            ensure!(sub == alice_sub, "sub {sub}, expected {alice_sub}");
            Ok(())
        }
        .await,
    );
    report.case(
        "OIDC-07 with max_age the ID token carries auth_time",
        async {
            let req = Authz::new(&app.id, REDIRECT_URI, "auth-time").set("max_age", "10000");
            let code = authz_case(&server, &alice, &req, Expect::Code)
                .await?
                .unwrap_or_default();
            let t = tokens(
                &redeem_at(
                    &server,
                    &app,
                    &code,
                    Some(REDIRECT_URI),
                    Some(&req.verifier),
                )
                .await?,
            )?;
            let c = claims(t.id_token.as_deref().ok_or("no ID token")?);
            ensure!(c["auth_time"].is_i64(), "no auth_time in {c}");
            Ok(())
        }
        .await,
    );

    // oidcc-prompt-login: signing in again continues the flow and gives a later auth_time.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    report.case(
        "oidcc-prompt-login after signing in again the flow goes on to a code, with a later auth_time",
        async {
            let req = Authz::new(&app.id, REDIRECT_URI, "relogin").set("prompt", "login");
            let page = alice.visit(&req.url(&server.issuer)).await;
            ensure!(page.is_login_page(), "expected the login page, got {}", describe(&page));
            let page = sign_in(&alice, &page, "alice").await?;
            let code = check_code_redirect(&page, &server.issuer, REDIRECT_URI, req.state())?;
            let t = tokens(&redeem_at(&server, &app, &code, Some(REDIRECT_URI), Some(&req.verifier)).await?)?;
            let at = claims(t.id_token.as_deref().ok_or("no ID token")?)["auth_time"].as_i64().unwrap_or_default();
            ensure!(at > alice_auth_time, "auth_time {at} is not later than {alice_auth_time}");
            Ok(())
        }
        .await,
    );

    // OIDC-07: max_age=0 is prompt=login (OIDC Core §3.1.2.1), even in the second the
    // user signed in. Three tries, each starting right after a sign-in, so that a tick
    // of the clock between the two cannot hide a session counted as 0 s old.
    report.case(
        "OIDC-07 max_age=0 right after signing in forces the login page",
        async {
            for attempt in 0..3 {
                let b = Browser::new(&server.issuer);
                let req = Authz::new(&app.id, REDIRECT_URI, &format!("zero-setup-{attempt}"));
                code_via(&server, &b, &req, "alice").await?;
                let zero = Authz::new(&app.id, REDIRECT_URI, &format!("zero-{attempt}"))
                    .set("max_age", "0");
                authz_case(&server, &b, &zero, Expect::Login)
                    .await
                    .map_err(|e| format!("attempt {attempt}: {e}"))?;
            }
            Ok(())
        }
        .await,
    );
    report.case(
        "OIDC-07 max_age=0: after signing in the flow goes on to a code with auth_time",
        async {
            let req = Authz::new(&app.id, REDIRECT_URI, "zero-login").set("max_age", "0");
            let page = alice.visit(&req.url(&server.issuer)).await;
            let page = if page.is_login_page() {
                sign_in(&alice, &page, "alice").await?
            } else {
                page
            };
            let code = check_code_redirect(&page, &server.issuer, REDIRECT_URI, req.state())?;
            let t = tokens(
                &redeem_at(
                    &server,
                    &app,
                    &code,
                    Some(REDIRECT_URI),
                    Some(&req.verifier),
                )
                .await?,
            )?;
            let c = claims(t.id_token.as_deref().ok_or("no ID token")?);
            ensure!(c["auth_time"].is_i64(), "no auth_time in {c}");
            Ok(())
        }
        .await,
    );

    // oidcc-max-age-1: a session older than max_age means signing in again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    report.case(
        "OIDC-07 prompt=none with max_age=1 and a 2 s old session is login_required",
        authz_case(
            &server,
            &alice,
            &Authz::new(&app.id, REDIRECT_URI, "old-none").set_all(&[none, ("max_age", "1")]),
            Expect::Error("login_required"),
        )
        .await
        .map(|_| ()),
    );
    report.case(
        "oidcc-max-age-1 a 2 s old session shows the login page, then the flow goes on",
        async {
            let req = Authz::new(&app.id, REDIRECT_URI, "old").set("max_age", "1");
            let page = alice.visit(&req.url(&server.issuer)).await;
            ensure!(
                page.is_login_page(),
                "expected the login page, got {}",
                describe(&page)
            );
            let page = sign_in(&alice, &page, "alice").await?;
            check_code_redirect(&page, &server.issuer, REDIRECT_URI, req.state()).map(|_| ())
        }
        .await,
    );
    report.finish();
}

// ===========================================================================
// HTML pages
// ===========================================================================

/// Absolute or protocol-relative URLs in attributes and CSS of `body` that point away
/// from `issuer`.
fn third_party_refs(body: &str, issuer: &str) -> Vec<String> {
    let lower = body.to_ascii_lowercase();
    let issuer = issuer.to_ascii_lowercase();
    let mut found = Vec::new();
    for marker in [
        "src=",
        "href=",
        "action=",
        "formaction=",
        "srcset=",
        "poster=",
        "data=",
        "url(",
        "url=",
        "@import",
    ] {
        let mut from = 0;
        while let Some(p) = lower[from..].find(marker) {
            let start = from + p + marker.len();
            let value = lower[start..].trim_start_matches(['"', '\'', ' ']);
            let external = value.starts_with("http:")
                || value.starts_with("https:")
                || value.starts_with("//");
            if external && !value.starts_with(&issuer) {
                found.push(value.chars().take(60).collect());
            }
            from = start;
        }
    }
    found
}

fn set_cookies(page: &Page) -> Vec<String> {
    page.headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

fn no_cors_allowed(page: &Page) -> Result<(), String> {
    match header_of(&page.headers, "access-control-allow-origin") {
        None => Ok(()),
        Some(v) => Err(format!("Access-Control-Allow-Origin: {v} (BCP-16)")),
    }
}

/// BCP-16, BCP-18, BCP-20, BCP-21, TM-11, TM-15, RFC 6749 §10.12 and §10.13: the pages
/// the user sees: anti-framing and referrer headers on every one, nothing loaded from
/// elsewhere, CSRF tokens bound to the browser, 303 after a credential POST, escaping,
/// and no CORS on the authorization endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_html_pages() {
    let mut report = Report::new("HTML pages");
    let server = TestServer::start();
    server.create_user("alice", "alice@example.com", "Alice");
    let app = server.create_client("App", &[]);
    let markup = must_register(
        &server,
        "<script>alert('name')</script>",
        &[REDIRECT_URI],
        &[],
    );

    // One browser walks through every page; the CSRF cases need a second and a third.
    let browser = Browser::new(&server.issuer);
    let req = Authz::new(&app.id, REDIRECT_URI, "html");
    let login = browser.get(&req.url(&server.issuer)).await;
    assert!(
        login.is_login_page(),
        "setup: login page, got {}",
        describe(&login)
    );
    let bad_password = browser
        .submit_login(&login, "alice", "not the password")
        .await;
    let csrf_failure = browser
        .post_form(
            &server.url("/login"),
            &[
                ("csrf_token".to_owned(), "forged".to_owned()),
                ("authz".to_owned(), req.query()),
                ("username".to_owned(), "alice".to_owned()),
                ("password".to_owned(), PASSWORD.to_owned()),
            ],
        )
        .await;
    let unknown_client = browser
        .get(&Authz::new("no-such-client", REDIRECT_URI, "x").url(&server.issuer))
        .await;
    let login_ok = browser.submit_login(&login, "alice", PASSWORD).await;
    let consent = browser.follow(copy_page(&login_ok)).await;
    assert!(
        consent.is_consent_page(),
        "setup: consent page, got {}",
        describe(&consent)
    );
    let account = browser.get(&server.url("/account")).await;
    let home = browser.get(&server.url("/")).await;
    let logout = browser.get(&server.url("/logout")).await;

    #[rustfmt::skip]
    let pages: Vec<(&str, &Page)> = vec![
        ("login page", &login),
        ("login page after a wrong password", &bad_password),
        ("consent page", &consent),
        ("error page (unknown client)", &unknown_client),
        ("error page (CSRF failure)", &csrf_failure),
        ("account page", &account),
        ("home page", &home),
        ("logout confirmation page", &logout),
    ];
    for (name, page) in &pages {
        let ct = header_of(&page.headers, "content-type").unwrap_or_default();
        report.case(
            &format!("{name}: is an HTML page"),
            if ct.starts_with("text/html") {
                Ok(())
            } else {
                Err(format!("Content-Type {ct:?}: {}", describe(page)))
            },
        );
        let csp = header_of(&page.headers, "content-security-policy").unwrap_or_default();
        report.case(
            &format!("BCP-20 {name}: Content-Security-Policy frame-ancestors 'none'"),
            if csp
                .split(';')
                .any(|d| d.trim().eq_ignore_ascii_case("frame-ancestors 'none'"))
            {
                Ok(())
            } else {
                Err(format!("Content-Security-Policy {csp:?}"))
            },
        );
        let xfo = header_of(&page.headers, "x-frame-options").unwrap_or_default();
        report.case(
            &format!("BCP-20 TM-11 {name}: X-Frame-Options DENY"),
            if xfo.trim().eq_ignore_ascii_case("deny") {
                Ok(())
            } else {
                Err(format!("X-Frame-Options {xfo:?}"))
            },
        );
        let rp = header_of(&page.headers, "referrer-policy").unwrap_or_default();
        report.case(
            &format!("BCP-21 {name}: Referrer-Policy no-referrer"),
            if rp.split(',').map(str::trim).next_back() == Some("no-referrer") {
                Ok(())
            } else {
                Err(format!("Referrer-Policy {rp:?}"))
            },
        );
        let refs = third_party_refs(&page.body, &server.issuer);
        report.case(
            &format!("BCP-21 {name}: no third-party resources or links"),
            if refs.is_empty() {
                Ok(())
            } else {
                Err(format!("refers to {refs:?}"))
            },
        );
        let cc = header_of(&page.headers, "cache-control").unwrap_or_default();
        report.case(
            &format!("{name}: Cache-Control no-store (forms carry CSRF tokens)"),
            if cc.to_ascii_lowercase().contains("no-store") {
                Ok(())
            } else {
                Err(format!("Cache-Control {cc:?}"))
            },
        );
    }

    // CSRF (RFC 6749 §10.12).
    let hidden = |page: &Page, action: &str, name: &str| {
        page.form(action)
            .and_then(|f| {
                f.hidden
                    .into_iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v)
            })
            .unwrap_or_default()
    };
    let login_token = hidden(&login, "/login", "csrf_token");
    report.case(
        "RFC 6749 §10.12 the login form carries a CSRF token",
        if login_token.len() >= 22 {
            Ok(())
        } else {
            Err(format!("csrf_token {login_token:?}"))
        },
    );
    let consent_token = hidden(&consent, "/consent", "csrf_token");
    report.case(
        "RFC 6749 §10.12 the consent form carries a CSRF token",
        if consent_token.len() >= 22 {
            Ok(())
        } else {
            Err(format!("csrf_token {consent_token:?}"))
        },
    );
    let second = Browser::new(&server.issuer);
    let second_login = second.get(&req.url(&server.issuer)).await;
    let second_token = hidden(&second_login, "/login", "csrf_token");
    report.case(
        "RFC 6749 §10.12 CSRF tokens are per browser",
        if !second_token.is_empty() && second_token != login_token {
            Ok(())
        } else {
            Err(format!(
                "two browsers got {login_token:?} and {second_token:?}"
            ))
        },
    );
    let login_fields = |token: &str, authz: &str| {
        vec![
            ("csrf_token".to_owned(), token.to_owned()),
            ("authz".to_owned(), authz.to_owned()),
            ("username".to_owned(), "alice".to_owned()),
            ("password".to_owned(), PASSWORD.to_owned()),
        ]
    };
    let no_session = |page: &Page| -> Result<(), String> {
        check_error_page(page)?;
        ensure!(
            !set_cookies(page)
                .iter()
                .any(|c| c.starts_with("lk_session=") && !c.starts_with("lk_session=;")),
            "a session cookie was set: {:?}",
            set_cookies(page)
        );
        Ok(())
    };
    let third = Browser::new(&server.issuer);
    type CsrfCase<'a> = (&'a str, &'a Browser, &'a str, Vec<(String, String)>, bool);
    #[rustfmt::skip]
    let csrf_cases: Vec<CsrfCase<'_>> = vec![
        ("RFC 6749 §10.12 POST /login without csrf_token", &second, "/login", login_fields("", &req.query()), true),
        ("RFC 6749 §10.12 POST /login with another browser's csrf_token", &second, "/login", login_fields(&login_token, &req.query()), true),
        ("RFC 6749 §10.12 POST /login from a browser without the CSRF cookie (cross-site form)", &third, "/login", login_fields(&login_token, &req.query()), true),
        ("RFC 6749 §10.12 POST /consent without csrf_token", &browser, "/consent", vec![("authz".to_owned(), req.query()), ("decision".to_owned(), "allow".to_owned())], false),
        ("RFC 6749 §10.12 POST /consent with another browser's csrf_token", &browser, "/consent", vec![("csrf_token".to_owned(), second_token.clone()), ("authz".to_owned(), req.query()), ("decision".to_owned(), "allow".to_owned())], false),
        ("BCP-02 POST /login with an authz naming an unregistered redirect_uri", &browser, "/login", login_fields(&login_token, &req.clone().set("redirect_uri", "https://evil.example/cb").query()), false),
        ("BCP-02 POST /consent with an authz naming an unregistered redirect_uri", &browser, "/consent", vec![("csrf_token".to_owned(), consent_token.clone()), ("authz".to_owned(), req.clone().set("redirect_uri", "https://evil.example/cb").query()), ("decision".to_owned(), "allow".to_owned())], false),
    ];
    for (name, b, path, fields, login_post) in csrf_cases {
        let page = b.post_form(&server.url(path), &fields).await;
        report.case(
            name,
            if login_post {
                no_session(&page)
            } else {
                check_error_page(&page)
            },
        );
    }

    // BCP-18: 303 after a POST that carried credentials, and after the consent POST.
    report.case(
        "BCP-18 a successful sign-in answers 303 back to /authorize",
        async {
            ensure!(
                login_ok.status == StatusCode::SEE_OTHER,
                "POST /login answered {}",
                describe(&login_ok)
            );
            let to = login_ok.location().ok_or("no Location")?;
            ensure!(
                to.origin() == login.url.origin() && to.path() == "/authorize",
                "POST /login sent the browser to {to}"
            );
            Ok(())
        }
        .await,
    );
    report.case(
        "BCP-18 a wrong password does not redirect",
        if bad_password.headers.get(header::LOCATION).is_none()
            && [200, 401].contains(&bad_password.status.as_u16())
            && bad_password.form("/login").is_some()
        {
            Ok(())
        } else {
            Err(describe(&bad_password))
        },
    );
    report.case(
        "session and CSRF cookies are HttpOnly and SameSite",
        async {
            let cookies: Vec<String> = set_cookies(&login_ok)
                .into_iter()
                .chain(set_cookies(&login))
                .collect();
            for name in ["lk_session=", "lk_csrf="] {
                let c = cookies
                    .iter()
                    .find(|c| c.starts_with(name))
                    .ok_or_else(|| format!("no {name} cookie in {cookies:?}"))?
                    .to_ascii_lowercase();
                ensure!(c.contains("httponly"), "{c} is not HttpOnly");
                ensure!(
                    c.contains("samesite=lax") || c.contains("samesite=strict"),
                    "{c} has no SameSite"
                );
            }
            Ok(())
        }
        .await,
    );
    report.case(
        "TM-15 the consent page names the client, the redirect host and the scopes",
        async {
            for needle in ["App", "app.example", "openid", "profile", "email"] {
                ensure!(
                    consent.body.contains(needle),
                    "{needle:?} is not on the consent page"
                );
            }
            Ok(())
        }
        .await,
    );
    report.case(
        "BCP-18 allowing answers 303 with the code",
        async {
            let answer = submit_consent(&browser, &consent, "allow").await?;
            check_authz(
                &answer,
                &server.issuer,
                REDIRECT_URI,
                req.state(),
                Expect::Code,
            )
            .map(|_| ())
        }
        .await,
    );

    // Escaping.
    report.case(
        "markup in state is escaped on the login page",
        async {
            let xss = Authz::new(&app.id, REDIRECT_URI, "\"><script>alert(1)</script>");
            let page = Browser::new(&server.issuer)
                .get(&xss.url(&server.issuer))
                .await;
            ensure!(
                page.is_login_page(),
                "expected the login page, got {}",
                describe(&page)
            );
            ensure!(
                !page.body.contains("<script>alert(1)"),
                "state reflected unescaped"
            );
            Ok(())
        }
        .await,
    );
    report.case(
        "markup in the client name is escaped on the login and consent pages",
        async {
            let r = Authz::new(&markup.id, REDIRECT_URI, "markup");
            let page = Browser::new(&server.issuer)
                .get(&r.url(&server.issuer))
                .await;
            ensure!(
                page.is_login_page(),
                "expected the login page, got {}",
                describe(&page)
            );
            ensure!(
                !page.body.contains("<script>alert("),
                "client name unescaped on the login page"
            );
            let page = browser.get(&r.url(&server.issuer)).await;
            ensure!(
                page.is_consent_page(),
                "expected the consent page, got {}",
                describe(&page)
            );
            ensure!(
                !page.body.contains("<script>alert("),
                "client name unescaped on the consent page"
            );
            Ok(())
        }
        .await,
    );

    // BCP-16: no CORS on the authorization endpoint (nor on the forms behind it).
    let origin = "https://evil.example";
    let preflight = |path: &str, method: &str| {
        backchannel()
            .request(reqwest::Method::OPTIONS, server.url(path))
            .header("origin", origin)
            .header("access-control-request-method", method)
    };
    #[rustfmt::skip]
    let cors: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("BCP-16 preflight to /authorize", preflight("/authorize", "POST")),
        ("BCP-16 GET /authorize with an Origin", backchannel().get(req.url(&server.issuer)).header("origin", origin)),
        ("BCP-16 POST /authorize with an Origin", backchannel().post(server.url("/authorize")).header("origin", origin).header("content-type", FORM).body(req.query())),
        ("BCP-16 preflight to /login", preflight("/login", "POST")),
        ("BCP-16 preflight to /consent", preflight("/consent", "POST")),
    ];
    for (name, request) in cors {
        let outcome = async { no_cors_allowed(&send(request).await?) }.await;
        report.case(name, outcome);
    }
    report.finish();
}

/// A copy of `page` (to follow a redirect while keeping the original).
fn copy_page(page: &Page) -> Page {
    Page {
        url: page.url.clone(),
        status: page.status,
        headers: page.headers.clone(),
        body: page.body.clone(),
    }
}
