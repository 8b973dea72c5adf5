//! Shared helpers: a running `latchkey serve` child process, the admin CLI, a
//! cookie-keeping "browser" that fills in the real HTML forms, and raw token and
//! userinfo requests for the cases an OAuth library refuses to send.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use openidconnect::{CsrfToken, Nonce, PkceCodeChallenge};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use serde_json::Value;
use url::Url;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_latchkey");

/// The redirect URI every test client registers. Nothing listens there: the tests
/// read the `Location` header instead of following it.
pub const REDIRECT_URI: &str = "https://app.example/cb";

/// The password of every test user.
pub const PASSWORD: &str = "correct horse battery staple";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const HTTP_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------

/// A `latchkey serve` child on its own temporary data directory. Dropping it kills
/// the child (also when the test panics), and prints the server's stderr if the test
/// is failing.
pub struct TestServer {
    child: Child,
    /// `http://127.0.0.1:PORT`, exactly as the server printed it.
    pub issuer: String,
    pub data_dir: PathBuf,
    log_path: PathBuf,
    // Declared last: removed after the child is dead.
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(&[])
    }

    /// Starts a server with extra `LATCHKEY_*` settings in its environment.
    pub fn start_with(env: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let data_dir = dir.path().join("data");
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path).expect("create the server log file");
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen", "127.0.0.1:0"])
            // Plain log lines in the file we print when a test fails.
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn latchkey serve");
        let stdout = child.stdout.take().expect("piped stdout");
        // The guard exists from here on, so any panic below still kills the child.
        let mut server = TestServer {
            child,
            issuer: String::new(),
            data_dir,
            log_path,
            _dir: dir,
        };

        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            // Keep draining stdout after the announcement so the child never blocks on it.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });

        let deadline = std::time::Instant::now() + STARTUP_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.trim().strip_prefix("listening on ") {
                        server.issuer = url.trim().to_owned();
                        break;
                    }
                    seen.push(line);
                }
                Err(e) => {
                    let status = server.child.try_wait().ok().flatten();
                    panic!(
                        "latchkey serve did not print `listening on URL` ({e}); exit status {status:?}; stdout so far: {seen:?}; stderr:\n{}",
                        server.log()
                    );
                }
            }
        }
        let parsed = Url::parse(&server.issuer)
            .unwrap_or_else(|e| panic!("bad issuer {:?}: {e}", server.issuer));
        assert_eq!(parsed.scheme(), "http", "issuer {}", server.issuer);
        assert_eq!(
            parsed.host_str(),
            Some("127.0.0.1"),
            "issuer {}",
            server.issuer
        );
        assert!(
            parsed.port().is_some_and(|p| p != 0),
            "issuer {} has no bound port",
            server.issuer
        );
        server
    }

    /// The server's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `issuer` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// Runs `latchkey <command...> --data-dir DIR <args...>` to completion.
    pub fn cli(&self, command: &[&str], args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(command)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd.spawn().expect("spawn latchkey admin command");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("piped stdin");
            pipe.write_all(input.as_bytes())
                .expect("write to the admin command's stdin");
            // Dropping the pipe closes it: the command sees end of input.
        }
        child
            .wait_with_output()
            .expect("wait for latchkey admin command")
    }

    /// Like [`TestServer::cli`], and asserts it succeeded; returns stdout.
    pub fn cli_ok(&self, command: &[&str], args: &[&str], stdin: Option<&str>) -> String {
        let out = self.cli(command, args, stdin);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "`latchkey {} {}` failed with {}\nstdout: {stdout}\nstderr: {}",
            command.join(" "),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// `latchkey client create ... --json` with [`REDIRECT_URI`] and `extra` arguments.
    pub fn create_client(&self, name: &str, extra: &[&str]) -> TestClient {
        let mut args = vec!["--name", name, "--redirect-uri", REDIRECT_URI];
        args.extend_from_slice(extra);
        args.push("--json");
        let stdout = self.cli_ok(&["client", "create"], &args, None);
        let v = parse_json_output(&stdout);
        let id = v["client_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no client_id in {stdout}"))
            .to_owned();
        assert!(!id.is_empty(), "empty client_id in {stdout}");
        let secret = match &v["client_secret"] {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => panic!("client_secret is neither a string nor null: {other}"),
        };
        let public = extra.contains(&"--public");
        assert_eq!(
            secret.is_none(),
            public,
            "client_secret for a {} client: {stdout}",
            if public { "public" } else { "confidential" }
        );
        if let Some(s) = &secret {
            assert!(
                s.len() >= 32,
                "client secret {s:?} is too short for 256 bits"
            );
        }
        TestClient { id, secret }
    }

    /// `latchkey user create --username NAME --password-stdin --email E --name N --json`.
    pub fn create_user(&self, username: &str, email: &str, name: &str) -> String {
        let stdout = self.cli_ok(
            &["user", "create"],
            &[
                "--username",
                username,
                "--password-stdin",
                "--email",
                email,
                "--name",
                name,
                "--json",
            ],
            Some(&format!("{PASSWORD}\n")),
        );
        let v = parse_json_output(&stdout);
        let id = v["user_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no user_id in {stdout}"))
            .to_owned();
        assert!(!id.is_empty(), "empty user_id in {stdout}");
        id
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- latchkey serve stderr ({}) -----\n{}",
                self.issuer,
                self.log()
            );
        }
    }
}

