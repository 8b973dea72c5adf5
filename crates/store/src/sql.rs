//! The SQL behind [`Store`], written once for SQLite and PostgreSQL. Both accept `$n`
//! placeholders and `RETURNING`; types are kept to TEXT, 64-bit integers and bytes so
//! that one statement means the same on both. The drivers are in `sqlite.rs` and
//! `postgres.rs`, behind the small interface of `db.rs`.

use std::path::Path;

use async_trait::async_trait;
use latchkey_core::client::{AuthMethod, Client, ClientKind, GrantType};
use latchkey_core::jose::Alg;
use latchkey_core::model::{AuthorizationCode, Grant, KeyRecord, KeyState, Session, User};
use latchkey_core::redirect_uri::RedirectUri;
use latchkey_core::scope::Scope;

use crate::db::{Backend, Cols, Exec, Value, args};
use crate::postgres::Postgres;
use crate::sqlite::Sqlite;
use crate::{
    CurrentRefresh, GrantFilter, KeyPlanner, KeyWrite, NewGrant, Redemption, Result, Revocation,
    Store, StoreError, SweepReport, Versions,
};

/// A [`Store`] on a SQL database.
#[derive(Debug)]
pub struct SqlStore<B> {
    db: B,
}

/// The embedded default: one SQLite file in WAL mode.
pub type SqliteStore = SqlStore<Sqlite>;
/// PostgreSQL, for any number of identical nodes.
pub type PgStore = SqlStore<Postgres>;

impl SqlStore<Sqlite> {
    /// Opens (creating if needed) the database file and applies migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        Ok(SqlStore {
            db: Sqlite::open(path).await?,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.db.path()
    }
}

impl SqlStore<Postgres> {
    /// Connects and applies migrations (once, however many nodes start together).
    pub async fn connect(url: &str) -> Result<PgStore> {
        Ok(SqlStore {
            db: Postgres::connect(url).await?,
        })
    }

    pub fn pool(&self) -> &sqlx::PgPool {
        self.db.pool()
    }
}

const LOCK_SWEEP: i64 = 7_439_152_002;
const LOCK_KEYS: i64 = 7_439_152_003;

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

fn words(s: &str) -> Vec<String> {
    s.split(' ')
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
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
macro_rules! user_columns {
    () => {
        "user_id, username, password_hash, email, email_verified, name, disabled, created_at"
    };
}

/// A statement over the grants a [`GrantFilter`] selects, with `$1`, `$2`, `$3` bound
/// to its user, client and session: each field given is a plain column match, each
/// one absent the constant `$n IS NULL`, so the planner sees which index serves. (One
/// text with `($1 IS NULL OR user_id = $1)` for every field can use none: SQLite plans
/// it as a scan of every grant, on each account page and each logout.)
macro_rules! filtered_grants {
    ($f:expr, [$($head:tt)*], $tail:literal) => {
        match (
            $f.user_id.is_some(),
            $f.client_id.is_some(),
            $f.session_hash.is_some(),
        ) {
            (true, true, true) => filtered_grants!(@ [$($head)*], $tail, "user_id = $1", "client_id = $2", "session_hash = $3"),
            (true, true, false) => filtered_grants!(@ [$($head)*], $tail, "user_id = $1", "client_id = $2", "$3 IS NULL"),
            (true, false, true) => filtered_grants!(@ [$($head)*], $tail, "user_id = $1", "$2 IS NULL", "session_hash = $3"),
            (true, false, false) => filtered_grants!(@ [$($head)*], $tail, "user_id = $1", "$2 IS NULL", "$3 IS NULL"),
            (false, true, true) => filtered_grants!(@ [$($head)*], $tail, "$1 IS NULL", "client_id = $2", "session_hash = $3"),
            (false, true, false) => filtered_grants!(@ [$($head)*], $tail, "$1 IS NULL", "client_id = $2", "$3 IS NULL"),
            (false, false, true) => filtered_grants!(@ [$($head)*], $tail, "$1 IS NULL", "$2 IS NULL", "session_hash = $3"),
            (false, false, false) => filtered_grants!(@ [$($head)*], $tail, "$1 IS NULL", "$2 IS NULL", "$3 IS NULL"),
        }
    };
    (@ [$($head:tt)*], $tail:literal, $user:literal, $client:literal, $session:literal) => {
        concat!($($head)*, " WHERE ", $user, " AND ", $client, " AND ", $session, " AND ", $tail)
    };
}

/// Enters the active grants a filter selects in the revocation feed ($4: now).
fn enter_filtered_revocations(f: &GrantFilter) -> &'static str {
    filtered_grants!(
        f,
        [
            "INSERT INTO revocations (kind, subject, revoked_at) SELECT 'grant', grant_id, $4 FROM grants"
        ],
        "revoked_at IS NULL ON CONFLICT (kind, subject) DO NOTHING"
    )
}

