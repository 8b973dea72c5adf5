//! The data generator: clients, users, signed-in sessions and grants written through
//! latchkey-store's `Store` trait (the same statements the server runs), plus the
//! fixture the load generator draws its credentials from.
//!
//! Everything is derived from its index, so a store of any size is described by three
//! numbers and the fixture can sample it without keeping a list: client `i` is
//! `bench-client-i` with secret `b64url(SHA-256("latchkey-bench/client/i"))`, user `j`
//! has one session whose cookie is derived the same way, and grant `k` belongs to user
//! `k mod users` and to a client chosen so that each user's grants go to distinct
//! clients. Every grant covers the workloads' scopes, so `/authorize` answers each
//! sampled (user, client) pair with a code at once.

use std::sync::Arc;
use std::time::Instant;

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_core::client::{AuthMethod, Client, ClientKind, GrantType};
use latchkey_core::jose::Alg;
use latchkey_core::model::{Grant, Session, User};
use latchkey_core::redirect_uri::RedirectUri;
use latchkey_core::scope::Scope;
use latchkey_core::secret;
use latchkey_store::Store;
use serde::{Deserialize, Serialize};

pub const REDIRECT_URI: &str = "https://app.example/cb";
pub const RESOURCE: &str = "https://api.example/";
/// What a user granted each client, and what the code flow asks for.
pub const SCOPE: &str = "openid profile email api";

/// How much is stored.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Size {
    pub clients: usize,
    pub users: usize,
    pub grants: usize,
    /// How every client registers its ID tokens to be signed
    /// (`id_token_signed_response_alg`).
    pub id_token_alg: IdTokenAlg,
}

/// The ID token algorithms the harness compares (both servers support both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum IdTokenAlg {
    /// Ed25519: what Latchkey signs access tokens with.
    #[value(name = "EdDSA")]
    EdDSA,
    /// RSA-2048 PKCS#1: the OIDC default that every relying party accepts.
    #[value(name = "RS256")]
    RS256,
}

impl IdTokenAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            IdTokenAlg::EdDSA => "EdDSA",
            IdTokenAlg::RS256 => "RS256",
        }
    }
}

impl Size {
    /// The everyday fixture: enough distinct clients, users and grants that 64
    /// connections do not all hit one row.
    pub const SMALL: Size = Size {
        clients: 100,
        users: 1_000,
        grants: 1_000,
        id_token_alg: IdTokenAlg::EdDSA,
    };
}

/// Credentials of a confidential client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub id: String,
    pub secret: String,
}

/// A signed-in browser whose user already granted this client the workloads' scopes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flow {
    pub client: Credentials,
    /// The whole `Cookie` header value.
    pub cookie: String,
}

/// What the load generator draws from: a uniform sample of what is stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fixture {
    pub redirect_uri: String,
    pub resource: String,
    pub scope: String,
    /// For client_credentials.
    pub clients: Vec<Credentials>,
    /// For the code flow, and the tokens of the refresh, introspection and userinfo
    /// workloads.
    pub flows: Vec<Flow>,
    /// What the store holds, for the record.
    pub stored: Option<Size>,
}

fn derive(kind: &str, i: usize) -> [u8; 32] {
    let d = digest::digest(
        &digest::SHA256,
        format!("latchkey-bench/{kind}/{i}").as_bytes(),
    );
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex32(bytes: &[u8; 32]) -> String {
    bytes[..16].iter().map(|b| format!("{b:02x}")).collect()
}

pub fn client_id(i: usize) -> String {
    format!("bench-client-{i:06}")
}

pub fn client_secret(i: usize) -> String {
    URL_SAFE_NO_PAD.encode(derive("client", i))
}

fn user_id(j: usize) -> String {
    hex32(&derive("user", j))
}

fn session_cookie(j: usize) -> String {
    URL_SAFE_NO_PAD.encode(derive("session", j))
}

/// The user and client of grant `k`: user `k mod U`; its n-th grant goes to client
/// `(j + n * 10007) mod C`, so a user's grants name distinct clients.
pub fn grant_owner(k: usize, size: Size) -> (usize, usize) {
    let j = k % size.users;
    let n = k / size.users;
    (j, (j + n * 10_007) % size.clients)
}

/// A small, seeded generator (splitmix64): the same sample every run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }
}

/// Up to `n` distinct indices below `total`, uniformly: all of them when there are few.
fn sample(total: usize, n: usize, rng: &mut Rng) -> Vec<usize> {
    if total <= n {
        return (0..total).collect();
    }
    let mut picked = std::collections::BTreeSet::new();
    while picked.len() < n {
        picked.insert(rng.below(total));
    }
    let mut v: Vec<usize> = picked.into_iter().collect();
    // Shuffle so that connection c does not always start at the lowest index.
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i + 1));
    }
    v
}

