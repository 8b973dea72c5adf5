//! The load generator: a fixed number of keep-alive connections, each running one
//! workload's operation back to back (closed loop), a warm-up whose operations are not
//! recorded, then a measured window. An operation's latency is from its first byte
//! sent to its last byte received (the code flow's two requests count as one
//! operation). Every response is checked; a wrong one counts as an error, never as
//! throughput.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use crate::data::{Fixture, Rng};
use crate::http::{Conn, encode, json_string, query_param};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// POST /token, grant_type=client_credentials (JWT for a resource).
    ClientCredentials,
    /// GET /authorize of a signed-in user with a grant (303 with a code), then POST
    /// /token with the code: the whole code flow without the login page.
    CodeFlow,
    /// POST /token, grant_type=refresh_token; each connection follows its own chain.
    Refresh,
    /// POST /introspect of an access token.
    Introspection,
    /// GET /userinfo with a bearer access token.
    Userinfo,
    /// GET /jwks.json.
    Jwks,
    /// The client_credentials request sent to the bare server (the HTTP ceiling).
    Bare,
}

impl Workload {
    pub const ALL: [Workload; 6] = [
        Workload::ClientCredentials,
        Workload::CodeFlow,
        Workload::Refresh,
        Workload::Introspection,
        Workload::Userinfo,
        Workload::Jwks,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Workload::ClientCredentials => "client_credentials token",
            Workload::CodeFlow => "code flow (authorize + code exchange)",
            Workload::Refresh => "refresh with rotation",
            Workload::Introspection => "introspection",
            Workload::Userinfo => "userinfo",
            Workload::Jwks => "JWKS",
            Workload::Bare => "bare axum POST (ceiling)",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Workload::ClientCredentials => "client_credentials",
            Workload::CodeFlow => "code_flow",
            Workload::Refresh => "refresh",
            Workload::Introspection => "introspection",
            Workload::Userinfo => "userinfo",
            Workload::Jwks => "jwks",
            Workload::Bare => "bare",
        }
    }
}

/// How long, or how much.
#[derive(Debug, Clone, Copy)]
pub enum Amount {
    /// Warm up, then measure for a while.
    Timed { warmup: Duration, measure: Duration },
    /// Exactly this many operations, unmeasured (for counting what they write).
    Ops(u64),
}

#[derive(Clone)]
pub struct Spec {
    pub addr: SocketAddr,
    /// The `Host` header (the issuer's authority).
    pub host: String,
    pub fixture: Arc<Fixture>,
    pub workload: Workload,
    pub connections: usize,
    pub threads: usize,
    pub amount: Amount,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// Operations in the measured window (all of them when counting).
    pub ops: u64,
    /// Operations including warm-up and set-up, for per-operation accounting.
    pub total_ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub first_error: Option<String>,
}

/// Runs the workload. `ready` is called once every connection has finished its
/// set-up (tokens obtained) and before the first counted operation; it runs on its own
/// thread and may block.
pub fn run(spec: &Spec, ready: Option<Box<dyn FnOnce() + Send>>) -> Result<Outcome, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(spec.threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(drive(spec.clone(), ready))
}

struct Shared {
    spec: Spec,
    /// Basic credentials, precomputed per client of the fixture.
    cc_auth: Vec<String>,
    flow_auth: Vec<String>,
    errors: AtomicU64,
    total: AtomicU64,
    /// Tickets left in counting mode.
    tickets: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Shared {
    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock()
            && first.is_none()
        {
            *first = Some(e);
        }
    }
}

fn basic(id: &str, secret: &str) -> String {
    // RFC 6749 §2.3.1: form-encode, then base64.
    STANDARD.encode(format!("{}:{}", encode(id), encode(secret)))
}

