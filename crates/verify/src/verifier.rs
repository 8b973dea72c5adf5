//! The [`Verifier`]: keys, caches, the revocation feed, and the one path every token
//! takes through them.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey_core::UnixTime;
use latchkey_core::jose::Alg;
use reqwest::header::HeaderValue;

use crate::cache::{self, TokenCache};
use crate::claims::{self, Claims, Expected};
use crate::error::{SetupError, TokenError, VerifyError};
use crate::jwks::{DEFAULT_JWKS_LIFETIME, KeySet, MAX_JWKS_LIFETIME};
use crate::jws::{self, MAX_TOKEN_LEN};
use crate::policy::Policy;
use crate::remote;
use crate::revocation::RevocationList;

/// Where "now" comes from. The default is the system clock; tests pass a fixed one.
pub trait Clock: Send + Sync + 'static {
    /// The current time in whole seconds since the Unix epoch.
    fn now(&self) -> UnixTime;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(
        clippy::disallowed_methods,
        reason = "the one place latchkey-verify reads the wall clock"
    )]
    fn now(&self) -> UnixTime {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        UnixTime(i64::try_from(secs).unwrap_or(i64::MAX))
    }
}

/// Default clock leeway for `exp`, `nbf` and `iat` (RFC 8725 §3.x leaves it to the
/// application; Latchkey's server uses the same).
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(10);
/// Default capacity of the verified-token cache.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;
/// Default interval between two polls of the revocation feed.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Default shortest time between two JWKS fetches (an unknown `kid` triggers at most one
/// fetch per interval).
pub const DEFAULT_KEY_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// Feed pages read in one poll before waiting for the next interval.
const MAX_PAGES_PER_POLL: usize = 100;

enum Source {
    Issuer,
    Static(String),
}

/// Checks Latchkey access tokens (RFC 9068 JWTs) offline. Cheap to clone: clones share
/// keys, caches and the revocation list. Background work (JWKS refresh, revocation
/// feed) runs on the Tokio runtime that built it and stops when the last clone is
/// dropped.
///
/// ```no_run
/// # async fn demo() -> Result<(), latchkey_verify::SetupError> {
/// use latchkey_verify::{Policy, Verifier};
/// let verifier = Verifier::from_issuer("https://id.example", "https://api.example")
///     .follow_revocations("orders-api", "secret")
///     .build()
///     .await?;
/// let claims = verifier
///     .authorize(Some("Bearer eyJ..."), &Policy::scope("orders:read"))
///     .await;
/// # let _ = claims; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .field("keys", &self.inner.current_keys().len())
            .field("following_revocations", &self.inner.following_feed)
            .finish_non_exhaustive()
    }
}

struct JwksSource {
    http: reqwest::Client,
    uri: String,
}

struct FetchState {
    last_attempt: Option<Instant>,
}

struct Inner {
    issuer: String,
    audience: String,
    leeway: i64,
    algorithms: Option<Vec<Alg>>,
    keys: RwLock<Arc<KeySet>>,
    jwks: Option<JwksSource>,
    fetch: tokio::sync::Mutex<FetchState>,
    key_refetch_interval: Duration,
    cache: TokenCache,
    revocations: RevocationList,
    clock: Arc<dyn Clock>,
    following_feed: bool,
}

/// Configures a [`Verifier`]; see [`Verifier::from_issuer`] and [`Verifier::from_jwks`].
pub struct VerifierBuilder {
    issuer: String,
    audience: String,
    source: Source,
    algorithms: Option<Vec<Alg>>,
    leeway: Duration,
    cache_capacity: usize,
    feed: Option<(String, String)>,
    poll_interval: Duration,
    key_refetch_interval: Duration,
    clock: Arc<dyn Clock>,
    accept_http: bool,
}

