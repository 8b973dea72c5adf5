//! Signing keys in a running server: the ring in memory (one active key per algorithm
//! signs; every published key verifies and is in the JWKS), loaded from the store with
//! the private parts opened by the master key, and the rotation schedule carried out
//! under the store's key lock (DESIGN §5).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use aws_lc_rs::rand::SystemRandom;
use latchkey_core::UnixTime;
use latchkey_core::claims::ACCESS_TOKEN_TYP;
use latchkey_core::jose::{Alg, JoseError, Jwk, SigningKey, VerifyingKey, verify};
use latchkey_core::keys::{KeyChange, KeyPolicy, plan};
use latchkey_core::model::{KeyRecord, KeyState};
use latchkey_core::seal::MasterKey;
use latchkey_store::{KeyWrite, Store};

#[derive(Debug)]
pub struct KeyRing {
    signing: HashMap<Alg, Arc<SigningKey>>,
    verifying: Vec<VerifyingKey>,
    jwks: String,
    etag: String,
    /// (kid, state) of every key, to notice changes cheaply.
    fingerprint: Vec<(String, KeyState)>,
    /// Access tokens this ring has verified, by SHA-256 of the token (see
    /// [`KeyRing::verify_access_token`]).
    verified: RwLock<HashMap<[u8; 32], Arc<Claims>>>,
}

type Claims = serde_json::Map<String, serde_json::Value>;

/// At most this many verified tokens are remembered; past it the memory starts over.
const VERIFIED_CAPACITY: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("storage: {0}")]
    Store(#[from] latchkey_store::StoreError),
    #[error(
        "the master key does not open stored signing key {0}: this is not the master key the keys were sealed with (check LATCHKEY_MASTER_KEY or master_key_file)"
    )]
    WrongMasterKey(String),
    #[error("stored key {0} is not a valid key")]
    BadKey(String),
    #[error("key generation failed")]
    Generate,
}

/// The name a key's private part is sealed under (its AEAD associated data).
fn seal_name(kid: &str) -> String {
    format!("signing_key:{kid}")
}

impl KeyRing {
    /// Builds the ring from stored records, opening each published private key.
    pub fn from_records(records: &[KeyRecord], master: &MasterKey) -> Result<KeyRing, KeyError> {
        let mut signing: HashMap<Alg, Arc<SigningKey>> = HashMap::new();
        let mut verifying = Vec::new();
        let mut jwks: Vec<Jwk> = Vec::new();
        // Records come oldest first; the oldest active key of an algorithm signs, so
        // nodes that raced to create a first key agree.
        let mut active: Vec<&KeyRecord> = records
            .iter()
            .filter(|r| r.state == KeyState::Active)
            .collect();
        active.sort_by_key(|r| (r.state_since, r.kid.clone()));
        for r in records.iter().filter(|r| r.state.is_published()) {
            let der = master
                .open(&seal_name(&r.kid), &r.private_pkcs8)
                .map_err(|_| KeyError::WrongMasterKey(r.kid.clone()))?;
            let key = SigningKey::from_pkcs8(r.alg, r.kid.clone(), &der)
                .map_err(|_| KeyError::BadKey(r.kid.clone()))?;
            let jwk = key.public_jwk();
            verifying
                .push(VerifyingKey::from_jwk(&jwk).map_err(|_| KeyError::BadKey(r.kid.clone()))?);
            jwks.push(jwk);
            if active
                .iter()
                .find(|a| a.alg == r.alg)
                .is_some_and(|a| a.kid == r.kid)
            {
                signing.insert(r.alg, Arc::new(key));
            }
        }
        let jwks = serde_json::json!({ "keys": jwks }).to_string();
        let etag = format!("\"{}\"", &latchkey_core::secret::digest(&jwks)[..22]);
        let fingerprint = records.iter().map(|r| (r.kid.clone(), r.state)).collect();
        Ok(KeyRing {
            signing,
            verifying,
            jwks,
            etag,
            fingerprint,
            verified: RwLock::new(HashMap::new()),
        })
    }