/// Revokes the active grants a filter selects ($4: now).
fn revoke_filtered(f: &GrantFilter) -> &'static str {
    filtered_grants!(
        f,
        ["UPDATE grants SET revoked_at = $4"],
        "revoked_at IS NULL"
    )
}

/// The grants a filter selects, newest first ($4: active only, $5: now, $6: limit).
fn list_filtered(f: &GrantFilter) -> &'static str {
    filtered_grants!(
        f,
        ["SELECT ", grant_columns!(), " FROM grants"],
        "($4 = 0 OR (revoked_at IS NULL AND expires_at > $5)) ORDER BY created_at DESC, grant_id LIMIT $6"
    )
}

fn client_from_row(row: &dyn Cols) -> Result<Client> {
    let redirect: Vec<String> = serde_json::from_str(&row.text("redirect_uris")?)
        .map_err(|_| corrupt("client redirect_uris"))?;
    let post_logout: Vec<String> = serde_json::from_str(&row.text("post_logout_redirect_uris")?)
        .map_err(|_| corrupt("client post_logout_redirect_uris"))?;
    Ok(Client {
        client_id: row.text("client_id")?,
        name: row.text("name")?,
        kind: ClientKind::parse(&row.text("kind")?).ok_or_else(|| corrupt("client kind"))?,
        secret_hash: row.opt_text("secret_hash")?,
        redirect_uris: redirect.into_iter().map(RedirectUri::from_stored).collect(),
        grant_types: parse_list(
            &row.text("grant_types")?,
            GrantType::parse,
            "client grant_types",
        )?,
        scopes: Scope::parse(&row.text("scopes")?).map_err(|_| corrupt("client scopes"))?,
        auth_methods: parse_list(
            &row.text("auth_methods")?,
            AuthMethod::parse,
            "client auth_methods",
        )?,
        first_party: row.int("first_party")? != 0,
        access_token_ttl: row.int("access_token_ttl")?,
        id_token_alg: Alg::parse(&row.text("id_token_alg")?)
            .ok_or_else(|| corrupt("client id_token_alg"))?,
        post_logout_redirect_uris: post_logout
            .into_iter()
            .map(RedirectUri::from_stored)
            .collect(),
        audiences: words(&row.text("audiences")?),
        resources: words(&row.text("resources")?),
        created_at: row.int("created_at")?,
    })
}

fn user_from_row(row: &dyn Cols) -> Result<User> {
    Ok(User {
        user_id: row.text("user_id")?,
        username: row.text("username")?,
        password_hash: row.text("password_hash")?,
        email: row.opt_text("email")?,
        email_verified: row.int("email_verified")? != 0,
        name: row.opt_text("name")?,
        disabled: row.int("disabled")? != 0,
        created_at: row.int("created_at")?,
    })
}

fn scope_from_row(r: &dyn Cols) -> Result<Scope> {
    Scope::parse(&r.text("scope")?).map_err(|_| corrupt("grant scope"))
}

