//! Many nodes, crashes and storage growth: two `latchkey serve` processes on one
//! PostgreSQL database share codes, sessions, refresh tokens and revocations; racing
//! redemptions and refreshes at both nodes win once; a node killed with SIGKILL in the
//! middle of a stream of requests comes back with every token pair a client received
//! still usable and no revoked grant alive (SQLite and PostgreSQL); and issuing or
//! refreshing tokens adds no rows (DESIGN §1.1).
//!
//! Every node of a group is started with the same `--issuer` (the first node's URL), as
//! nodes behind one load balancer would be; each is addressed at its own port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use latchkey_store::{PgStore, SqliteStore, Store};
use reqwest::StatusCode;
use reqwest::header;
use serde_json::Value;
use url::Url;

use crate::support::*;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const SCOPE: &str = "openid profile email";
const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Nodes on PostgreSQL share sealed signing keys, so they share the master key that
/// opens them (32 bytes, hex). The embedded store keeps its own in the data directory.
const PG_MASTER_KEY: &str = "6c617463686b65792d6d756c74692d6e6f64652d746573742d6d61737465722e";

// ---------------------------------------------------------------------------
// Databases
// ---------------------------------------------------------------------------

/// Where a node keeps its state.
#[derive(Debug, Clone)]
enum Backend {
    /// The embedded SQLite file in this data directory.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(String),
}

impl Backend {
    /// Environment every process on this store needs.
    fn env(&self) -> Vec<(&'static str, &'static str)> {
        match self {
            Backend::Sqlite(_) => vec![],
            Backend::Postgres(_) => vec![("LATCHKEY_MASTER_KEY", PG_MASTER_KEY)],
        }
    }

    /// The `latchkey` flags that select this store.
    fn args(&self) -> Vec<String> {
        match self {
            Backend::Sqlite(dir) => vec!["--data-dir".into(), dir.display().to_string()],
            Backend::Postgres(url) => vec!["--database-url".into(), url.clone()],
        }
    }

    /// The same store, opened from the test (SQLite in WAL mode allows it while the
    /// server runs).
    async fn open(&self) -> Box<dyn Store> {
        match self {
            Backend::Sqlite(dir) => Box::new(
                SqliteStore::open(&dir.join("latchkey.db"))
                    .await
                    .unwrap_or_else(|e| panic!("open {}/latchkey.db: {e}", dir.display())),
            ),
            Backend::Postgres(url) => Box::new(
                PgStore::connect(url)
                    .await
                    .unwrap_or_else(|e| panic!("connect to {url}: {e}")),
            ),
        }
    }
}

