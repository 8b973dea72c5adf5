//! Latchkey's storage: one [`Store`] trait by aggregate (clients, users, sessions,
//! grants, keys), implemented for SQLite (the embedded default) and PostgreSQL (for
//! many nodes) by the same SQL, and one conformance suite run against both.
//!
//! Every state transition that must not race is one conditional statement: a code is
//! redeemed by inserting the grant it names `… ON CONFLICT (grant_id) DO NOTHING`, a
//! refresh token is rotated by `UPDATE … WHERE refresh_generation = $n AND revoked_at
//! IS NULL`.
#![forbid(unsafe_code)]

mod db;
mod migrations;
mod postgres;
mod sql;
mod sqlite;

use async_trait::async_trait;
use latchkey_core::client::Client;
use latchkey_core::model::{AuthorizationCode, Grant, KeyRecord, KeyState, Session, User};
use latchkey_core::scope::Scope;

pub use sql::{PgStore, SqlStore, SqliteStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key already exists (a username or client id).
    #[error("already exists")]
    Conflict,
    /// A planner refused to go on.
    #[error("{0}")]
    Plan(String),
    /// A stored value could not be read back (a corrupt or foreign row).
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Database(Box<dyn std::error::Error + Send + Sync>),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict,
            _ => StoreError::Database(Box::new(e)),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
            {
                StoreError::Conflict
            }
            _ => StoreError::Database(Box::new(e)),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What a code redemption adds to the code's own data to make its grant (whose id the
/// code names).
#[derive(Debug, Clone)]
pub struct NewGrant {
    /// 1 with a refresh token, 0 without.
    pub refresh_generation: i64,
    pub refresh_hash: Option<String>,
    pub expires_at: i64,
}

impl NewGrant {
    /// The grant a redemption of `code` at `now` makes: what the store inserts, so the
    /// caller need not read it back.
    pub fn grant_from(&self, code: &AuthorizationCode, now: i64) -> Grant {
        Grant {
            grant_id: code.grant_id.clone(),
            user_id: code.user_id.clone(),
            client_id: code.client_id.clone(),
            scope: code.scope.clone(),
            auth_time: code.auth_time,
            session_hash: code.session_hash.clone(),
            nonce: code.nonce.clone(),
            audience: code.resource.clone(),
            refresh_generation: self.refresh_generation,
            refresh_hash: self.refresh_hash.clone(),
            created_at: now,
            last_used_at: now,
            expires_at: self.expires_at,
            revoked_at: None,
            grace_used: false,
        }
    }
}

/// A refresh of what the caller believes is the grant's current token (see
/// [`Store::rotate_current_refresh`]).
#[derive(Debug, Clone)]
pub struct CurrentRefresh<'a> {
    pub grant_id: &'a str,
    pub client_id: &'a str,
    pub generation: i64,
    pub current_hash: &'a str,
    pub new_hash: &'a str,
    /// The `resource` of the request, which must be the grant's audience (RFC 8707).
    pub audience: Option<&'a str>,
    pub now: i64,
    /// The grant dies this long after it was made (absolute refresh lifetime)…
    pub absolute_ttl: i64,
    /// …or this long after its last use, whichever comes first.
    pub idle_ttl: i64,
}

/// The change counters (see [`Store::versions`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Versions {
    pub clients: i64,
    pub users: i64,
}

/// The result of trying to redeem a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redemption {
    /// This call made the grant the code names: the code is consumed.
    Redeemed,
    /// The grant the code names exists: the code was redeemed before (RFC 9700 §4.2.4).
    AlreadyRedeemed,
    /// The code's client or user (or, if required, its session) no longer exists.
    Orphaned,
}

/// A change to the signing keys, as [`Store::maintain_keys`] applies it.
#[derive(Debug, Clone)]
pub enum KeyWrite {
    Insert(KeyRecord),
    Transition {
        kid: String,
        from: KeyState,
        to: KeyState,
    },
    /// Unpublish at once (a compromised key) and enter it in the revocation feed.
    Revoke {
        kid: String,
    },
}

/// Decides the key changes from the current keys (see `latchkey_core::keys::plan`).
pub type KeyPlanner =
    dyn Fn(&[KeyRecord]) -> std::result::Result<Vec<KeyWrite>, String> + Send + Sync;

/// Which grants an operation applies to; all set fields must match.
#[derive(Debug, Clone, Default)]
pub struct GrantFilter {
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    /// Only with `user_id`: a session's grants are found through their user's index
    /// (there is no index by session; a filter by session alone reads every grant).
    pub session_hash: Option<String>,
    /// Only grants that are neither revoked nor expired.
    pub active_only: bool,
}

/// One entry of the revocation feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// `grant` (subject is a grant id), `user` (a `sub`) or `client` (a `client_id`).
    pub kind: String,
    pub subject: String,
    pub revoked_at: i64,
}

/// Rows removed by one sweep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub sessions: u64,
    pub grants: u64,
    pub revocations: u64,
}

impl SweepReport {
    pub fn total(&self) -> u64 {
        self.sessions + self.grants + self.revocations
    }
}