/// The JSON object a `--json` admin command printed (the last line that parses).
fn parse_json_output(stdout: &str) -> Value {
    stdout
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<Value>(l.trim())
                .ok()
                .filter(Value::is_object)
        })
        .or_else(|| serde_json::from_str::<Value>(stdout.trim()).ok())
        .unwrap_or_else(|| panic!("admin command printed no JSON object: {stdout:?}"))
}

/// A registered client as the CLI reported it.
#[derive(Debug, Clone)]
pub struct TestClient {
    pub id: String,
    pub secret: Option<String>,
}

impl TestClient {
    /// `client_secret_basic` for confidential clients, `client_id` only for public ones.
    pub fn auth(&self) -> Auth<'_> {
        match &self.secret {
            Some(s) => Auth::Basic(&self.id, s),
            None => Auth::PublicId(&self.id),
        }
    }
}

// ---------------------------------------------------------------------------
// Authorization requests
// ---------------------------------------------------------------------------

/// A fresh PKCE pair `(code_challenge, code_verifier)`, S256.
pub fn pkce() -> (String, String) {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    assert_eq!(challenge.method().as_str(), "S256");
    (challenge.as_str().to_owned(), verifier.secret().clone())
}

/// A complete, valid authorization request and the secrets that go with it.
#[derive(Debug, Clone)]
pub struct AuthzRequest {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

/// `issuer/authorize?params` with the parameters form-encoded in the given order.
pub fn authorize_url(issuer: &str, params: &[(&str, &str)]) -> String {
    Url::parse_with_params(&format!("{issuer}/authorize"), params)
        .expect("authorize URL")
        .to_string()
}

/// A valid code-flow request for `client_id` with `scope`, PKCE S256, state and nonce.
pub fn authz_request(issuer: &str, client_id: &str, scope: &str) -> AuthzRequest {
    authz_request_with(issuer, client_id, scope, &[])
}

/// Like [`authz_request`], plus `extra` parameters (such as `prompt`).
pub fn authz_request_with(
    issuer: &str,
    client_id: &str,
    scope: &str,
    extra: &[(&str, &str)],
) -> AuthzRequest {
    let (challenge, verifier) = pkce();
    let state = CsrfToken::new_random().secret().clone();
    let nonce = Nonce::new_random().secret().clone();
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT_URI),
        ("scope", scope),
        ("state", state.as_str()),
        ("nonce", nonce.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    params.extend_from_slice(extra);
    AuthzRequest {
        url: authorize_url(issuer, &params),
        state,
        nonce,
        verifier,
    }
}

/// Asserts that `location` is [`REDIRECT_URI`] with a query, and returns the query
/// parameters (each must appear once).
pub fn redirect_params(location: &Url) -> HashMap<String, String> {
    let mut base = location.clone();
    base.set_query(None);
    assert_eq!(
        base.as_str(),
        REDIRECT_URI,
        "redirected to {location}, not to the registered redirect URI"
    );
    assert!(
        location.fragment().is_none(),
        "authorization response in a fragment: {location}"
    );
    let mut map = HashMap::new();
    for (k, v) in location.query_pairs() {
        let prev = map.insert(k.clone().into_owned(), v.into_owned());
        assert!(prev.is_none(), "parameter {k} appears twice in {location}");
    }
    map
}

/// Asserts an authorization error response at the redirect URI: `error`, the
/// request's `state`, and `iss` equal to the issuer, and no `code`.
pub fn assert_authz_error(location: &Url, issuer: &str, state: &str, error: &str) {
    let q = redirect_params(location);
    assert_eq!(
        q.get("error").map(String::as_str),
        Some(error),
        "error in {location}"
    );
    assert_eq!(
        q.get("state").map(String::as_str),
        Some(state),
        "state in {location}"
    );
    assert_eq!(
        q.get("iss").map(String::as_str),
        Some(issuer),
        "iss in {location}"
    );
    assert!(
        !q.contains_key("code"),
        "an error response carries a code: {location}"
    );
}

/// Asserts a successful authorization response and returns the code.
pub fn assert_authz_code(location: &Url, issuer: &str, state: &str) -> String {
    let q = redirect_params(location);
    assert!(!q.contains_key("error"), "authorization failed: {location}");
    assert_eq!(
        q.get("state").map(String::as_str),
        Some(state),
        "state in {location}"
    );
    assert_eq!(
        q.get("iss").map(String::as_str),
        Some(issuer),
        "iss in {location}"
    );
    let code = q
        .get("code")
        .unwrap_or_else(|| panic!("no code in {location}"))
        .clone();
    assert!(
        code.len() >= 22,
        "code {code:?} is too short to hold 128 bits or more"
    );
    code
}

// ---------------------------------------------------------------------------
// The browser
// ---------------------------------------------------------------------------

/// One HTTP response, read completely.
#[derive(Debug)]
pub struct Page {
    pub url: Url,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    /// The `Location` header resolved against the request URL.
    pub fn location(&self) -> Option<Url> {
        let raw = self
            .headers
            .get(header::LOCATION)?
            .to_str()
            .expect("Location is ASCII");
        Some(
            self.url
                .join(raw)
                .unwrap_or_else(|e| panic!("bad Location {raw:?}: {e}")),
        )
    }

