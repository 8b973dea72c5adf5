//! Versioned schema migrations, one list per backend, applied in order inside one
//! transaction under a lock so that nodes starting together migrate once.

pub(crate) struct Migration {
    pub version: i64,
    pub sql: &'static str,
}

pub(crate) const SQLITE: &[Migration] = &[Migration {
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
}];

pub(crate) const POSTGRES: &[Migration] = &[Migration {
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
    first_party BIGINT NOT NULL,
    access_token_ttl BIGINT NOT NULL,
    id_token_alg TEXT NOT NULL,
    post_logout_redirect_uris TEXT NOT NULL,
    audiences TEXT NOT NULL,
    resources TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    email TEXT,
    email_verified BIGINT NOT NULL,
    name TEXT,
    disabled BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE sessions (
    session_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    auth_time BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);
CREATE TABLE grants (
    grant_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    auth_time BIGINT NOT NULL,
    session_hash TEXT,
    nonce TEXT,
    audience TEXT,
    refresh_generation BIGINT NOT NULL,
    refresh_hash TEXT,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT,
    grace_used BIGINT NOT NULL
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
    auth_time BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    redeemed_at BIGINT,
    grant_id TEXT
);
CREATE INDEX codes_expires ON codes (expires_at);
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    alg TEXT NOT NULL,
    state TEXT NOT NULL,
    private_pkcs8 BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    state_since BIGINT NOT NULL
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
    revoked_at BIGINT NOT NULL,
    PRIMARY KEY (kind, subject)
);
CREATE INDEX revocations_at ON revocations (revoked_at);
"#,
}];