impl fmt::Debug for VerifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifierBuilder")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("algorithms", &self.algorithms)
            .field("leeway", &self.leeway)
            .field("cache_capacity", &self.cache_capacity)
            .field("feed_client_id", &self.feed.as_ref().map(|(id, _)| id))
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for tokens of `issuer` (its URL, which must equal their `iss`) meant
    /// for `audience` (RFC 9068 §4: the API's own identifier, compared exactly with
    /// `aud`). `build` reads the issuer's metadata (RFC 8414 §3) and its JWKS, then keeps
    /// the JWKS fresh for as long as its `Cache-Control: max-age` says, refetching early
    /// (rate-limited) when a token names an unknown `kid`.
    pub fn from_issuer(issuer: &str, audience: &str) -> VerifierBuilder {
        VerifierBuilder::new(issuer, audience, Source::Issuer)
    }

    /// A verifier with a fixed JWKS document (RFC 7517 §5) instead of fetching it. An
    /// unknown `kid` is simply refused.
    pub fn from_jwks(issuer: &str, audience: &str, jwks_json: &str) -> VerifierBuilder {
        VerifierBuilder::new(issuer, audience, Source::Static(jwks_json.to_owned()))
    }

    /// The issuer, as compared with `iss`.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// Whether this verifier follows the revocation feed.
    pub fn follows_revocations(&self) -> bool {
        self.inner.following_feed
    }

    /// Checks a bearer token against `policy`. The token is not logged, and no error
    /// carries it.
    ///
    /// Every token passes, in order: the size limit; the compact structure; a header
    /// without `jku`, `x5u`, `jwk`, `x5c`, `crit` (RFC 8725 §3.10), with an accepted `alg`
    /// (§3.1, §3.2) and `typ: at+jwt` (RFC 9068 §2.1, RFC 8725 §3.11); the signature of the
    /// JWKS key named by `kid`, which must declare that same `alg`; `iss`, `aud`, `exp`,
    /// `nbf` and `iat` (RFC 9068 §4) with the leeway; the revocation feed; then the
    /// policy's maximum age and scopes. A token verified before (same bytes) skips the
    /// parsing and signature until its `exp`, but not the revocation feed or the policy.
    pub async fn verify(&self, token: &str, policy: &Policy) -> Result<Arc<Claims>, VerifyError> {
        let now = self.inner.clock.now().0;
        let claims = self.inner.verify_token(token, now).await?;
        policy.check(&claims, now)?;
        Ok(claims)
    }

    /// Like [`verify`](Self::verify), from the value of the request's `Authorization`
    /// header (RFC 6750 §2.1). For frameworks other than axum: answer an error with
    /// [`VerifyError::status`] and a `WWW-Authenticate` header of
    /// [`VerifyError::www_authenticate`].
    pub async fn authorize(
        &self,
        authorization: Option<&str>,
        policy: &Policy,
    ) -> Result<Arc<Claims>, VerifyError> {
        let result = match bearer_token(authorization) {
            Ok(token) => self.verify(token, policy).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            tracing::debug!(reason = %e, "bearer token refused");
        }
        result
    }
}

/// Extracts the token from an `Authorization` header value: `Bearer` (any case), one or
/// more spaces, a `b64token` (RFC 6750 §2.1). Another scheme, or no header, is "no
/// token" (§3.1: no error code when no bearer authentication was attempted).
pub(crate) fn bearer_token(authorization: Option<&str>) -> Result<&str, VerifyError> {
    let value = authorization.ok_or(VerifyError::MissingToken)?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(VerifyError::MissingToken);
    }
    let token = rest.trim_start_matches(' ');
    let is_b64token = !token.is_empty()
        && token.trim_end_matches('=').bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        });
    if !is_b64token {
        return Err(VerifyError::InvalidRequest(
            "Authorization header is not Bearer followed by one token",
        ));
    }
    Ok(token)
}

