//! The Latchkey server: configuration, start-up, the HTTP application and the admin
//! operations behind the `latchkey` command.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cache;
pub mod clock;
pub mod config;
pub mod http;
pub mod keys;
pub mod net;
pub mod password;
pub mod state;
pub mod throttle;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use latchkey_store::{PgStore, SqliteStore, Store};

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::keys::KeyRing;
use crate::state::{AppState, Inner};
use latchkey_core::seal::MasterKey;

/// Opens the configured store: PostgreSQL when `database_url` is set, otherwise the
/// SQLite file in the data directory (created on first use). Migrations run here.
/// Returns notes about what was created, for the operator.
pub async fn open_store(config: &Config) -> Result<(Arc<dyn Store>, Vec<String>), String> {
    open_store_with(config, true).await
}

/// Like [`open_store`], for admin commands: they refuse a data directory that does not
/// exist, so a mistyped `--data-dir` is an error instead of a new, empty store.
pub async fn open_existing_store(config: &Config) -> Result<(Arc<dyn Store>, Vec<String>), String> {
    open_store_with(config, false).await
}

async fn open_store_with(
    config: &Config,
    create: bool,
) -> Result<(Arc<dyn Store>, Vec<String>), String> {
    let mut notes = Vec::new();
    if let Some(url) = &config.database_url {
        let store = PgStore::connect(url)
            .await
            .map_err(|e| format!("cannot open PostgreSQL: {e}"))?;
        return Ok((Arc::new(store), notes));
    }
    let dir = &config.data_dir;
    if !create && !dir.join("latchkey.db").exists() {
        return Err(format!(
            "no Latchkey data in {}: start `latchkey serve --data-dir {}` once to create it, or pass the right --data-dir",
            dir.display(),
            dir.display()
        ));
    }
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

/// Finds the master key: `LATCHKEY_MASTER_KEY`, then `master_key_file`, then (embedded
/// store only) `<data_dir>/master.key`, generated on first start. A missing key is
/// never silently replaced while sealed keys exist.
pub async fn load_master_key(
    config: &Config,
    store: &dyn Store,
) -> Result<(MasterKey, Vec<String>), String> {
    if let Ok(v) = std::env::var("LATCHKEY_MASTER_KEY") {
        return Ok((
            MasterKey::parse(&v).map_err(|e| format!("LATCHKEY_MASTER_KEY: {e}"))?,
            vec![],
        ));
    }
    if let Some(file) = &config.master_key_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("master_key_file {}: {e}", file.display()))?;
        return Ok((
            MasterKey::parse(&text)
                .map_err(|e| format!("master_key_file {}: {e}", file.display()))?,
            vec![],
        ));
    }
    if config.database_url.is_some() {
        return Err("nodes on PostgreSQL share their signing keys: set LATCHKEY_MASTER_KEY or master_key_file, the same on every node".into());
    }
    let path = config.data_dir.join("master.key");
    if path.exists() {
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok((
            MasterKey::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?,
            vec![],
        ));
    }
    let sealed_exists = !store.keys().await.map_err(|e| e.to_string())?.is_empty();
    if sealed_exists {
        return Err(format!(
            "the master key file {} is missing, but the database holds signing keys sealed with it; restore the file or set LATCHKEY_MASTER_KEY",
            path.display()
        ));
    }
    let text = MasterKey::generate_text(&SystemRandom::new()).map_err(|e| e.to_string())?;
    write_private_file(&path, &text)?;
    let key = MasterKey::parse(&text).map_err(|e| e.to_string())?;
    Ok((
        key,
        vec![format!(
            "created master key {} (mode 0600): back it up; the signing keys cannot be opened without it",
            path.display()
        )],
    ))
}

