//! The whole measurement behind `bench/run`: the bare-HTTP ceiling, Latchkey on SQLite
//! and on PostgreSQL (each with the small fixture and with the large store), and the
//! peer, every workload against a freshly started server process (so each row's peak
//! RSS is its own), then an untimed pass per workload that counts the rows and bytes it
//! writes. Prints one table and writes it, with the raw results, to the work directory.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::data::{self, Fixture, Size};
use crate::db::{Db, Snapshot};
use crate::http::Conn;
use crate::load::{self, Amount, Outcome, Workload};

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// A few seconds per workload and a small "large" store: proves that the harness
    /// works end to end; its numbers mean nothing.
    #[arg(long)]
    pub smoke: bool,
    /// The latchkey binary to measure.
    #[arg(long)]
    pub latchkey: PathBuf,
    #[arg(long, default_value = "node")]
    pub node: String,
    /// bench/peer/server.mjs (its node_modules installed).
    #[arg(long)]
    pub peer: PathBuf,
    /// A PostgreSQL database to connect to for creating the bench databases.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pub pg: String,
    /// Where data, logs and results go.
    #[arg(long, default_value = "/var/tmp/latchkey-bench")]
    pub work: PathBuf,
    /// Concurrent connections of the load generator.
    #[arg(short = 'c', long, default_value_t = 64)]
    pub connections: usize,
    /// Threads of the load generator.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Seconds of warm-up per workload (default 3; 0.5 with --smoke).
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Seconds measured per workload (default 10; 1.5 with --smoke).
    #[arg(long)]
    pub duration: Option<f64>,
    /// The large store (default 100,000 clients, 100,000 users, 1,000,000 grants;
    /// 2,000 / 2,000 / 20,000 with --smoke).
    #[arg(long)]
    pub scale_clients: Option<usize>,
    #[arg(long)]
    pub scale_users: Option<usize>,
    #[arg(long)]
    pub scale_grants: Option<usize>,
    /// Timed rounds (default 3; 2 with --smoke). Each round measures every workload on
    /// every server, the servers of one workload back to back, so that what slows the
    /// machine for a while slows them alike; the table gives each row's median round.
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Operations per workload in the counting pass (default 10,000; 300 with --smoke).
    #[arg(long)]
    pub account_ops: Option<u64>,
    /// Leave parts out: ceiling, sqlite, postgres, peer, scale, accounting, callgrind.
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
    /// How every client of both servers registers its ID tokens to be signed
    /// (`id_token_signed_response_alg`): EdDSA (default) or RS256.
    #[arg(long, value_enum, default_value = "EdDSA")]
    pub id_token_alg: data::IdTokenAlg,
    /// Only these workloads (default: all six).
    #[arg(long, value_delimiter = ',', value_enum)]
    pub workloads: Vec<Workload>,
    /// Output of the latchkey-verify criterion bench, if bench/run ran it.
    #[arg(long)]
    pub verify_output: Option<PathBuf>,
    /// The command that made this run, for the report.
    #[arg(long)]
    pub command_line: Option<String>,
    /// Keep the generated stores afterwards.
    #[arg(long)]
    pub keep: bool,
}

/// Current Unix time in seconds (the harness has no Clock to be handed).
#[allow(
    clippy::disallowed_methods,
    reason = "a measuring tool stamps its data with the wall clock"
)]
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0)
}

/// `http://127.0.0.1:8080` → the socket address and the `Host` header value.
pub fn parse_url(url: &str) -> Result<(SocketAddr, String), String> {
    let host = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("not an http URL: {url}"))?
        .trim_end_matches('/')
        .to_owned();
    let addr: SocketAddr = host
        .parse()
        .map_err(|_| format!("expected http://IP:PORT, got {url}"))?;
    Ok((addr, host))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Bare,
    Sqlite,
    Postgres,
    Peer,
}

#[derive(Debug, Clone, Serialize)]
struct Target {
    key: String,
    label: String,
    kind: Kind,
    /// What is stored (None for the peer, which holds the small fixture).
    size: Option<Size>,
    large: bool,
    /// The SQLite data directory or PostgreSQL URL.
    location: String,
}

#[derive(Debug, Clone, Serialize)]
struct Writes {
    ops: u64,
    /// Rows inserted, updated or deleted, by "table operation".
    rows: BTreeMap<String, i64>,
    /// Growth in bytes, by table (with its indexes).
    bytes: BTreeMap<String, i64>,
}

impl Writes {
    fn rows_per_10k(&self) -> f64 {
        self.rows.values().sum::<i64>() as f64 * 10_000.0 / self.ops.max(1) as f64
    }
    fn bytes_per_10k(&self) -> f64 {
        self.bytes.values().sum::<i64>() as f64 * 10_000.0 / self.ops.max(1) as f64
    }
}

#[derive(Debug, Clone, Serialize)]
struct Row {
    target: Target,
    workload: Workload,
    /// The median of `rounds` (see [`median`]).
    outcome: Outcome,
    /// Every timed round, in order.
    rounds: Vec<Outcome>,
    /// The highest of the rounds.
    peak_rss_kib: u64,
    writes: Option<Writes>,
    /// Instructions the server executed per operation, counted by callgrind.
    instructions_per_op: Option<f64>,
}

struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(mut cmd: Command, log: &Path) -> Result<Server, String> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        cmd.stdout(Stdio::piped())
            .stderr(log_file)
            .stdin(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("listening on ")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(url) => Ok(Server { child, url }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "{cmd:?} did not say `listening on`; see {}",
                    log.display()
                ))
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set size so far (VmHWM), in KiB.
    fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// SIGTERM (requests in flight finish), then SIGKILL after 10 s.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The database name at the end of a PostgreSQL URL.
fn db_name(url: &str) -> String {
    url.rsplit('/').next().unwrap_or_default().to_owned()
}