    pub fn is_redirect(&self) -> bool {
        self.status.is_redirection()
    }

    /// The form posting to `action`, if the page has one.
    pub fn form(&self, action: &str) -> Option<Form> {
        find_form(&self.body, action)
    }

    pub fn is_login_page(&self) -> bool {
        self.status == StatusCode::OK && self.form("/login").is_some()
    }

    pub fn is_consent_page(&self) -> bool {
        self.status == StatusCode::OK && self.form("/consent").is_some()
    }

    fn describe(&self) -> String {
        let location = self
            .headers
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap_or("?").to_owned());
        let body: String = self.body.chars().take(1500).collect();
        format!(
            "{} {} (Location: {location:?})\n{body}",
            self.url, self.status
        )
    }
}

/// A user agent: keeps cookies, never follows redirects by itself.
pub struct Browser {
    pub http: reqwest::Client,
    issuer: Url,
}

impl Browser {
    pub fn new(issuer: &str) -> Browser {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .build()
            .expect("build the browser's HTTP client");
        Browser {
            http,
            issuer: Url::parse(issuer).expect("issuer URL"),
        }
    }

    pub async fn get(&self, url: &str) -> Page {
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        read_page(resp).await
    }

    pub async fn post_form(&self, url: &str, form: &[(String, String)]) -> Page {
        let resp = self
            .http
            .post(url)
            .form(form)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        read_page(resp).await
    }