    /// Verifies an access token's header and signature (RFC 9068 §4) and returns its
    /// claims, unchecked: the caller checks issuer and times on every use. A token
    /// verified once is remembered, since APIs introspect the same token on every call
    /// and a lookup costs a small fraction of an Ed25519 verification. The memory is
    /// this ring's: when the keys change (a key is revoked) the new ring remembers
    /// nothing, so no token is accepted on a key that is no longer published.
    pub fn verify_access_token(&self, token: &str) -> Result<Claims, JoseError> {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let Ok(id) = <[u8; 32]>::try_from(d.as_ref()) else {
            return verify(token, &self.verifying, ACCESS_TOKEN_TYP);
        };
        if let Some(c) = self
            .verified
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
        {
            return Ok(Claims::clone(c));
        }
        let claims = verify(token, &self.verifying, ACCESS_TOKEN_TYP)?;
        let mut verified = self
            .verified
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= VERIFIED_CAPACITY {
            verified.clear();
        }
        verified.insert(id, Arc::new(claims.clone()));
        Ok(claims)
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

    pub fn etag(&self) -> &str {
        &self.etag
    }

    pub fn same_keys(&self, records: &[KeyRecord]) -> bool {
        self.fingerprint.len() == records.len()
            && self
                .fingerprint
                .iter()
                .zip(records)
                .all(|((kid, st), r)| *kid == r.kid && *st == r.state)
    }
}

/// Creates a key of `alg` and seals its private part.
pub fn new_key(
    alg: Alg,
    state: KeyState,
    now: i64,
    master: &MasterKey,
) -> Result<KeyRecord, KeyError> {
    let rng = SystemRandom::new();
    let suffix = latchkey_core::secret::random_token(&rng).map_err(|_| KeyError::Generate)?;
    let kid = format!("{}-{}-{}", alg.as_str().to_lowercase(), now, &suffix[..8]);
    let (_, der) = SigningKey::generate(alg, kid.clone()).map_err(|_| KeyError::Generate)?;
    let sealed = master
        .seal(&seal_name(&kid), &der, &rng)
        .map_err(|_| KeyError::Generate)?;
    Ok(KeyRecord {
        kid,
        alg,
        state,
        private_pkcs8: sealed,
        created_at: now,
        state_since: now,
    })
}

/// Carries out the schedule once: under the key lock, plan and apply. Returns the
/// changes made (`None` if another node holds the lock).
pub async fn maintain(
    store: &dyn Store,
    master: &Arc<MasterKey>,
    policy: KeyPolicy,
    now: i64,
) -> Result<Option<Vec<KeyWrite>>, KeyError> {
    let m = master.clone();
    let planner = move |keys: &[KeyRecord]| -> Result<Vec<KeyWrite>, String> {
        plan(keys, UnixTime(now), &policy, &Alg::ALL)
            .into_iter()
            .map(|c| match c {
                KeyChange::Create { alg, state } => new_key(alg, state, now, &m)
                    .map(KeyWrite::Insert)
                    .map_err(|e| e.to_string()),
                KeyChange::Transition { kid, from, to } => {
                    Ok(KeyWrite::Transition { kid, from, to })
                }
            })
            .collect()
    };
    Ok(store.maintain_keys(&planner, now).await?)
}

/// An operator's rotation: a `next` key for each algorithm (taking over after the
/// pre-publication window), or with `now`, an active key at once, the old one kept
/// published while its tokens live.
pub async fn rotate(
    store: &dyn Store,
    master: &Arc<MasterKey>,
    algs: &[Alg],
    immediately: bool,
    now: i64,
) -> Result<Vec<KeyWrite>, KeyError> {
    let m = master.clone();
    let algs = algs.to_vec();
    let planner = move |keys: &[KeyRecord]| -> Result<Vec<KeyWrite>, String> {
        let mut writes = Vec::new();
        for &alg in &algs {
            let has_next = keys
                .iter()
                .any(|k| k.alg == alg && k.state == KeyState::Next);
            if immediately {
                for k in keys.iter().filter(|k| {
                    k.alg == alg && matches!(k.state, KeyState::Active | KeyState::Next)
                }) {
                    writes.push(KeyWrite::Transition {
                        kid: k.kid.clone(),
                        from: k.state,
                        to: KeyState::Retiring,
                    });
                }
                writes.push(KeyWrite::Insert(
                    new_key(alg, KeyState::Active, now, &m).map_err(|e| e.to_string())?,
                ));
            } else if !has_next {
                writes.push(KeyWrite::Insert(
                    new_key(alg, KeyState::Next, now, &m).map_err(|e| e.to_string())?,
                ));
            }
        }
        Ok(writes)
    };
    loop {
        if let Some(w) = store.maintain_keys(&planner, now).await? {
            return Ok(w);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Revokes a compromised key: unpublished at once and entered in the revocation feed;
/// if it was signing, a new active key replaces it.
pub async fn revoke(
    store: &dyn Store,
    master: &Arc<MasterKey>,
    kid: &str,
    now: i64,
) -> Result<Option<Vec<KeyWrite>>, KeyError> {
    let m = master.clone();
    let kid = kid.to_owned();
    let planner = move |keys: &[KeyRecord]| -> Result<Vec<KeyWrite>, String> {
        let Some(k) = keys.iter().find(|k| k.kid == kid) else {
            return Err(format!("no key {kid}"));
        };
        let mut writes = vec![KeyWrite::Revoke { kid: kid.clone() }];
        if k.state == KeyState::Active {
            writes.push(KeyWrite::Insert(
                new_key(k.alg, KeyState::Active, now, &m).map_err(|e| e.to_string())?,
            ));
        }
        Ok(writes)
    };
    loop {
        match store.maintain_keys(&planner, now).await {
            Ok(Some(w)) => return Ok(Some(w)),
            Ok(None) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            Err(latchkey_store::StoreError::Plan(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}