/// Replaces `to` with a copy of the files in `from` (a SQLite data directory: the
/// database, its WAL and what the generator wrote beside them).
fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    if to.exists() {
        std::fs::remove_dir_all(to).map_err(|e| io(to, e))?;
    }
    std::fs::create_dir_all(to).map_err(|e| io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| io(from, e))? {
        let entry = entry.map_err(|e| io(from, e))?;
        if entry.file_type().map_err(|e| io(from, e))?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))
                .map_err(|e| io(&entry.path(), e))?;
        }
    }
    Ok(())
}

/// Whether a program is on the PATH.
fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A short-lived runtime for one piece of database or HTTP work from blocking code.
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, String> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(f))
}

async fn connect(target: &Target) -> Result<Db, String> {
    match target.kind {
        Kind::Sqlite => {
            let conn = rusqlite::Connection::open(Path::new(&target.location).join("latchkey.db"))
                .map_err(|e| e.to_string())?;
            conn.busy_timeout(Duration::from_secs(30))
                .map_err(|e| e.to_string())?;
            Ok(Db::Sqlite(conn))
        }
        Kind::Postgres => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&target.location)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Db::Pg(pool))
        }
        _ => Err("no database".into()),
    }
}

fn db_do<T>(target: &Target, f: impl AsyncFnOnce(&Db) -> Result<T, String>) -> Result<T, String> {
    block_on(async {
        let db = connect(target).await?;
        let r = f(&db).await;
        db.close().await;
        r
    })?
}

struct Suite {
    o: Options,
    warmup: Duration,
    measure: Duration,
    rounds: usize,
    account_ops: u64,
    workloads: Vec<Workload>,
    master_key: String,
    rows: Vec<Row>,
    notes: Vec<String>,
    started: String,
}

fn skip(o: &Options, part: &str) -> bool {
    o.skip.iter().any(|s| s == part)
}

pub fn run(o: Options) -> Result<(), String> {
    std::fs::create_dir_all(&o.work).map_err(|e| format!("{}: {e}", o.work.display()))?;
    let smoke = o.smoke;
    let mut key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut key).map_err(|_| "random source failed")?;
    let workloads = if o.workloads.is_empty() {
        Workload::ALL.to_vec()
    } else {
        o.workloads.clone()
    };
    let mut suite = Suite {
        warmup: Duration::from_secs_f64(o.warmup.unwrap_or(if smoke { 0.5 } else { 3.0 })),
        measure: Duration::from_secs_f64(o.duration.unwrap_or(if smoke { 1.5 } else { 10.0 })),
        rounds: o.rounds.unwrap_or(if smoke { 2 } else { 3 }).max(1),
        account_ops: o.account_ops.unwrap_or(if smoke { 300 } else { 10_000 }),
        workloads,
        master_key: base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, key),
        rows: Vec::new(),
        notes: vec![loadavg()],
        started: machine_line(),
        o,
    };
    suite.everything()
}

impl Suite {
    fn log(&self, name: &str) -> PathBuf {
        self.o.work.join(format!("{name}.log"))
    }

    fn large(&self) -> Size {
        let smoke = self.o.smoke;
        Size {
            clients: self
                .o
                .scale_clients
                .unwrap_or(if smoke { 2_000 } else { 100_000 }),
            users: self
                .o
                .scale_users
                .unwrap_or(if smoke { 2_000 } else { 100_000 }),
            grants: self
                .o
                .scale_grants
                .unwrap_or(if smoke { 20_000 } else { 1_000_000 }),
            id_token_alg: self.o.id_token_alg,
        }
    }

    /// The everyday store, with this run's ID token algorithm.
    fn small(&self) -> Size {
        Size {
            id_token_alg: self.o.id_token_alg,
            ..Size::SMALL
        }
    }

    fn everything(&mut self) -> Result<(), String> {
        let t0 = Instant::now();
        eprintln!(
            "latchkey-bench: {} connections, {} load threads, {:.1} s warm-up + {:.1} s per workload",
            self.o.connections,
            self.o.threads,
            self.warmup.as_secs_f64(),
            self.measure.as_secs_f64()
        );
        let large = self.large();
        let mut targets = Vec::new();
        let sqlite_dir = |name: &str| self.o.work.join(name).display().to_string();
        let pg_url = |name: &str| {
            let base = self
                .o
                .pg
                .rsplit_once('/')
                .map_or(self.o.pg.as_str(), |b| b.0);
            format!("{base}/{name}")
        };
        let large_label = format!(
            "{} grants, {} clients, {} users",
            thousands(large.grants as f64),
            thousands(large.clients as f64),
            thousands(large.users as f64)
        );
        if !skip(&self.o, "sqlite") {
            targets.push(Target {
                key: "sqlite".into(),
                label: "Latchkey, SQLite".into(),
                kind: Kind::Sqlite,
                size: Some(self.small()),
                large: false,
                location: sqlite_dir("sqlite-small"),
            });
        }
        if !skip(&self.o, "peer") {
            targets.push(Target {
                key: "peer".into(),
                label: "oidc-provider 9, in-memory".into(),
                kind: Kind::Peer,
                size: None,
                large: false,
                location: String::new(),
            });
        }
        if !skip(&self.o, "sqlite") && !skip(&self.o, "scale") {
            targets.push(Target {
                key: "sqlite-large".into(),
                label: format!("Latchkey, SQLite, {large_label}"),
                kind: Kind::Sqlite,
                size: Some(large),
                large: true,
                location: sqlite_dir("sqlite-large"),
            });
        }
        if !skip(&self.o, "postgres") {
            targets.push(Target {
                key: "postgres".into(),
                label: "Latchkey, PostgreSQL".into(),
                kind: Kind::Postgres,
                size: Some(self.small()),
                large: false,
                location: pg_url("latchkey_bench_small"),
            });
            if !skip(&self.o, "scale") {
                targets.push(Target {
                    key: "postgres-large".into(),
                    label: format!("Latchkey, PostgreSQL, {large_label}"),
                    kind: Kind::Postgres,
                    size: Some(large),
                    large: true,
                    location: pg_url("latchkey_bench_large"),
                });
            }
        }
        for t in &targets {
            self.prepare(t)?;
        }
        let ceiling = !skip(&self.o, "ceiling");
        let workloads = self.workloads.clone();
        for round in 1..=self.rounds {
            eprintln!("== round {round} of {}", self.rounds);
            if ceiling {
                self.ceiling()?;
            }
            for &w in &workloads {
                for t in &targets {
                    self.measured(t, w)?;
                }
            }
        }
        for t in &targets {
            self.extras(t)?;
        }
        self.report(t0.elapsed())
    }