    /// POSTs a form with one extra request header; returns the status.
    pub async fn post_form_with_header(
        &self,
        url: &str,
        form: &[(String, String)],
        header: (&str, &str),
    ) -> StatusCode {
        self.http
            .post(url)
            .header(header.0, header.1)
            .form(form)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"))
            .status()
    }

    fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.issuer.origin()
    }

    /// GETs `url` and follows redirects for as long as they stay on the server. Returns
    /// the first page that is not such a redirect: a login or consent page, an error
    /// page, or the redirect back to the client.
    pub async fn visit(&self, url: &str) -> Page {
        let page = self.get(url).await;
        self.follow(page).await
    }

    /// Follows `page` while it redirects within the server.
    pub async fn follow(&self, mut page: Page) -> Page {
        for _ in 0..10 {
            match page.location() {
                Some(next) if page.is_redirect() && self.same_origin(&next) => {
                    page = self.get(next.as_str()).await;
                }
                _ => return page,
            }
        }
        panic!(
            "more than 10 redirects within the server, last: {}",
            page.describe()
        );
    }

    /// Fills in and submits the login form on `page`; returns the raw answer.
    pub async fn submit_login(&self, page: &Page, username: &str, password: &str) -> Page {
        let form = page
            .form("/login")
            .unwrap_or_else(|| panic!("expected a login form, got {}", page.describe()));
        assert_eq!(form.method, "post", "login form method");
        assert!(
            form.has_input("username"),
            "login form has no username input: {}",
            page.describe()
        );
        assert!(
            form.has_input("password"),
            "login form has no password input: {}",
            page.describe()
        );
        let hidden_names: Vec<&str> = form.hidden.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            hidden_names.contains(&"csrf_token"),
            "login form has no csrf_token: {hidden_names:?}"
        );
        assert!(
            hidden_names.contains(&"authz"),
            "login form has no authz: {hidden_names:?}"
        );
        let mut fields = form.hidden.clone();
        fields.push(("username".to_owned(), username.to_owned()));
        fields.push(("password".to_owned(), password.to_owned()));
        let action = page.url.join(&form.action).expect("login form action");
        self.post_form(action.as_str(), &fields).await
    }

    /// Signs in through the form on `page` and follows the server's redirects.
    pub async fn login(&self, page: &Page, username: &str, password: &str) -> Page {
        let answer = self.submit_login(page, username, password).await;
        assert_eq!(
            answer.status,
            StatusCode::SEE_OTHER,
            "POST /login: {}",
            answer.describe()
        );
        let next = answer.location().expect("Location after login");
        assert!(
            self.same_origin(&next),
            "login redirected off the server: {next}"
        );
        assert_eq!(
            next.path(),
            "/authorize",
            "login should send the user back to /authorize, not {next}"
        );
        self.follow(answer).await
    }

    /// Submits the consent form on `page` with `decision` ("allow" or "deny"); returns
    /// the redirect to the client.
    pub async fn consent(&self, page: &Page, decision: &str) -> Url {
        let form = page
            .form("/consent")
            .unwrap_or_else(|| panic!("expected a consent page, got {}", page.describe()));
        assert_eq!(form.method, "post", "consent form method");
        let hidden_names: Vec<&str> = form.hidden.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            hidden_names.contains(&"csrf_token"),
            "consent form has no csrf_token: {hidden_names:?}"
        );
        assert!(
            hidden_names.contains(&"authz"),
            "consent form has no authz: {hidden_names:?}"
        );
        for d in ["allow", "deny"] {
            assert!(
                form.buttons.iter().any(|(n, v)| n == "decision" && v == d),
                "consent form has no decision={d} button: {:?}",
                form.buttons
            );
        }
        let mut fields = form.hidden.clone();
        fields.push(("decision".to_owned(), decision.to_owned()));
        let action = page.url.join(&form.action).expect("consent form action");
        let answer = self.post_form(action.as_str(), &fields).await;
        assert_eq!(
            answer.status,
            StatusCode::SEE_OTHER,
            "POST /consent: {}",
            answer.describe()
        );
        answer.location().expect("Location after consent")
    }

    /// The full first-time flow: the authorization request shows a login page; sign in;
    /// a consent page follows; allow. Returns the redirect to the client.
    pub async fn login_and_consent(
        &self,
        authorize_url: &str,
        username: &str,
        password: &str,
    ) -> Url {
        let page = self.visit(authorize_url).await;
        assert!(
            page.is_login_page(),
            "expected the login page, got {}",
            page.describe()
        );
        let page = self.login(&page, username, password).await;
        assert!(
            page.is_consent_page(),
            "expected the consent page after login, got {}",
            page.describe()
        );
        self.consent(&page, "allow").await
    }

    /// Visits `authorize_url` and expects the server to answer at once with a redirect
    /// to the client (no page in between).
    pub async fn expect_redirect_to_client(&self, authorize_url: &str) -> Url {
        let page = self.visit(authorize_url).await;
        assert_eq!(
            page.status,
            StatusCode::SEE_OTHER,
            "expected a redirect to the client, got {}",
            page.describe()
        );
        page.location().expect("Location")
    }
}