fn grant_from_row(row: &dyn Cols) -> Result<Grant> {
    Ok(Grant {
        grant_id: row.text("grant_id")?,
        user_id: row.text("user_id")?,
        client_id: row.text("client_id")?,
        scope: Scope::parse(&row.text("scope")?).map_err(|_| corrupt("grant scope"))?,
        auth_time: row.int("auth_time")?,
        session_hash: row.opt_text("session_hash")?,
        nonce: row.opt_text("nonce")?,
        audience: row.opt_text("audience")?,
        refresh_generation: row.int("refresh_generation")?,
        refresh_hash: row.opt_text("refresh_hash")?,
        created_at: row.int("created_at")?,
        last_used_at: row.int("last_used_at")?,
        expires_at: row.int("expires_at")?,
        revoked_at: row.opt_int("revoked_at")?,
        grace_used: row.int("grace_used")? != 0,
    })
}

fn session_from_row(row: &dyn Cols) -> Result<Session> {
    Ok(Session {
        session_hash: row.text("session_hash")?,
        user_id: row.text("user_id")?,
        auth_time: row.int("auth_time")?,
        expires_at: row.int("expires_at")?,
    })
}

fn key_from_row(row: &dyn Cols) -> Result<KeyRecord> {
    Ok(KeyRecord {
        kid: row.text("kid")?,
        alg: Alg::parse(&row.text("alg")?).ok_or_else(|| corrupt("key alg"))?,
        state: KeyState::parse(&row.text("state")?).ok_or_else(|| corrupt("key state"))?,
        private_pkcs8: row.bytes("private_pkcs8")?,
        created_at: row.int("created_at")?,
        state_since: row.int("state_since")?,
    })
}

fn revocation_from_row(row: &dyn Cols) -> Result<Revocation> {
    Ok(Revocation {
        kind: row.text("kind")?,
        subject: row.text("subject")?,
        revoked_at: row.int("revoked_at")?,
    })
}

/// Inserts a grant as it is (`$1`..`$15`: [`grant_values`]).
const INSERT_GRANT: &str = concat!(
    "INSERT INTO grants (",
    grant_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
);

/// A grant's columns, in `grant_columns!()` order.
fn grant_values<'a>(g: &'a Grant, scope: &'a str) -> [Value<'a>; 15] {
    [
        Value::from(&g.grant_id),
        Value::from(&g.user_id),
        Value::from(&g.client_id),
        Value::from(scope),
        Value::from(g.auth_time),
        Value::from(&g.session_hash),
        Value::from(&g.nonce),
        Value::from(&g.audience),
        Value::from(g.refresh_generation),
        Value::from(&g.refresh_hash),
        Value::from(g.created_at),
        Value::from(g.last_used_at),
        Value::from(g.expires_at),
        Value::from(g.revoked_at),
        Value::from(g.grace_used),
    ]
}

async fn insert_key_on(e: &mut impl Exec, k: &KeyRecord) -> Result<()> {
    e.execute(
        "INSERT INTO signing_keys (kid, alg, state, private_pkcs8, created_at, state_since) VALUES ($1, $2, $3, $4, $5, $6)",
        args![&k.kid, k.alg.as_str(), k.state.as_str(), &k.private_pkcs8, k.created_at, k.state_since],
    )
    .await?;
    Ok(())
}

async fn keys_on(e: &mut impl Exec) -> Result<Vec<KeyRecord>> {
    e.fetch_all(
        "SELECT kid, alg, state, private_pkcs8, created_at, state_since FROM signing_keys ORDER BY created_at, kid",
        args![],
        key_from_row,
    )
    .await
}

fn count(row: &dyn Cols) -> Result<i64> {
    row.int("n")
}