    /// Adds one round's outcome to the row of `target` and `w`, whose outcome is kept
    /// the median of its rounds.
    fn record(&mut self, target: &Target, w: Workload, outcome: Outcome, rss: u64) {
        match self
            .rows
            .iter_mut()
            .find(|r| r.target.key == target.key && r.workload == w)
        {
            Some(r) => {
                r.rounds.push(outcome);
                r.outcome = median(&r.rounds);
                r.peak_rss_kib = r.peak_rss_kib.max(rss);
            }
            None => self.rows.push(Row {
                target: target.clone(),
                workload: w,
                outcome: outcome.clone(),
                rounds: vec![outcome],
                peak_rss_kib: rss,
                writes: None,
                instructions_per_op: None,
            }),
        }
    }

    fn ceiling(&mut self) -> Result<(), String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(exe);
        cmd.args(["bare", "--listen", "127.0.0.1:0"]);
        let server = Server::start(cmd, &self.log("bare"))?;
        let target = Target {
            key: "bare".into(),
            label: "bare axum, fixed body".into(),
            kind: Kind::Bare,
            size: None,
            large: false,
            location: String::new(),
        };
        let fixture = Arc::new(data::fixture(Size::SMALL, 1000));
        eprint!("   {:<28}", "bare axum (ceiling)");
        let outcome = self.timed(&server, &fixture, Workload::Bare);
        let rss = server.peak_rss_kib();
        server.stop();
        self.record(&target, Workload::Bare, outcome?, rss);
        Ok(())
    }

    /// One timed run of `w` against a freshly started server of `t`.
    fn measured(&mut self, t: &Target, w: Workload) -> Result<(), String> {
        let (server, fixture) = self.start(t, false)?;
        eprint!("   {:<28}", t.key);
        let outcome = self.timed(&server, &fixture, w);
        let rss = server.peak_rss_kib();
        server.stop();
        self.record(t, w, outcome?, rss);
        Ok(())
    }

    fn spec(
        &self,
        server: &Server,
        fixture: &Arc<Fixture>,
        w: Workload,
        amount: Amount,
    ) -> Result<load::Spec, String> {
        let (addr, host) = parse_url(&server.url)?;
        Ok(load::Spec {
            addr,
            host,
            fixture: fixture.clone(),
            workload: w,
            connections: self.o.connections,
            threads: self.o.threads,
            amount,
        })
    }

    fn timed(
        &self,
        server: &Server,
        fixture: &Arc<Fixture>,
        w: Workload,
    ) -> Result<Outcome, String> {
        let spec = self.spec(
            server,
            fixture,
            w,
            Amount::Timed {
                warmup: self.warmup,
                measure: self.measure,
            },
        )?;
        let outcome = load::run(&spec, None)?;
        eprintln!(
            "   {:<20} {:>9.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms{}",
            w.short(),
            outcome.per_second,
            outcome.p50_ms,
            outcome.p99_ms,
            if outcome.errors > 0 {
                format!(
                    "  {} errors, first: {}",
                    outcome.errors,
                    outcome.first_error.as_deref().unwrap_or("")
                )
            } else {
                String::new()
            }
        );
        Ok(outcome)
    }

    /// Fills the target's store; a small one is also kept as it is now (see
    /// [`Suite::restore`]).
    fn prepare(&self, t: &Target) -> Result<(), String> {
        let Some(size) = t.size else { return Ok(()) };
        let prepared = Instant::now();
        eprintln!(
            "== {}: generating {} clients, {} users with sessions, {} grants",
            t.label, size.clients, size.users, size.grants
        );
        let now = unix_now();
        match t.kind {
            Kind::Sqlite => {
                let dir = PathBuf::from(&t.location);
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                }
                block_on(data::fill_sqlite(&dir, size, now))??;
            }
            Kind::Postgres => {
                let name = db_name(&t.location);
                self.pg_admin(&[
                    format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    format!("CREATE DATABASE {name}"),
                ])?;
                block_on(data::fill_postgres(&t.location, size, now))??;
            }
            _ => {}
        }
        if !t.large {
            self.keep_pristine(t)?;
        }
        // The store was just written: let the kernel write it back to disk before the
        // timed runs, or they measure the writeback (measured: even client_credentials,
        // which reads nothing, lost a quarter of its rate).
        let synced = Command::new("sync").status();
        if !synced.is_ok_and(|s| s.success()) {
            eprintln!("   (sync failed: the first runs may be slowed by writeback)");
        }
        eprintln!(
            "   store ready in {:.1} s",
            prepared.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Where a small store's untouched copy is kept: a directory beside the SQLite one,
    /// or a PostgreSQL database used as a template.
    fn pristine(t: &Target) -> String {
        format!("{}_pristine", t.location)
    }

    fn keep_pristine(&self, t: &Target) -> Result<(), String> {
        self.copy_store(t.kind, &t.location, &Self::pristine(t))
    }

    /// Puts a small store back as it was generated, before each server start. Every
    /// code flow adds a grant (over 100,000 in one timed run), so without this the
    /// small store would grow towards the large one round after round, and the
    /// comparison between them would flatter the large one. The large store is not
    /// reset: growing it only makes it larger.
    fn restore(&self, t: &Target) -> Result<(), String> {
        if t.large || t.size.is_none() {
            return Ok(());
        }
        self.copy_store(t.kind, &Self::pristine(t), &t.location)
    }

    /// Makes the store at `to` a copy of the one at `from`: SQLite data directories, or
    /// PostgreSQL databases named by URL (`from` as the template).
    fn copy_store(&self, kind: Kind, from: &str, to: &str) -> Result<(), String> {
        match kind {
            Kind::Sqlite => copy_dir(Path::new(from), Path::new(to)),
            Kind::Postgres => {
                let (from, to) = (db_name(from), db_name(to));
                self.pg_admin(&[
                    format!("DROP DATABASE IF EXISTS {to} WITH (FORCE)"),
                    format!("CREATE DATABASE {to} TEMPLATE {from}"),
                ])
            }
            _ => Ok(()),
        }
    }

    /// Runs statements on the PostgreSQL server's administrative connection.
    fn pg_admin(&self, statements: &[String]) -> Result<(), String> {
        let admin = self.o.pg.clone();
        block_on(async {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&admin)
                .await
                .map_err(|e| format!("PostgreSQL at {admin}: {e}"))?;
            for sql in statements {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                    .execute(&mut c)
                    .await
                    .map_err(|e| format!("{sql}: {e}"))?;
            }
            c.close().await.map_err(|e| e.to_string())
        })?
    }

    fn start(&self, t: &Target, counting: bool) -> Result<(Server, Arc<Fixture>), String> {
        match t.kind {
            Kind::Sqlite | Kind::Postgres => {
                // The counting pass keeps the store it installed its counters in.
                if !counting {
                    self.restore(t)?;
                }
                let mut cmd = Command::new(&self.o.latchkey);
                cmd.args(["serve", "--listen", "127.0.0.1:0"]);
                if t.kind == Kind::Sqlite {
                    cmd.args(["--data-dir", &t.location]);
                } else {
                    cmd.args(["--database-url", &t.location]);
                    cmd.env("LATCHKEY_MASTER_KEY", &self.master_key);
                }
                let server = Server::start(cmd, &self.log(&t.key))?;
                let fixture = self.fixture_of(t)?;
                Ok((server, fixture))
            }
            Kind::Peer => {
                let path = self.o.work.join("peer-fixture.json");
                let mut cmd = Command::new(&self.o.node);
                cmd.arg(&self.o.peer)
                    .args(["--listen", "127.0.0.1:0", "--fixture"])
                    .arg(&path)
                    .args([
                        "--clients",
                        &Size::SMALL.clients.to_string(),
                        "--users",
                        &Size::SMALL.users.to_string(),
                        "--id-token-alg",
                        self.o.id_token_alg.as_str(),
                    ])
                    .env("NODE_ENV", "production");
                if counting {
                    cmd.env("BENCH_PEER_COUNT", "1");
                }
                let server = Server::start(cmd, &self.log("peer"))?;
                let fixture: Fixture = serde_json::from_slice(
                    &std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?,
                )
                .map_err(|e| e.to_string())?;
                Ok((server, Arc::new(fixture)))
            }
            Kind::Bare => Err("the bare server is started by ceiling()".into()),
        }
    }

    fn callgrind_ops(&self) -> u64 {
        if self.o.smoke { 30 } else { 1_000 }
    }

    /// Instructions the server executes per operation, whatever else the machine is
    /// doing: the server runs under callgrind, `3n` operations warm it up, then its
    /// counters are zeroed once the connections are set up, and dumped after exactly
    /// `n` operations (8 connections).
    fn instructions(&self, t: &Target, w: Workload, n: u64) -> Result<f64, String> {
        let dir = self.o.work.join("callgrind");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        self.restore(t)?;
        let mut cmd = Command::new("valgrind");
        cmd.arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}/out.%p", dir.display()))
            .arg(&self.o.latchkey)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                &t.location,
            ]);
        let server = Server::start(cmd, &self.log(&format!("{}-callgrind", t.key)))?;
        let fixture = self.fixture_of(t)?;
        let pid = server.pid().to_string();
        let zero = {
            let pid = pid.clone();
            Box::new(move || {
                let _ = Command::new("callgrind_control")
                    .args(["-z", &pid])
                    .stdout(Stdio::null())
                    .status();
            }) as Box<dyn FnOnce() + Send>
        };
        // Warm up first, as the timed runs do: the fixture's clients and users reach the
        // server's caches, so the count is of the steady state and not of first reads.
        let mut warm = self.spec(&server, &fixture, w, Amount::Ops(3 * n))?;
        warm.connections = 8;
        let warmed = load::run(&warm, None);
        let mut spec = self.spec(&server, &fixture, w, Amount::Ops(n))?;
        spec.connections = 8;
        let outcome = warmed.and_then(|_| load::run(&spec, Some(zero)));
        let dumped = Command::new("callgrind_control")
            .args(["-d", &pid])
            .stdout(Stdio::null())
            .status();
        server.stop();
        let outcome = outcome?;
        dumped.map_err(|e| format!("callgrind_control: {e}"))?;
        if outcome.errors > 0 {
            return Err(format!(
                "{} under callgrind: {} errors, first: {}",
                w.short(),
                outcome.errors,
                outcome.first_error.unwrap_or_default()
            ));
        }
        // The dump callgrind_control asked for is out.PID.1.
        let file = dir.join(format!("out.{pid}.1"));
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let total: f64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("totals:")
                    .or_else(|| l.strip_prefix("summary:"))
            })
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no totals in {}", file.display()))?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(total / outcome.total_ops.max(1) as f64)
    }

    fn fixture_of(&self, t: &Target) -> Result<Arc<Fixture>, String> {
        let size = t.size.ok_or("no size")?;
        Ok(Arc::new(data::fixture(size, 1000)))
    }

    /// What is measured once per target after the rounds: instructions per operation
    /// and writes per operation; then the large stores are dropped.
    fn extras(&mut self, t: &Target) -> Result<(), String> {
        let workloads = self.workloads.clone();
        let counted = t.kind == Kind::Sqlite && !skip(&self.o, "callgrind") && have("valgrind");
        let accounted = !t.large && !skip(&self.o, "accounting");
        if counted || accounted {
            eprintln!("== {}", t.label);
        }
        if counted {
            let n = self.callgrind_ops();
            eprintln!("   instructions per operation (callgrind, {n} operations each)");
            for &w in &workloads {
                let ir = self.instructions(t, w, n)?;
                eprintln!("   {:<20} {:>12.0} instructions / op", w.short(), ir);
                if let Some(r) = self
                    .rows
                    .iter_mut()
                    .rev()
                    .find(|r| r.target.key == t.key && r.workload == w)
                {
                    r.instructions_per_op = Some(ir);
                }
            }
        }
        if accounted {
            eprintln!(
                "   counting rows and bytes written: {} operations per workload",
                self.account_ops
            );
            if t.kind != Kind::Peer {
                self.restore(t)?;
                db_do(t, async |db| db.install_counters().await)?;
            }
            for &w in &workloads {
                let writes = self.account(t, w)?;
                let rows = writes.rows_per_10k();
                eprintln!(
                    "   {:<20} {:>9.0} rows / 10k ops  {:>12.0} bytes / 10k ops",
                    w.short(),
                    rows,
                    writes.bytes_per_10k()
                );
                if let Some(r) = self
                    .rows
                    .iter_mut()
                    .rev()
                    .find(|r| r.target.key == t.key && r.workload == w)
                {
                    r.writes = Some(writes);
                }
            }
            if t.kind != Kind::Peer {
                db_do(t, async |db| db.remove_counters().await)?;
            }
        }
        if !self.o.keep {
            self.drop_store(t);
        }
        Ok(())
    }

    /// Removes a store and its untouched copy (`--keep` keeps them).
    fn drop_store(&self, t: &Target) {
        match t.kind {
            Kind::Sqlite => {
                let _ = std::fs::remove_dir_all(&t.location);
                let _ = std::fs::remove_dir_all(Self::pristine(t));
            }
            Kind::Postgres => {
                let name = db_name(&t.location);
                let _ = self.pg_admin(&[
                    format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    format!("DROP DATABASE IF EXISTS {name}_pristine WITH (FORCE)"),
                ]);
            }
            _ => {}
        }
    }

    /// One untimed pass of exactly `account_ops` operations, with the store's writes
    /// counted from after the connections' set-up to the end.
    fn account(&self, t: &Target, w: Workload) -> Result<Writes, String> {
        let (server, fixture) = self.start(t, true)?;
        let before: Arc<Mutex<Option<Result<Snapshot, String>>>> = Arc::new(Mutex::new(None));
        let hook: Box<dyn FnOnce() + Send> = {
            let (before, t, url) = (before.clone(), t.clone(), server.url.clone());
            Box::new(move || {
                let s = snapshot(&t, &url);
                if let Ok(mut b) = before.lock() {
                    *b = Some(s);
                }
            })
        };
        let spec = self.spec(&server, &fixture, w, Amount::Ops(self.account_ops))?;
        let outcome = load::run(&spec, Some(hook));
        let after = snapshot(t, &server.url);
        server.stop();
        let outcome = outcome?;
        if outcome.errors > 0 {
            return Err(format!(
                "{} on {}: {} errors while counting writes, first: {}",
                w.short(),
                t.label,
                outcome.errors,
                outcome.first_error.unwrap_or_default()
            ));
        }
        let before = before
            .lock()
            .map_err(|_| "poisoned")?
            .take()
            .ok_or("the ready hook did not run")??;
        let d = before.delta(&after?);
        Ok(Writes {
            ops: outcome.total_ops,
            rows: d.writes,
            bytes: d.bytes,
        })
    }
}