#[cfg(unix)]
fn write_private_file(path: &std::path::Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(not(unix))]
fn write_private_file(path: &std::path::Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Builds the shared state: opens the master key, checks it against the stored keys
/// (before anything is written), creates the first keys and the server MAC key.
pub async fn build_state(
    config: Config,
    store: Arc<dyn Store>,
    issuer: String,
    demo: Option<http::demo::DemoClient>,
) -> Result<(AppState, Vec<String>), String> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (master, mut notes) = load_master_key(&config, store.as_ref()).await?;
    let master = Arc::new(master);
    // A wrong master key fails here, before any write.
    KeyRing::from_records(&store.keys().await.map_err(|e| e.to_string())?, &master)
        .map_err(|e| e.to_string())?;
    let rng = SystemRandom::new();
    let mac_key = mac_key(store.as_ref(), &master, &rng).await?;
    let codes = latchkey_core::code::CodeSealer::from_mac_key(&mac_key, &issuer)
        .map_err(|e| e.to_string())?;
    let ring = bootstrap_keys(store.as_ref(), &master, &config, clock.as_ref(), &mut notes).await?;
    let dummy =
        latchkey_core::secret::random_token(&rng).map_err(|_| "random source failed".to_owned())?;
    let dummy_password_hash = password::hash(&dummy, &rng)?;
    let secure_cookies = issuer.starts_with("https://");
    let caching = config.client_check_interval_ms > 0;
    let cache_max_age = std::time::Duration::from_millis(
        u64::try_from(config.client_check_interval_ms).unwrap_or(0) * 4 + 1000,
    );
    let state = AppState(Arc::new(Inner {
        store,
        config,
        issuer,
        keyring: std::sync::RwLock::new(Arc::new(ring)),
        master,
        mac_key,
        codes,
        clock,
        rng,
        dummy_password_hash,
        secure_cookies,
        demo,
        clients: cache::VersionedCache::new(caching, cache_max_age),
        users: cache::VersionedCache::new(caching, cache_max_age),
        throttle: throttle::Throttle::default(),
        hashing: tokio::sync::Semaphore::new(hashing_permits()),
    }));
    Ok((state, notes))
}

