//! The Latchkey server: configuration, start-up, the HTTP application and the admin
//! operations behind the `latchkey` command.
#![forbid(unsafe_code)]

pub mod admin;
pub mod clock;
pub mod config;
pub mod http;
pub mod keys;
pub mod password;
pub mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use latchkey_store::{PgStore, SqliteStore, Store};

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::keys::KeyRing;
use crate::state::{AppState, Inner};

/// Opens the configured store: PostgreSQL when `database_url` is set, otherwise the
/// SQLite file in the data directory (created on first use). Migrations run here.
/// Returns notes about what was created, for the operator.
pub async fn open_store(config: &Config) -> Result<(Arc<dyn Store>, Vec<String>), String> {
    let mut notes = Vec::new();
    if let Some(url) = &config.database_url {
        let store = PgStore::connect(url)
            .await
            .map_err(|e| format!("cannot open PostgreSQL: {e}"))?;
        return Ok((Arc::new(store), notes));
    }
    let dir = &config.data_dir;
    if !dir.exists() {
        create_private_dir(dir)?;
        notes.push(format!("created data directory {}", dir.display()));
    }
    let file: PathBuf = dir.join("latchkey.db");
    let existed = file.exists();
    let store = SqliteStore::open(&file)
        .await
        .map_err(|e| format!("cannot open {}: {e}", file.display()))?;
    if !existed {
        notes.push(format!(
            "created SQLite database {} (WAL mode)",
            file.display()
        ));
    }
    Ok((Arc::new(store), notes))
}

#[cfg(unix)]
fn create_private_dir(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))
}

/// Builds the shared state: loads (or creates) signing keys and the server MAC key.
pub async fn build_state(
    config: Config,
    store: Arc<dyn Store>,
    issuer: String,
    demo: Option<http::demo::DemoClient>,
) -> Result<(AppState, Vec<String>), String> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.now().0;
    let (keys, created) = KeyRing::load_or_create(store.as_ref(), now)
        .await
        .map_err(|e| format!("signing keys: {e}"))?;
    let notes = created
        .iter()
        .map(|kid| format!("created signing key {kid}"))
        .collect();
    let rng = SystemRandom::new();
    let fresh =
        latchkey_core::secret::random_token(&rng).map_err(|_| "random source failed".to_owned())?;
    let mac_key = store
        .server_secret("mac_key", &fresh)
        .await
        .map_err(|e| format!("server secret: {e}"))?;
    let dummy =
        latchkey_core::secret::random_token(&rng).map_err(|_| "random source failed".to_owned())?;
    let dummy_password_hash = password::hash(&dummy, &rng)?;
    let secure_cookies = issuer.starts_with("https://");
    let state = AppState(Arc::new(Inner {
        store,
        config,
        issuer,
        keys,
        mac_key: mac_key.into_bytes(),
        clock,
        rng,
        dummy_password_hash,
        secure_cookies,
        demo,
    }));
    Ok((state, notes))
}

/// Binds the listen address and returns the listener with the issuer it implies.
pub async fn bind(config: &Config) -> Result<(tokio::net::TcpListener, String), String> {
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
    let issuer = match &config.issuer {
        Some(i) => config::check_issuer(i)?,
        None => format!("http://{addr}"),
    };
    Ok((listener, issuer))
}

/// Serves until SIGTERM or Ctrl-C, then finishes the requests in flight.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> Result<(), String> {
    tokio::spawn(sweeper(state.clone()));
    let app = http::app(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("server error: {e}"))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// Removes rows nothing needs any more, in small batches, on whichever node holds the
/// sweep lock (DESIGN §2).
async fn sweeper(state: AppState) {
    const BATCH: i64 = 1000;
    let period =
        std::time::Duration::from_secs(u64::try_from(state.config.sweep_interval).unwrap_or(60));
    loop {
        tokio::time::sleep(period).await;
        for _ in 0..1000 {
            let now = state.now();
            let horizon = now - http::backchannel::feed_window(&state);
            match state.store.sweep(now, horizon, BATCH).await {
                Ok(Some(r)) => {
                    if r.total() > 0 {
                        tracing::debug!(
                            codes = r.codes,
                            sessions = r.sessions,
                            grants = r.grants,
                            revocations = r.revocations,
                            "swept expired rows"
                        );
                    }
                    if r.codes < BATCH as u64
                        && r.sessions < BATCH as u64
                        && r.grants < BATCH as u64
                        && r.revocations < BATCH as u64
                    {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "sweep failed");
                    break;
                }
            }
        }
    }
}
