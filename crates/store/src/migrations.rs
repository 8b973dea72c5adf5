//! Versioned schema migrations, applied in order inside one transaction under a lock so
//! that nodes starting together migrate once. One text serves both backends: it is
//! written for SQLite, and PostgreSQL reads `INTEGER` as `BIGINT` and `BLOB` as `BYTEA`
//! (see [`for_postgres`]); every column keeps the same meaning on both.

pub(crate) struct Migration {
    pub version: i64,
    pub sql: &'static str,
    /// Run after `sql` on SQLite only: what the two dialects cannot say alike (triggers).
    pub sqlite: &'static str,
    /// Run after `sql` on PostgreSQL only.
    pub postgres: &'static str,
}

/// Refuses a database whose schema is newer than this binary's migrations: a binary
/// rolled back, or an old node started after a new one migrated, would otherwise run
/// statements against tables it does not know, and fail request by request.
pub(crate) fn check_not_newer(current: i64) -> Result<(), crate::StoreError> {
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if current > known {
        return Err(crate::StoreError::Database(
            format!(
                "the database has schema version {current}, newer than this Latchkey knows ({known}): it was migrated by a newer version; run that version"
            )
            .into(),
        ));
    }
    Ok(())
}

pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: r#"
CREATE TABLE clients (
    client_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    secret_hash TEXT,
    redirect_uris TEXT NOT NULL,
    grant_types TEXT NOT NULL,
    scopes TEXT NOT NULL,
    auth_methods TEXT NOT NULL,
    first_party INTEGER NOT NULL,
    access_token_ttl INTEGER NOT NULL,
    id_token_alg TEXT NOT NULL,
    post_logout_redirect_uris TEXT NOT NULL,
    audiences TEXT NOT NULL,
    resources TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    email TEXT,
    email_verified INTEGER NOT NULL,
    name TEXT,
    disabled INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE sessions (
    session_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    auth_time INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);
CREATE TABLE grants (
    grant_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    auth_time INTEGER NOT NULL,
    session_hash TEXT,
    nonce TEXT,
    audience TEXT,
    refresh_generation INTEGER NOT NULL,
    refresh_hash TEXT,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER,
    grace_used INTEGER NOT NULL
);
CREATE INDEX grants_user_client ON grants (user_id, client_id);
CREATE INDEX grants_session ON grants (session_hash);
CREATE INDEX grants_revoked ON grants (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX grants_client ON grants (client_id);
CREATE INDEX grants_expires ON grants (expires_at);
CREATE TABLE codes (
    code_hash TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    session_hash TEXT,
    redirect_uri TEXT NOT NULL,
    scope TEXT NOT NULL,
    nonce TEXT,
    code_challenge TEXT NOT NULL,
    resource TEXT,
    auth_time INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    redeemed_at INTEGER,
    grant_id TEXT
);
CREATE INDEX codes_expires ON codes (expires_at);
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    alg TEXT NOT NULL,
    state TEXT NOT NULL,
    private_pkcs8 BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    state_since INTEGER NOT NULL
);
CREATE TABLE server_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- The revocation feed (DESIGN §4): what was revoked, by kind (grant, user, client),
-- kept for the longest access-token lifetime and then swept.
CREATE TABLE revocations (
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    revoked_at INTEGER NOT NULL,
    PRIMARY KEY (kind, subject)
);
CREATE INDEX revocations_at ON revocations (revoked_at);
"#,
        sqlite: "",
        postgres: "",
    },
    Migration {
        version: 2,
        sql: r#"
-- Counters that every node polls to know when a cache it keeps is stale (DESIGN §8).
-- Triggers bump them in the transaction of any statement that changes a client or a
-- user, whoever runs it: the admin commands, an older binary, or an operator's SQL.
CREATE TABLE change_counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO change_counters (name, value) VALUES ('clients', 0);
INSERT INTO change_counters (name, value) VALUES ('users', 0);
-- /authorize asks for the newest active grants of one (user, client) pair; with the
-- creation time in the index that stays a short range scan however many grants the
-- pair has accumulated.
CREATE INDEX grants_user_client_created ON grants (user_id, client_id, created_at);
DROP INDEX grants_user_client;
"#,
        sqlite: r#"
CREATE TRIGGER clients_inserted AFTER INSERT ON clients
BEGIN UPDATE change_counters SET value = value + 1 WHERE name = 'clients'; END;
CREATE TRIGGER clients_updated AFTER UPDATE ON clients
BEGIN UPDATE change_counters SET value = value + 1 WHERE name = 'clients'; END;
CREATE TRIGGER clients_deleted AFTER DELETE ON clients
BEGIN UPDATE change_counters SET value = value + 1 WHERE name = 'clients'; END;
CREATE TRIGGER users_inserted AFTER INSERT ON users
BEGIN UPDATE change_counters SET value = value + 1 WHERE name = 'users'; END;
CREATE TRIGGER users_updated AFTER UPDATE ON users
BEGIN UPDATE change_counters SET value = value + 1 WHERE name = 'users'; END;
CREATE TRIGGER users_deleted AFTER DELETE ON users
BEGIN UPDATE change_counters SET value = value + 1 WHERE name = 'users'; END;
"#,
        postgres: r#"
CREATE FUNCTION latchkey_bump_counter() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE change_counters SET value = value + 1 WHERE name = TG_ARGV[0];
    RETURN NULL;
END
$$;
CREATE TRIGGER clients_changed AFTER INSERT OR UPDATE OR DELETE ON clients
    FOR EACH STATEMENT EXECUTE FUNCTION latchkey_bump_counter('clients');
CREATE TRIGGER users_changed AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION latchkey_bump_counter('users');
"#,
    },
    Migration {
        version: 3,
        sql: r#"
-- Authorization codes are sealed and carry their request (latchkey_core::code); the
-- grant a code names is what makes it single-use, and the codes table is no longer
-- used. It stays for one version: nodes of the previous one, still running during a
-- rolling upgrade, keep serving their own code flows with it. (A code issued by a node
-- of one version and redeemed at one of the other is invalid_grant; the client starts
-- the flow again.)
-- Every grant insert wrote a page of this index, and only logout with
-- logout_revokes_grants asked it anything: that now finds the session's grants
-- through the user's index (grants_user_client_created), a handful of rows.
DROP INDEX grants_session;
"#,
        sqlite: "",
        postgres: "",
    },
];

/// The PostgreSQL text of a migration: 64-bit integers and byte strings by their names
/// there. (SQLite's INTEGER is already 64-bit.)
pub(crate) fn for_postgres(sql: &str) -> String {
    sql.replace("INTEGER", "BIGINT").replace("BLOB", "BYTEA")
}