/// The server-wide MAC key, sealed in the store; every node gets the same one.
async fn mac_key(
    store: &dyn Store,
    master: &MasterKey,
    rng: &SystemRandom,
) -> Result<Vec<u8>, String> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    const NAME: &str = "server_secret:mac_key";
    let mut fresh = [0u8; 32];
    aws_lc_rs::rand::SecureRandom::fill(rng, &mut fresh).map_err(|_| "random source failed")?;
    let sealed = master.seal(NAME, &fresh, rng).map_err(|e| e.to_string())?;
    let stored = store
        .server_secret("mac_key", &URL_SAFE_NO_PAD.encode(sealed))
        .await
        .map_err(|e| format!("server secret: {e}"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(stored)
        .map_err(|_| "the stored MAC key is corrupt".to_owned())?;
    master.open(NAME, &bytes).map_err(|_| "the master key does not open the stored server secret: this is not the master key the data was sealed with".to_owned())
}

/// Runs the key schedule once (creating the first keys on a new store) and loads the
/// ring. If another node holds the key lock, waits for it.
async fn bootstrap_keys(
    store: &dyn Store,
    master: &Arc<MasterKey>,
    config: &Config,
    clock: &dyn Clock,
    notes: &mut Vec<String>,
) -> Result<KeyRing, String> {
    for _ in 0..150 {
        let now = clock.now().0;
        if let Some(writes) = keys::maintain(store, master, config.key_policy(), now)
            .await
            .map_err(|e| e.to_string())?
        {
            for w in writes {
                if let latchkey_store::KeyWrite::Insert(k) = w {
                    notes.push(format!(
                        "created signing key {} ({})",
                        k.kid,
                        k.alg.as_str()
                    ));
                }
            }
        }
        let ring = KeyRing::from_records(&store.keys().await.map_err(|e| e.to_string())?, master)
            .map_err(|e| e.to_string())?;
        if latchkey_core::jose::Alg::ALL
            .iter()
            .all(|a| ring.signer(*a).is_some())
        {
            return Ok(ring);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Err("no active signing keys after 30 s: another node holds the key lock".into())
}

/// Every `key_check_interval`: carry out the rotation schedule (one node at a time) and
/// reload the ring when the keys changed, so every node signs with the active key and
/// publishes every live one.
async fn key_keeper(state: AppState) {
    let period = std::time::Duration::from_secs(
        u64::try_from(state.config.key_check_interval).unwrap_or(30),
    );
    loop {
        tokio::time::sleep(period).await;
        let now = state.now();
        if let Err(e) = keys::maintain(
            state.store.as_ref(),
            &state.master,
            state.config.key_policy(),
            now,
        )
        .await
        {
            tracing::warn!(error = %e, "key rotation check failed");
        }
        match state.store.keys().await {
            Ok(records) if !state.keys().same_keys(&records) => {
                match KeyRing::from_records(&records, &state.master) {
                    Ok(ring) => {
                        tracing::info!(keys = records.len(), "signing keys changed; reloaded");
                        state.set_keys(ring);
                    }
                    Err(e) => tracing::error!(error = %e, "cannot load the signing keys"),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the signing keys"),
        }
    }
}

/// How many argon2id verifications (19 MiB each) may run at once: twice the cores.
/// More sign-ins wait for a permit instead of taking memory.
fn hashing_permits() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 2
}

/// Binds the listen address and returns the listener with the issuer it implies.
pub async fn bind(config: &Config) -> Result<(tokio::net::TcpListener, String), String> {
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
    let issuer = match &config.issuer {
        Some(i) => config::check_issuer(i, config.danger_allow_http_issuer)?,
        None => format!("http://{addr}"),
    };
    Ok((listener, issuer))
}

/// Serves until SIGTERM or Ctrl-C, then finishes the requests in flight.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> Result<(), String> {
    tokio::spawn(sweeper(state.clone()));
    tokio::spawn(key_keeper(state.clone()));
    tokio::spawn(cache_keeper(state.clone()));
    let app = http::app(state);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
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

/// Every `client_check_interval_ms`: drop the cached clients or users if an admin
/// command changed any (see `cache.rs`).
async fn cache_keeper(state: AppState) {
    let Ok(ms) = u64::try_from(state.config.client_check_interval_ms) else {
        return;
    };
    if ms == 0 {
        return;
    }
    let period = std::time::Duration::from_millis(ms);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // A read that hangs is a failed read: the caches must not outlive it.
        let limit = period.max(std::time::Duration::from_secs(1));
        let counters = match tokio::time::timeout(limit, state.store.versions()).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the change counters; caches dropped");
                None
            }
            Err(_) => {
                tracing::warn!("reading the change counters timed out; caches dropped");
                None
            }
        };
        state.clients.observe(counters.map(|v| v.clients));
        state.users.observe(counters.map(|v| v.users));
    }
}

/// What ended before this is swept: revocations once no access token they concern can
/// still be live (`feed_window`), and grants no sooner than the longest life of a code
/// after they ended, whatever `code_ttl` any node has or had, with the clocks' leeway:
/// a grant's row is what keeps its code from being redeemed again
/// (`latchkey_core::code::GRANT_KEPT_AFTER_END`).
fn sweep_horizon(now: i64, feed_window: i64) -> i64 {
    now - feed_window.max(latchkey_core::code::GRANT_KEPT_AFTER_END)
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
            let horizon = sweep_horizon(now, http::backchannel::feed_window(&state));
            match state.store.sweep(now, horizon, BATCH).await {
                Ok(Some(r)) => {
                    if r.total() > 0 {
                        tracing::debug!(
                            sessions = r.sessions,
                            grants = r.grants,
                            revocations = r.revocations,
                            "swept expired rows"
                        );
                    }
                    if r.sessions < BATCH as u64
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

#[cfg(test)]
mod tests {
    use super::sweep_horizon;
    use latchkey_core::code::{CLOCK_LEEWAY, MAX_CODE_TTL};

    /// A grant made by a code ends no sooner than it is made. Whatever `code_ttl` the
    /// node that issued the code had (up to the cap), and however far (within the
    /// leeway) the clocks of the node that issued it and of the one that redeems it
    /// again are behind the sweeping node's, the grant's row is still there while the
    /// code is alive by the redeeming node's clock.
    #[test]
    fn a_grant_outlives_the_code_that_made_it() {
        for feed_window in [0, 60, 360, 3660] {
            for code_ttl in [1, 60, MAX_CODE_TTL] {
                for skew in [0, CLOCK_LEEWAY / 2, CLOCK_LEEWAY] {
                    // The sweeper's clock; the others run `skew` behind it.
                    let issued = 1_800_000_000 - skew;
                    let code_expires = issued + code_ttl;
                    let ended = issued;
                    // The first moment, by the sweeper's clock, the row may go.
                    let mut now = 1_800_000_000;
                    while sweep_horizon(now, feed_window) <= ended {
                        now += 1;
                    }
                    // By then the code has expired by the redeeming node's clock.
                    assert!(
                        now - skew >= code_expires,
                        "window {feed_window}, code_ttl {code_ttl}, skew {skew}: swept at {now}"
                    );
                    assert!(now > ended + feed_window);
                }
            }
        }
    }
}