impl VerifierBuilder {
    fn new(issuer: &str, audience: &str, source: Source) -> VerifierBuilder {
        VerifierBuilder {
            issuer: issuer.trim_end_matches('/').to_owned(),
            audience: audience.to_owned(),
            source,
            algorithms: None,
            leeway: DEFAULT_LEEWAY,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            feed: None,
            poll_interval: DEFAULT_POLL_INTERVAL,
            key_refetch_interval: DEFAULT_KEY_REFETCH_INTERVAL,
            clock: Arc::new(SystemClock),
            accept_http: false,
        }
    }

    /// Accepts only these algorithms (RFC 8725 §3.1). By default: whatever the issuer's
    /// keys declare, among those Latchkey signs with (`EdDSA`, `ES256`, `RS256`); `none`
    /// and HMAC algorithms are never accepted, whatever is configured.
    pub fn algorithms(mut self, algorithms: &[Alg]) -> VerifierBuilder {
        self.algorithms = Some(algorithms.to_vec());
        self
    }

    /// Clock leeway for `exp`, `nbf` and `iat` (default 10 s, at most 5 minutes).
    pub fn leeway(mut self, leeway: Duration) -> VerifierBuilder {
        self.leeway = leeway;
        self
    }

    /// How many verified tokens to remember (default 10,000; 0 turns the cache off).
    pub fn cache_capacity(mut self, tokens: usize) -> VerifierBuilder {
        self.cache_capacity = tokens;
        self
    }

    /// Follows the issuer's revocation feed with the credentials of a confidential client
    /// registered for this API, so tokens of revoked grants, users and clients are refused
    /// within one poll interval instead of at `exp`. `build` polls once and fails if the
    /// feed refuses the credentials.
    pub fn follow_revocations(mut self, client_id: &str, client_secret: &str) -> VerifierBuilder {
        self.feed = Some((client_id.to_owned(), client_secret.to_owned()));
        self
    }

    /// Interval between two polls of the revocation feed (default 5 s).
    pub fn poll_interval(mut self, interval: Duration) -> VerifierBuilder {
        self.poll_interval = interval;
        self
    }

    /// Shortest time between two JWKS fetches (default 10 s): an unknown `kid` triggers
    /// at most one fetch per interval, and a `max-age` shorter than this is raised to it.
    pub fn key_refetch_interval(mut self, interval: Duration) -> VerifierBuilder {
        self.key_refetch_interval = interval;
        self
    }