/// Runs one SQL command with `psql` against `url`; returns its unaligned output.
fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .arg(url)
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run psql (is it installed?): {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "psql exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A database of its own on the PostgreSQL server of `LATCHKEY_TEST_DATABASE_URL`,
/// dropped (WITH (FORCE)) when the guard goes.
struct FreshDb {
    admin_url: String,
    name: String,
    url: String,
}

impl FreshDb {
    fn create() -> FreshDb {
        let admin_url = std::env::var("LATCHKEY_TEST_DATABASE_URL")
            .unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        let name = format!("latchkey_mn_{}_{}", std::process::id(), nanos());
        if let Err(e) = psql(&admin_url, &format!("CREATE DATABASE {name}")) {
            panic!(
                "PostgreSQL at {admin_url} (LATCHKEY_TEST_DATABASE_URL) is required for the multi-node tests and could not create a database: {e}"
            );
        }
        let mut url = Url::parse(&admin_url)
            .unwrap_or_else(|e| panic!("LATCHKEY_TEST_DATABASE_URL {admin_url:?}: {e}"));
        url.set_path(&format!("/{name}"));
        FreshDb {
            admin_url,
            name,
            url: url.to_string(),
        }
    }

    fn backend(&self) -> Backend {
        Backend::Postgres(self.url.clone())
    }
}

impl Drop for FreshDb {
    fn drop(&mut self) {
        let _ = psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn nanos() -> u128 {
    #[allow(
        clippy::disallowed_methods,
        reason = "a unique database name, not protocol time"
    )]
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------

/// One `latchkey serve` process. Unlike `TestServer`, its issuer can differ from the
/// URL it listens on, and it can be killed with SIGKILL.
struct Node {
    child: Child,
    name: String,
    /// `http://127.0.0.1:PORT`: where to send this node's requests.
    base: String,
    /// The issuer it was started with (shared by a group of nodes).
    issuer: String,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local address").port()
}

impl Node {
    /// Starts a node on `backend` at a fresh port. Without `issuer` the node's own URL is
    /// the issuer.
    fn start(name: &str, backend: &Backend, issuer: Option<&str>, env: &[(&str, &str)]) -> Node {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let base = format!("http://127.0.0.1:{port}");
            let issuer = issuer.map_or_else(|| base.clone(), str::to_owned);
            match Node::try_start(name, backend, port, &issuer, env) {
                Ok(node) => return node,
                // Someone took the port between our probe and the node's bind: retry.
                Err(e) if e.contains("cannot listen") => last = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("node {name} found no free port: {last}");
    }

    fn try_start(
        name: &str,
        backend: &Backend,
        port: u16,
        issuer: &str,
        env: &[(&str, &str)],
    ) -> Result<Node, String> {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path).expect("create the server log file");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .args(backend.args())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--issuer", issuer])
            .env("NO_COLOR", "1")
            .env_remove("LATCHKEY_DATABASE_URL")
            .env_remove("LATCHKEY_DATA_DIR")
            .envs(backend.env())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().expect("spawn latchkey serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut node = Node {
            child,
            name: name.to_owned(),
            base: format!("http://127.0.0.1:{port}"),
            issuer: issuer.to_owned(),
            log_path,
            _dir: dir,
        };
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.trim().strip_prefix("listening on ") {
                        assert_eq!(url.trim(), issuer, "node {name} announced another issuer");
                        return Ok(node);
                    }
                    seen.push(line);
                }
                Err(e) => {
                    let _ = node.child.kill();
                    let status = node.child.wait().ok();
                    let log = node.log();
                    // Do not print the log again from Drop.
                    return Err(format!(
                        "node {name} did not print `listening on URL` ({e}); exit status {status:?}; stdout: {seen:?}; stderr:\n{log}"
                    ));
                }
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL: no graceful shutdown, no flushing, requests in flight are cut.
    fn kill9(&mut self) {
        assert!(
            matches!(self.child.try_wait(), Ok(None)),
            "node {} was already dead before the kill:\n{}",
            self.name,
            self.log()
        );
        // `Child::kill` sends SIGKILL on Unix.
        self.child.kill().expect("SIGKILL the node");
        self.child.wait().expect("reap the node");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- node {} ({}) stderr -----\n{}",
                self.name,
                self.base,
                self.log()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Admin CLI against a backend
// ---------------------------------------------------------------------------

/// `latchkey <command> <backend flags> <args> --json`, asserted to succeed; the JSON.
fn admin(backend: &Backend, command: &[&str], args: &[&str], stdin: Option<&str>) -> Value {
    use std::io::Write;
    let mut cmd = Command::new(BIN);
    cmd.args(command)
        .args(backend.args())
        .args(args)
        .arg("--json")
        .env_remove("LATCHKEY_DATABASE_URL")
        .env_remove("LATCHKEY_DATA_DIR")
        .envs(backend.env())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().expect("spawn latchkey admin command");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    let out = child
        .wait_with_output()
        .expect("wait for the admin command");
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
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str::<Value>(l.trim())
                .ok()
                .filter(Value::is_object)
        })
        .unwrap_or_else(|| panic!("admin command printed no JSON object: {stdout:?}"))
}

/// A confidential client allowed every grant type.
fn create_client(backend: &Backend) -> TestClient {
    let v = admin(
        backend,
        &["client", "create"],
        &[
            "--name",
            "Multi-node App",
            "--redirect-uri",
            REDIRECT_URI,
            "--grant-types",
            "authorization_code,refresh_token,client_credentials",
            // Also an API, so it may read the revocation feed.
            "--serves-audience",
            "urn:latchkey:multinode-api",
        ],
        None,
    );
    let id = v["client_id"].as_str().expect("client_id").to_owned();
    let secret = v["client_secret"]
        .as_str()
        .expect("client_secret")
        .to_owned();
    assert!(!id.is_empty() && secret.len() >= 32, "{v}");
    TestClient {
        id,
        secret: Some(secret),
    }
}

fn create_user(backend: &Backend, username: &str) -> String {
    let email = format!("{username}@example.com");
    let v = admin(
        backend,
        &["user", "create"],
        &[
            "--username",
            username,
            "--password-stdin",
            "--email",
            &email,
            "--name",
            username,
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    let id = v["user_id"].as_str().expect("user_id").to_owned();
    assert!(!id.is_empty(), "{v}");
    id
}

// ---------------------------------------------------------------------------
// HTTP helpers that never panic on a transport error (a killed node is expected)
// ---------------------------------------------------------------------------

/// An answer from a back-channel endpoint.
#[derive(Debug, Clone)]
struct Answer {
    status: StatusCode,
    json: Value,
}

impl Answer {
    fn is_ok(&self) -> bool {
        self.status == StatusCode::OK
    }

    fn str(&self, field: &str) -> String {
        self.json[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field} in {}", self.json))
            .to_owned()
    }

    /// Status and error, or which tokens came: short enough for a failure message.
    fn brief(&self) -> String {
        match self.json["error"].as_str() {
            Some(e) => format!("{} {e}: {}", self.status, self.json["error_description"]),
            None => {
                let keys: Vec<&str> = self
                    .json
                    .as_object()
                    .map(|o| o.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                format!("{} {keys:?}", self.status)
            }
        }
    }

    fn assert_invalid_grant(&self, what: &str) {
        assert_eq!(
            (self.status, self.json["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_grant")),
            "{what}: {}",
            self.json
        );
    }
}

fn basic(client: &TestClient) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let secret = client.secret.as_deref().expect("a confidential client");
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", enc(&client.id), enc(secret)))
    )
}

/// POSTs a form with `client_secret_basic`; `Err` if no complete answer came back.
async fn try_post(
    http: &reqwest::Client,
    url: &str,
    client: &TestClient,
    form: &[(&str, &str)],
) -> Result<Answer, String> {
    let resp = http
        .post(url)
        .header(header::AUTHORIZATION, basic(client))
        .form(form)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| format!("POST {url} body: {e}"))?;
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)
            .map_err(|e| format!("POST {url} answered {status} with non-JSON {text:?}: {e}"))?
    };
    Ok(Answer { status, json })
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    client: &TestClient,
    form: &[(&str, &str)],
) -> Answer {
    try_post(http, url, client, form)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn do_refresh(http: &reqwest::Client, node: &Node, client: &TestClient, rt: &str) -> Answer {
    post(
        http,
        &node.url("/token"),
        client,
        &[("grant_type", "refresh_token"), ("refresh_token", rt)],
    )
    .await
}

async fn do_redeem(
    http: &reqwest::Client,
    node: &Node,
    client: &TestClient,
    code: &str,
    verifier: &str,
) -> Answer {
    post(
        http,
        &node.url("/token"),
        client,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", verifier),
        ],
    )
    .await
}

/// RFC 7662 at `node` by `client`; asserts 200 and returns the JSON.
async fn introspect(
    http: &reqwest::Client,
    node: &Node,
    client: &TestClient,
    token: &str,
) -> Value {
    let a = post(http, &node.url("/introspect"), client, &[("token", token)]).await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "introspection at {}: {}",
        node.name,
        a.json
    );
    assert!(
        a.json["active"].is_boolean(),
        "introspection answer {}",
        a.json
    );
    a.json
}

/// RFC 7009 at `node` by `client`; asserts 200.
async fn revoke(http: &reqwest::Client, node: &Node, client: &TestClient, token: &str) {
    let a = post(http, &node.url("/revoke"), client, &[("token", token)]).await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "revocation at {}: {}",
        node.name,
        a.json
    );
}