async fn read_page(resp: reqwest::Response) -> Page {
    let url = resp.url().clone();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .text()
        .await
        .unwrap_or_else(|e| panic!("read body of {url}: {e}"));
    Page {
        url,
        status,
        headers,
        body,
    }
}

/// Asserts the answer to an authorization request is an error page shown to the user:
/// 400, HTML, no redirect.
pub fn assert_error_page(page: &Page) {
    assert_eq!(
        page.status,
        StatusCode::BAD_REQUEST,
        "expected a 400 error page, got {}",
        page.describe()
    );
    assert!(
        page.headers.get(header::LOCATION).is_none(),
        "an error page must not redirect: {}",
        page.describe()
    );
    let ct = page
        .headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    assert!(
        ct.starts_with("text/html"),
        "error page content type {ct:?}"
    );
    // Nor may it bounce the user on by other means (RFC 6749 §4.1.2.1: MUST NOT
    // automatically redirect to an invalid redirect URI).
    let lower = page.body.to_ascii_lowercase();
    assert!(
        !lower.contains("http-equiv=\"refresh\"") && !lower.contains("<script"),
        "error page redirects by meta refresh or script: {}",
        page.describe()
    );
}

// ---------------------------------------------------------------------------
// HTML forms
// ---------------------------------------------------------------------------

/// A `<form>` found in a page.
#[derive(Debug, Clone)]
pub struct Form {
    pub action: String,
    pub method: String,
    /// `<input type="hidden">` name/value pairs, unescaped, in document order.
    pub hidden: Vec<(String, String)>,
    /// Names of the other inputs.
    pub inputs: Vec<String>,
    /// Submit buttons (`<button>` or `<input type="submit">`) as name/value.
    pub buttons: Vec<(String, String)>,
}

impl Form {
    pub fn has_input(&self, name: &str) -> bool {
        self.inputs.iter().any(|n| n == name)
    }
}

