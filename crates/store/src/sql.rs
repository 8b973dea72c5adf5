//! The SQL behind [`Store`], written once and stamped out for SQLite and PostgreSQL.
//! Both accept `$n` placeholders and `RETURNING`; types are kept to TEXT, 64-bit
//! integers and bytes so that one statement means the same on both.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use latchkey_core::client::{AuthMethod, Client, ClientKind, GrantType};
use latchkey_core::jose::Alg;
use latchkey_core::model::{AuthorizationCode, Grant, KeyRecord, KeyState, Session, User};
use latchkey_core::pkce::CodeChallenge;
use latchkey_core::redirect_uri::RedirectUri;
use latchkey_core::scope::Scope;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::migrations::{self, Migration};
use crate::{
    CurrentRefresh, GrantFilter, KeyPlanner, KeyWrite, NewGrant, Redemption, Result, Revocation,
    Store, StoreError, SweepReport, Versions,
};

/// The embedded default: one SQLite file in WAL mode.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// Readers: WAL lets them run beside the writer.
    pool: SqlitePool,
    /// The one connection that writes. SQLite has one writer at a time; with several
    /// writing connections the losers sleep in SQLite's busy handler (1, 2, 5, 10 … ms),
    /// while here they wait in the pool's queue and are woken the moment it is free.
    writer: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode survives a process crash (kill -9); only an OS crash
            // can lose the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // No ping before each use: a connection to a local file does not go stale, and
        // with SQLite's driver a ping is one more round trip to the connection's thread,
        // as costly as the statement itself.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.clone())
            .await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .connect_with(opts)
            .await?;
        let store = SqliteStore { pool, writer };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let mut conn = self.writer.acquire().await?;
        // BEGIN IMMEDIATE takes the write lock up front, so two processes starting on one
        // file migrate one after the other.
        sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let result = apply_sqlite(&mut conn, migrations::MIGRATIONS).await;
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        sqlx::raw_sql(end).execute(&mut *conn).await?;
        result
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