/// The store's write counters and sizes now.
fn snapshot(t: &Target, url: &str) -> Result<Snapshot, String> {
    match t.kind {
        Kind::Peer => peer_stats(url),
        _ => db_do(t, async |db| db.snapshot().await),
    }
}

fn peer_stats(url: &str) -> Result<Snapshot, String> {
    let (addr, host) = parse_url(url)?;
    let body = block_on(async {
        let mut c = Conn::new(addr);
        let req = format!("GET /__bench/stats HTTP/1.1\r\nHost: {host}\r\n\r\n");
        c.send(req.as_bytes())
            .await
            .map(|r| r.body.to_vec())
            .map_err(|e| e.to_string())
    })??;
    #[derive(serde::Deserialize)]
    struct Stats {
        writes: BTreeMap<String, i64>,
        bytes: BTreeMap<String, i64>,
    }
    let s: Stats = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    Ok(Snapshot {
        writes: s.writes,
        bytes: s.bytes,
    })
}

fn machine_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or_else(
            || "?".into(),
            |kib| format!("{:.0} GiB", kib / 1024.0 / 1024.0),
        );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    format!("{cores} cores ({cpu}), {mem} RAM, Linux {kernel}")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn bytes_text(b: f64) -> String {
    let a = b.abs();
    if a >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    } else if a >= 1024.0 {
        format!("{:.0} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

impl Suite {
    fn find(&self, key: &str, w: Workload) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.target.key == key && r.workload == w)
    }

    fn report(&mut self, elapsed: Duration) -> Result<(), String> {
        let mut md = String::new();
        let o = &self.o;
        md.push_str(&format!(
            "{} connections, closed loop, load generator on the same machine ({} threads); {:.1} s warm-up + {:.1} s measured per workload, each against a freshly started server; {} rounds, the servers of one workload back to back in each, and every number below the median of its rounds (peak RSS: the highest); ID tokens {} on both servers{}.\n\n",
            o.connections,
            o.threads,
            self.warmup.as_secs_f64(),
            self.measure.as_secs_f64(),
            self.rounds,
            o.id_token_alg.as_str(),
            if o.smoke { "; SMOKE RUN: these numbers mean nothing" } else { "" }
        ));
        md.push_str("| workload | server | ops/s | p50 ms | p99 ms | Latchkey / peer | peak RSS | rows written / 10k ops | DB bytes / 10k ops | instructions / op |\n");
        md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        let mut order: Vec<Workload> = self.workloads.clone();
        if self.find("bare", Workload::Bare).is_some() {
            order.push(Workload::Bare);
        }
        let mut errors = Vec::new();
        for &w in &order {
            let peer = self.find("peer", w).map(|r| r.outcome.per_second);
            for r in self.rows.iter().filter(|r| r.workload == w) {
                let ratio = match (r.target.kind, peer) {
                    (Kind::Sqlite | Kind::Postgres, Some(p)) if p > 0.0 => {
                        format!("{:.1}x", r.outcome.per_second / p)
                    }
                    _ => String::new(),
                };
                let (rows, bytes) = match &r.writes {
                    Some(wr) => (thousands(wr.rows_per_10k()), bytes_text(wr.bytes_per_10k())),
                    None if r.target.large => ("(as above)".into(), "(as above)".into()),
                    None => (String::new(), String::new()),
                };
                let mut ops = thousands(r.outcome.per_second);
                if r.outcome.errors > 0 {
                    ops.push_str(&format!(" ({} errors)", r.outcome.errors));
                    errors.push(format!(
                        "{} / {}: {}",
                        r.target.label,
                        w.short(),
                        r.outcome.first_error.as_deref().unwrap_or("")
                    ));
                }
                let mut label = r.target.label.clone();
                if r.target.kind == Kind::Peer
                    && matches!(w, Workload::Introspection | Workload::Userinfo)
                {
                    label.push_str(" (opaque token: it cannot do this with a JWT)");
                }
                let instructions = r
                    .instructions_per_op
                    .map(|v| format!("{:.0}k", v / 1000.0))
                    .unwrap_or_default();
                md.push_str(&format!(
                    "| {} | {} | {} | {:.2} | {:.2} | {} | {:.1} MiB | {} | {} | {} |\n",
                    w.label(),
                    label,
                    ops,
                    r.outcome.p50_ms,
                    r.outcome.p99_ms,
                    ratio,
                    r.peak_rss_kib as f64 / 1024.0,
                    rows,
                    bytes,
                    instructions
                ));
            }
        }
        md.push('\n');
        let ceiling = self
            .find("bare", Workload::Bare)
            .map(|r| r.outcome.per_second);
        let cc = self
            .find("sqlite", Workload::ClientCredentials)
            .map(|r| r.outcome.per_second);
        if let (Some(c), Some(cc)) = (ceiling, cc) {
            md.push_str(&format!(
                "- **Ceiling**: the bare axum server answered {}/s; Latchkey's client_credentials on SQLite is **{:.0}%** of it.\n",
                thousands(c),
                cc / c * 100.0
            ));
        }
        if self.rounds > 1 {
            md.push_str(&self.round_lines());
        }
        for (small, large, name) in [
            ("sqlite", "sqlite-large", "SQLite"),
            ("postgres", "postgres-large", "PostgreSQL"),
        ] {
            let ratios: Vec<String> = self
                .workloads
                .iter()
                .filter_map(|&w| {
                    let a = self.find(small, w)?.outcome.per_second;
                    let b = self.find(large, w)?.outcome.per_second;
                    (a > 0.0).then(|| format!("{} {:.2}", w.short(), b / a))
                })
                .collect();
            if !ratios.is_empty() {
                md.push_str(&format!(
                    "- **Large store / small store throughput, {name}**: {}.\n",
                    ratios.join(", ")
                ));
            }
        }
        let ir: Vec<String> = self
            .workloads
            .iter()
            .filter_map(|&w| {
                let a = self.find("sqlite", w)?.instructions_per_op?;
                let b = self.find("sqlite-large", w)?.instructions_per_op?;
                (a > 0.0).then(|| format!("{} {:.2}", w.short(), b / a))
            })
            .collect();
        if !ir.is_empty() {
            md.push_str(&format!(
                "- **Large store / small store, server instructions per operation, SQLite** (callgrind: unaffected by other load): {}.\n",
                ir.join(", ")
            ));
        }
        md.push_str(&format!("- **latchkey-verify**: {}.\n", self.verify_line()));
        // Rows per operation, by table.
        let mut detail = Vec::new();
        for r in &self.rows {
            if let Some(wr) = &r.writes {
                let per_op: Vec<String> = wr
                    .rows
                    .iter()
                    .map(|(k, v)| format!("{k} {:.2}", *v as f64 / wr.ops.max(1) as f64))
                    .collect();
                detail.push(format!(
                    "{} / {}: {}",
                    r.target.label,
                    r.workload.short(),
                    if per_op.is_empty() {
                        "nothing".into()
                    } else {
                        per_op.join(", ")
                    }
                ));
            }
        }
        if !detail.is_empty() {
            md.push_str(&format!(
                "- **Writes per operation** (rows by table and statement; the peer: store calls by model): {}.\n",
                detail.join("; ")
            ));
        }
        for e in &errors {
            md.push_str(&format!("- **Errors**: {e}\n"));
        }
        md.push_str(&format!(
            "- **Machine**: {}; load average {} at the start, {} at the end; {:.0} s in all.\n",
            self.started,
            self.notes.first().cloned().unwrap_or_else(loadavg),
            loadavg(),
            elapsed.as_secs_f64()
        ));
        if let Some(c) = &self.o.command_line {
            md.push_str(&format!("- **Command**: `{}`\n", c.trim()));
        }
        md.push('\n');
        md.push_str(&self.targets());
        println!("{md}");
        let out = self.o.work.join("table.md");
        std::fs::write(&out, &md).map_err(|e| format!("{}: {e}", out.display()))?;
        let json = self.o.work.join("results.json");
        std::fs::write(
            &json,
            serde_json::to_string_pretty(&self.rows).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("{}: {e}", json.display()))?;
        eprintln!("wrote {} and {}", out.display(), json.display());
        if self.o.smoke && !errors.is_empty() {
            // The smoke run is CI's check that every workload still works.
            return Err(format!("wrong answers: {}", errors.join("; ")));
        }
        Ok(())
    }

    /// The ratios the targets are judged on, round by round: how much they move.
    fn round_lines(&self) -> String {
        let per_round = |a: &str, b: &str, w: Workload| -> Option<String> {
            let a = &self.find(a, w)?.rounds;
            let b = &self.find(b, w)?.rounds;
            let each: Vec<String> = a
                .iter()
                .zip(b)
                .map(|(a, b)| {
                    if b.per_second > 0.0 {
                        format!("{:.2}", a.per_second / b.per_second)
                    } else {
                        "?".into()
                    }
                })
                .collect();
            Some(format!("{} {}", w.short(), each.join(" / ")))
        };
        let mut out = String::new();
        for (a, b, what) in [
            ("sqlite", "peer", "Latchkey on SQLite / peer"),
            (
                "sqlite-large",
                "sqlite",
                "large store / small store, SQLite",
            ),
            (
                "postgres-large",
                "postgres",
                "large store / small store, PostgreSQL",
            ),
        ] {
            let lines: Vec<String> = self
                .workloads
                .iter()
                .filter_map(|&w| per_round(a, b, w))
                .collect();
            if !lines.is_empty() {
                out.push_str(&format!(
                    "- **{what}, round by round**: {}.\n",
                    lines.join("; ")
                ));
            }
        }
        if let (Some(cc), Some(bare)) = (
            self.find("sqlite", Workload::ClientCredentials),
            self.find("bare", Workload::Bare),
        ) {
            let each: Vec<String> = cc
                .rounds
                .iter()
                .zip(&bare.rounds)
                .map(|(a, b)| format!("{:.0}%", a.per_second / b.per_second.max(1.0) * 100.0))
                .collect();
            out.push_str(&format!(
                "- **client_credentials on SQLite / ceiling, round by round**: {}.\n",
                each.join(" / ")
            ));
        }
        out
    }

    fn verify_line(&self) -> String {
        let Some(path) = &self.o.verify_output else {
            return "not measured".into();
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            return "not available".into();
        };
        let found = parse_criterion(&text);
        let pick = |name: &str| {
            found
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| format!("{}/s", thousands(*v)))
        };
        match (
            pick("EdDSA/Verifier::verify, no cache"),
            pick("EdDSA/Verifier::verify, cache hit"),
            pick("EdDSA/latchkey_core::jose::verify"),
        ) {
            (Some(a), b, c) => format!(
                "EdDSA access tokens verified per second on one core: {a} (`Verifier::verify`, no cache){}{}",
                b.map(|b| format!(", {b} (cache hit)")).unwrap_or_default(),
                c.map(|c| format!(", {c} (`latchkey_core::jose::verify`, what the server's introspection and userinfo use)")).unwrap_or_default()
            ),
            _ if text.contains("Testing ") || text.contains("Success") => {
                "its criterion bench ran in test mode (smoke); no rate measured".into()
            }
            _ => "not available yet (its criterion bench did not build or run; see verify.txt)".into(),
        }
    }

    fn targets(&self) -> String {
        let mut out = String::from("Targets (on SQLite, 64 connections):\n\n");
        let mut line = |ok: Option<bool>, what: String| {
            let mark = match ok {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "not measured",
            };
            out.push_str(&format!("- {mark}: {what}\n"));
        };
        let tp = |key: &str, w: Workload| self.find(key, w).map(|r| r.outcome.per_second);
        let ratio = |w: Workload| match (tp("sqlite", w), tp("peer", w)) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let cc = ratio(Workload::ClientCredentials);
        line(
            cc.map(|r| r >= 20.0),
            format!(
                "client_credentials >= 20x the peer ({})",
                cc.map_or("?".into(), |r| format!("{r:.1}x"))
            ),
        );
        let frac = match (
            tp("sqlite", Workload::ClientCredentials),
            tp("bare", Workload::Bare),
        ) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        line(
            frac.map(|f| f >= 0.6),
            format!(
                "client_credentials >= 60% of the bare-axum ceiling ({})",
                frac.map_or("?".into(), |f| format!("{:.0}%", f * 100.0))
            ),
        );
        for w in [
            Workload::CodeFlow,
            Workload::Refresh,
            Workload::Introspection,
            Workload::Userinfo,
        ] {
            let r = ratio(w);
            line(
                r.map(|r| r >= 10.0),
                format!(
                    "{} >= 10x the peer ({})",
                    w.short(),
                    r.map_or("?".into(), |r| format!("{r:.1}x"))
                ),
            );
        }
        let sqlite_rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.target.kind == Kind::Sqlite)
            .collect();
        let worst_p99 = sqlite_rows
            .iter()
            .max_by(|a, b| a.outcome.p99_ms.total_cmp(&b.outcome.p99_ms));
        line(
            worst_p99.map(|r| r.outcome.p99_ms < 10.0),
            format!(
                "p99 < 10 ms for every workload{}",
                worst_p99.map_or(String::new(), |r| format!(
                    " (worst: {:.2} ms, {} on {})",
                    r.outcome.p99_ms,
                    r.workload.short(),
                    r.target.label
                ))
            ),
        );
        let worst_rss = sqlite_rows.iter().max_by_key(|r| r.peak_rss_kib);
        line(
            worst_rss.map(|r| r.peak_rss_kib < 64 * 1024),
            format!(
                "peak RSS < 64 MiB{}",
                worst_rss.map_or(String::new(), |r| format!(
                    " (largest: {:.1} MiB, {} on {})",
                    r.peak_rss_kib as f64 / 1024.0,
                    r.workload.short(),
                    r.target.label
                ))
            ),
        );
        for w in [Workload::ClientCredentials, Workload::Introspection] {
            let written: Vec<f64> = self
                .rows
                .iter()
                .filter(|r| r.workload == w && r.target.kind != Kind::Peer)
                .filter_map(|r| r.writes.as_ref().map(Writes::rows_per_10k))
                .collect();
            line(
                (!written.is_empty()).then(|| written.iter().all(|&v| v == 0.0)),
                format!(
                    "zero rows written per {} ({} rows / 10k ops on SQLite and PostgreSQL)",
                    w.short(),
                    written
                        .iter()
                        .map(|v| thousands(*v))
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            );
        }
        let scale: Vec<(Workload, f64)> = self
            .workloads
            .iter()
            .filter_map(|&w| {
                let a = tp("sqlite", w)?;
                let b = tp("sqlite-large", w)?;
                (a > 0.0).then_some((w, b / a))
            })
            .collect();
        let worst = scale.iter().min_by(|a, b| a.1.total_cmp(&b.1));
        line(
            worst.map(|(_, r)| *r >= 0.9),
            format!(
                "with the large store, throughput within 10% of the small one{}",
                worst.map_or(String::new(), |(w, r)| format!(
                    " (lowest: {}, {:.0}%)",
                    w.short(),
                    r * 100.0
                ))
            ),
        );
        let ir: Vec<(Workload, f64)> = self
            .workloads
            .iter()
            .filter_map(|&w| {
                let a = self.find("sqlite", w)?.instructions_per_op?;
                let b = self.find("sqlite-large", w)?.instructions_per_op?;
                (a > 0.0).then_some((w, b / a))
            })
            .collect();
        let worst = ir.iter().max_by(|a, b| a.1.total_cmp(&b.1));
        line(
            worst.map(|(_, r)| *r <= 1.1),
            format!(
                "with the large store, server instructions per operation within 10% of the small one{}",
                worst.map_or(String::new(), |(w, r)| format!(
                    " (highest: {}, {:.0}%)",
                    w.short(),
                    r * 100.0
                ))
            ),
        );
        out
    }
}