/// The fixture for a store of `size`, sampling at most `per_kind` clients and flows.
pub fn fixture(size: Size, per_kind: usize) -> Fixture {
    let mut rng = Rng(0x1a7c_4b3e);
    let creds = |i: usize| Credentials {
        id: client_id(i),
        secret: client_secret(i),
    };
    let clients = sample(size.clients, per_kind, &mut rng)
        .into_iter()
        .map(creds)
        .collect();
    let flows = sample(size.grants, per_kind, &mut rng)
        .into_iter()
        .map(|k| {
            let (j, i) = grant_owner(k, size);
            Flow {
                client: creds(i),
                cookie: format!("lk_session={}", session_cookie(j)),
            }
        })
        .collect();
    Fixture {
        redirect_uri: REDIRECT_URI.into(),
        resource: RESOURCE.into(),
        scope: SCOPE.into(),
        clients,
        flows,
        stored: Some(size),
    }
}

fn scope() -> Result<Scope, String> {
    Scope::parse(SCOPE).map_err(|e| e.description().to_owned())
}

fn client(i: usize, id_token_alg: IdTokenAlg, now: i64) -> Result<Client, String> {
    Ok(Client {
        client_id: client_id(i),
        name: format!("Bench app {i}"),
        kind: ClientKind::Confidential,
        secret_hash: Some(secret::digest(&client_secret(i))),
        redirect_uris: vec![RedirectUri::register(REDIRECT_URI).map_err(|e| e.to_string())?],
        grant_types: GrantType::ALL.to_vec(),
        scopes: scope()?,
        auth_methods: vec![AuthMethod::ClientSecretBasic, AuthMethod::ClientSecretPost],
        first_party: false,
        post_logout_redirect_uris: vec![],
        audiences: vec![],
        resources: vec![RESOURCE.into()],
        access_token_ttl: 300,
        id_token_alg: match id_token_alg {
            IdTokenAlg::EdDSA => Alg::EdDSA,
            IdTokenAlg::RS256 => Alg::RS256,
        },
        created_at: now,
    })
}

fn user(j: usize, password_hash: &str, now: i64) -> User {
    User {
        user_id: user_id(j),
        username: format!("bench-user-{j}"),
        password_hash: password_hash.to_owned(),
        email: Some(format!("user{j}@bench.example")),
        email_verified: true,
        name: Some(format!("Bench User {j}")),
        disabled: false,
        created_at: now,
    }
}

fn grant(k: usize, size: Size, now: i64) -> Result<Grant, String> {
    let (j, i) = grant_owner(k, size);
    Ok(Grant {
        grant_id: hex32(&derive("grant", k)),
        user_id: user_id(j),
        client_id: client_id(i),
        scope: scope()?,
        auth_time: now,
        session_hash: Some(secret::digest(&session_cookie(j))),
        nonce: None,
        audience: Some(RESOURCE.into()),
        refresh_generation: 1,
        refresh_hash: Some(secret::digest(
            &URL_SAFE_NO_PAD.encode(derive("refresh", k)),
        )),
        created_at: now,
        last_used_at: now,
        expires_at: now + 30 * 86_400,
        revoked_at: None,
        grace_used: false,
    })
}

/// One argon2id hash (the server's parameters) shared by every generated user.
fn password_hash() -> Result<String, String> {
    use argon2::{Argon2, PasswordHasher};
    let salt = derive("salt", 0);
    Argon2::default()
        .hash_password_with_salt(b"bench-password", &salt[..16])
        .map(|h| h.to_string())
        .map_err(|e| format!("argon2: {e}"))
}