    /// Where "now" comes from (default: [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> VerifierBuilder {
        self.clock = Arc::new(clock);
        self
    }

    /// Accepts a plain `http` issuer on a non-loopback host. Tokens, keys and the feed then
    /// cross the network unprotected: only for a private network you trust.
    pub fn danger_accept_http_issuer(mut self) -> VerifierBuilder {
        self.accept_http = true;
        self
    }

    /// Fetches what is needed (metadata and JWKS for an issuer; a first page of the
    /// revocation feed when following it) and starts the background refreshes. Must be
    /// called within a Tokio runtime.
    pub async fn build(self) -> Result<Verifier, SetupError> {
        if self.algorithms.as_ref().is_some_and(Vec::is_empty) {
            return Err(SetupError::Config("the algorithm list is empty"));
        }
        if self.leeway > Duration::from_secs(300) {
            return Err(SetupError::Config("the leeway is longer than 5 minutes"));
        }
        if self.key_refetch_interval > MAX_JWKS_LIFETIME || self.poll_interval.is_zero() {
            return Err(SetupError::Config("an interval is out of range"));
        }
        if self.audience.is_empty() {
            return Err(SetupError::Config("the audience is empty"));
        }
        let needs_http = matches!(self.source, Source::Issuer) || self.feed.is_some();
        let http = if needs_http {
            remote::check_url(&self.issuer, self.accept_http)
                .map_err(|why| SetupError::Issuer(self.issuer.clone(), why))?;
            Some(remote::client()?)
        } else {
            None
        };
        let allowed = self.algorithms.as_deref();
        let (keys, jwks, lifetime) = match (&self.source, &http) {
            (Source::Static(json), _) => (KeySet::parse(json.as_bytes(), allowed)?, None, None),
            (Source::Issuer, Some(http)) => {
                let uri = remote::discover(http, &self.issuer, self.accept_http).await?;
                let (keys, lifetime) = remote::fetch_jwks(http, &uri, allowed).await?;
                let source = JwksSource {
                    http: http.clone(),
                    uri,
                };
                (keys, Some(source), lifetime)
            }
            (Source::Issuer, None) => return Err(SetupError::Config("no HTTP client")),
        };
        let feed = match (&self.feed, &http) {
            (Some((id, secret)), Some(http)) => Some(FeedClient {
                http: http.clone(),
                url: format!(
                    "{}{}",
                    self.issuer,
                    latchkey_core::metadata::paths::REVOCATION_FEED
                ),
                authorization: remote::basic_credentials(id, secret)?,
            }),
            _ => None,
        };
        let fetched = jwks.is_some();
        let inner = Arc::new(Inner {
            issuer: self.issuer,
            audience: self.audience,
            leeway: i64::try_from(self.leeway.as_secs()).unwrap_or(300),
            algorithms: self.algorithms,
            keys: RwLock::new(Arc::new(keys)),
            jwks,
            fetch: tokio::sync::Mutex::new(FetchState {
                last_attempt: fetched.then(Instant::now),
            }),
            key_refetch_interval: self.key_refetch_interval,
            cache: TokenCache::new(self.cache_capacity),
            revocations: RevocationList::default(),
            clock: self.clock,
            following_feed: feed.is_some(),
        });
        if let Some(feed) = feed {
            let mut since = None;
            feed.poll(&inner, &mut since).await?;
            tokio::spawn(follow_feed(
                Arc::downgrade(&inner),
                feed,
                since,
                self.poll_interval,
            ));
        }
        if fetched {
            let wait = inner.lifetime(lifetime);
            tokio::spawn(refresh_keys(Arc::downgrade(&inner), wait));
        }
        Ok(Verifier { inner })
    }
}

impl Inner {
    fn current_keys(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// How long a JWKS is used: its `max-age`, at least the refetch interval, at most a
    /// day; five minutes when the response said nothing.
    fn lifetime(&self, granted: Option<Duration>) -> Duration {
        granted
            .unwrap_or(DEFAULT_JWKS_LIFETIME)
            .max(self.key_refetch_interval)
            .min(MAX_JWKS_LIFETIME)
    }

    /// Replaces the key set. When a key left (or changed), cached tokens are forgotten so
    /// that tokens it signed are checked again, and refused.
    fn install(&self, next: KeySet) {
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        let covered = keys.is_covered_by(&next);
        *keys = Arc::new(next);
        drop(keys);
        if !covered {
            self.cache.clear();
        }
    }

    /// Fetches the JWKS. The caller holds the fetch lock.
    async fn fetch_keys(&self, state: &mut FetchState) -> Result<Option<Duration>, SetupError> {
        let Some(source) = &self.jwks else {
            return Ok(None);
        };
        state.last_attempt = Some(Instant::now());
        let (keys, lifetime) =
            remote::fetch_jwks(&source.http, &source.uri, self.algorithms.as_deref()).await?;
        self.install(keys);
        Ok(lifetime)
    }

    /// An unknown `kid`: fetches the JWKS again unless that was done less than
    /// `key_refetch_interval` ago. Concurrent callers wait for one fetch. Returns whether
    /// the key is known now.
    async fn refetch_for(&self, kid: &str) -> bool {
        if self.jwks.is_none() {
            return false;
        }
        let mut state = self.fetch.lock().await;
        if self.current_keys().has_kid(kid) {
            return true;
        }
        if state
            .last_attempt
            .is_some_and(|t| t.elapsed() < self.key_refetch_interval)
        {
            return false;
        }
        match self.fetch_keys(&mut state).await {
            Ok(_) => self.current_keys().has_kid(kid),
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refetch for an unknown key id failed");
                false
            }
        }
    }