#[async_trait]
impl<B: Backend> Store for SqlStore<B> {
    fn backend(&self) -> &'static str {
        B::NAME
    }

    async fn create_client(&self, c: &Client) -> Result<()> {
        let redirect: Vec<&str> = c.redirect_uris.iter().map(RedirectUri::as_str).collect();
        let redirect =
            serde_json::to_string(&redirect).map_err(|_| corrupt("client redirect_uris"))?;
        let post_logout: Vec<&str> = c
            .post_logout_redirect_uris
            .iter()
            .map(RedirectUri::as_str)
            .collect();
        let post_logout = serde_json::to_string(&post_logout)
            .map_err(|_| corrupt("client post_logout_redirect_uris"))?;
        let grant_types = join(&c.grant_types, |g| g.as_str());
        let scopes = c.scopes.to_string();
        let auth_methods = join(&c.auth_methods, |m| m.as_str());
        let audiences = c.audiences.join(" ");
        let resources = c.resources.join(" ");
        self.db
            .writer()
            .await?
            .execute(
                "INSERT INTO clients (client_id, name, kind, secret_hash, redirect_uris, grant_types, scopes, auth_methods, first_party, access_token_ttl, id_token_alg, post_logout_redirect_uris, audiences, resources, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                args![
                    &c.client_id,
                    &c.name,
                    c.kind.as_str(),
                    &c.secret_hash,
                    &redirect,
                    &grant_types,
                    &scopes,
                    &auth_methods,
                    c.first_party,
                    c.access_token_ttl,
                    c.id_token_alg.as_str(),
                    &post_logout,
                    &audiences,
                    &resources,
                    c.created_at,
                ],
            )
            .await?;
        Ok(())
    }

    async fn client(&self, client_id: &str) -> Result<Option<Client>> {
        self.db
            .reader()
            .await?
            .fetch_optional(
                concat!(
                    "SELECT ",
                    client_columns!(),
                    " FROM clients WHERE client_id = $1"
                ),
                args![client_id],
                client_from_row,
            )
            .await
    }

    async fn list_clients(&self) -> Result<Vec<Client>> {
        self.db
            .reader()
            .await?
            .fetch_all(
                concat!(
                    "SELECT ",
                    client_columns!(),
                    " FROM clients ORDER BY created_at, client_id"
                ),
                args![],
                client_from_row,
            )
            .await
    }

    async fn delete_client(&self, client_id: &str, now: i64) -> Result<bool> {
        let mut tx = self.db.begin().await?;
        // One feed entry for the client covers all its tokens, user and
        // client-credentials alike (DESIGN §4).
        tx.execute(
            "INSERT INTO revocations (kind, subject, revoked_at) VALUES ('client', $1, $2) ON CONFLICT (kind, subject) DO UPDATE SET revoked_at = excluded.revoked_at",
            args![client_id, now],
        )
        .await?;
        tx.execute(
            "UPDATE grants SET revoked_at = $2 WHERE client_id = $1 AND revoked_at IS NULL",
            args![client_id, now],
        )
        .await?;
        let n = tx
            .execute("DELETE FROM clients WHERE client_id = $1", args![client_id])
            .await?;
        B::commit(tx).await?;
        Ok(n > 0)
    }

    async fn set_client_secret(&self, client_id: &str, secret_hash: &str) -> Result<bool> {
        let n = self
            .db
            .writer()
            .await?
            .execute(
                "UPDATE clients SET secret_hash = $2 WHERE client_id = $1 AND kind = 'confidential'",
                args![client_id, secret_hash],
            )
            .await?;
        Ok(n == 1)
    }

    async fn versions(&self) -> Result<Versions> {
        let rows = self
            .db
            .reader()
            .await?
            .fetch_all("SELECT name, value FROM change_counters", args![], |r| {
                Ok((r.text("name")?, r.int("value")?))
            })
            .await?;
        let mut v = Versions::default();
        for (name, value) in rows {
            match name.as_str() {
                "clients" => v.clients = value,
                "users" => v.users = value,
                _ => {}
            }
        }
        Ok(v)
    }

    async fn create_user(&self, u: &User) -> Result<()> {
        self.db
            .writer()
            .await?
            .execute(
                "INSERT INTO users (user_id, username, password_hash, email, email_verified, name, disabled, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                args![
                    &u.user_id,
                    &u.username,
                    &u.password_hash,
                    &u.email,
                    u.email_verified,
                    &u.name,
                    u.disabled,
                    u.created_at,
                ],
            )
            .await?;
        Ok(())
    }

    async fn user(&self, user_id: &str) -> Result<Option<User>> {
        self.db
            .reader()
            .await?
            .fetch_optional(
                concat!("SELECT ", user_columns!(), " FROM users WHERE user_id = $1"),
                args![user_id],
                user_from_row,
            )
            .await
    }

    async fn user_by_username(&self, normalized: &str) -> Result<Option<User>> {
        self.db
            .reader()
            .await?
            .fetch_optional(
                concat!(
                    "SELECT ",
                    user_columns!(),
                    " FROM users WHERE username = $1"
                ),
                args![normalized],
                user_from_row,
            )
            .await
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        self.db
            .reader()
            .await?
            .fetch_all(
                concat!("SELECT ", user_columns!(), " FROM users ORDER BY username"),
                args![],
                user_from_row,
            )
            .await
    }

    async fn delete_user(&self, user_id: &str, now: i64) -> Result<bool> {
        let mut tx = self.db.begin().await?;
        tx.execute(
            "INSERT INTO revocations (kind, subject, revoked_at) VALUES ('user', $1, $2) ON CONFLICT (kind, subject) DO UPDATE SET revoked_at = excluded.revoked_at",
            args![user_id, now],
        )
        .await?;
        tx.execute(
            "UPDATE grants SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
            args![user_id, now],
        )
        .await?;
        tx.execute("DELETE FROM sessions WHERE user_id = $1", args![user_id])
            .await?;
        let n = tx
            .execute("DELETE FROM users WHERE user_id = $1", args![user_id])
            .await?;
        B::commit(tx).await?;
        Ok(n > 0)
    }

    async fn create_session(&self, s: &Session) -> Result<()> {
        self.db
            .writer()
            .await?
            .execute(
                "INSERT INTO sessions (session_hash, user_id, auth_time, expires_at) VALUES ($1, $2, $3, $4)",
                args![&s.session_hash, &s.user_id, s.auth_time, s.expires_at],
            )
            .await?;
        Ok(())
    }

    async fn session(&self, session_hash: &str, now: i64) -> Result<Option<Session>> {
        self.db
            .reader()
            .await?
            .fetch_optional(
                "SELECT session_hash, user_id, auth_time, expires_at FROM sessions WHERE session_hash = $1 AND expires_at > $2",
                args![session_hash, now],
                session_from_row,
            )
            .await
    }

    async fn delete_session(&self, session_hash: &str) -> Result<()> {
        self.db
            .writer()
            .await?
            .execute(
                "DELETE FROM sessions WHERE session_hash = $1",
                args![session_hash],
            )
            .await?;
        Ok(())
    }

    async fn redeem_code(
        &self,
        code: &AuthorizationCode,
        grant: &NewGrant,
        now: i64,
        session_required: bool,
    ) -> Result<Redemption> {
        let g = grant.grant_from(code, now);
        let scope = g.scope.to_string();
        let mut values = grant_values(&g, &scope).to_vec();
        values.push(Value::from(session_required));
        // REL-01: one conditional statement. The grant the code names is made unless
        // it exists (a redemption won before) or the code's client or user is gone.
        let made = self
            .db
            .writer()
            .await?
            .execute(
                concat!(
                    "INSERT INTO grants (",
                    grant_columns!(),
                    ") SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15 \
                     WHERE EXISTS (SELECT 1 FROM clients WHERE client_id = $3) AND EXISTS (SELECT 1 FROM users WHERE user_id = $2) \
                     AND ($16 = 0 OR EXISTS (SELECT 1 FROM sessions WHERE session_hash = $6 AND expires_at > $11)) \
                     ON CONFLICT (grant_id) DO NOTHING"
                ),
                &values,
            )
            .await?;
        if made == 1 {
            return Ok(Redemption::Redeemed);
        }
        // Why not, asked of the writer: on SQLite it then sees a redemption that won in
        // the same batch and is not committed yet (which a reader would miss, and so
        // miss the reuse), and it is answered only after that commit.
        let exists = self
            .db
            .writer()
            .await?
            .fetch_optional(
                "SELECT grant_id FROM grants WHERE grant_id = $1",
                args![&code.grant_id],
                |r| r.text("grant_id"),
            )
            .await?;
        Ok(if exists.is_some() {
            Redemption::AlreadyRedeemed
        } else {
            Redemption::Orphaned
        })
    }

    async fn insert_grant(&self, g: &Grant) -> Result<()> {
        let scope = g.scope.to_string();
        self.db
            .writer()
            .await?
            .execute(INSERT_GRANT, &grant_values(g, &scope))
            .await?;
        Ok(())
    }

    async fn grant(&self, grant_id: &str) -> Result<Option<Grant>> {
        self.db
            .reader()
            .await?
            .fetch_optional(
                concat!(
                    "SELECT ",
                    grant_columns!(),
                    " FROM grants WHERE grant_id = $1"
                ),
                args![grant_id],
                grant_from_row,
            )
            .await
    }

    async fn remembered_consent(
        &self,
        user_id: &str,
        client_id: &str,
        wanted: &Scope,
        now: i64,
    ) -> Result<bool> {
        // The newest active grant nearly always covers a repeated request: one index
        // step and one row, however many grants the pair has accumulated. Only when it
        // does not are the older ones looked at.
        let mut conn = self.db.reader().await?;
        match conn
            .fetch_optional(
                "SELECT scope FROM grants WHERE user_id = $1 AND client_id = $2 AND revoked_at IS NULL AND expires_at > $3 ORDER BY created_at DESC LIMIT 1",
                args![user_id, client_id, now],
                scope_from_row,
            )
            .await?
        {
            None => return Ok(false),
            Some(newest) if wanted.is_subset(&newest) => return Ok(true),
            Some(_) => {}
        }
        let older = conn
            .fetch_all(
                "SELECT scope FROM grants WHERE user_id = $1 AND client_id = $2 AND revoked_at IS NULL AND expires_at > $3 ORDER BY created_at DESC LIMIT 50",
                args![user_id, client_id, now],
                scope_from_row,
            )
            .await?;
        Ok(older.iter().any(|s| wanted.is_subset(s)))
    }

    async fn rotate_refresh(
        &self,
        grant_id: &str,
        from: i64,
        new_hash: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<bool> {
        let n = self
            .db
            .writer()
            .await?
            .execute(
                "UPDATE grants SET refresh_generation = refresh_generation + 1, refresh_hash = $3, last_used_at = $4, expires_at = $5, grace_used = 0 WHERE grant_id = $1 AND refresh_generation = $2 AND revoked_at IS NULL",
                args![grant_id, from, new_hash, now, expires_at],
            )
            .await?;
        Ok(n == 1)
    }

    async fn rotate_current_refresh(&self, r: &CurrentRefresh<'_>) -> Result<Option<Grant>> {
        // The new expiry is the earlier of the absolute and the idle limit (RFC 9700
        // §4.14.2), as `CASE` because SQLite has no LEAST.
        self.db
            .writer()
            .await?
            .fetch_optional(
                concat!(
                    "UPDATE grants SET refresh_generation = refresh_generation + 1, refresh_hash = $5, last_used_at = $7, \
                     expires_at = CASE WHEN created_at + $8 < $7 + $9 THEN created_at + $8 ELSE $7 + $9 END, grace_used = 0 \
                     WHERE grant_id = $1 AND client_id = $2 AND refresh_generation = $3 AND refresh_hash = $4 \
                     AND revoked_at IS NULL AND expires_at > $7 AND ($6 IS NULL OR audience = $6) RETURNING ",
                    grant_columns!()
                ),
                args![
                    r.grant_id,
                    r.client_id,
                    r.generation,
                    r.current_hash,
                    r.new_hash,
                    r.audience,
                    r.now,
                    r.absolute_ttl,
                    r.idle_ttl,
                ],
                grant_from_row,
            )
            .await
    }

    async fn use_refresh_grace(&self, grant_id: &str, generation: i64) -> Result<bool> {
        let n = self
            .db
            .writer()
            .await?
            .execute(
                "UPDATE grants SET grace_used = 1 WHERE grant_id = $1 AND refresh_generation = $2 AND grace_used = 0 AND revoked_at IS NULL",
                args![grant_id, generation],
            )
            .await?;
        Ok(n == 1)
    }

    async fn revoke_grant(&self, grant_id: &str, now: i64) -> Result<bool> {
        let mut tx = self.db.begin().await?;
        let n = tx
            .execute(
                "UPDATE grants SET revoked_at = $2 WHERE grant_id = $1 AND revoked_at IS NULL",
                args![grant_id, now],
            )
            .await?;
        if n == 1 {
            tx.execute(
                "INSERT INTO revocations (kind, subject, revoked_at) VALUES ('grant', $1, $2) ON CONFLICT (kind, subject) DO NOTHING",
                args![grant_id, now],
            )
            .await?;
        }
        B::commit(tx).await?;
        Ok(n == 1)
    }

    async fn revoke_grants(&self, f: &GrantFilter, now: i64) -> Result<u64> {
        let mut tx = self.db.begin().await?;
        tx.execute(
            enter_filtered_revocations(f),
            args![&f.user_id, &f.client_id, &f.session_hash, now],
        )
        .await?;
        let n = tx
            .execute(
                revoke_filtered(f),
                args![&f.user_id, &f.client_id, &f.session_hash, now],
            )
            .await?;
        B::commit(tx).await?;
        Ok(n)
    }

    async fn list_grants(&self, f: &GrantFilter, now: i64, limit: i64) -> Result<Vec<Grant>> {
        self.db
            .reader()
            .await?
            .fetch_all(
                list_filtered(f),
                args![
                    &f.user_id,
                    &f.client_id,
                    &f.session_hash,
                    f.active_only,
                    now,
                    limit
                ],
                grant_from_row,
            )
            .await
    }

    async fn revocations_since(&self, since: i64, limit: i64) -> Result<Vec<Revocation>> {
        self.db
            .reader()
            .await?
            .fetch_all(
                "SELECT kind, subject, revoked_at FROM revocations WHERE revoked_at >= $1 ORDER BY revoked_at, kind, subject LIMIT $2",
                args![since, limit],
                revocation_from_row,
            )
            .await
    }

    async fn sweep(&self, now: i64, horizon: i64, limit: i64) -> Result<Option<SweepReport>> {
        let Some(mut tx) = self.db.begin_locked(LOCK_SWEEP).await? else {
            return Ok(None);
        };
        // Each statement deletes one bounded batch found through an index on the expiry
        // column: cost grows with the batch, never with history.
        let mut report = SweepReport {
            sessions: tx
                .execute(
                    "DELETE FROM sessions WHERE session_hash IN (SELECT session_hash FROM sessions WHERE expires_at < $1 LIMIT $2)",
                    args![now, limit],
                )
                .await?,
            // A dead grant stays until the last access token it could have minted has
            // expired, so introspection answers stay honest until then.
            grants: tx
                .execute(
                    "DELETE FROM grants WHERE grant_id IN (SELECT grant_id FROM grants WHERE expires_at < $1 LIMIT $2)",
                    args![horizon, limit],
                )
                .await?,
            revocations: 0,
        };
        report.grants += tx
            .execute(
                "DELETE FROM grants WHERE grant_id IN (SELECT grant_id FROM grants WHERE revoked_at < $1 LIMIT $2)",
                args![horizon, limit],
            )
            .await?;
        report.revocations = tx
            .execute(
                "DELETE FROM revocations WHERE (kind, subject) IN (SELECT kind, subject FROM revocations WHERE revoked_at < $1 LIMIT $2)",
                args![horizon, limit],
            )
            .await?;
        B::commit(tx).await?;
        Ok(Some(report))
    }

    async fn row_counts(&self) -> Result<Vec<(&'static str, i64)>> {
        let mut c = self.db.reader().await?;
        let mut out = Vec::new();
        for (table, sql) in [
            ("clients", "SELECT COUNT(*) AS n FROM clients"),
            ("users", "SELECT COUNT(*) AS n FROM users"),
            ("sessions", "SELECT COUNT(*) AS n FROM sessions"),
            ("grants", "SELECT COUNT(*) AS n FROM grants"),
            // Unused since schema 3; kept one version for nodes of the previous one.
            ("codes", "SELECT COUNT(*) AS n FROM codes"),
            ("signing_keys", "SELECT COUNT(*) AS n FROM signing_keys"),
            ("server_secrets", "SELECT COUNT(*) AS n FROM server_secrets"),
            ("revocations", "SELECT COUNT(*) AS n FROM revocations"),
            (
                "change_counters",
                "SELECT COUNT(*) AS n FROM change_counters",
            ),
        ] {
            let n = c
                .fetch_optional(sql, args![], count)
                .await?
                .ok_or_else(|| corrupt("COUNT(*) returned no row"))?;
            out.push((table, n));
        }
        Ok(out)
    }

    async fn insert_key(&self, k: &KeyRecord) -> Result<()> {
        insert_key_on(&mut self.db.writer().await?, k).await
    }

    async fn keys(&self) -> Result<Vec<KeyRecord>> {
        keys_on(&mut self.db.reader().await?).await
    }

    async fn maintain_keys(&self, plan: &KeyPlanner, now: i64) -> Result<Option<Vec<KeyWrite>>> {
        let Some(mut tx) = self.db.begin_locked(LOCK_KEYS).await? else {
            return Ok(None);
        };
        let keys = keys_on(&mut tx).await?;
        let writes = plan(&keys).map_err(StoreError::Plan)?;
        for w in &writes {
            match w {
                KeyWrite::Insert(k) => insert_key_on(&mut tx, k).await?,
                KeyWrite::Transition { kid, from, to } => {
                    tx.execute(
                        "UPDATE signing_keys SET state = $3, state_since = $4 WHERE kid = $1 AND state = $2",
                        args![kid, from.as_str(), to.as_str(), now],
                    )
                    .await?;
                }
                KeyWrite::Revoke { kid } => {
                    tx.execute(
                        "UPDATE signing_keys SET state = 'retired', state_since = $2 WHERE kid = $1",
                        args![kid, now],
                    )
                    .await?;
                    tx.execute(
                        "INSERT INTO revocations (kind, subject, revoked_at) VALUES ('key', $1, $2) ON CONFLICT (kind, subject) DO NOTHING",
                        args![kid, now],
                    )
                    .await?;
                }
            }
        }
        B::commit(tx).await?;
        Ok(Some(writes))
    }

    async fn server_secret(&self, name: &str, fresh: &str) -> Result<String> {
        self.db
            .writer()
            .await?
            .execute(
                "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                args![name, fresh],
            )
            .await?;
        self.db
            .reader()
            .await?
            .fetch_optional(
                "SELECT value FROM server_secrets WHERE name = $1",
                args![name],
                |r| r.text("value"),
            )
            .await?
            .ok_or_else(|| corrupt("server secret missing after insert"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On SQLite, every statement over a filter that names a user, a client or a
    /// session finds its grants through an index: none reads every grant. (With one
    /// text for all filters, `($1 IS NULL OR user_id = $1) AND …`, each was a scan.)
    #[test]
    fn filtered_grant_statements_search_an_index() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for m in crate::migrations::MIGRATIONS {
            conn.execute_batch(m.sql).unwrap();
            conn.execute_batch(m.sqlite).unwrap();
        }
        let given = |on: bool, v: &str| on.then(|| v.to_owned());
        // 4, a session alone, has no index (GrantFilter::session_hash says so).
        for shape in [1, 2, 3, 5, 6, 7u8] {
            let f = GrantFilter {
                user_id: given(shape & 1 != 0, "u"),
                client_id: given(shape & 2 != 0, "c"),
                session_hash: given(shape & 4 != 0, "s"),
                active_only: true,
            };
            for sql in [
                enter_filtered_revocations(&f),
                revoke_filtered(&f),
                list_filtered(&f),
            ] {
                let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
                // Unbound parameters are NULL; the plan does not depend on them.
                let mut rows = stmt.raw_query();
                let mut plan = Vec::new();
                while let Some(row) = rows.next().unwrap() {
                    plan.push(row.get::<_, String>(3).unwrap());
                }
                let on_grants: Vec<&String> =
                    plan.iter().filter(|d| d.contains(" grants")).collect();
                assert!(
                    !on_grants.is_empty()
                        && on_grants
                            .iter()
                            .all(|d| d.starts_with("SEARCH grants USING")),
                    "{f:?}: {sql}\n{plan:?}"
                );
            }
        }
    }
}
