//! Online-guessing defences (TM-06, RFC 6819 §5.1.4.2.3): per-address rate limits and
//! per-account slowdown. Failed attempts on an account make every further attempt on it
//! wait longer, up to a few seconds, instead of locking it (a lockout lets an attacker
//! lock anyone out). Counters live in this node's memory: each node enforces its own
//! share, and nothing secret is kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures tolerated before the slowdown starts.
const FREE_FAILURES: u32 = 5;
/// The slowdown doubles per failure from here...
const FIRST_DELAY: Duration = Duration::from_millis(250);
/// ...up to this.
const MAX_DELAY: Duration = Duration::from_secs(4);
/// Failures are forgotten this long after the last one.
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Most keys tracked; beyond this, stale entries are pruned and then the oldest.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Throttle {
    /// How long an attempt on `key` must wait, given its recent failures.
    pub fn delay(&self, key: &str) -> Duration {
        let map = lock(&self.failures);
        match map.get(key) {
            Some((n, last)) if last.elapsed() < FAILURE_WINDOW && *n > FREE_FAILURES => {
                let exp = (*n - FREE_FAILURES - 1).min(16);
                FIRST_DELAY.saturating_mul(1 << exp).min(MAX_DELAY)
            }
            _ => Duration::ZERO,
        }
    }

    pub fn fail(&self, key: &str) {
        let mut map = lock(&self.failures);
        prune(
            &mut map,
            |(_, last)| last.elapsed() >= FAILURE_WINDOW,
            |(n, _)| *n > FREE_FAILURES,
        );
        let e = map.entry(key.to_owned()).or_insert((0, Instant::now()));
        if e.1.elapsed() >= FAILURE_WINDOW {
            e.0 = 0;
        }
        e.0 = e.0.saturating_add(1);
        e.1 = Instant::now();
    }

    pub fn succeed(&self, key: &str) {
        lock(&self.failures).remove(key);
    }

    /// A token bucket per key: `burst` attempts at once, refilled at `per_second`.
    /// Returns `Err(retry_after)` when empty.
    pub fn take(&self, key: &str, burst: f64, per_second: f64) -> Result<(), Duration> {
        let mut map = lock(&self.buckets);
        prune(
            &mut map,
            |(tokens, at)| *tokens + at.elapsed().as_secs_f64() * per_second >= burst,
            |(tokens, _)| *tokens < 1.0,
        );
        let now = Instant::now();
        let (tokens, at) = map.entry(key.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_second).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / per_second).max(Duration::from_secs(1)))
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Keeps a map bounded: drops entries that no longer matter, then those that matter
/// least; the ones under attack (`keep`) stay, so a flood of new keys cannot reset
/// them. Only if every entry is under attack is the map emptied.
fn prune<V>(map: &mut HashMap<String, V>, stale: impl Fn(&V) -> bool, keep: impl Fn(&V) -> bool) {
    if map.len() >= MAX_KEYS {
        map.retain(|_, v| !stale(v));
        if map.len() >= MAX_KEYS {
            map.retain(|_, v| keep(v));
        }
        if map.len() >= MAX_KEYS {
            map.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slowdown_grows_then_caps_and_success_clears_it() {
        let t = Throttle::default();
        for _ in 0..FREE_FAILURES {
            t.fail("alice");
        }
        assert_eq!(t.delay("alice"), Duration::ZERO);
        t.fail("alice");
        assert_eq!(t.delay("alice"), FIRST_DELAY);
        t.fail("alice");
        assert_eq!(t.delay("alice"), FIRST_DELAY * 2);
        for _ in 0..20 {
            t.fail("alice");
        }
        assert_eq!(t.delay("alice"), MAX_DELAY);
        assert_eq!(t.delay("bob"), Duration::ZERO, "per account");
        t.succeed("alice");
        assert_eq!(t.delay("alice"), Duration::ZERO);
    }

    #[test]
    fn buckets_refill() {
        let t = Throttle::default();
        for _ in 0..3 {
            assert!(t.take("ip", 3.0, 0.001).is_ok());
        }
        assert!(t.take("ip", 3.0, 0.001).is_err());
        assert!(t.take("other", 3.0, 0.001).is_ok());
    }
}