/// The first form in `html` whose action is `action` (as a path, possibly absolute).
pub fn find_form(html: &str, action: &str) -> Option<Form> {
    let lower = html.to_ascii_lowercase();
    let mut from = 0;
    while let Some(pos) = lower[from..].find("<form") {
        let start = from + pos;
        let tag_end = start + lower[start..].find('>')?;
        let attrs = parse_attributes(&html[start + "<form".len()..tag_end]);
        let body_end = lower[tag_end..]
            .find("</form")
            .map_or(html.len(), |p| tag_end + p);
        from = tag_end;
        let form_action = attr(&attrs, "action").unwrap_or_default();
        let action_path = Url::parse("http://x.invalid/")
            .and_then(|b| b.join(&form_action))
            .ok()
            .map(|u| u.path().to_owned());
        if action_path.as_deref() != Some(action) {
            continue;
        }
        let content = &html[tag_end + 1..body_end];
        let mut form = Form {
            action: form_action,
            method: attr(&attrs, "method")
                .unwrap_or_else(|| "get".to_owned())
                .to_ascii_lowercase(),
            hidden: parse_hidden_inputs(content),
            inputs: Vec::new(),
            buttons: Vec::new(),
        };
        for (tag, attrs) in tags(content, &["input", "button"]) {
            let name = attr(&attrs, "name").unwrap_or_default();
            let kind = attr(&attrs, "type")
                .unwrap_or_default()
                .to_ascii_lowercase();
            let value = attr(&attrs, "value").unwrap_or_default();
            if (tag == "button" && kind != "button" && kind != "reset")
                || (tag == "input" && kind == "submit")
            {
                form.buttons.push((name, value));
            } else if tag == "input" && kind != "hidden" {
                form.inputs.push(name);
            }
        }
        return Some(form);
    }
    None
}

/// Every `<input type="hidden" name=".." value="..">` in `html`, values unescaped.
pub fn parse_hidden_inputs(html: &str) -> Vec<(String, String)> {
    tags(html, &["input"])
        .into_iter()
        .filter(|(_, attrs)| attr(attrs, "type").is_some_and(|t| t.eq_ignore_ascii_case("hidden")))
        .filter_map(|(_, attrs)| {
            Some((
                attr(&attrs, "name")?,
                attr(&attrs, "value").unwrap_or_default(),
            ))
        })
        .collect()
}

/// The start tags named in `names` within `html`, with their attributes.
fn tags(html: &str, names: &[&str]) -> Vec<(String, Vec<(String, String)>)> {
    let lower = html.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(pos) = lower[from..].find('<') {
        let start = from + pos + 1;
        let name_len = lower[start..]
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(lower.len() - start);
        let name = &lower[start..start + name_len];
        let Some(end) = lower[start..].find('>').map(|p| start + p) else {
            break;
        };
        if names.contains(&name) {
            out.push((
                name.to_owned(),
                parse_attributes(&html[start + name_len..end]),
            ));
        }
        from = end;
    }
    out
}

fn attr(attrs: &[(String, String)], name: &str) -> Option<String> {
    attrs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// Parses `name="value" name='value' name=value name` (the inside of a start tag,
/// after the tag name). Names are lowercased; values are unescaped.
fn parse_attributes(s: &str) -> Vec<(String, String)> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        let name_start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'=' && b[i] != b'/' {
            i += 1;
        }
        if i == name_start {
            break;
        }
        let name = s[name_start..i].to_ascii_lowercase();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < b.len() && b[i] == b'=' {
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            let value = if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                let quote = b[i];
                let v_start = i + 1;
                let v_end = b[v_start..]
                    .iter()
                    .position(|&c| c == quote)
                    .map_or(b.len(), |p| v_start + p);
                i = v_end + 1;
                &s[v_start..v_end]
            } else {
                let v_start = i;
                while i < b.len() && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                &s[v_start..i]
            };
            out.push((name, html_unescape(value)));
        } else {
            out.push((name, String::new()));
        }
    }
    out
}

