//! What every handler shares.

use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use latchkey_store::Store;

use crate::clock::Clock;
use crate::config::Config;
use crate::keys::KeyRing;

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

pub struct Inner {
    pub store: Arc<dyn Store>,
    pub config: Config,
    /// The issuer identifier, without a trailing slash.
    pub issuer: String,
    /// The signing keys, swapped when a node reloads them.
    pub keyring: std::sync::RwLock<Arc<KeyRing>>,
    pub master: Arc<latchkey_core::seal::MasterKey>,
    /// Server-wide MAC key (shared by all nodes through the store): CSRF tokens,
    /// login markers and the refresh-token chain.
    pub mac_key: Vec<u8>,
    /// Seals authorization codes, with a key derived from `mac_key`.
    pub codes: latchkey_core::code::CodeSealer,
    pub clock: Arc<dyn Clock>,
    pub rng: SystemRandom,
    /// A real argon2id hash of a random password, verified against when the username
    /// is unknown so that both cases take the same time.
    pub dummy_password_hash: String,
    /// Cookies carry `Secure` when the issuer is https.
    pub secure_cookies: bool,
    /// Login and client-authentication slowdown, per-address limits.
    pub throttle: crate::throttle::Throttle,
    /// Permits for password hashing (bounded memory under a flood of sign-ins).
    pub hashing: tokio::sync::Semaphore,
    /// Clients and users, cached with a version check (DESIGN §8).
    pub clients: crate::cache::VersionedCache<latchkey_core::client::Client>,
    pub users: crate::cache::VersionedCache<latchkey_core::model::User>,
    /// Demo relying party settings, when `latchkey demo` runs.
    pub demo: Option<crate::http::demo::DemoClient>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// The current key ring (cheap: clones an `Arc`).
    pub fn keys(&self) -> Arc<KeyRing> {
        match self.keyring.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set_keys(&self, ring: KeyRing) {
        match self.keyring.write() {
            Ok(mut g) => *g = Arc::new(ring),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(ring),
        }
    }

    /// A client by id, from the cache when it is there.
    pub async fn client(
        &self,
        client_id: &str,
    ) -> Result<Option<Arc<latchkey_core::client::Client>>, latchkey_store::StoreError> {
        self.clients
            .get(client_id, self.store.client(client_id))
            .await
    }

    /// A user by id, from the cache when it is there.
    pub async fn user(
        &self,
        user_id: &str,
    ) -> Result<Option<Arc<latchkey_core::model::User>>, latchkey_store::StoreError> {
        self.users.get(user_id, self.store.user(user_id)).await
    }

    pub fn now(&self) -> i64 {
        self.clock.now().0
    }

    pub fn audience(&self) -> &str {
        self.config
            .default_audience
            .as_deref()
            .unwrap_or(&self.issuer)
    }

    pub fn random_token(&self) -> Result<String, latchkey_core::OAuthError> {
        latchkey_core::secret::random_token(&self.rng)
            .map_err(|_| latchkey_core::OAuthError::server_error())
    }

    /// A new grant id, beginning with the current second (see
    /// [`latchkey_core::code::new_grant_id`]).
    pub fn new_grant_id(&self) -> Result<String, latchkey_core::OAuthError> {
        latchkey_core::code::new_grant_id(&self.rng, self.now())
            .map_err(|_| latchkey_core::OAuthError::server_error())
    }

    pub fn mac(&self, purpose: &str, message: &str) -> String {
        let mut input = Vec::with_capacity(purpose.len() + message.len() + 1);
        input.extend_from_slice(purpose.as_bytes());
        input.push(0);
        input.extend_from_slice(message.as_bytes());
        latchkey_core::secret::mac(&self.mac_key, &input)
    }
}
