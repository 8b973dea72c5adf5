//! Settings, from defaults, then a TOML file (`--config`), then `LATCHKEY_*` environment
//! variables, then command-line flags; later sources win.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the embedded database and generated files live.
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub listen: String,
    /// The issuer identifier (an https URL in production). Defaults to
    /// `http://<listen address>` so a laptop setup needs nothing.
    pub issuer: Option<String>,
    /// `postgres://…` to use PostgreSQL instead of the embedded SQLite file.
    pub database_url: Option<String>,
    /// Access token lifetime in seconds (DESIGN §1.2: five minutes).
    pub access_token_ttl: i64,
    pub id_token_ttl: i64,
    /// Authorization code lifetime (TM-01: 60 s).
    pub code_ttl: i64,
    pub session_ttl: i64,
    /// A grant dies this long after it was made, however it is used (refresh token
    /// absolute lifetime).
    pub refresh_ttl: i64,
    /// A grant whose refresh token is not used for this long dies (RFC 9700 §4.14.2).
    pub refresh_idle_ttl: i64,
    /// `aud` of access tokens when the request names no resource.
    pub default_audience: Option<String>,
    /// A client that lost the answer to a refresh may retry with the previous refresh
    /// token once within this many seconds and get the same new one (REL-02).
    pub refresh_grace_seconds: i64,
    /// Whether RP-initiated logout also revokes the grants made in the ended session.
    pub logout_revokes_grants: bool,
    /// How often (seconds) a node tries to sweep expired rows.
    pub sweep_interval: i64,
    /// A file holding the master key (32 bytes, base64url or hex). The environment
    /// variable LATCHKEY_MASTER_KEY takes precedence. Without either, the embedded store
    /// uses `<data_dir>/master.key`, generated on first start with mode 0600.
    pub master_key_file: Option<PathBuf>,
    /// How long a signing key signs before its successor takes over (30 days).
    pub key_rotation_interval: i64,
    /// `Cache-Control: max-age` of the JWKS; a new key is published at least this long
    /// (plus `key_check_interval`) before it signs.
    pub jwks_max_age: i64,
    /// How often a node reloads the keys and runs the rotation schedule.
    pub key_check_interval: i64,
    /// How often (milliseconds) a node checks whether a client or a user changed; both
    /// are cached in between, so a change takes effect on every node within this time.
    /// 0 turns the caches off (every request reads them from the store).
    pub client_check_interval_ms: i64,
    /// Algorithm of access tokens: EdDSA (default), ES256 or RS256.
    pub access_token_alg: String,
    /// Reverse proxies (IP addresses or CIDR blocks) whose `X-Forwarded-For` names the
    /// client address; from anyone else the header is ignored (RFC 9700 §4.13).
    pub trusted_proxies: Vec<String>,
    /// Accept a plain-http issuer on a host that is not loopback. Cookies then lack
    /// `Secure` and passwords cross the network in clear: for private test networks only.
    pub danger_allow_http_issuer: bool,
}

/// The settings' names, as TOML keys and (upper-cased, with `LATCHKEY_`) variables.
const FIELDS: &[&str] = &[
    "data_dir",
    "listen",
    "issuer",
    "database_url",
    "access_token_ttl",
    "id_token_ttl",
    "code_ttl",
    "session_ttl",
    "refresh_ttl",
    "refresh_idle_ttl",
    "default_audience",
    "refresh_grace_seconds",
    "logout_revokes_grants",
    "sweep_interval",
    "master_key_file",
    "key_rotation_interval",
    "jwks_max_age",
    "key_check_interval",
    "client_check_interval_ms",
    "access_token_alg",
    "trusted_proxies",
    "danger_allow_http_issuer",
];

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("latchkey-data"),
            listen: "127.0.0.1:8080".to_owned(),
            issuer: None,
            database_url: None,
            access_token_ttl: 300,
            id_token_ttl: 600,
            code_ttl: 60,
            session_ttl: 8 * 3600,
            refresh_ttl: 30 * 24 * 3600,
            refresh_idle_ttl: 14 * 24 * 3600,
            default_audience: None,
            refresh_grace_seconds: 5,
            logout_revokes_grants: false,
            sweep_interval: 60,
            master_key_file: None,
            key_rotation_interval: 30 * 24 * 3600,
            jwks_max_age: 300,
            key_check_interval: 30,
            client_check_interval_ms: 250,
            access_token_alg: "EdDSA".to_owned(),
            trusted_proxies: Vec::new(),
            danger_allow_http_issuer: false,
        }
    }
}

/// Values given on the command line; only those present override.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
}