/// Undoes HTML escaping: `&amp; &quot; &lt; &gt; &apos; &#39; &#x27;` and any other
/// numeric character reference.
pub fn html_unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest[..rest.len().min(12)].find(';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "quot" => Some('"'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .map(|hex| u32::from_str_radix(hex, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse::<u32>))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Retries `check` until it holds, failing after 5 s: for what a server sees within one
/// poll rather than at once (a client or user changed by an admin command is seen
/// within `client_check_interval_ms`, 250 ms by default). `check` must have no effect
/// that the test depends on.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if check().await {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not within 5 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---------------------------------------------------------------------------
// Token endpoint, userinfo, JWTs
// ---------------------------------------------------------------------------

/// How a token request authenticates the client.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// `client_secret_basic`.
    Basic(&'a str, &'a str),
    /// `client_secret_post`.
    Post(&'a str, &'a str),
    /// A public client: `client_id` in the body, no secret.
    PublicId(&'a str),
}

/// A token endpoint answer.
#[derive(Debug)]
pub struct TokenAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
}

impl TokenAnswer {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header").to_owned())
    }

    /// Asserts success (200, Bearer, no-store) and returns the JSON.
    pub fn ok(&self) -> &Value {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "token request failed: {}",
            self.json
        );
        assert_eq!(
            self.json["token_type"]
                .as_str()
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("bearer"),
            "{}",
            self.json
        );
        assert!(
            self.json["access_token"]
                .as_str()
                .is_some_and(|t| !t.is_empty()),
            "{}",
            self.json
        );
        assert!(
            self.json["expires_in"]
                .as_i64()
                .is_some_and(|e| e > 0 && e <= 300),
            "expires_in: {}",
            self.json
        );
        self.assert_no_store();
        &self.json
    }

    /// Asserts an error answer: status, `error`, a string `error_description`, no-store.
    pub fn assert_error(&self, status: StatusCode, error: &str) {
        assert_eq!(
            self.status, status,
            "token endpoint status, body {}",
            self.json
        );
        assert_eq!(
            self.json["error"].as_str(),
            Some(error),
            "token endpoint error: {}",
            self.json
        );
        assert!(
            self.json["error_description"].is_string(),
            "no error_description: {}",
            self.json
        );
        assert!(
            self.json.get("access_token").is_none(),
            "an error answer carries a token: {}",
            self.json
        );
        self.assert_no_store();
    }

    pub fn assert_no_store(&self) {
        let cc = self.header("cache-control").unwrap_or_default();
        assert!(
            cc.to_ascii_lowercase().contains("no-store"),
            "Cache-Control {cc:?} lacks no-store"
        );
    }
}

/// A plain HTTP client for back-channel calls (no cookies, no redirects).
pub fn backchannel() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HTTP_TIMEOUT)
        .build()
        .expect("build HTTP client")
}

/// POSTs `params` to the token endpoint with client authentication `auth`.
pub async fn token_request(issuer: &str, auth: Auth<'_>, params: &[(&str, &str)]) -> TokenAnswer {
    let mut form: Vec<(&str, &str)> = params.to_vec();
    let mut req = backchannel().post(format!("{issuer}/token"));
    match auth {
        Auth::Basic(id, secret) => {
            // RFC 6749 §2.3.1: form-encode each part, then Base64 the pair.
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let creds = STANDARD.encode(format!("{}:{}", enc(id), enc(secret)));
            req = req.header(header::AUTHORIZATION, format!("Basic {creds}"));
        }
        Auth::Post(id, secret) => {
            form.push(("client_id", id));
            form.push(("client_secret", secret));
        }
        Auth::PublicId(id) => form.push(("client_id", id)),
    }
    let resp = req
        .form(&form)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /token: {e}"));
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("token response body");
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("token endpoint answered {status} with non-JSON {text:?}: {e}"));
    TokenAnswer {
        status,
        headers,
        json,
    }
}

/// Redeems `code` for `client` with `verifier`.
pub async fn redeem(issuer: &str, client: &TestClient, code: &str, verifier: &str) -> TokenAnswer {
    token_request(
        issuer,
        client.auth(),
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", verifier),
        ],
    )
    .await
}