/// The grant id and generation of a refresh token `GRANT.GENERATION.SECRET`.
fn refresh_parts(rt: &str) -> (String, i64) {
    let mut it = rt.split('.');
    let (Some(gid), Some(generation), Some(secret), None) =
        (it.next(), it.next(), it.next(), it.next())
    else {
        panic!("refresh token {rt:?} is not GRANT.GENERATION.SECRET");
    };
    assert!(
        !gid.is_empty() && !secret.is_empty(),
        "refresh token {rt:?}"
    );
    let generation = generation
        .parse()
        .unwrap_or_else(|e| panic!("generation of {rt:?}: {e}"));
    (gid.to_owned(), generation)
}

/// A signed-in browser (at the group's first node) whose user has consented to
/// `client` once; `(browser, code, verifier)` of that first authorization.
async fn signed_in(first: &Node, client: &TestClient, username: &str) -> (Browser, String, String) {
    let browser = Browser::new(&first.base);
    let req = authz_request(&first.base, &client.id, SCOPE);
    let location = browser
        .login_and_consent(&req.url, username, PASSWORD)
        .await;
    let code = assert_authz_code(&location, &first.issuer, &req.state);
    (browser, code, req.verifier)
}

/// With a session and remembered consent, `/authorize` at `node` answers at once with a
/// code: returns `(code, verifier)`.
async fn quick_code(browser: &Browser, node: &Node, client: &TestClient) -> (String, String) {
    let req = authz_request(&node.base, &client.id, SCOPE);
    let page = browser.get(&req.url).await;
    assert_eq!(
        page.status,
        StatusCode::SEE_OTHER,
        "/authorize at {} with a session and remembered consent: {}",
        node.name,
        page.body
    );
    let location = page.location().expect("Location");
    (
        assert_authz_code(&location, &node.issuer, &req.state),
        req.verifier,
    )
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("build HTTP client")
}

// ---------------------------------------------------------------------------
// Two nodes on one PostgreSQL
// ---------------------------------------------------------------------------

/// Two nodes on a fresh database with one user and one confidential client.
struct Pair {
    a: Node,
    b: Node,
    client: TestClient,
    user_id: String,
    /// Tests bind it first when they destructure a `Pair`: bindings drop in reverse
    /// order, so the database is dropped after both nodes are dead.
    db: FreshDb,
}