async fn drive(spec: Spec, ready: Option<Box<dyn FnOnce() + Send>>) -> Result<Outcome, String> {
    if spec.fixture.clients.is_empty() || spec.fixture.flows.is_empty() {
        return Err("the fixture has no clients or no flows".into());
    }
    let shared = Arc::new(Shared {
        cc_auth: spec
            .fixture
            .clients
            .iter()
            .map(|c| basic(&c.id, &c.secret))
            .collect(),
        flow_auth: spec
            .fixture
            .flows
            .iter()
            .map(|f| basic(&f.client.id, &f.client.secret))
            .collect(),
        errors: AtomicU64::new(0),
        total: AtomicU64::new(0),
        tickets: AtomicU64::new(match spec.amount {
            Amount::Ops(n) => n,
            Amount::Timed { .. } => u64::MAX,
        }),
        first_error: std::sync::Mutex::new(None),
        spec,
    });
    let n = shared.spec.connections.max(1);
    // Set-up done (n workers + this task), then the start signal.
    let set_up = Arc::new(tokio::sync::Barrier::new(n + 1));
    let (start_tx, start_rx) = tokio::sync::watch::channel(None::<(Instant, Instant)>);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..n {
        let (shared, set_up, mut start_rx) = (shared.clone(), set_up.clone(), start_rx.clone());
        tasks.spawn(async move {
            let mut w = Worker::new(shared.clone(), c);
            let setup = w.set_up().await;
            set_up.wait().await;
            setup?;
            let window = loop {
                if let Some(w) = *start_rx.borrow_and_update() {
                    break w;
                }
                if start_rx.changed().await.is_err() {
                    return Err("aborted".to_owned());
                }
            };
            w.run(window).await;
            Ok::<Vec<u32>, String>(w.latencies)
        });
    }
    drop(start_rx);
    set_up.wait().await;
    if let Some(ready) = ready {
        std::thread::spawn(ready)
            .join()
            .map_err(|_| "the ready hook panicked".to_owned())?;
    }
    let now = Instant::now();
    let window = match shared.spec.amount {
        Amount::Timed { warmup, measure } => (now + warmup, now + warmup + measure),
        Amount::Ops(_) => (now, now + Duration::from_secs(3600)),
    };
    let started = Instant::now();
    // Receivers still waiting see the value; none can miss it.
    let _ = start_tx.send(Some(window));
    let mut latencies = Vec::new();
    let mut setup_error = None;
    while let Some(r) = tasks.join_next().await {
        match r.map_err(|e| e.to_string())? {
            Ok(mut l) => latencies.append(&mut l),
            Err(e) => setup_error = Some(e),
        }
    }
    if let Some(e) = setup_error {
        return Err(format!("set-up failed: {e}"));
    }
    let seconds = match shared.spec.amount {
        Amount::Timed { measure, .. } => measure.as_secs_f64(),
        Amount::Ops(_) => started.elapsed().as_secs_f64(),
    };
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        // Nearest rank.
        let rank = ((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        f64::from(latencies[rank - 1]) / 1000.0
    };
    let ops = latencies.len() as u64;
    Ok(Outcome {
        ops,
        total_ops: shared.total.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        seconds,
        per_second: ops as f64 / seconds.max(1e-9),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
        first_error: shared.first_error.lock().ok().and_then(|e| e.clone()),
    })
}

struct Worker {
    shared: Arc<Shared>,
    conn: Conn,
    rng: Rng,
    /// The flow this connection's tokens belong to.
    flow: usize,
    access_token: String,
    refresh_token: String,
    verifier: String,
    challenge: String,
    req: Vec<u8>,
    latencies: Vec<u32>,
}

impl Worker {
    fn new(shared: Arc<Shared>, c: usize) -> Worker {
        let verifier = URL_SAFE_NO_PAD
            .encode(digest::digest(&digest::SHA256, format!("verifier {c}").as_bytes()).as_ref());
        let challenge =
            URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()).as_ref());
        let flows = shared.spec.fixture.flows.len();
        Worker {
            conn: Conn::new(shared.spec.addr),
            rng: Rng(0x5eed_0000 + c as u64),
            flow: c % flows,
            access_token: String::new(),
            refresh_token: String::new(),
            verifier,
            challenge,
            req: Vec::with_capacity(2048),
            latencies: Vec::new(),
            shared,
        }
    }

    /// Obtains the tokens the workload needs, through the real code flow.
    async fn set_up(&mut self) -> Result<(), String> {
        match self.shared.spec.workload {
            Workload::Refresh => {
                let (_, rt) = self.code_flow(self.flow, true).await?;
                self.refresh_token = rt.ok_or("no refresh_token in the code exchange")?;
            }
            Workload::Introspection | Workload::Userinfo => {
                // No resource: the access token the peer can introspect and accept at
                // userinfo (it stores those; its JWTs are for resource servers only).
                let (at, _) = self.code_flow(self.flow, false).await?;
                self.access_token = at;
            }
            _ => {}
        }
        Ok(())
    }

    async fn run(&mut self, (measure_from, until): (Instant, Instant)) {
        let counting = matches!(self.shared.spec.amount, Amount::Ops(_));
        loop {
            if counting {
                let left =
                    self.shared
                        .tickets
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| t.checked_sub(1));
                if left.is_err() {
                    return;
                }
            }
            let t0 = Instant::now();
            if t0 >= until {
                return;
            }
            let result = self.op().await;
            let elapsed = t0.elapsed();
            self.shared.total.fetch_add(1, Ordering::Relaxed);
            match result {
                Ok(()) if t0 >= measure_from => self
                    .latencies
                    .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX)),
                Ok(()) => {}
                Err(e) => {
                    self.shared.error(e);
                    if self.shared.spec.workload == Workload::Refresh {
                        // The chain may be lost; start a new one.
                        if let Err(e) = self.set_up().await {
                            self.shared.error(e);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
        }
    }

    async fn op(&mut self) -> Result<(), String> {
        let spec = &self.shared.spec;
        match spec.workload {
            Workload::ClientCredentials | Workload::Bare => {
                let i = self.rng.below(self.shared.cc_auth.len());
                let body = format!(
                    "grant_type=client_credentials&scope=api&resource={}",
                    encode(&spec.fixture.resource)
                );
                let auth = self.shared.cc_auth[i].clone();
                let r = self.post("/token", Some(&auth), &body).await?;
                expect(r.0, &r.1, 200, "\"access_token\"")
            }
            Workload::CodeFlow => {
                let f = self.rng.below(spec.fixture.flows.len());
                self.code_flow(f, true).await.map(|_| ())
            }
            Workload::Refresh => {
                let auth = self.shared.flow_auth[self.flow].clone();
                let body = format!(
                    "grant_type=refresh_token&refresh_token={}&resource={}",
                    encode(&self.refresh_token),
                    encode(&spec.fixture.resource)
                );
                let (status, body) = self.post("/token", Some(&auth), &body).await?;
                expect(status, &body, 200, "\"access_token\"")?;
                self.refresh_token = json_string(body.as_bytes(), "refresh_token")
                    .ok_or("no refresh_token in the refresh answer")?
                    .to_owned();
                Ok(())
            }
            Workload::Introspection => {
                let auth = self.shared.flow_auth[self.flow].clone();
                let body = format!("token={}", encode(&self.access_token));
                let (status, body) = self.post("/introspect", Some(&auth), &body).await?;
                expect(status, &body, 200, "\"active\":true")
            }
            Workload::Userinfo => {
                let extra = format!("Authorization: Bearer {}\r\n", self.access_token);
                let (status, body) = self.get("/userinfo", &extra).await?;
                expect(status, &body, 200, "\"sub\"")
            }
            Workload::Jwks => {
                let (status, body) = self.get("/jwks.json", "").await?;
                expect(status, &body, 200, "\"keys\"")
            }
        }
    }

    /// GET /authorize with the flow's session, then the code exchange. Returns the
    /// access token and the refresh token.
    async fn code_flow(
        &mut self,
        f: usize,
        with_resource: bool,
    ) -> Result<(String, Option<String>), String> {
        let fixture = self.shared.spec.fixture.clone();
        let flow = &fixture.flows[f];
        let resource = if with_resource {
            format!("&resource={}", encode(&fixture.resource))
        } else {
            String::new()
        };
        let scope = if with_resource {
            fixture.scope.clone()
        } else {
            // The user-facing scopes only: without a resource the peer has no audience
            // for `api`.
            "openid profile email".to_owned()
        };
        let path = format!(
            "/authorize?response_type=code&client_id={}&redirect_uri={}&scope={}&state=bench&code_challenge={}&code_challenge_method=S256{resource}",
            encode(&flow.client.id),
            encode(&fixture.redirect_uri),
            encode(&scope),
            self.challenge,
        );
        let extra = format!("Cookie: {}\r\n", flow.cookie);
        self.req.clear();
        self.req.extend_from_slice(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\n{extra}\r\n",
                self.shared.spec.host
            )
            .as_bytes(),
        );
        let location = {
            let r = self
                .conn
                .send(&self.req)
                .await
                .map_err(|e| format!("authorize: {e}"))?;
            if r.status != 302 && r.status != 303 {
                return Err(format!(
                    "authorize answered {} (expected a redirect with a code): {}",
                    r.status,
                    snippet(r.body_text())
                ));
            }
            r.header("location").unwrap_or_default().to_owned()
        };
        let code = query_param(&location, "code")
            .ok_or_else(|| format!("authorize redirected without a code: {location}"))?;
        let body = format!(
            "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={}{resource}",
            encode(&code),
            encode(&fixture.redirect_uri),
            self.verifier
        );
        let auth = basic(&flow.client.id, &flow.client.secret);
        let (status, body) = self.post("/token", Some(&auth), &body).await?;
        expect(status, &body, 200, "\"access_token\"")?;
        let at = json_string(body.as_bytes(), "access_token")
            .ok_or("no access_token")?
            .to_owned();
        let rt = json_string(body.as_bytes(), "refresh_token").map(str::to_owned);
        Ok((at, rt))
    }

    async fn post(
        &mut self,
        path: &str,
        basic_auth: Option<&str>,
        body: &str,
    ) -> Result<(u16, String), String> {
        self.req.clear();
        let auth = basic_auth
            .map(|a| format!("Authorization: Basic {a}\r\n"))
            .unwrap_or_default();
        self.req.extend_from_slice(
            format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                self.shared.spec.host,
                body.len()
            )
            .as_bytes(),
        );
        let r = self
            .conn
            .send(&self.req)
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        Ok((r.status, r.body_text().to_owned()))
    }

    async fn get(&mut self, path: &str, extra: &str) -> Result<(u16, String), String> {
        self.req.clear();
        self.req.extend_from_slice(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\n{extra}\r\n",
                self.shared.spec.host
            )
            .as_bytes(),
        );
        let r = self
            .conn
            .send(&self.req)
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        Ok((r.status, r.body_text().to_owned()))
    }
}

fn snippet(s: &str) -> String {
    s.chars().take(300).collect()
}

fn expect(status: u16, body: &str, want: u16, contains: &str) -> Result<(), String> {
    if status != want {
        return Err(format!("status {status}: {}", snippet(body)));
    }
    // JSON from different servers differs in spacing only around ':'.
    let compact: String;
    let body = if body.contains("\": ") {
        compact = body.replace("\": ", "\":");
        &compact
    } else {
        body
    };
    if !body.contains(contains) {
        return Err(format!("answer lacks {contains}: {}", snippet(body)));
    }
    Ok(())
}