    async fn verify_token(&self, token: &str, now: i64) -> Result<Arc<Claims>, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLarge);
        }
        let digest = self.cache.is_enabled().then(|| cache::digest(token));
        if let Some(d) = &digest
            && let Some(claims) = self.cache.get(d, now)
        {
            self.revocations.check(&claims)?;
            return Ok(claims);
        }
        let unverified = jws::parse(token)?;
        let mut keys = self.current_keys();
        if !keys.has_kid(&unverified.kid) && self.refetch_for(&unverified.kid).await {
            keys = self.current_keys();
        }
        let key = keys.find(&unverified.kid, unverified.alg)?;
        let mut buf = jws::signature_buffer();
        let signature = jws::decode_signature(unverified.signature, &mut buf)?;
        key.verify(unverified.signing_input, signature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(unverified.payload)
            .map_err(|_| TokenError::Malformed)?;
        let expected = Expected {
            issuer: &self.issuer,
            audience: &self.audience,
            leeway: self.leeway,
            now,
        };
        let claims = Arc::new(claims::check(&payload, &unverified.kid, &expected)?);
        self.revocations.check(&claims)?;
        if let Some(d) = digest {
            self.cache.insert(d, Arc::clone(&claims), now);
        }
        Ok(claims)
    }
}

/// Keeps the JWKS fresh: refetches when its lifetime ends.
async fn refresh_keys(inner: Weak<Inner>, mut wait: Duration) {
    loop {
        tokio::time::sleep(wait).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut state = inner.fetch.lock().await;
        wait = match inner.fetch_keys(&mut state).await {
            Ok(lifetime) => inner.lifetime(lifetime),
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refresh failed; keeping the keys we have");
                inner.key_refetch_interval.max(Duration::from_secs(1))
            }
        };
    }
}

struct FeedClient {
    http: reqwest::Client,
    url: String,
    authorization: HeaderValue,
}

impl FeedClient {
    /// Reads the feed from `since` until it says there is no more.
    async fn poll(&self, inner: &Inner, since: &mut Option<i64>) -> Result<(), SetupError> {
        for _ in 0..MAX_PAGES_PER_POLL {
            let page =
                remote::poll_feed(&self.http, &self.url, &self.authorization, *since).await?;
            inner.revocations.apply(&page);
            *since = Some(page.next_since);
            if !page.more {
                break;
            }
        }
        Ok(())
    }
}

/// Polls the revocation feed every `interval` (docs/state-and-revocation.md).
async fn follow_feed(
    inner: Weak<Inner>,
    feed: FeedClient,
    mut since: Option<i64>,
    interval: Duration,
) {
    let mut failing = false;
    loop {
        tokio::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match feed.poll(&inner, &mut since).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("revocation feed answers again");
            }
            Ok(()) => {}
            Err(e) => {
                failing = true;
                tracing::warn!(error = %e, "revocation feed poll failed; revocations listed since the last poll are not seen yet");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer_token(None), Err(VerifyError::MissingToken));
        assert_eq!(
            bearer_token(Some("Basic YTpi")),
            Err(VerifyError::MissingToken)
        );
        assert_eq!(bearer_token(Some("Bearer a.b.c")), Ok("a.b.c"));
        assert_eq!(bearer_token(Some("bearer   a.b.c")), Ok("a.b.c"));
        assert_eq!(bearer_token(Some("BEARER a/b+c==")), Ok("a/b+c=="));
        for bad in [
            "Bearer",
            "Bearer ",
            "Bearer a b",
            "Bearer a\tb",
            "Bearer a=b",
            "Bearer \"a\"",
        ] {
            assert!(
                matches!(bearer_token(Some(bad)), Err(VerifyError::InvalidRequest(_))),
                "{bad}"
            );
        }
    }
}
