//! Recently verified tokens, keyed by their SHA-256 digest, so a token presented again
//! skips parsing and the signature check until its `exp`. Only tokens that passed every
//! route-independent check enter; revocation and the route's policy are still checked
//! on every use.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use crate::claims::Claims;

/// A SHA-256 digest of a token.
pub(crate) type Digest = [u8; 32];

pub(crate) fn digest(token: &str) -> Digest {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The key is already a uniform digest, and only tokens that verified get in, so the
/// map can use its first eight bytes as the hash.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 |= u64::from(*b) << (8 * i);
        }
    }
}

type Shard = HashMap<Digest, Arc<Claims>, BuildHasherDefault<DigestHasher>>;

const SHARDS: usize = 16;

pub(crate) struct TokenCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
}

impl TokenCache {
    /// A cache of about `capacity` tokens; zero turns it off.
    pub fn new(capacity: usize) -> TokenCache {
        let per_shard = capacity.div_ceil(SHARDS);
        let shards = if capacity == 0 {
            Vec::new()
        } else {
            (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect()
        };
        TokenCache { shards, per_shard }
    }

    pub fn is_enabled(&self) -> bool {
        !self.shards.is_empty()
    }

    fn shard(&self, key: &Digest) -> Option<&Mutex<Shard>> {
        let n = self.shards.len();
        if n == 0 {
            return None;
        }
        self.shards.get(usize::from(key[31]) % n)
    }

    /// The claims of a cached token that has not reached its `exp`.
    pub fn get(&self, key: &Digest, now: i64) -> Option<Arc<Claims>> {
        let mut shard = self
            .shard(key)?
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let claims = shard.get(key)?;
        if now < claims.expires_at {
            return Some(Arc::clone(claims));
        }
        shard.remove(key);
        None
    }

    pub fn insert(&self, key: Digest, claims: Arc<Claims>, now: i64) {
        if now >= claims.expires_at {
            return;
        }
        let Some(shard) = self.shard(&key) else {
            return;
        };
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, c| now < c.expires_at);
            if shard.len() >= self.per_shard {
                // Still full of live tokens: drop one. Which one hardly matters; it is
                // verified again on its next use.
                if let Some(victim) = shard.keys().next().copied() {
                    shard.remove(&victim);
                }
            }
        }
        shard.insert(key, claims);
    }

    /// Forgets everything (a key left the JWKS, so its tokens must be checked again).
    pub fn clear(&self) {
        for shard in &self.shards {
            shard.lock().unwrap_or_else(PoisonError::into_inner).clear();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Arc<Claims> {
        let payload = serde_json::json!({
            "iss": "i", "sub": "s", "aud": "a", "client_id": "c", "iat": 0, "exp": exp, "jti": "j"
        });
        let want = crate::claims::Expected {
            issuer: "i",
            audience: "a",
            leeway: 0,
            now: 0,
        };
        Arc::new(crate::claims::check(payload.to_string().as_bytes(), "k", &want).unwrap())
    }

    #[test]
    fn bounded_and_expiring() {
        let cache = TokenCache::new(32);
        for i in 0..1000 {
            cache.insert(digest(&format!("t{i}")), claims(100), 0);
        }
        assert!(cache.len() <= 32, "{}", cache.len());
        let k = digest("x");
        cache.insert(k, claims(100), 0);
        assert!(cache.get(&k, 99).is_some());
        assert!(cache.get(&k, 100).is_none());
        assert!(cache.get(&k, 0).is_none(), "expired entries are removed");
        cache.insert(k, claims(100), 100);
        assert!(cache.get(&k, 0).is_none(), "expired tokens never enter");
    }

    #[test]
    fn disabled() {
        let cache = TokenCache::new(0);
        assert!(!cache.is_enabled());
        cache.insert(digest("x"), claims(100), 0);
        assert!(cache.get(&digest("x"), 0).is_none());
    }
}
