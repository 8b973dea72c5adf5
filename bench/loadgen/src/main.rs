//! `latchkey-bench`: Latchkey's performance harness.
//!
//! ```sh
//! bench/run [--smoke]                       # everything, one table (docs/PERFORMANCE.md)
//! latchkey-bench gen --data-dir D [--clients 100000 --users 100000 --grants 1000000]
//! latchkey-bench load --url URL --fixture F --workload code-flow [-c 64 --duration 10]
//! latchkey-bench bare --listen 127.0.0.1:0  # the HTTP ceiling server
//! ```
#![forbid(unsafe_code)]
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line measuring tool: its output is the report"
)]

mod bare;
mod data;
mod db;
mod http;
mod load;
mod suite;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::data::Size;
use crate::load::{Amount, Workload};

#[derive(Parser)]
#[command(name = "latchkey-bench", about = "Latchkey's performance harness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every measurement and print the table (what bench/run calls).
    Suite(Box<suite::Options>),
    /// Fill a store with clients, users, signed-in sessions and grants, through the
    /// Store trait, and write the load generator's fixture.
    Gen {
        /// Data directory of an embedded (SQLite) store.
        #[arg(long, conflicts_with = "database_url")]
        data_dir: Option<PathBuf>,
        /// PostgreSQL URL of an empty (or new) database.
        #[arg(long)]
        database_url: Option<String>,
        #[arg(long, default_value_t = Size::SMALL.clients)]
        clients: usize,
        #[arg(long, default_value_t = Size::SMALL.users)]
        users: usize,
        #[arg(long, default_value_t = Size::SMALL.grants)]
        grants: usize,
        /// How the clients register their ID tokens to be signed.
        #[arg(long, value_enum, default_value = "EdDSA")]
        id_token_alg: data::IdTokenAlg,
        /// Where to write the fixture (JSON).
        #[arg(long)]
        fixture: Option<PathBuf>,
        /// How many clients and flows the fixture samples.
        #[arg(long, default_value_t = 1000)]
        sample: usize,
        /// Write straight into the store with this many statements in flight, without
        /// the tmpfs staging (SQLite) or `synchronous_commit = off` (PostgreSQL).
        #[arg(long)]
        parallel: Option<usize>,
    },
    /// Drive one workload against a running server and print the outcome as JSON.
    Load {
        /// The server's base URL (its issuer), like http://127.0.0.1:8080.
        #[arg(long)]
        url: String,
        #[arg(long)]
        fixture: PathBuf,
        #[arg(long, value_enum)]
        workload: Workload,
        #[arg(short = 'c', long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Seconds of warm-up, not recorded.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Seconds measured.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Run exactly this many operations instead (no warm-up, no timing window).
        #[arg(long)]
        ops: Option<u64>,
    },
    /// The ceiling: a bare axum server answering every request with a fixed token.
    Bare {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Suite(options) => suite::run(*options),
        Command::Gen {
            data_dir,
            database_url,
            clients,
            users,
            grants,
            fixture,
            sample,
            parallel,
            id_token_alg,
        } => generate(
            data_dir,
            database_url,
            Size {
                clients,
                users,
                grants,
                id_token_alg,
            },
            fixture,
            sample,
            parallel,
        ),
        Command::Load {
            url,
            fixture,
            workload,
            connections,
            threads,
            warmup,
            duration,
            ops,
        } => load_once(
            &url,
            &fixture,
            workload,
            connections,
            threads,
            match ops {
                Some(n) => Amount::Ops(n),
                None => Amount::Timed {
                    warmup: Duration::from_secs_f64(warmup),
                    measure: Duration::from_secs_f64(duration),
                },
            },
        ),
        Command::Bare { listen } => bare::serve(&listen),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn generate(
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    size: Size,
    fixture: Option<PathBuf>,
    sample: usize,
    parallel: Option<usize>,
) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let now = suite::unix_now();
    runtime.block_on(async {
        match (&data_dir, &database_url) {
            (Some(dir), None) if parallel.is_none() => data::fill_sqlite(dir, size, now).await,
            (None, Some(url)) if parallel.is_none() => data::fill_postgres(url, size, now).await,
            (Some(dir), None) => {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                let store = latchkey_store::SqliteStore::open(&dir.join("latchkey.db"))
                    .await
                    .map_err(|e| e.to_string())?;
                data::generate(Arc::new(store), size, parallel.unwrap_or(1), now).await
            }
            (None, Some(url)) => {
                let store = latchkey_store::PgStore::connect(url)
                    .await
                    .map_err(|e| e.to_string())?;
                data::generate(Arc::new(store), size, parallel.unwrap_or(12), now).await
            }
            _ => Err("give --data-dir or --database-url".to_owned()),
        }
    })?;
    if let Some(path) = fixture {
        let f = data::fixture(size, sample);
        let text = serde_json::to_string(&f).map_err(|e| e.to_string())?;
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn load_once(
    url: &str,
    fixture: &std::path::Path,
    workload: Workload,
    connections: usize,
    threads: usize,
    amount: Amount,
) -> Result<(), String> {
    let fixture: data::Fixture = serde_json::from_slice(
        &std::fs::read(fixture).map_err(|e| format!("{}: {e}", fixture.display()))?,
    )
    .map_err(|e| e.to_string())?;
    let (addr, host) = suite::parse_url(url)?;
    let outcome = load::run(
        &load::Spec {
            addr,
            host,
            fixture: Arc::new(fixture),
            workload,
            connections,
            threads,
            amount,
        },
        None,
    )?;
    println!(
        "{}",
        serde_json::to_string_pretty(&outcome).map_err(|e| e.to_string())?
    );
    Ok(())
}