/// Writes `size` into `store` with `parallel` statements in flight (1 for SQLite,
/// whose writers queue on one lock anyway).
pub async fn generate(
    store: Arc<dyn Store>,
    size: Size,
    parallel: usize,
    now: i64,
) -> Result<(), String> {
    let hash = Arc::new(password_hash()?);
    let started = Instant::now();
    let total = size.clients + 2 * size.users + size.grants;
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let parallel = parallel.max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..parallel {
        let (store, hash, done) = (store.clone(), hash.clone(), done.clone());
        tasks.spawn(async move {
            let tick = |done: &std::sync::atomic::AtomicUsize| {
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if n.is_multiple_of(100_000) {
                    eprintln!(
                        "  generated {n} of {total} rows ({:.0} rows/s)",
                        n as f64 / started.elapsed().as_secs_f64()
                    );
                }
            };
            for i in (t..size.clients).step_by(parallel) {
                store
                    .create_client(&client(i, size.id_token_alg, now)?)
                    .await
                    .map_err(|e| format!("client {i}: {e}"))?;
                tick(&done);
            }
            for j in (t..size.users).step_by(parallel) {
                store
                    .create_user(&user(j, &hash, now))
                    .await
                    .map_err(|e| format!("user {j}: {e}"))?;
                tick(&done);
                store
                    .create_session(&Session {
                        session_hash: secret::digest(&session_cookie(j)),
                        user_id: user_id(j),
                        auth_time: now,
                        expires_at: now + 7 * 86_400,
                    })
                    .await
                    .map_err(|e| format!("session {j}: {e}"))?;
                tick(&done);
            }
            for k in (t..size.grants).step_by(parallel) {
                store
                    .insert_grant(&grant(k, size, now)?)
                    .await
                    .map_err(|e| format!("grant {k}: {e}"))?;
                tick(&done);
            }
            Ok::<(), String>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    eprintln!(
        "  generated {total} rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Fills the embedded store in `dir` (created, or added to). The rows are written
/// through the Store trait into a copy on tmpfs when there is one, whose per-commit
/// cost is lower, then moved into place: the same file, made faster.
pub async fn fill_sqlite(dir: &std::path::Path, size: Size, now: i64) -> Result<(), String> {
    let io = |p: &std::path::Path, e: std::io::Error| format!("{}: {e}", p.display());
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let file = dir.join("latchkey.db");
    let shm = std::path::Path::new("/dev/shm");
    let staging = shm
        .is_dir()
        .then(|| shm.join(format!("latchkey-bench-{}", std::process::id())));
    let work_dir = staging.clone().unwrap_or_else(|| dir.to_path_buf());
    std::fs::create_dir_all(&work_dir).map_err(|e| io(&work_dir, e))?;
    let work_file = work_dir.join("latchkey.db");
    if staging.is_some() && file.exists() {
        std::fs::copy(&file, &work_file).map_err(|e| io(&file, e))?;
    }
    let store = latchkey_store::SqliteStore::open(&work_file)
        .await
        .map_err(|e| e.to_string())?;
    // When it returns, the store is dropped: its connections are closed, the last of
    // them checkpointing the WAL into the file.
    generate(Arc::new(store), size, 1, now).await?;
    if let Some(staging) = staging {
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
        }
        // A rename cannot cross file systems; copy, then drop the staging copy.
        std::fs::copy(&work_file, &file).map_err(|e| io(&file, e))?;
        for suffix in ["-wal", "-shm"] {
            let from = format!("{}{suffix}", work_file.display());
            if std::path::Path::new(&from).exists() {
                std::fs::copy(&from, format!("{}{suffix}", file.display()))
                    .map_err(|e| io(std::path::Path::new(&from), e))?;
            }
        }
        let _ = std::fs::remove_dir_all(&staging);
    }
    Ok(())
}

/// Fills the PostgreSQL database at `url`, with 12 statements in flight and, while it
/// runs, `synchronous_commit = off` for that database (reset afterwards): each row is
/// still one Store call and one commit, only not waited for on disk.
pub async fn fill_postgres(url: &str, size: Size, now: i64) -> Result<(), String> {
    use sqlx::Connection;
    let set = |value: &str| {
        format!(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I {value}', current_database()); END $$"
        )
    };
    let mut c = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| format!("PostgreSQL at {url}: {e}"))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(set("SET synchronous_commit = off")))
        .execute(&mut c)
        .await
        .map_err(|e| e.to_string())?;
    let store = latchkey_store::PgStore::connect(url)
        .await
        .map_err(|e| e.to_string())?;
    let pool = store.pool().clone();
    let result = generate(Arc::new(store), size, 12, now).await;
    pool.close().await;
    // Separately: VACUUM cannot run in the implicit transaction of a multi-statement
    // string.
    for sql in [set("RESET synchronous_commit"), "VACUUM ANALYZE".to_owned()] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await
            .map_err(|e| e.to_string())?;
    }
    let _ = c.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_of_a_user_name_distinct_clients() {
        let size = Size {
            clients: 100_000,
            users: 100_000,
            grants: 1_000_000,
            id_token_alg: IdTokenAlg::EdDSA,
        };
        let mut seen = std::collections::HashSet::new();
        for n in 0..10 {
            let (j, i) = grant_owner(7 + n * size.users, size);
            assert_eq!(j, 7);
            assert!(seen.insert(i));
        }
        let f = fixture(size, 1000);
        assert_eq!(f.clients.len(), 1000);
        assert_eq!(f.flows.len(), 1000);
        let small = fixture(Size::SMALL, 1000);
        assert_eq!(small.clients.len(), 100);
    }
}