fn pair(env: &[(&str, &str)]) -> Pair {
    let db = FreshDb::create();
    let backend = db.backend();
    // One after the other: the first node creates the signing keys, the second loads them.
    let a = Node::start("A", &backend, None, env);
    let b = Node::start("B", &backend, Some(&a.issuer), env);
    let user_id = create_user(&backend, "alice");
    let client = create_client(&backend);
    Pair {
        a,
        b,
        client,
        user_id,
        db,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_codes_refresh_and_revocation() {
    // `db` first: bindings drop in reverse order, so the database goes after the nodes.
    let Pair {
        db: _db,
        a,
        b,
        client,
        user_id,
    } = pair(&[]);
    let http = http_client();
    let issuer = a.issuer.clone();
    assert_ne!(a.base, b.base);

    // Log in and consent at A; the code is redeemed at B.
    let (browser, code1, verifier1) = signed_in(&a, &client, "alice").await;
    let t1 = do_redeem(&http, &b, &client, &code1, &verifier1).await;
    assert!(t1.is_ok(), "code from A redeemed at B: {}", t1.json);
    let (at1, rt1) = (t1.str("access_token"), t1.str("refresh_token"));
    let (g1, gen1) = refresh_parts(&rt1);
    assert_eq!(gen1, 1);
    let (_, claims) = decode_jwt(&at1);
    assert_eq!(claims["iss"], issuer.as_str());
    assert_eq!(claims["sub"], user_id.as_str());
    assert_eq!(claims["client_id"], client.id.as_str());

    // The session made at A is valid at B: the cookie jar sends A's cookies to B (cookies
    // are not port-specific), and /authorize at B goes straight to a code. A browser
    // without those cookies is asked to sign in, so it is the session that counts.
    let stranger = Browser::new(&b.base);
    let page = stranger
        .get(&authz_request(&b.base, &client.id, SCOPE).url)
        .await;
    assert!(
        page.is_login_page(),
        "B without a session should show the login page: {} {}",
        page.status,
        page.body
    );
    let (code2, verifier2) = quick_code(&browser, &b, &client).await;
    // ... and that code, obtained at B, is redeemed at A.
    let t2 = do_redeem(&http, &a, &client, &code2, &verifier2).await;
    assert!(t2.is_ok(), "code from B redeemed at A: {}", t2.json);
    let (at2, rt2) = (t2.str("access_token"), t2.str("refresh_token"));
    let (g2, _) = refresh_parts(&rt2);
    assert_ne!(g1, g2, "two codes made one grant");

    // A refresh at B of a token issued at A, and at A of one issued at B.
    let t2b = do_refresh(&http, &b, &client, &rt2).await;
    assert!(t2b.is_ok(), "refresh at B of a token from A: {}", t2b.json);
    let (at2b, rt2b) = (t2b.str("access_token"), t2b.str("refresh_token"));
    assert_eq!(refresh_parts(&rt2b), (g2.clone(), 2));
    let t1b = do_refresh(&http, &a, &client, &rt1).await;
    assert!(t1b.is_ok(), "refresh at A of a token from B: {}", t1b.json);
    let at1b = t1b.str("access_token");
    assert_eq!(refresh_parts(&t1b.str("refresh_token")), (g1.clone(), 2));

    // Before the revocation: active at both nodes, whichever node issued the token.
    for (node, token) in [(&b, &at2), (&a, &at2b), (&b, &at2b), (&b, &at1)] {
        let v = introspect(&http, node, &client, token).await;
        assert_eq!(
            v["active"], true,
            "before revocation, at {}: {v}",
            node.name
        );
    }
    let v = introspect(&http, &b, &client, &at2).await;
    assert_eq!(v["grant_id"], g2.as_str(), "{v}");
    assert_eq!(v["sub"], user_id.as_str(), "{v}");
    assert_eq!(v["client_id"], client.id.as_str(), "{v}");
    assert_eq!(v["iss"], issuer.as_str(), "{v}");
    assert_eq!(v["token_type"], "Bearer", "{v}");
    let v = introspect(&http, &b, &client, &rt2b).await;
    assert_eq!(v["active"], true, "current refresh token at B: {v}");

    // Revoke at A with the refresh token; B says inactive at once (no cache, no delay).
    revoke(&http, &a, &client, &rt2b).await;
    for token in [&at2, &at2b, &rt2b] {
        let v = introspect(&http, &b, &client, token).await;
        assert_eq!(
            v,
            serde_json::json!({"active": false}),
            "introspection at B right after revocation at A"
        );
    }
    do_refresh(&http, &b, &client, &rt2b)
        .await
        .assert_invalid_grant("refresh at B of a grant revoked at A");

    // The other grant is untouched.
    let v = introspect(&http, &b, &client, &at1b).await;
    assert_eq!(v["active"], true, "the other grant after revoking one: {v}");

    // B's revocation feed lists the grant revoked at A.
    let feed = http
        .get(b.url("/revocations?since=0"))
        .header(header::AUTHORIZATION, basic(&client))
        .send()
        .await
        .expect("GET /revocations at B");
    assert_eq!(feed.status(), StatusCode::OK);
    let feed: Value = feed.json().await.expect("feed JSON");
    let listed: Vec<(&str, &str)> = feed["revoked"]
        .as_array()
        .unwrap_or_else(|| panic!("feed {feed}"))
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or(""),
                e["id"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(listed, vec![("grant", g2.as_str())], "feed at B: {feed}");
}

/// RFC 7009 §2.1: the token revoked may be an access token; revoking it at A revokes its
/// grant, which B sees at once. Kept apart from the test above so each failure is clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_by_access_token_at_a_reaches_b() {
    let Pair {
        db: _db,
        a,
        b,
        client,
        ..
    } = pair(&[]);
    let http = http_client();
    let (_browser, code, verifier) = signed_in(&a, &client, "alice").await;
    let t = do_redeem(&http, &b, &client, &code, &verifier).await;
    assert!(t.is_ok(), "{}", t.json);
    let (at, rt) = (t.str("access_token"), t.str("refresh_token"));
    let v = introspect(&http, &b, &client, &at).await;
    assert_eq!(v["active"], true, "before revocation: {v}");

    revoke(&http, &a, &client, &at).await;
    let v = introspect(&http, &b, &client, &at).await;
    assert_eq!(
        v["active"], false,
        "POST /revoke token=<access token> at A: introspection at B says {v}"
    );
    do_refresh(&http, &b, &client, &rt)
        .await
        .assert_invalid_grant("refresh after its access token was revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_code_redemption_wins_once() {
    let Pair {
        db: _db,
        a,
        b,
        client,
        ..
    } = pair(&[]);
    let http = http_client();
    let (browser, code0, verifier0) = signed_in(&a, &client, "alice").await;
    // The first grant keeps consent remembered for the rounds below.
    let t0 = do_redeem(&http, &a, &client, &code0, &verifier0).await;
    assert!(t0.is_ok(), "{}", t0.json);
    // Warm both connections so the racing requests leave together.
    for n in [&a, &b] {
        http.get(n.url("/jwks.json")).send().await.expect("warm-up");
    }

    let mut wins = [0usize; 2];
    for round in 0..10 {
        let issuing = if round % 2 == 0 { &a } else { &b };
        let (code, verifier) = quick_code(&browser, issuing, &client).await;
        let (ra, rb) = tokio::join!(
            do_redeem(&http, &a, &client, &code, &verifier),
            do_redeem(&http, &b, &client, &code, &verifier)
        );
        let (winner, loser, w) = match (ra.is_ok(), rb.is_ok()) {
            (true, false) => (ra, rb, 0),
            (false, true) => (rb, ra, 1),
            (true, true) => panic!(
                "round {round}: one code redeemed twice: A {} / B {}",
                ra.brief(),
                rb.brief()
            ),
            (false, false) => panic!(
                "round {round}: neither node redeemed a fresh code: A {} / B {}",
                ra.brief(),
                rb.brief()
            ),
        };
        wins[w] += 1;
        loser.assert_invalid_grant(&format!("round {round}: the losing redemption"));
        assert!(
            winner.json["access_token"].is_string() && winner.json["refresh_token"].is_string(),
            "round {round}: {}",
            winner.json
        );
        // A third presentation, after the race, is refused too.
        do_redeem(&http, issuing, &client, &code, &verifier)
            .await
            .assert_invalid_grant(&format!("round {round}: the code after the race"));
    }
    eprintln!(
        "concurrent code redemption: A won {} rounds, B {}",
        wins[0], wins[1]
    );
}

/// The winner's grant after a race that presented its code twice: DESIGN §2 says a code
/// presented again revokes the grant it produced. The check is separate so that the
/// "wins once" property above stands on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_code_redemption_revokes_the_winner() {
    let Pair {
        db: _db,
        a,
        b,
        client,
        ..
    } = pair(&[]);
    let http = http_client();
    let (browser, code0, verifier0) = signed_in(&a, &client, "alice").await;
    let t0 = do_redeem(&http, &a, &client, &code0, &verifier0).await;
    assert!(t0.is_ok(), "{}", t0.json);
    for n in [&a, &b] {
        http.get(n.url("/jwks.json")).send().await.expect("warm-up");
    }
    let mut alive = Vec::new();
    for round in 0..10 {
        let (code, verifier) = quick_code(&browser, &a, &client).await;
        let (ra, rb) = tokio::join!(
            do_redeem(&http, &a, &client, &code, &verifier),
            do_redeem(&http, &b, &client, &code, &verifier)
        );
        let winner = match (ra.is_ok(), rb.is_ok()) {
            (true, false) => ra,
            (false, true) => rb,
            other => panic!(
                "round {round}: {other:?}: A {} / B {}",
                ra.brief(),
                rb.brief()
            ),
        };
        let v = introspect(&http, &a, &client, &winner.str("access_token")).await;
        if v["active"] == true {
            alive.push((round, winner.str("refresh_token")));
        }
    }
    assert!(
        alive.is_empty(),
        "a code presented twice (at A and B at once) must revoke the grant it produced, but the winner's grant stayed active in rounds {:?}",
        alive.iter().map(|(r, _)| *r).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refresh_yields_one_generation() {
    // The default grace window (5 s): the request that loses the race is the "lost
    // answer" retry and gets the very same new token.
    let Pair {
        db, a, b, client, ..
    } = pair(&[]);
    let http = http_client();
    let store = db.backend().open().await;
    let (_browser, code, verifier) = signed_in(&a, &client, "alice").await;
    let t = do_redeem(&http, &b, &client, &code, &verifier).await;
    assert!(t.is_ok(), "{}", t.json);
    let mut rt = t.str("refresh_token");
    let (gid, mut generation) = refresh_parts(&rt);
    for n in [&a, &b] {
        http.get(n.url("/jwks.json")).send().await.expect("warm-up");
    }

    let (mut same, mut one) = (0, 0);
    for round in 0..10 {
        let (ra, rb) = tokio::join!(
            do_refresh(&http, &a, &client, &rt),
            do_refresh(&http, &b, &client, &rt)
        );
        let next = match (ra.is_ok(), rb.is_ok()) {
            (true, true) => {
                assert_eq!(
                    ra.str("refresh_token"),
                    rb.str("refresh_token"),
                    "round {round}: two live refresh tokens from one"
                );
                same += 1;
                ra.str("refresh_token")
            }
            (true, false) | (false, true) => {
                let (w, l) = if ra.is_ok() { (ra, rb) } else { (rb, ra) };
                l.assert_invalid_grant(&format!("round {round}: the losing refresh"));
                one += 1;
                w.str("refresh_token")
            }
            (false, false) => panic!(
                "round {round}: the current refresh token failed at both nodes: A {} / B {}",
                ra.brief(),
                rb.brief()
            ),
        };
        generation += 1;
        assert_eq!(
            refresh_parts(&next),
            (gid.clone(), generation),
            "round {round}"
        );
        // One new generation in the database, grant alive.
        let g = store
            .grant(&gid)
            .await
            .expect("read grant")
            .expect("grant row");
        assert_eq!(g.refresh_generation, generation, "round {round}: {g:?}");
        assert!(
            g.revoked_at.is_none(),
            "round {round}: grant revoked: {g:?}"
        );
        rt = next;
    }
    // The last token still works (the rounds above each used the previous one).
    let last = do_refresh(&http, &a, &client, &rt).await;
    assert!(
        last.is_ok(),
        "the newest refresh token after the races: {}",
        last.json
    );
    assert_eq!(
        refresh_parts(&last.str("refresh_token")),
        (gid.clone(), generation + 1)
    );
    eprintln!(
        "concurrent refresh with grace: {same} rounds both got the same token, {one} rounds one lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refresh_without_grace_revokes() {
    // No grace window: of two presentations of one refresh token one wins and the other
    // is reuse, which revokes the grant, so the winner's new token dies too. Never two
    // live tokens.
    let Pair {
        db, a, b, client, ..
    } = pair(&[("LATCHKEY_REFRESH_GRACE_SECONDS", "0")]);
    let http = http_client();
    let store = db.backend().open().await;
    let (browser, code0, verifier0) = signed_in(&a, &client, "alice").await;
    // A grant that is never raced keeps consent remembered.
    let t0 = do_redeem(&http, &a, &client, &code0, &verifier0).await;
    assert!(t0.is_ok(), "{}", t0.json);
    for n in [&a, &b] {
        http.get(n.url("/jwks.json")).send().await.expect("warm-up");
    }
    for round in 0..5 {
        let (code, verifier) = quick_code(&browser, &a, &client).await;
        let t = do_redeem(&http, &b, &client, &code, &verifier).await;
        assert!(t.is_ok(), "{}", t.json);
        let rt = t.str("refresh_token");
        let (gid, _) = refresh_parts(&rt);
        let (ra, rb) = tokio::join!(
            do_refresh(&http, &a, &client, &rt),
            do_refresh(&http, &b, &client, &rt)
        );
        let (w, l) = match (ra.is_ok(), rb.is_ok()) {
            (true, false) => (ra, rb),
            (false, true) => (rb, ra),
            other => panic!(
                "round {round}: without grace exactly one refresh must succeed, got {other:?}: A {} / B {}",
                ra.brief(),
                rb.brief()
            ),
        };
        l.assert_invalid_grant(&format!("round {round}: the losing refresh"));
        assert_eq!(refresh_parts(&w.str("refresh_token")), (gid.clone(), 2));
        do_refresh(&http, &a, &client, &w.str("refresh_token"))
            .await
            .assert_invalid_grant(&format!("round {round}: the winner's token after reuse"));
        let v = introspect(&http, &b, &client, &w.str("access_token")).await;
        assert_eq!(
            v["active"], false,
            "round {round}: winner's access token: {v}"
        );
        let g = store
            .grant(&gid)
            .await
            .expect("read grant")
            .expect("grant row");
        assert!(g.revoked_at.is_some(), "round {round}: {g:?}");
        assert_eq!(g.refresh_generation, 2, "round {round}: {g:?}");
    }
}

// ---------------------------------------------------------------------------
// kill -9 in the middle of a stream
// ---------------------------------------------------------------------------

/// What one client received for one grant.
#[derive(Debug, Clone)]
struct Chain {
    grant_id: String,
    /// The newest refresh token received.
    refresh: String,
    generation: i64,
    /// Every access token received.
    access: Vec<String>,
    /// A revocation of this grant was answered 200.
    revoked: bool,
    /// A revocation was sent but its answer lost: either outcome is right.
    revoke_unknown: bool,
    /// The successor of `refresh`, which the server issued but the client threw away
    /// (a lost answer): the grace retry must hand out this very token.
    lost_successor: Option<String>,
}

struct Stream {
    http: reqwest::Client,
    base: String,
    issuer: String,
    client: TestClient,
    completed: AtomicUsize,
}

/// One client's loop: new grants through the code flow, refreshes, and now and then a
/// revocation. Stops at the first request without an answer (the node died). Returns the
/// chains and whether it was cut off.
async fn stream_task(s: Arc<Stream>, task: usize, iterations: usize) -> (Vec<Chain>, bool) {
    let mut chains: Vec<Chain> = Vec::new();
    let token_url = format!("{}/token", s.base);
    for i in 0..iterations {
        let usable: Vec<usize> = (0..chains.len())
            .filter(|&k| !chains[k].revoked && !chains[k].revoke_unknown)
            .collect();
        if usable.is_empty() || i % 3 == 0 {
            // A new grant: /authorize answers at once (session, remembered consent).
            let req = authz_request(&s.base, &s.client.id, SCOPE);
            let resp = match s.http.get(&req.url).send().await {
                Ok(r) => r,
                Err(_) => return (chains, true),
            };
            assert_eq!(
                resp.status(),
                StatusCode::SEE_OTHER,
                "task {task}: /authorize"
            );
            let location = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| Url::parse(v).ok())
                .expect("Location");
            let code = assert_authz_code(&location, &s.issuer, &req.state);
            let form = [
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", req.verifier.as_str()),
            ];
            let Ok(a) = try_post(&s.http, &token_url, &s.client, &form).await else {
                return (chains, true);
            };
            assert!(a.is_ok(), "task {task}: redemption: {}", a.json);
            let rt = a.str("refresh_token");
            let (grant_id, generation) = refresh_parts(&rt);
            assert_eq!(generation, 1);
            chains.push(Chain {
                grant_id,
                refresh: rt,
                generation,
                access: vec![a.str("access_token")],
                revoked: false,
                revoke_unknown: false,
                lost_successor: None,
            });
        } else if i % 7 == 5 {
            let k = usable[i % usable.len()];
            let form = [("token", chains[k].refresh.as_str())];
            match try_post(&s.http, &format!("{}/revoke", s.base), &s.client, &form).await {
                Ok(a) => {
                    assert_eq!(
                        a.status,
                        StatusCode::OK,
                        "task {task}: revocation: {}",
                        a.json
                    );
                    chains[k].revoked = true;
                }
                Err(_) => {
                    chains[k].revoke_unknown = true;
                    return (chains, true);
                }
            }
        } else {
            let k = usable[i % usable.len()];
            let form = [
                ("grant_type", "refresh_token"),
                ("refresh_token", chains[k].refresh.as_str()),
            ];
            // No answer: the rotation may or may not have been committed.
            let Ok(a) = try_post(&s.http, &token_url, &s.client, &form).await else {
                return (chains, true);
            };
            assert!(
                a.is_ok(),
                "task {task}: refresh of {}: {}",
                chains[k].refresh,
                a.brief()
            );
            let rt = a.str("refresh_token");
            let c = &mut chains[k];
            assert_eq!(refresh_parts(&rt), (c.grant_id.clone(), c.generation + 1));
            c.refresh = rt;
            c.generation += 1;
            c.access.push(a.str("access_token"));
        }
        s.completed.fetch_add(1, Ordering::SeqCst);
    }
    (chains, false)
}

async fn kill9_midstream(backend: Backend) {
    const TASKS: usize = 4;
    const ITERATIONS: usize = 15;
    const KILL_AFTER: usize = 24;
    // Long enough to restart a debug build and check: a refresh committed just before
    // the kill, whose answer was lost, is retried within the window.
    let env = [
        ("LATCHKEY_REFRESH_GRACE_SECONDS", "30"),
        ("LATCHKEY_SWEEP_INTERVAL", "3600"),
    ];
    let mut first = Node::start("first", &backend, None, &env);
    create_user(&backend, "alice");
    let client = create_client(&backend);
    let http = http_client();

    let (browser, code0, verifier0) = signed_in(&first, &client, "alice").await;
    let t0 = do_redeem(&http, &first, &client, &code0, &verifier0).await;
    assert!(t0.is_ok(), "{}", t0.json);
    // A grant revoked on purpose before the stream.
    let (code, verifier) = quick_code(&browser, &first, &client).await;
    let t = do_redeem(&http, &first, &client, &code, &verifier).await;
    assert!(t.is_ok(), "{}", t.json);
    revoke(&http, &first, &client, &t.str("refresh_token")).await;
    let v = introspect(&http, &first, &client, &t.str("access_token")).await;
    assert_eq!(v["active"], false, "revoked before the stream: {v}");
    let (gid, generation) = refresh_parts(&t.str("refresh_token"));
    let mut chains = vec![
        Chain {
            grant_id: refresh_parts(&t0.str("refresh_token")).0,
            refresh: t0.str("refresh_token"),
            generation: 1,
            access: vec![t0.str("access_token")],
            revoked: false,
            revoke_unknown: false,
            lost_successor: None,
        },
        Chain {
            grant_id: gid,
            refresh: t.str("refresh_token"),
            generation,
            access: vec![t.str("access_token")],
            revoked: true,
            revoke_unknown: false,
            lost_successor: None,
        },
    ];

    let stream = Arc::new(Stream {
        http: browser.http.clone(),
        base: first.base.clone(),
        issuer: first.issuer.clone(),
        client: client.clone(),
        completed: AtomicUsize::new(0),
    });
    let handles: Vec<_> = (0..TASKS)
        .map(|task| tokio::spawn(stream_task(stream.clone(), task, ITERATIONS)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while stream.completed.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(
            Instant::now() < deadline && handles.iter().any(|h| !h.is_finished()),
            "the stream stopped after {} completions",
            stream.completed.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // A refresh committed just before the kill whose answer the client lost: it keeps
    // only the token it had.
    let lost = do_refresh(&http, &first, &client, &chains[0].refresh).await;
    assert!(lost.is_ok(), "{}", lost.json);
    chains[0].lost_successor = Some(lost.str("refresh_token"));
    first.kill9();
    let killed_at = Instant::now();
    let at_kill = stream.completed.load(Ordering::SeqCst);
    let mut cut = 0;
    for h in handles {
        let (mut c, was_cut) = h.await.expect("stream task panicked");
        chains.append(&mut c);
        cut += usize::from(was_cut);
    }
    let total = stream.completed.load(Ordering::SeqCst);
    assert!(
        cut >= 1 && total < TASKS * ITERATIONS,
        "the kill cut no stream off ({cut} cut, {total} completions): it was not mid-stream"
    );
    assert!(
        chains.iter().any(|c| c.generation >= 3),
        "no chain was refreshed twice before the kill"
    );

    let second = Node::start("restarted", &backend, Some(&first.issuer), &env);
    let (mut live, mut dead, mut unknown) = (0, 0, 0);
    for c in &chains {
        let label = format!("grant {} (generation {})", c.grant_id, c.generation);
        if c.revoke_unknown {
            unknown += 1;
            continue;
        }
        if c.revoked {
            dead += 1;
            for at in &c.access {
                let v = introspect(&http, &second, &client, at).await;
                assert_eq!(v["active"], false, "access token of revoked {label}: {v}");
            }
            do_refresh(&http, &second, &client, &c.refresh)
                .await
                .assert_invalid_grant(&format!("refresh of revoked {label}"));
            continue;
        }
        live += 1;
        for at in &c.access {
            let v = introspect(&http, &second, &client, at).await;
            assert_eq!(v["active"], true, "access token of live {label}: {v}");
            assert_eq!(v["grant_id"], c.grant_id.as_str(), "{v}");
        }
        // The newest token received: either still current, or its successor was
        // committed and the answer lost, and the grace retry hands out that successor.
        let a = do_refresh(&http, &second, &client, &c.refresh).await;
        assert!(
            a.is_ok(),
            "after restart, the newest refresh token received for {label}: {}",
            a.json
        );
        let next = a.str("refresh_token");
        assert_eq!(refresh_parts(&next), (c.grant_id.clone(), c.generation + 1));
        if let Some(lost) = &c.lost_successor {
            assert_eq!(
                &next, lost,
                "the grace retry after the restart must give the lost token"
            );
        }
        // ... and what it gave is the live token.
        let b = do_refresh(&http, &second, &client, &next).await;
        assert!(
            b.is_ok(),
            "after restart, the token after {label}: {}",
            b.json
        );
        assert_eq!(
            refresh_parts(&b.str("refresh_token")),
            (c.grant_id.clone(), c.generation + 2)
        );
    }
    assert!(
        killed_at.elapsed() < Duration::from_secs(25),
        "checks took too long for the grace window"
    );
    let graced = second.log().matches("refresh_grace_retry").count();
    eprintln!(
        "kill -9 ({:?}): {at_kill} completions at the kill, {total} in all, {cut} streams cut; {live} live grants usable, {dead} revoked stay revoked, {unknown} unknown; {graced} grace retries",
        match backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    );
    assert!(dead >= 1 && live >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_midstream_sqlite() {
    let dir = tempfile::tempdir().expect("temporary directory");
    kill9_midstream(Backend::Sqlite(dir.path().join("data"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_midstream_postgres() {
    let db = FreshDb::create();
    kill9_midstream(db.backend()).await;
}

// ---------------------------------------------------------------------------
// Rows per token
// ---------------------------------------------------------------------------

async fn storage_rows_do_not_grow_per_token(backend: Backend, db: Option<&FreshDb>) {
    const CC_TOKENS: usize = 10_000;
    const CONCURRENCY: usize = 16;
    const REFRESHES: i64 = 1_000;
    // No sweep during the test: it would remove an expired session.
    let node = Node::start(
        "node",
        &backend,
        None,
        &[("LATCHKEY_SWEEP_INTERVAL", "3600")],
    );
    create_user(&backend, "alice");
    let client = create_client(&backend);
    let http = http_client();
    let (_browser, code, verifier) = signed_in(&node, &client, "alice").await;
    let t = do_redeem(&http, &node, &client, &code, &verifier).await;
    assert!(t.is_ok(), "{}", t.json);
    let mut rt = t.str("refresh_token");
    let (gid, _) = refresh_parts(&rt);

    let store = backend.open().await;
    let before = store.row_counts().await.expect("row counts");
    let count = |counts: &[(&str, i64)], table: &str| {
        counts
            .iter()
            .find(|(t, _)| *t == table)
            .map(|(_, n)| *n)
            .unwrap_or_else(|| panic!("no table {table} in {counts:?}"))
    };
    assert_eq!(count(&before, "grants"), 1, "{before:?}");
    assert_eq!(count(&before, "clients"), 1, "{before:?}");
    assert_eq!(count(&before, "users"), 1, "{before:?}");
    // A code is sealed, not stored: the flow wrote its grant and the session only.
    assert_eq!(count(&before, "sessions"), 1, "{before:?}");
    let pg_before = db.map(|d| pg_table_counts(&d.url));
    if let Some(pg) = &pg_before {
        // row_counts covers every table the schema has.
        let mut ours: Vec<&str> = before.iter().map(|(t, _)| *t).collect();
        ours.push("schema_version");
        ours.sort_unstable();
        let theirs: Vec<&str> = pg.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(ours, theirs, "row_counts does not cover every table");
    }
    let grant_before = store.grant(&gid).await.expect("grant").expect("grant row");
    assert_eq!(grant_before.refresh_generation, 1);

    // 10,000 client-credentials tokens, 16 at a time.
    let started = Instant::now();
    let url = node.url("/token");
    let ok = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|w| {
            let (http, url, client, ok) = (http.clone(), url.clone(), client.clone(), ok.clone());
            tokio::spawn(async move {
                for i in (w..CC_TOKENS).step_by(CONCURRENCY) {
                    let a = post(
                        &http,
                        &url,
                        &client,
                        &[("grant_type", "client_credentials")],
                    )
                    .await;
                    assert!(a.is_ok(), "client_credentials #{i}: {}", a.json);
                    if i % 1000 == 0 {
                        let (_, claims) = decode_jwt(&a.str("access_token"));
                        assert_eq!(claims["sub"], format!("client:{}", client.id), "{claims}");
                    }
                    ok.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("client-credentials worker");
    }
    assert_eq!(ok.load(Ordering::SeqCst), CC_TOKENS);
    let cc_time = started.elapsed();

    // 1,000 refreshes of the one grant, each with the newest token.
    let started = Instant::now();
    for n in 0..REFRESHES {
        let a = do_refresh(&http, &node, &client, &rt).await;
        assert!(a.is_ok(), "refresh #{n}: {}", a.json);
        rt = a.str("refresh_token");
        assert_eq!(refresh_parts(&rt), (gid.clone(), n + 2));
    }
    let refresh_time = started.elapsed();

    let after = store.row_counts().await.expect("row counts");
    assert_eq!(after, before, "rows per table changed");
    if let (Some(d), Some(pg)) = (db, &pg_before) {
        assert_eq!(
            &pg_table_counts(&d.url),
            pg,
            "rows per table (psql) changed"
        );
    }
    let grant_after = store.grant(&gid).await.expect("grant").expect("grant row");
    assert_eq!(grant_after.refresh_generation, 1 + REFRESHES);
    assert_ne!(grant_after.refresh_hash, grant_before.refresh_hash);
    assert!(grant_after.last_used_at >= grant_before.last_used_at);
    assert!(grant_after.revoked_at.is_none());
    eprintln!(
        "storage ({}): {CC_TOKENS} client-credentials tokens in {cc_time:?}, {REFRESHES} refreshes in {refresh_time:?}; rows {after:?}",
        store.backend()
    );
}

/// `(table, rows)` for every table of the public schema, counted by psql.
fn pg_table_counts(url: &str) -> Vec<(String, i64)> {
    let tables = psql(
        url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name",
    )
    .unwrap_or_else(|e| panic!("list tables: {e}"));
    let tables: Vec<&str> = tables
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert!(!tables.is_empty(), "no tables in {url}");
    let sql = tables
        .iter()
        .map(|t| format!("SELECT '{t}', COUNT(*) FROM \"{t}\""))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let out = psql(url, &sql).unwrap_or_else(|e| panic!("count rows: {e}"));
    let mut counts: Vec<(String, i64)> = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (t, n) = l
                .split_once('|')
                .unwrap_or_else(|| panic!("psql line {l:?}"));
            (t.to_owned(), n.trim().parse().expect("a count"))
        })
        .collect();
    counts.sort();
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_rows_do_not_grow_per_token_sqlite() {
    let dir = tempfile::tempdir().expect("temporary directory");
    storage_rows_do_not_grow_per_token(Backend::Sqlite(dir.path().join("data")), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_rows_do_not_grow_per_token_postgres() {
    let db = FreshDb::create();
    storage_rows_do_not_grow_per_token(db.backend(), Some(&db)).await;
}

/// Two nodes starting together on an empty database create one key per algorithm, and
/// a scheduled rotation happens exactly once (one `next` key per algorithm, promoted
/// once), not once per node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_rotate_keys_exactly_once() {
    let db = FreshDb::create();
    let backend = db.backend();
    // Rotate every 6 s; a key is published 2 s (max-age 1 + check 1) before it signs.
    let env = [
        ("LATCHKEY_KEY_ROTATION_INTERVAL", "6"),
        ("LATCHKEY_JWKS_MAX_AGE", "1"),
        ("LATCHKEY_KEY_CHECK_INTERVAL", "1"),
    ];
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Node::start("A", &backend, None, &env));
        let b = s.spawn(|| Node::start("B", &backend, None, &env));
        (a.join().expect("node A"), b.join().expect("node B"))
    });
    let store = backend.open().await;
    let per_alg = |keys: &[latchkey_core::model::KeyRecord]| {
        let mut m: std::collections::BTreeMap<
            &'static str,
            Vec<(String, latchkey_core::model::KeyState)>,
        > = Default::default();
        for k in keys {
            m.entry(k.alg.as_str())
                .or_default()
                .push((k.kid.clone(), k.state));
        }
        m
    };
    let at_start = store.keys().await.expect("keys");
    assert_eq!(
        at_start.len(),
        3,
        "one key per algorithm after a racing start: {:?}",
        per_alg(&at_start)
    );
    // Past the first rotation (next at ~4 s, active at ~6 s), before the second (~10 s).
    tokio::time::sleep(Duration::from_millis(8500)).await;
    let keys = store.keys().await.expect("keys");
    for (alg, list) in per_alg(&keys) {
        use latchkey_core::model::KeyState;
        let active = list.iter().filter(|(_, s)| *s == KeyState::Active).count();
        let retiring = list
            .iter()
            .filter(|(_, s)| *s == KeyState::Retiring)
            .count();
        assert_eq!(
            (list.len(), active, retiring),
            (2, 1, 1),
            "{alg}: exactly one rotation by two nodes: {list:?}"
        );
    }
    // Both nodes publish the same keys and sign with the same active key.
    let http = http_client();
    let jwks = |n: &Node| {
        let http = http.clone();
        let url = format!("{}/jwks.json", n.base);
        async move {
            let v: Value = http
                .get(url)
                .send()
                .await
                .expect("jwks")
                .json()
                .await
                .expect("json");
            let mut kids: Vec<String> = v["keys"]
                .as_array()
                .expect("keys")
                .iter()
                .map(|k| k["kid"].as_str().unwrap_or_default().to_owned())
                .collect();
            kids.sort();
            kids
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (ka, kb) = (jwks(&a).await, jwks(&b).await);
        if ka == kb && ka.len() == 6 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nodes publish different keys: {ka:?} vs {kb:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop((a, b));
    drop(db);
}
