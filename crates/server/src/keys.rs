//! The signing keys in memory: one active key per algorithm for signing, every
//! published key for verification and the JWKS document.

use std::collections::HashMap;
use std::sync::Arc;

use latchkey_core::jose::{Alg, Jwk, SigningKey, VerifyingKey};
use latchkey_core::model::{KeyRecord, KeyState};
use latchkey_store::Store;

#[derive(Debug)]
pub struct KeyRing {
    signing: HashMap<Alg, Arc<SigningKey>>,
    verifying: Vec<VerifyingKey>,
    jwks: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("storage: {0}")]
    Store(#[from] latchkey_store::StoreError),
    #[error("stored key {0} cannot be loaded")]
    BadKey(String),
    #[error("key generation failed")]
    Generate,
}

impl KeyRing {
    /// Loads the keys, creating an active key for each algorithm that has none. Returns
    /// the ring and the kids it created.
    pub async fn load_or_create(
        store: &dyn Store,
        now: i64,
    ) -> Result<(KeyRing, Vec<String>), KeyError> {
        let mut created = Vec::new();
        let existing = store.keys().await?;
        for alg in Alg::ALL {
            if !existing
                .iter()
                .any(|k| k.alg == alg && k.state == KeyState::Active)
            {
                let kid = new_kid(alg, now);
                let (_, der) =
                    SigningKey::generate(alg, kid.clone()).map_err(|_| KeyError::Generate)?;
                let record = KeyRecord {
                    kid: kid.clone(),
                    alg,
                    state: KeyState::Active,
                    private_pkcs8: der,
                    created_at: now,
                };
                store.insert_key(&record).await?;
                created.push(kid);
            }
        }
        let ring = KeyRing::from_records(&store.keys().await?)?;
        Ok((ring, created))
    }

    pub fn from_records(records: &[KeyRecord]) -> Result<KeyRing, KeyError> {
        let mut signing: HashMap<Alg, Arc<SigningKey>> = HashMap::new();
        let mut verifying = Vec::new();
        let mut jwks: Vec<Jwk> = Vec::new();
        for r in records.iter().filter(|r| r.state.is_published()) {
            let key = SigningKey::from_pkcs8(r.alg, r.kid.clone(), &r.private_pkcs8)
                .map_err(|_| KeyError::BadKey(r.kid.clone()))?;
            let jwk = key.public_jwk();
            verifying
                .push(VerifyingKey::from_jwk(&jwk).map_err(|_| KeyError::BadKey(r.kid.clone()))?);
            jwks.push(jwk);
            // Records come oldest first; if nodes raced to create a first key, every node
            // settles on the oldest active one.
            if r.state == KeyState::Active && !signing.contains_key(&r.alg) {
                signing.insert(r.alg, Arc::new(key));
            }
        }
        let jwks = serde_json::json!({ "keys": jwks }).to_string();
        Ok(KeyRing {
            signing,
            verifying,
            jwks,
        })
    }

    pub fn signer(&self, alg: Alg) -> Option<&SigningKey> {
        self.signing.get(&alg).map(Arc::as_ref)
    }

    pub fn verifying(&self) -> &[VerifyingKey] {
        &self.verifying
    }

    pub fn jwks_json(&self) -> &str {
        &self.jwks
    }
}

fn new_kid(alg: Alg, now: i64) -> String {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let suffix = latchkey_core::secret::random_token(&rng).unwrap_or_default();
    format!(
        "{}-{}-{}",
        alg.as_str().to_lowercase(),
        now,
        &suffix[..8.min(suffix.len())]
    )
}