impl Config {
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Config, String> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(format!("config file {} does not exist", file.display()));
            }
            fig = fig.merge(Toml::file(file));
        }
        // Only the settings' own names: other LATCHKEY_* variables (LATCHKEY_LOG, the
        // test suite's) are not configuration.
        fig = fig
            .merge(Env::prefixed("LATCHKEY_").only(FIELDS))
            .merge(Serialized::defaults(overrides));
        let config: Config = fig
            .extract()
            .map_err(|e| format!("invalid configuration: {e}"))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        for (name, v) in [
            ("access_token_ttl", self.access_token_ttl),
            ("id_token_ttl", self.id_token_ttl),
            ("code_ttl", self.code_ttl),
            ("session_ttl", self.session_ttl),
            ("refresh_ttl", self.refresh_ttl),
            ("refresh_idle_ttl", self.refresh_idle_ttl),
            ("sweep_interval", self.sweep_interval),
            ("key_rotation_interval", self.key_rotation_interval),
            ("jwks_max_age", self.jwks_max_age),
            ("key_check_interval", self.key_check_interval),
        ] {
            if v <= 0 {
                return Err(format!("{name} must be a positive number of seconds"));
            }
        }
        if latchkey_core::jose::Alg::parse(&self.access_token_alg).is_none() {
            return Err("access_token_alg must be EdDSA, ES256 or RS256".to_owned());
        }
        if self.key_rotation_interval <= 2 * self.prepublish() {
            return Err(
                "key_rotation_interval must be more than twice jwks_max_age + key_check_interval"
                    .to_owned(),
            );
        }
        for p in &self.trusted_proxies {
            if crate::net::Cidr::parse(p).is_none() {
                return Err(format!(
                    "trusted_proxies: {p} is not an IP address or CIDR block"
                ));
            }
        }
        if !(0..=300).contains(&self.refresh_grace_seconds) {
            return Err("refresh_grace_seconds must be between 0 and 300".to_owned());
        }
        // Ten years: far beyond any sane grant lifetime, far below where expiry
        // arithmetic in SQL could overflow.
        for (name, v) in [
            ("refresh_ttl", self.refresh_ttl),
            ("refresh_idle_ttl", self.refresh_idle_ttl),
            ("session_ttl", self.session_ttl),
        ] {
            if v > 10 * 365 * 24 * 3600 {
                return Err(format!("{name} must be at most ten years"));
            }
        }
        if !(0..=60_000).contains(&self.client_check_interval_ms) {
            return Err("client_check_interval_ms must be between 0 and 60000".to_owned());
        }
        if self.code_ttl > latchkey_core::code::MAX_CODE_TTL {
            return Err("code_ttl must be at most 600 seconds (RFC 6749 §4.1.2)".to_owned());
        }
        Ok(())
    }
}

impl Config {
    /// How long a new key is published before it signs: every verifier's JWKS cache and
    /// every node's key ring have turned over by then.
    pub fn prepublish(&self) -> i64 {
        self.jwks_max_age + self.key_check_interval
    }

    /// The rotation schedule (REL-03).
    pub fn key_policy(&self) -> latchkey_core::keys::KeyPolicy {
        latchkey_core::keys::KeyPolicy {
            rotation_interval: self.key_rotation_interval,
            prepublish: self.prepublish(),
            // The longest token a key signed, plus leeway, plus a JWKS cache lifetime and
            // a ring reload.
            retire_after: self.access_token_ttl.max(self.id_token_ttl)
                + latchkey_core::claims::LEEWAY_SECONDS
                + self.prepublish(),
        }
    }

    pub fn access_token_alg(&self) -> latchkey_core::jose::Alg {
        latchkey_core::jose::Alg::parse(&self.access_token_alg)
            .unwrap_or(latchkey_core::jose::Alg::EdDSA)
    }
}

/// Checks an issuer identifier (RFC 8414 §2): an https URL with no query or fragment;
/// plain http only on a loopback address (a laptop) unless `allow_http` says otherwise.
/// Returns it without a trailing slash.
pub fn check_issuer(issuer: &str, allow_http: bool) -> Result<String, String> {
    let url = url::Url::parse(issuer).map_err(|e| format!("issuer {issuer} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(format!("issuer {issuer} must be an https URL"));
    }
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    if url.scheme() == "http" && !loopback && !allow_http {
        return Err(format!(
            "issuer {issuer} uses plain http on a network address: use https (or, on a private test network only, danger_allow_http_issuer = true)"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("issuer {issuer} must not have a query or fragment"));
    }
    Ok(issuer.trim_end_matches('/').to_owned())
}