async fn apply_sqlite(conn: &mut sqlx::SqliteConnection, list: &[Migration]) -> Result<()> {
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
        .execute(&mut *conn)
        .await?;
    let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")
        .fetch_one(&mut *conn)
        .await?
        .try_get("v")?;
    for m in list.iter().filter(|m| m.version > current) {
        sqlx::raw_sql(m.sql).execute(&mut *conn).await?;
        if !m.sqlite.is_empty() {
            sqlx::raw_sql(m.sqlite).execute(&mut *conn).await?;
        }
        sqlx::query(
            "INSERT INTO schema_version (version, applied_at) VALUES ($1, strftime('%s','now'))",
        )
        .bind(m.version)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// PostgreSQL, for any number of identical nodes.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    /// The same pool: PostgreSQL has row locks, so writers need no queue of their own.
    writer: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<PgStore> {
        let opts = sqlx::postgres::PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        let store = PgStore {
            writer: pool.clone(),
            pool,
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // A transaction-scoped advisory lock: nodes starting together migrate once.
        sqlx::query("SELECT pg_advisory_xact_lock(7439152001)")
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .execute(&mut *tx)
            .await?;
        let current: i64 =
            sqlx::query("SELECT COALESCE(MAX(version), 0)::BIGINT AS v FROM schema_version")
                .fetch_one(&mut *tx)
                .await?
                .try_get("v")?;
        for m in migrations::MIGRATIONS
            .iter()
            .filter(|m| m.version > current)
        {
            sqlx::raw_sql(sqlx::AssertSqlSafe(migrations::for_postgres(m.sql)))
                .execute(&mut *tx)
                .await?;
            if !m.postgres.is_empty() {
                sqlx::raw_sql(m.postgres).execute(&mut *tx).await?;
            }
            sqlx::query("INSERT INTO schema_version (version, applied_at) VALUES ($1, EXTRACT(EPOCH FROM now())::BIGINT)")
                .bind(m.version)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn conflict_or(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict,
        _ => StoreError::Database(e),
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn parse_list<T>(s: &str, f: impl Fn(&str) -> Option<T>, what: &str) -> Result<Vec<T>> {
    s.split(' ')
        .filter(|v| !v.is_empty())
        .map(|v| f(v).ok_or_else(|| corrupt(what)))
        .collect()
}

fn join<T>(items: &[T], f: impl Fn(&T) -> &str) -> String {
    items.iter().map(f).collect::<Vec<_>>().join(" ")
}

macro_rules! client_columns {
    () => {
        "client_id, name, kind, secret_hash, redirect_uris, grant_types, scopes, auth_methods, first_party, access_token_ttl, id_token_alg, post_logout_redirect_uris, audiences, resources, created_at"
    };
}
macro_rules! grant_columns {
    () => {
        "grant_id, user_id, client_id, scope, auth_time, session_hash, nonce, audience, refresh_generation, refresh_hash, created_at, last_used_at, expires_at, revoked_at, grace_used"
    };
}
macro_rules! code_columns {
    () => {
        "code_hash, client_id, user_id, session_hash, redirect_uri, scope, nonce, code_challenge, auth_time, expires_at, resource"
    };
}
macro_rules! user_columns {
    () => {
        "user_id, username, password_hash, email, email_verified, name, disabled, created_at"
    };
}

macro_rules! impl_store {
    ($store:ty, $db:ty, $name:literal) => {
        impl $store {
            async fn insert_grant_on(conn: &mut <$db as sqlx::Database>::Connection, g: &Grant) -> Result<()> {
                sqlx::query(
                    "INSERT INTO grants (grant_id, user_id, client_id, scope, auth_time, session_hash, nonce, audience, refresh_generation, refresh_hash, created_at, last_used_at, expires_at, revoked_at, grace_used) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                )
                .bind(&g.grant_id)
                .bind(&g.user_id)
                .bind(&g.client_id)
                .bind(g.scope.to_string())
                .bind(g.auth_time)
                .bind(&g.session_hash)
                .bind(&g.nonce)
                .bind(&g.audience)
                .bind(g.refresh_generation)
                .bind(&g.refresh_hash)
                .bind(g.created_at)
                .bind(g.last_used_at)
                .bind(g.expires_at)
                .bind(g.revoked_at)
                .bind(i64::from(g.grace_used))
                .execute(&mut *conn)
                .await
                .map_err(conflict_or)?;
                Ok(())
            }

            async fn insert_key_on(conn: &mut <$db as sqlx::Database>::Connection, k: &KeyRecord) -> Result<()> {
                sqlx::query(
                    "INSERT INTO signing_keys (kid, alg, state, private_pkcs8, created_at, state_since) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&k.kid)
                .bind(k.alg.as_str())
                .bind(k.state.as_str())
                .bind(&k.private_pkcs8)
                .bind(k.created_at)
                .bind(k.state_since)
                .execute(&mut *conn)
                .await
                .map_err(conflict_or)?;
                Ok(())
            }

            async fn keys_on(conn: &mut <$db as sqlx::Database>::Connection) -> Result<Vec<KeyRecord>> {
                let rows = sqlx::query(
                    "SELECT kid, alg, state, private_pkcs8, created_at, state_since FROM signing_keys ORDER BY created_at, kid",
                )
                .fetch_all(&mut *conn)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok(KeyRecord {
                            kid: r.try_get("kid")?,
                            alg: Alg::parse(&r.try_get::<String, _>("alg")?).ok_or_else(|| corrupt("key alg"))?,
                            state: KeyState::parse(&r.try_get::<String, _>("state")?).ok_or_else(|| corrupt("key state"))?,
                            private_pkcs8: r.try_get("private_pkcs8")?,
                            created_at: r.try_get("created_at")?,
                            state_since: r.try_get("state_since")?,
                        })
                    })
                    .collect()
            }

            fn client_from_row(row: &<$db as sqlx::Database>::Row) -> Result<Client> {
                let redirect: String = row.try_get("redirect_uris")?;
                let redirect: Vec<String> = serde_json::from_str(&redirect).map_err(|_| corrupt("client redirect_uris"))?;
                let post_logout: String = row.try_get("post_logout_redirect_uris")?;
                let post_logout: Vec<String> =
                    serde_json::from_str(&post_logout).map_err(|_| corrupt("client post_logout_redirect_uris"))?;
                Ok(Client {
                    client_id: row.try_get("client_id")?,
                    name: row.try_get("name")?,
                    kind: ClientKind::parse(&row.try_get::<String, _>("kind")?).ok_or_else(|| corrupt("client kind"))?,
                    secret_hash: row.try_get("secret_hash")?,
                    redirect_uris: redirect.into_iter().map(RedirectUri::from_stored).collect(),
                    grant_types: parse_list(&row.try_get::<String, _>("grant_types")?, GrantType::parse, "client grant_types")?,
                    scopes: Scope::parse(&row.try_get::<String, _>("scopes")?).map_err(|_| corrupt("client scopes"))?,
                    auth_methods: parse_list(&row.try_get::<String, _>("auth_methods")?, AuthMethod::parse, "client auth_methods")?,
                    first_party: row.try_get::<i64, _>("first_party")? != 0,
                    access_token_ttl: row.try_get("access_token_ttl")?,
                    id_token_alg: Alg::parse(&row.try_get::<String, _>("id_token_alg")?).ok_or_else(|| corrupt("client id_token_alg"))?,
                    post_logout_redirect_uris: post_logout.into_iter().map(RedirectUri::from_stored).collect(),
                    audiences: row.try_get::<String, _>("audiences")?.split(' ').filter(|a| !a.is_empty()).map(str::to_owned).collect(),
                    resources: row.try_get::<String, _>("resources")?.split(' ').filter(|a| !a.is_empty()).map(str::to_owned).collect(),
                    created_at: row.try_get("created_at")?,
                })
            }

            fn user_from_row(row: &<$db as sqlx::Database>::Row) -> Result<User> {
                Ok(User {
                    user_id: row.try_get("user_id")?,
                    username: row.try_get("username")?,
                    password_hash: row.try_get("password_hash")?,
                    email: row.try_get("email")?,
                    email_verified: row.try_get::<i64, _>("email_verified")? != 0,
                    name: row.try_get("name")?,
                    disabled: row.try_get::<i64, _>("disabled")? != 0,
                    created_at: row.try_get("created_at")?,
                })
            }

            fn grant_from_row(row: &<$db as sqlx::Database>::Row) -> Result<Grant> {
                Ok(Grant {
                    grant_id: row.try_get("grant_id")?,
                    user_id: row.try_get("user_id")?,
                    client_id: row.try_get("client_id")?,
                    scope: Scope::parse(&row.try_get::<String, _>("scope")?).map_err(|_| corrupt("grant scope"))?,
                    auth_time: row.try_get("auth_time")?,
                    session_hash: row.try_get("session_hash")?,
                    nonce: row.try_get("nonce")?,
                    audience: row.try_get("audience")?,
                    refresh_generation: row.try_get("refresh_generation")?,
                    refresh_hash: row.try_get("refresh_hash")?,
                    created_at: row.try_get("created_at")?,
                    last_used_at: row.try_get("last_used_at")?,
                    expires_at: row.try_get("expires_at")?,
                    revoked_at: row.try_get("revoked_at")?,
                    grace_used: row.try_get::<i64, _>("grace_used")? != 0,
                })
            }

            fn code_from_row(row: &<$db as sqlx::Database>::Row) -> Result<AuthorizationCode> {
                Ok(AuthorizationCode {
                    code_hash: row.try_get("code_hash")?,
                    client_id: row.try_get("client_id")?,
                    user_id: row.try_get("user_id")?,
                    session_hash: row.try_get("session_hash")?,
                    redirect_uri: row.try_get("redirect_uri")?,
                    scope: Scope::parse(&row.try_get::<String, _>("scope")?).map_err(|_| corrupt("code scope"))?,
                    nonce: row.try_get("nonce")?,
                    code_challenge: CodeChallenge::from_stored(row.try_get("code_challenge")?),
                    auth_time: row.try_get("auth_time")?,
                    expires_at: row.try_get("expires_at")?,
                    resource: row.try_get("resource")?,
                })
            }
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $name
            }

            async fn create_client(&self, c: &Client) -> Result<()> {
                let redirect: Vec<&str> = c.redirect_uris.iter().map(RedirectUri::as_str).collect();
                let redirect = serde_json::to_string(&redirect).map_err(|_| corrupt("client redirect_uris"))?;
                let post_logout: Vec<&str> = c.post_logout_redirect_uris.iter().map(RedirectUri::as_str).collect();
                let post_logout = serde_json::to_string(&post_logout).map_err(|_| corrupt("client post_logout_redirect_uris"))?;
                sqlx::query(
                    "INSERT INTO clients (client_id, name, kind, secret_hash, redirect_uris, grant_types, scopes, auth_methods, first_party, access_token_ttl, id_token_alg, post_logout_redirect_uris, audiences, resources, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                )
                .bind(&c.client_id)
                .bind(&c.name)
                .bind(c.kind.as_str())
                .bind(&c.secret_hash)
                .bind(redirect)
                .bind(join(&c.grant_types, |g| g.as_str()))
                .bind(c.scopes.to_string())
                .bind(join(&c.auth_methods, |m| m.as_str()))
                .bind(i64::from(c.first_party))
                .bind(c.access_token_ttl)
                .bind(c.id_token_alg.as_str())
                .bind(post_logout)
                .bind(c.audiences.join(" "))
                .bind(c.resources.join(" "))
                .bind(c.created_at)
                .execute(&self.writer)
                .await
                .map_err(conflict_or)?;
                Ok(())
            }

            async fn client(&self, client_id: &str) -> Result<Option<Client>> {
                let row = sqlx::query(concat!("SELECT ", client_columns!(), " FROM clients WHERE client_id = $1"))
                    .bind(client_id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::client_from_row).transpose()
            }

            async fn list_clients(&self) -> Result<Vec<Client>> {
                let rows = sqlx::query(concat!("SELECT ", client_columns!(), " FROM clients ORDER BY created_at, client_id"))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::client_from_row).collect()
            }

            async fn delete_client(&self, client_id: &str, now: i64) -> Result<bool> {
                let mut tx = self.writer.begin().await?;
                // One feed entry for the client covers all its tokens, user and
                // client-credentials alike (DESIGN §4).
                sqlx::query("INSERT INTO revocations (kind, subject, revoked_at) VALUES ('client', $1, $2) ON CONFLICT (kind, subject) DO UPDATE SET revoked_at = excluded.revoked_at")
                    .bind(client_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE grants SET revoked_at = $2 WHERE client_id = $1 AND revoked_at IS NULL")
                    .bind(client_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM codes WHERE client_id = $1").bind(client_id).execute(&mut *tx).await?;
                let n = sqlx::query("DELETE FROM clients WHERE client_id = $1")
                    .bind(client_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(n > 0)
            }

            async fn set_client_secret(&self, client_id: &str, secret_hash: &str) -> Result<bool> {
                let n = sqlx::query("UPDATE clients SET secret_hash = $2 WHERE client_id = $1 AND kind = 'confidential'")
                    .bind(client_id)
                    .bind(secret_hash)
                    .execute(&self.writer)
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn versions(&self) -> Result<Versions> {
                let rows = sqlx::query("SELECT name, value FROM change_counters")
                    .fetch_all(&self.pool)
                    .await?;
                let mut v = Versions::default();
                for row in rows {
                    let name: String = row.try_get("name")?;
                    let value: i64 = row.try_get("value")?;
                    match name.as_str() {
                        "clients" => v.clients = value,
                        "users" => v.users = value,
                        _ => {}
                    }
                }
                Ok(v)
            }

            async fn create_user(&self, u: &User) -> Result<()> {
                sqlx::query(
                    "INSERT INTO users (user_id, username, password_hash, email, email_verified, name, disabled, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&u.user_id)
                .bind(&u.username)
                .bind(&u.password_hash)
                .bind(&u.email)
                .bind(i64::from(u.email_verified))
                .bind(&u.name)
                .bind(i64::from(u.disabled))
                .bind(u.created_at)
                .execute(&self.writer)
                .await
                .map_err(conflict_or)?;
                Ok(())
            }

            async fn user(&self, user_id: &str) -> Result<Option<User>> {
                let row = sqlx::query(concat!("SELECT ", user_columns!(), " FROM users WHERE user_id = $1"))
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::user_from_row).transpose()
            }

            async fn user_by_username(&self, normalized: &str) -> Result<Option<User>> {
                let row = sqlx::query(concat!("SELECT ", user_columns!(), " FROM users WHERE username = $1"))
                    .bind(normalized)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::user_from_row).transpose()
            }

            async fn list_users(&self) -> Result<Vec<User>> {
                let rows = sqlx::query(concat!("SELECT ", user_columns!(), " FROM users ORDER BY username"))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::user_from_row).collect()
            }

            async fn delete_user(&self, user_id: &str, now: i64) -> Result<bool> {
                let mut tx = self.writer.begin().await?;
                sqlx::query("INSERT INTO revocations (kind, subject, revoked_at) VALUES ('user', $1, $2) ON CONFLICT (kind, subject) DO UPDATE SET revoked_at = excluded.revoked_at")
                    .bind(user_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE grants SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
                    .bind(user_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
                sqlx::query("DELETE FROM codes WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
                let n = sqlx::query("DELETE FROM users WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(n > 0)
            }

            async fn create_session(&self, s: &Session) -> Result<()> {
                sqlx::query("INSERT INTO sessions (session_hash, user_id, auth_time, expires_at) VALUES ($1, $2, $3, $4)")
                    .bind(&s.session_hash)
                    .bind(&s.user_id)
                    .bind(s.auth_time)
                    .bind(s.expires_at)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn session(&self, session_hash: &str, now: i64) -> Result<Option<Session>> {
                let row = sqlx::query(
                    "SELECT session_hash, user_id, auth_time, expires_at FROM sessions WHERE session_hash = $1 AND expires_at > $2",
                )
                .bind(session_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|r| {
                    Ok(Session {
                        session_hash: r.try_get("session_hash")?,
                        user_id: r.try_get("user_id")?,
                        auth_time: r.try_get("auth_time")?,
                        expires_at: r.try_get("expires_at")?,
                    })
                })
                .transpose()
            }

            async fn delete_session(&self, session_hash: &str) -> Result<()> {
                sqlx::query("DELETE FROM sessions WHERE session_hash = $1").bind(session_hash).execute(&self.writer).await?;
                Ok(())
            }

            async fn insert_code(&self, c: &AuthorizationCode) -> Result<()> {
                sqlx::query(
                    "INSERT INTO codes (code_hash, client_id, user_id, session_hash, redirect_uri, scope, nonce, code_challenge, auth_time, expires_at, resource) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(&c.code_hash)
                .bind(&c.client_id)
                .bind(&c.user_id)
                .bind(&c.session_hash)
                .bind(&c.redirect_uri)
                .bind(c.scope.to_string())
                .bind(&c.nonce)
                .bind(c.code_challenge.as_str())
                .bind(c.auth_time)
                .bind(c.expires_at)
                .bind(&c.resource)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn redeem_code(&self, code_hash: &str, grant: &NewGrant, now: i64) -> Result<Redemption> {
                let mut tx = self.writer.begin().await?;
                // REL-01: one conditional statement; of N racing redemptions one wins.
                let row = sqlx::query(concat!(
                    "UPDATE codes SET redeemed_at = $2, grant_id = $3 WHERE code_hash = $1 AND redeemed_at IS NULL \
                     AND EXISTS (SELECT 1 FROM clients WHERE clients.client_id = codes.client_id) RETURNING ",
                    code_columns!()
                ))
                .bind(code_hash)
                .bind(now)
                .bind(&grant.grant_id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    drop(tx);
                    let row = sqlx::query("SELECT grant_id, redeemed_at FROM codes WHERE code_hash = $1")
                        .bind(code_hash)
                        .fetch_optional(&self.pool)
                        .await?;
                    let redeemed_at: Option<i64> = match &row {
                        Some(r) => r.try_get("redeemed_at")?,
                        None => None,
                    };
                    return Ok(match (row, redeemed_at) {
                        (Some(r), Some(_)) => Redemption::AlreadyRedeemed { grant_id: r.try_get("grant_id")? },
                        // Not redeemed and still not redeemable: its client was deleted
                        // (a server may have issued it just after, from a cached client).
                        _ => Redemption::NotFound,
                    });
                };
                let code = Self::code_from_row(&row)?;
                Self::insert_grant_on(&mut tx, &grant.grant_from(&code, now)).await?;
                tx.commit().await?;
                Ok(Redemption::Redeemed(Box::new(code)))
            }

            async fn insert_grant(&self, g: &Grant) -> Result<()> {
                let mut conn = self.writer.acquire().await?;
                Self::insert_grant_on(&mut conn, g).await
            }

            async fn grant(&self, grant_id: &str) -> Result<Option<Grant>> {
                let row = sqlx::query(concat!("SELECT ", grant_columns!(), " FROM grants WHERE grant_id = $1"))
                    .bind(grant_id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::grant_from_row).transpose()
            }

            async fn active_grants(&self, user_id: &str, client_id: &str, now: i64) -> Result<Vec<Grant>> {
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    grant_columns!(),
                    " FROM grants WHERE user_id = $1 AND client_id = $2 AND revoked_at IS NULL AND expires_at > $3 ORDER BY created_at DESC LIMIT 50"
                ))
                .bind(user_id)
                .bind(client_id)
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::grant_from_row).collect()
            }

            async fn rotate_refresh(&self, grant_id: &str, from: i64, new_hash: &str, now: i64, expires_at: i64) -> Result<bool> {
                let n = sqlx::query(
                    "UPDATE grants SET refresh_generation = refresh_generation + 1, refresh_hash = $3, last_used_at = $4, expires_at = $5, grace_used = 0 WHERE grant_id = $1 AND refresh_generation = $2 AND revoked_at IS NULL",
                )
                .bind(grant_id)
                .bind(from)
                .bind(new_hash)
                .bind(now)
                .bind(expires_at)
                .execute(&self.writer)
                .await?
                .rows_affected();
                Ok(n == 1)
            }

            async fn rotate_current_refresh(&self, r: &CurrentRefresh<'_>) -> Result<Option<Grant>> {
                // The new expiry is the earlier of the absolute and the idle limit
                // (RFC 9700 §4.14.2), as `CASE` because SQLite has no LEAST.
                let row = sqlx::query(concat!(
                    "UPDATE grants SET refresh_generation = refresh_generation + 1, refresh_hash = $5, last_used_at = $7, \
                     expires_at = CASE WHEN created_at + $8 < $7 + $9 THEN created_at + $8 ELSE $7 + $9 END, grace_used = 0 \
                     WHERE grant_id = $1 AND client_id = $2 AND refresh_generation = $3 AND refresh_hash = $4 \
                     AND revoked_at IS NULL AND expires_at > $7 AND ($6 IS NULL OR audience = $6) RETURNING ",
                    grant_columns!()
                ))
                .bind(r.grant_id)
                .bind(r.client_id)
                .bind(r.generation)
                .bind(r.current_hash)
                .bind(r.new_hash)
                .bind(r.audience)
                .bind(r.now)
                .bind(r.absolute_ttl)
                .bind(r.idle_ttl)
                .fetch_optional(&self.writer)
                .await?;
                row.as_ref().map(Self::grant_from_row).transpose()
            }

            async fn use_refresh_grace(&self, grant_id: &str, generation: i64) -> Result<bool> {
                let n = sqlx::query(
                    "UPDATE grants SET grace_used = 1 WHERE grant_id = $1 AND refresh_generation = $2 AND grace_used = 0 AND revoked_at IS NULL",
                )
                .bind(grant_id)
                .bind(generation)
                .execute(&self.writer)
                .await?
                .rows_affected();
                Ok(n == 1)
            }

            async fn revoke_grant(&self, grant_id: &str, now: i64) -> Result<bool> {
                let mut tx = self.writer.begin().await?;
                let n = sqlx::query("UPDATE grants SET revoked_at = $2 WHERE grant_id = $1 AND revoked_at IS NULL")
                    .bind(grant_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if n == 1 {
                    sqlx::query("INSERT INTO revocations (kind, subject, revoked_at) VALUES ('grant', $1, $2) ON CONFLICT (kind, subject) DO NOTHING")
                        .bind(grant_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(n == 1)
            }

            async fn revoke_grants(&self, f: &GrantFilter, now: i64) -> Result<u64> {
                let mut tx = self.writer.begin().await?;
                sqlx::query(
                    "INSERT INTO revocations (kind, subject, revoked_at) SELECT 'grant', grant_id, $4 FROM grants WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR client_id = $2) AND ($3 IS NULL OR session_hash = $3) AND revoked_at IS NULL ON CONFLICT (kind, subject) DO NOTHING",
                )
                .bind(&f.user_id)
                .bind(&f.client_id)
                .bind(&f.session_hash)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let n = sqlx::query(
                    "UPDATE grants SET revoked_at = $4 WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR client_id = $2) AND ($3 IS NULL OR session_hash = $3) AND revoked_at IS NULL",
                )
                .bind(&f.user_id)
                .bind(&f.client_id)
                .bind(&f.session_hash)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(n)
            }

            async fn list_grants(&self, f: &GrantFilter, now: i64, limit: i64) -> Result<Vec<Grant>> {
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    grant_columns!(),
                    " FROM grants WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR client_id = $2) AND ($3 IS NULL OR session_hash = $3) AND ($4 = 0 OR (revoked_at IS NULL AND expires_at > $5)) ORDER BY created_at DESC, grant_id LIMIT $6"
                ))
                .bind(&f.user_id)
                .bind(&f.client_id)
                .bind(&f.session_hash)
                .bind(i64::from(f.active_only))
                .bind(now)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::grant_from_row).collect()
            }

            async fn revocations_since(&self, since: i64, limit: i64) -> Result<Vec<Revocation>> {
                let rows = sqlx::query(
                    "SELECT kind, subject, revoked_at FROM revocations WHERE revoked_at >= $1 ORDER BY revoked_at, kind, subject LIMIT $2",
                )
                .bind(since)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| Ok(Revocation { kind: r.try_get("kind")?, subject: r.try_get("subject")?, revoked_at: r.try_get("revoked_at")? }))
                    .collect()
            }

            async fn sweep(&self, now: i64, horizon: i64, limit: i64) -> Result<Option<SweepReport>> {
                let Some(mut tx) = self.begin_locked(LOCK_SWEEP).await? else { return Ok(None) };
                // Each statement deletes one bounded batch found through an index on the
                // expiry column: cost grows with the batch, never with history.
                let mut report = SweepReport::default();
                report.codes = sqlx::query("DELETE FROM codes WHERE code_hash IN (SELECT code_hash FROM codes WHERE expires_at < $1 LIMIT $2)")
                    .bind(now)
                    .bind(limit)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                report.sessions = sqlx::query(
                    "DELETE FROM sessions WHERE session_hash IN (SELECT session_hash FROM sessions WHERE expires_at < $1 LIMIT $2)",
                )
                .bind(now)
                .bind(limit)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                // A dead grant stays until the last access token it could have minted
                // has expired, so introspection answers stay honest until then.
                report.grants = sqlx::query("DELETE FROM grants WHERE grant_id IN (SELECT grant_id FROM grants WHERE expires_at < $1 LIMIT $2)")
                    .bind(horizon)
                    .bind(limit)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                report.grants += sqlx::query(
                    "DELETE FROM grants WHERE grant_id IN (SELECT grant_id FROM grants WHERE revoked_at < $1 LIMIT $2)",
                )
                .bind(horizon)
                .bind(limit)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                report.revocations = sqlx::query(
                    "DELETE FROM revocations WHERE (kind, subject) IN (SELECT kind, subject FROM revocations WHERE revoked_at < $1 LIMIT $2)",
                )
                .bind(horizon)
                .bind(limit)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(Some(report))
            }

            async fn row_counts(&self) -> Result<Vec<(&'static str, i64)>> {
                let mut out = Vec::new();
                for (table, sql) in [
                    ("clients", "SELECT COUNT(*) AS n FROM clients"),
                    ("users", "SELECT COUNT(*) AS n FROM users"),
                    ("sessions", "SELECT COUNT(*) AS n FROM sessions"),
                    ("grants", "SELECT COUNT(*) AS n FROM grants"),
                    ("codes", "SELECT COUNT(*) AS n FROM codes"),
                    ("signing_keys", "SELECT COUNT(*) AS n FROM signing_keys"),
                    ("server_secrets", "SELECT COUNT(*) AS n FROM server_secrets"),
                    ("revocations", "SELECT COUNT(*) AS n FROM revocations"),
                    ("change_counters", "SELECT COUNT(*) AS n FROM change_counters"),
                ] {
                    let n: i64 = sqlx::query(sql).fetch_one(&self.pool).await?.try_get("n")?;
                    out.push((table, n));
                }
                Ok(out)
            }

            async fn insert_key(&self, k: &KeyRecord) -> Result<()> {
                let mut conn = self.writer.acquire().await?;
                Self::insert_key_on(&mut conn, k).await
            }

            async fn keys(&self) -> Result<Vec<KeyRecord>> {
                let mut conn = self.pool.acquire().await?;
                Self::keys_on(&mut conn).await
            }

            async fn maintain_keys(&self, plan: &KeyPlanner, now: i64) -> Result<Option<Vec<KeyWrite>>> {
                let Some(mut tx) = self.begin_locked(LOCK_KEYS).await? else { return Ok(None) };
                let keys = Self::keys_on(&mut tx).await?;
                let writes = plan(&keys).map_err(StoreError::Plan)?;
                for w in &writes {
                    match w {
                        KeyWrite::Insert(k) => Self::insert_key_on(&mut tx, k).await?,
                        KeyWrite::Transition { kid, from, to } => {
                            sqlx::query("UPDATE signing_keys SET state = $3, state_since = $4 WHERE kid = $1 AND state = $2")
                                .bind(kid)
                                .bind(from.as_str())
                                .bind(to.as_str())
                                .bind(now)
                                .execute(&mut *tx)
                                .await?;
                        }
                        KeyWrite::Revoke { kid } => {
                            sqlx::query("UPDATE signing_keys SET state = 'retired', state_since = $2 WHERE kid = $1")
                                .bind(kid)
                                .bind(now)
                                .execute(&mut *tx)
                                .await?;
                            sqlx::query("INSERT INTO revocations (kind, subject, revoked_at) VALUES ('key', $1, $2) ON CONFLICT (kind, subject) DO NOTHING")
                                .bind(kid)
                                .bind(now)
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                }
                tx.commit().await?;
                Ok(Some(writes))
            }

            async fn server_secret(&self, name: &str, fresh: &str) -> Result<String> {
                sqlx::query("INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                    .bind(name)
                    .bind(fresh)
                    .execute(&self.writer)
                    .await?;
                let row = sqlx::query("SELECT value FROM server_secrets WHERE name = $1").bind(name).fetch_one(&self.pool).await?;
                Ok(row.try_get("value")?)
            }
        }
    };
}

const LOCK_SWEEP: i64 = 7_439_152_002;
const LOCK_KEYS: i64 = 7_439_152_003;

impl SqliteStore {
    /// SQLite has one writer at a time: `BEGIN IMMEDIATE` takes the write lock up front
    /// (waiting for it up to the busy timeout), so the transaction is the lock.
    async fn begin_locked(
        &self,
        _lock: i64,
    ) -> Result<Option<sqlx::Transaction<'static, sqlx::Sqlite>>> {
        Ok(Some(self.writer.begin_with("BEGIN IMMEDIATE").await?))
    }
}

impl PgStore {
    /// A transaction-scoped advisory lock: one node proceeds, the others skip.
    async fn begin_locked(
        &self,
        lock: i64,
    ) -> Result<Option<sqlx::Transaction<'static, sqlx::Postgres>>> {
        let mut tx = self.writer.begin().await?;
        let locked: bool = sqlx::query("SELECT pg_try_advisory_xact_lock($1) AS locked")
            .bind(lock)
            .fetch_one(&mut *tx)
            .await?
            .try_get("locked")?;
        Ok(locked.then_some(tx))
    }
}

impl_store!(SqliteStore, sqlx::Sqlite, "sqlite");
impl_store!(PgStore, sqlx::Postgres, "postgres");