/// The median round: the median of each rate and latency over the rounds (the mean of
/// the middle two for an even count), the highest maximum, and every operation and
/// error counted.
fn median(rounds: &[Outcome]) -> Outcome {
    let mid = |f: fn(&Outcome) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    Outcome {
        ops: rounds.iter().map(|r| r.ops).sum(),
        total_ops: rounds.iter().map(|r| r.total_ops).sum(),
        errors: rounds.iter().map(|r| r.errors).sum(),
        seconds: rounds.iter().map(|r| r.seconds).sum(),
        per_second: mid(|r| r.per_second),
        p50_ms: mid(|r| r.p50_ms),
        p99_ms: mid(|r| r.p99_ms),
        max_ms: rounds.iter().map(|r| r.max_ms).fold(0.0, f64::max),
        first_error: rounds.iter().find_map(|r| r.first_error.clone()),
    }
}

/// `(benchmark id, elements per second)` from criterion's output: an id line followed
/// by `time:` and `thrpt:` lines.
fn parse_criterion(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let mut last_id = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("thrpt:") {
            // thrpt:  [49.2 Kelem/s 49.5 Kelem/s 49.7 Kelem/s]
            let parts: Vec<&str> = rest
                .trim()
                .trim_matches(['[', ']'])
                .split_whitespace()
                .collect();
            if parts.len() >= 4
                && let Ok(v) = parts[2].parse::<f64>()
            {
                let scale = match parts[3] {
                    u if u.starts_with("Kelem") => 1e3,
                    u if u.starts_with("Melem") => 1e6,
                    u if u.starts_with("Gelem") => 1e9,
                    _ => 1.0,
                };
                out.push((last_id.clone(), v * scale));
            }
        } else if !line.starts_with(' ') && !trimmed.is_empty() {
            // "EdDSA/Verifier::verify, no cache" or the same followed by "time: [...]".
            let id = trimmed.split("time:").next().unwrap_or_default().trim();
            if !id.is_empty() && !id.starts_with("Benchmarking") && !id.starts_with("Found") {
                last_id = id.to_owned();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criterion_output() {
        let text = "EdDSA/Verifier::verify, no cache\n                        time:   [20.1 µs 20.2 µs 20.3 µs]\n                        thrpt:  [49.2 Kelem/s 49.5 Kelem/s 49.7 Kelem/s]\nEdDSA/Verifier::verify, cache hit time:   [1.0 µs 1.0 µs 1.0 µs]\n                        thrpt:  [990.0 Kelem/s 1.0000 Melem/s 1.01 Melem/s]\n";
        let v = parse_criterion(text);
        assert_eq!(v[0].0, "EdDSA/Verifier::verify, no cache");
        assert!((v[0].1 - 49_500.0).abs() < 1.0);
        assert_eq!(v[1].0, "EdDSA/Verifier::verify, cache hit");
        assert!((v[1].1 - 1_000_000.0).abs() < 1.0);
    }

    #[test]
    fn numbers() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(bytes_text(2048.0), "2 KiB");
    }
}