/// Storage for everything Latchkey keeps. Methods are domain operations.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is, for logs and tests.
    fn backend(&self) -> &'static str;

    // Clients
    async fn create_client(&self, client: &Client) -> Result<()>;
    async fn client(&self, client_id: &str) -> Result<Option<Client>>;
    async fn list_clients(&self) -> Result<Vec<Client>>;
    async fn delete_client(&self, client_id: &str, now: i64) -> Result<bool>;
    /// Replaces a confidential client's secret digest (TM-14); servers drop their cached
    /// copy when they next see the clients counter move. False if there is no such
    /// confidential client.
    async fn set_client_secret(&self, client_id: &str, secret_hash: &str) -> Result<bool>;
    /// Counters that every change to the clients or users table increases in the same
    /// transaction (by triggers, whoever writes): nodes poll them to know when
    /// their caches are stale.
    async fn versions(&self) -> Result<Versions>;

    // Users
    async fn create_user(&self, user: &User) -> Result<()>;
    async fn user(&self, user_id: &str) -> Result<Option<User>>;
    async fn user_by_username(&self, normalized: &str) -> Result<Option<User>>;
    async fn list_users(&self) -> Result<Vec<User>>;
    /// Deletes the user, ends their sessions and revokes their grants.
    async fn delete_user(&self, user_id: &str, now: i64) -> Result<bool>;

    // Sessions
    async fn create_session(&self, session: &Session) -> Result<()>;
    /// The session, if it exists and has not expired.
    async fn session(&self, session_hash: &str, now: i64) -> Result<Option<Session>>;
    async fn delete_session(&self, session_hash: &str) -> Result<()>;

    // Authorization codes (sealed, never stored: latchkey_core::code)
    /// Consumes a code by making the grant it names, from the code and `grant`, in one
    /// conditional statement (REL-01): of racing redemptions exactly one makes it, and
    /// every other, however late, finds it (`AlreadyRedeemed`, RFC 9700 §4.2.4). A code
    /// whose client or user no longer exists is `Orphaned`: deleting either must leave
    /// it no grant, even one from a code a server issued just after from its cache.
    /// With `session_required`, so is a code whose session ended (logout, when logout
    /// revokes the session's grants: it must end the codes issued in it too).
    async fn redeem_code(
        &self,
        code: &AuthorizationCode,
        grant: &NewGrant,
        now: i64,
        session_required: bool,
    ) -> Result<Redemption>;

    // Grants
    async fn insert_grant(&self, grant: &Grant) -> Result<()>;
    async fn grant(&self, grant_id: &str) -> Result<Option<Grant>>;
    /// Whether one of the newest 50 active grants of one user to one client covers
    /// `wanted`: consent that /authorize may remember instead of asking again.
    async fn remembered_consent(
        &self,
        user_id: &str,
        client_id: &str,
        wanted: &Scope,
        now: i64,
    ) -> Result<bool>;
    /// Moves the refresh token from generation `from` to `from + 1` with a new secret
    /// digest, if and only if the grant is still at `from` and not revoked.
    async fn rotate_refresh(
        &self,
        grant_id: &str,
        from: i64,
        new_hash: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<bool>;
    /// The common refresh in one statement: if the grant is active, belongs to
    /// `r.client_id`, is at `r.generation` with `r.current_hash` (and, when given, has
    /// audience `r.audience`), moves it to the next generation with `r.new_hash` and
    /// returns it as it now is. `None` if any condition fails; the caller then reads the
    /// grant to find out which (a retry, a reuse, a revocation).
    async fn rotate_current_refresh(&self, r: &CurrentRefresh<'_>) -> Result<Option<Grant>>;
    /// Spends the one grace retry of generation `generation` (the client lost the
    /// response of a refresh and retries with the previous token); true if this call
    /// spent it.
    async fn use_refresh_grace(&self, grant_id: &str, generation: i64) -> Result<bool>;
    /// Revokes a grant and enters it in the revocation feed; true if this call revoked it.
    async fn revoke_grant(&self, grant_id: &str, now: i64) -> Result<bool>;
    /// Revokes every active grant matching the filter; returns how many.
    async fn revoke_grants(&self, filter: &GrantFilter, now: i64) -> Result<u64>;
    /// Grants matching the filter, newest first.
    async fn list_grants(&self, filter: &GrantFilter, now: i64, limit: i64) -> Result<Vec<Grant>>;

    // The revocation feed (DESIGN §4)
    /// Entries revoked at or after `since`, oldest first.
    async fn revocations_since(&self, since: i64, limit: i64) -> Result<Vec<Revocation>>;

    // Housekeeping
    /// Deletes at most `limit` rows of each kind that nothing needs any more: sessions
    /// past expiry, grants that expired or were revoked before `revoked_before`, feed
    /// entries older than `revoked_before`. One node at a time (a database lock on
    /// PostgreSQL); returns `None` if another node holds the lock. `revoked_before` must
    /// be at least a code lifetime ago: a grant's row is what keeps its code from being
    /// redeemed again.
    async fn sweep(&self, now: i64, revoked_before: i64, limit: i64)
    -> Result<Option<SweepReport>>;
    /// Rows per table, for tests and benchmarks.
    async fn row_counts(&self) -> Result<Vec<(&'static str, i64)>>;

    // Signing keys
    async fn insert_key(&self, key: &KeyRecord) -> Result<()>;
    /// Every key, oldest first.
    async fn keys(&self) -> Result<Vec<KeyRecord>>;
    /// Under the key lock (one node at a time), reads the keys, asks `plan` what to
    /// change, and applies it in the same transaction. `None` when another node holds
    /// the lock. A transition applies only if the key is still in its `from` state.
    async fn maintain_keys(&self, plan: &KeyPlanner, now: i64) -> Result<Option<Vec<KeyWrite>>>;

    /// A server-wide secret by name, created from `fresh` if it does not exist yet; every
    /// node gets the same value.
    async fn server_secret(&self, name: &str, fresh: &str) -> Result<String>;
}