/// Uses `refresh_token` for `client`.
pub async fn refresh(issuer: &str, client: &TestClient, refresh_token: &str) -> TokenAnswer {
    token_request(
        issuer,
        client.auth(),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// A userinfo answer.
#[derive(Debug)]
pub struct UserinfoAnswer {
    pub status: StatusCode,
    pub www_authenticate: Option<String>,
    pub body: String,
}

/// GET /userinfo, with `Authorization: Bearer token` when `token` is given.
pub async fn userinfo(issuer: &str, token: Option<&str>) -> UserinfoAnswer {
    let mut req = backchannel().get(format!("{issuer}/userinfo"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /userinfo: {e}"));
    let status = resp.status();
    let www_authenticate = resp
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().expect("ASCII header").to_owned());
    let body = resp.text().await.expect("userinfo body");
    UserinfoAnswer {
        status,
        www_authenticate,
        body,
    }
}

/// Decodes a compact JWS without checking the signature: `(header, claims)`.
pub fn decode_jwt(jwt: &str) -> (Value, Value) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWS: {jwt}");
    let part = |p: &str| -> Value {
        let bytes = URL_SAFE_NO_PAD
            .decode(p)
            .unwrap_or_else(|e| panic!("JWT part {p:?} is not base64url: {e}"));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("JWT part is not JSON: {e}"))
    };
    assert!(!parts[2].is_empty(), "unsigned JWT: {jwt}");
    (part(parts[0]), part(parts[1]))
}

/// Space-separated scope tokens as a sorted list.
pub fn scope_set(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .split(' ')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

/// One complete first-time authorization for `client` by `username` in `browser`:
/// returns the code and the request it answers.
pub async fn first_code(
    server: &TestServer,
    browser: &Browser,
    client: &TestClient,
    username: &str,
) -> (String, AuthzRequest) {
    let req = authz_request(&server.issuer, &client.id, "openid profile email");
    let location = browser
        .login_and_consent(&req.url, username, PASSWORD)
        .await;
    let code = assert_authz_code(&location, &server.issuer, &req.state);
    (code, req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_entities() {
        assert_eq!(
            html_unescape("a&amp;b&quot;c&lt;d&gt;e&#x27;f&#39;g&apos;"),
            "a&b\"c<d>e'f'g'"
        );
        assert_eq!(
            html_unescape("&amp;amp; & &unknown; &#x2F;"),
            "&amp; & &unknown; /"
        );
    }

    #[test]
    fn finds_forms_and_hidden_inputs() {
        let html = r#"<html><form method="get" action="/other"><input type="hidden" name="x" value="1"></form>
            <FORM Method="POST" action="/login">
              <input type="hidden" name="csrf_token" value="a&amp;b">
              <input value='{&quot;q&quot;:1}' name="authz" type="hidden" />
              <input type="text" name="username" autocomplete="username">
              <input type="password" name="password">
              <button type="submit">Sign in</button>
            </form>
            <form method="post" action="/consent"><input type="hidden" name="authz" value="z">
              <button name="decision" value="allow">Allow</button>
              <button type="submit" name="decision" value="deny">Deny</button></form>"#;
        let login = find_form(html, "/login").unwrap();
        assert_eq!(login.method, "post");
        assert_eq!(
            login.hidden,
            vec![
                ("csrf_token".to_owned(), "a&b".to_owned()),
                ("authz".to_owned(), "{\"q\":1}".to_owned())
            ]
        );
        assert!(login.has_input("username") && login.has_input("password"));
        let consent = find_form(html, "/consent").unwrap();
        assert_eq!(
            consent.buttons,
            vec![
                ("decision".to_owned(), "allow".to_owned()),
                ("decision".to_owned(), "deny".to_owned())
            ]
        );
        assert!(find_form(html, "/missing").is_none());
        assert_eq!(parse_hidden_inputs(html).len(), 4);
    }
}
