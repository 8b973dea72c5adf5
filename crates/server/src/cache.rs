//! Clients and users cached in process with a version check (DESIGN §8).
//!
//! Every token, introspection and authorization request names a client, and most name
//! a user; reading them from the store was most of the cost of a client_credentials
//! token. Both change only through the admin commands, which bump a counter in the
//! store (`Store::versions`) in the same transaction as the change. Each node polls the
//! counters every `client_check_interval_ms` and drops a cache whose counter moved, so
//! a deleted client or a replaced secret stops working on every node within one poll.
//! Triggers bump the counters on every change to those tables, whoever makes it.
//! Entries are trusted only while the last check is recent (four intervals and a
//! second): a node whose checks stall reads from the store as if it had no cache.
//!
//! What a deleted client can still do within that poll is bounded: the codes it obtains
//! cannot be redeemed (`Store::redeem_code` requires the client), introspection and
//! userinfo refuse its tokens once the poll has run, and APIs that follow the
//! revocation feed refuse them at once (its `client` entry covers every token of the
//! client). A deleted user needs no poll: deleting ends their sessions and revokes
//! their grants in the same transaction, and those are never cached.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use latchkey_store::StoreError;

/// At most this many entries are kept; past it the cache starts over (a node serving
/// more active clients or users than this reads some from the store, as without one).
const CAPACITY: usize = 10_000;

/// A map from id to a shared value, valid while the store's counter for it is unchanged.
pub struct VersionedCache<T> {
    entries: RwLock<HashMap<String, Arc<T>>>,
    /// Bumped, under the write lock, each time the entries are dropped: a read from the
    /// store that began before a drop must not put what it read back in.
    epoch: AtomicU64,
    /// The store's counter the entries belong to; `None` before the first check and
    /// after a failed one.
    version: Mutex<Option<i64>>,
    /// When the counter was last read, in milliseconds after `born` plus one (0: never).
    /// Entries are used only while that is within `max_age`: a node whose checks stall
    /// (a hung database, no checker running) reads from the store instead.
    checked_ms: AtomicU64,
    born: Instant,
    max_age: Duration,
    enabled: bool,
}

impl<T> VersionedCache<T> {
    /// A cache whose entries are trusted while the counter was read within `max_age`;
    /// `enabled: false` makes every lookup a store read.
    pub fn new(enabled: bool, max_age: Duration) -> VersionedCache<T> {
        VersionedCache {
            entries: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            version: Mutex::new(None),
            checked_ms: AtomicU64::new(0),
            born: Instant::now(),
            max_age,
            enabled,
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Whether the counter was read recently enough to trust the entries.
    fn recently_checked(&self) -> bool {
        match self.checked_ms.load(Ordering::Acquire) {
            0 => false,
            at => {
                let age = self.elapsed_ms().saturating_sub(at - 1);
                u128::from(age) <= self.max_age.as_millis()
            }
        }
    }

    /// The value for `id`, from the cache or else from `load`. Absent ids are not
    /// cached: anyone could fill the cache with them.
    pub async fn get<F>(&self, id: &str, load: F) -> Result<Option<Arc<T>>, StoreError>
    where
        F: Future<Output = Result<Option<T>, StoreError>>,
    {
        if !self.enabled || !self.recently_checked() {
            return Ok(load.await?.map(Arc::new));
        }
        if let Some(v) = self
            .entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
        {
            return Ok(Some(v.clone()));
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let Some(value) = load.await?.map(Arc::new) else {
            return Ok(None);
        };
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if self.epoch.load(Ordering::Acquire) == epoch {
            if entries.len() >= CAPACITY {
                entries.clear();
            }
            entries.insert(id.to_owned(), value.clone());
        }
        Ok(Some(value))
    }

    /// Takes the store's current counter (`None`: it could not be read) and drops every
    /// entry if it moved since the last check or is unknown: a node that cannot see
    /// changes must not serve what may have changed.
    pub fn observe(&self, counter: Option<i64>) {
        let changed = {
            let mut version = self.version.lock().unwrap_or_else(PoisonError::into_inner);
            let changed = *version != counter || counter.is_none();
            *version = counter;
            let checked = if counter.is_some() {
                self.elapsed_ms().saturating_add(1)
            } else {
                0
            };
            self.checked_ms.store(checked, Ordering::Release);
            changed
        };
        if changed {
            let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
            self.epoch.fetch_add(1, Ordering::AcqRel);
            entries.clear();
        }
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn load(v: Option<&str>) -> Result<Option<String>, StoreError> {
        Ok(v.map(str::to_owned))
    }

    #[tokio::test]
    async fn serves_cached_until_the_counter_moves() {
        let cache = VersionedCache::new(true, Duration::from_secs(60));
        cache.observe(Some(1));
        let a = cache.get("c", load(Some("old"))).await.unwrap().unwrap();
        assert_eq!(*a, "old");
        // Cached: the loader's answer is not used.
        let b = cache.get("c", load(Some("new"))).await.unwrap().unwrap();
        assert_eq!(*b, "old");
        cache.observe(Some(1));
        assert_eq!(*cache.get("c", load(None)).await.unwrap().unwrap(), "old");
        cache.observe(Some(2));
        assert!(cache.get("c", load(None)).await.unwrap().is_none());
        assert!(cache.is_empty(), "absent ids are not cached");
    }

    #[tokio::test]
    async fn an_unreadable_counter_drops_everything() {
        let cache = VersionedCache::new(true, Duration::from_secs(60));
        cache.observe(Some(7));
        cache.get("c", load(Some("x"))).await.unwrap();
        assert_eq!(cache.len(), 1);
        cache.observe(None);
        assert!(cache.is_empty());
        // And the next good read drops again (the counter was unknown until then).
        cache.get("c", load(Some("x"))).await.unwrap();
        cache.observe(Some(7));
        assert!(cache.is_empty());
    }

    #[tokio::test]
    async fn a_load_that_straddles_a_drop_is_not_kept() {
        let cache = Arc::new(VersionedCache::new(true, Duration::from_secs(60)));
        cache.observe(Some(1));
        let c2 = cache.clone();
        // The load reads "old", then the counter moves before it returns.
        let got = cache
            .get("c", async move {
                c2.observe(Some(2));
                Ok(Some("old".to_owned()))
            })
            .await
            .unwrap();
        assert_eq!(got.as_deref().map(String::as_str), Some("old"));
        assert!(cache.is_empty(), "a value read before the drop was kept");
    }

    #[tokio::test]
    async fn nothing_is_trusted_without_a_recent_check() {
        let cache = VersionedCache::new(true, Duration::from_millis(50));
        // Never checked: every lookup loads.
        cache.get("c", load(Some("a"))).await.unwrap();
        assert_eq!(
            *cache.get("c", load(Some("b"))).await.unwrap().unwrap(),
            "b"
        );
        cache.observe(Some(1));
        cache.get("c", load(Some("a"))).await.unwrap();
        assert_eq!(
            *cache.get("c", load(Some("b"))).await.unwrap().unwrap(),
            "a"
        );
        // The checks stall: past max_age the store is read again.
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(
            *cache.get("c", load(Some("b"))).await.unwrap().unwrap(),
            "b"
        );
    }

    #[tokio::test]
    async fn disabled_always_loads() {
        let cache = VersionedCache::new(false, Duration::from_secs(60));
        cache.observe(Some(1));
        cache.get("c", load(Some("a"))).await.unwrap();
        assert_eq!(
            *cache.get("c", load(Some("b"))).await.unwrap().unwrap(),
            "b"
        );
    }
}
