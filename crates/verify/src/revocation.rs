//! The revocation feed (docs/state-and-revocation.md, "Following the revocation feed"):
//! the grants, users, clients and signing keys revoked within the last access-token
//! lifetime, kept as sets the verifier checks every token against.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};

use serde::Deserialize;

use crate::claims::Claims;
use crate::error::{RevokedBy, TokenError};

/// One page of `GET {issuer}/revocations?since=N`.
#[derive(Debug, Deserialize)]
pub(crate) struct FeedPage {
    pub revoked: Vec<FeedEntry>,
    pub next_since: i64,
    #[serde(default)]
    pub more: bool,
    pub window: i64,
    pub server_time: i64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct FeedEntry {
    pub kind: String,
    pub id: String,
    pub revoked_at: i64,
}

#[derive(Default)]
struct Sets {
    grant: HashMap<String, i64>,
    user: HashMap<String, i64>,
    client: HashMap<String, i64>,
    key: HashMap<String, i64>,
}

impl Sets {
    fn is_empty(&self) -> bool {
        self.grant.is_empty()
            && self.user.is_empty()
            && self.client.is_empty()
            && self.key.is_empty()
    }
}

/// What the feed has listed, each entry kept until `window` seconds after its
/// `revoked_at` (by then every token it concerns has expired).
#[derive(Default)]
pub(crate) struct RevocationList {
    sets: RwLock<Sets>,
    /// Lets the common case, nothing revoked, skip the lock.
    any: AtomicBool,
}

impl RevocationList {
    /// Refuses a token whose `gid`, `sub`, `client_id` or signing key is listed.
    pub fn check(&self, claims: &Claims) -> Result<(), TokenError> {
        if !self.any.load(Ordering::Acquire) {
            return Ok(());
        }
        let sets = self.sets.read().unwrap_or_else(PoisonError::into_inner);
        let by = if claims
            .grant_id
            .as_deref()
            .is_some_and(|g| sets.grant.contains_key(g))
        {
            Some(RevokedBy::Grant)
        } else if sets.user.contains_key(&claims.subject) {
            Some(RevokedBy::User)
        } else if sets.client.contains_key(&claims.client_id) {
            Some(RevokedBy::Client)
        } else if sets.key.contains_key(&claims.key_id) {
            Some(RevokedBy::Key)
        } else {
            None
        };
        by.map_or(Ok(()), |by| Err(TokenError::Revoked(by)))
    }

    /// Adds a page's entries (repeats are harmless: the feed overlaps on purpose) and
    /// forgets entries older than the window, judged by the server's clock.
    pub fn apply(&self, page: &FeedPage) {
        let mut guard = self.sets.write().unwrap_or_else(PoisonError::into_inner);
        let sets = &mut *guard;
        for e in &page.revoked {
            let set = match e.kind.as_str() {
                "grant" => &mut sets.grant,
                "user" => &mut sets.user,
                "client" => &mut sets.client,
                "key" => &mut sets.key,
                // A kind this version does not know concerns no claim it reads.
                _ => continue,
            };
            let at = set.entry(e.id.clone()).or_insert(e.revoked_at);
            *at = (*at).max(e.revoked_at);
        }
        let horizon = page.server_time.saturating_sub(page.window.max(0));
        for set in [
            &mut sets.grant,
            &mut sets.user,
            &mut sets.client,
            &mut sets.key,
        ] {
            set.retain(|_, at| *at >= horizon);
        }
        self.any.store(!sets.is_empty(), Ordering::Release);
    }

    /// How many entries are held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        let sets = self.sets.read().unwrap_or_else(PoisonError::into_inner);
        sets.grant.len() + sets.user.len() + sets.client.len() + sets.key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(entries: &[(&str, &str, i64)], server_time: i64) -> FeedPage {
        FeedPage {
            revoked: entries
                .iter()
                .map(|(k, i, at)| FeedEntry {
                    kind: (*k).to_owned(),
                    id: (*i).to_owned(),
                    revoked_at: *at,
                })
                .collect(),
            next_since: server_time - 10,
            more: false,
            window: 360,
            server_time,
        }
    }

    #[test]
    fn entries_expire_after_the_window() {
        let list = RevocationList::default();
        list.apply(&page(
            &[
                ("grant", "g", 1000),
                ("user", "u", 1200),
                ("what", "x", 1200),
            ],
            1300,
        ));
        assert_eq!(list.len(), 2);
        list.apply(&page(&[("grant", "g", 1000)], 1361));
        assert_eq!(
            list.len(),
            1,
            "g is older than the window; the repeat does not revive it"
        );
        list.apply(&page(&[], 2000));
        assert_eq!(list.len(), 0);
        assert!(!list.any.load(Ordering::Acquire));
    }
}
