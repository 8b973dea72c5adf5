//! Signing-key rotation as a pure plan (DESIGN §5, REL-03): given the keys and the
//! time, what must change. A key is published before it signs and stays published
//! until every token it signed has expired:
//!
//! ```text
//!   next ──(published ≥ prepublish)──▶ active ──(successor active)──▶ retiring
//!   retiring ──(≥ retire_after since it stopped signing)──▶ retired (unpublished)
//! ```
//!
//! The store applies the plan under a database lock, so N nodes rotate once.

use crate::UnixTime;
use crate::jose::Alg;
use crate::model::{KeyRecord, KeyState};

/// The schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPolicy {
    /// How long a key signs before its successor takes over.
    pub rotation_interval: i64,
    /// How long a new key is published before it signs: at least one JWKS cache
    /// lifetime, so every verifier that honours the cache lifetime has it.
    pub prepublish: i64,
    /// How long a key stays published after it stops signing: at least the longest
    /// token lifetime plus the JWKS cache lifetime.
    pub retire_after: i64,
}

/// One change the plan calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChange {
    /// Make a new key of `alg` in `state` (`Next` normally, `Active` when none signs).
    Create { alg: Alg, state: KeyState },
    /// Move key `kid` from `from` to `to` (applied only if it is still in `from`).
    Transition {
        kid: String,
        from: KeyState,
        to: KeyState,
    },
}

/// What the schedule requires now for the algorithms in `algs`.
pub fn plan(keys: &[KeyRecord], now: UnixTime, policy: &KeyPolicy, algs: &[Alg]) -> Vec<KeyChange> {
    let mut changes = Vec::new();
    for &alg in algs {
        let of = |s: KeyState| keys.iter().filter(move |k| k.alg == alg && k.state == s);
        // Newest first: if two active keys exist (nodes raced at bootstrap), the
        // oldest signs (see KeyRing) and the others are demoted on the next pass.
        let active: Vec<&KeyRecord> = of(KeyState::Active).collect();
        let next = of(KeyState::Next).min_by_key(|k| (k.state_since, k.kid.clone()));
        match (active.first(), next) {
            (None, None) => changes.push(KeyChange::Create {
                alg,
                state: KeyState::Active,
            }),
            (None, Some(n)) => changes.push(transition(n, KeyState::Active)),
            (Some(current), next) => {
                let signing = active
                    .iter()
                    .min_by_key(|k| (k.state_since, k.kid.clone()))
                    .copied()
                    .unwrap_or(current);
                for extra in active.iter().filter(|k| k.kid != signing.kid) {
                    changes.push(transition(extra, KeyState::Retiring));
                }
                match next {
                    Some(n) if now.0 - n.state_since >= policy.prepublish => {
                        changes.push(transition(n, KeyState::Active));
                        changes.push(transition(signing, KeyState::Retiring));
                    }
                    Some(_) => {}
                    None if now.0 - signing.state_since
                        >= policy.rotation_interval - policy.prepublish =>
                    {
                        changes.push(KeyChange::Create {
                            alg,
                            state: KeyState::Next,
                        });
                    }
                    None => {}
                }
            }
        }
        for k in of(KeyState::Retiring) {
            if now.0 - k.state_since >= policy.retire_after {
                changes.push(transition(k, KeyState::Retired));
            }
        }
    }
    changes
}

fn transition(k: &KeyRecord, to: KeyState) -> KeyChange {
    KeyChange::Transition {
        kid: k.kid.clone(),
        from: k.state,
        to,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: KeyPolicy = KeyPolicy {
        rotation_interval: 1000,
        prepublish: 100,
        retire_after: 400,
    };

    fn key(kid: &str, state: KeyState, since: i64) -> KeyRecord {
        KeyRecord {
            kid: kid.into(),
            alg: Alg::EdDSA,
            state,
            private_pkcs8: vec![],
            created_at: since,
            state_since: since,
        }
    }

    /// Applies a plan the way the store does, creating keys named k1, k2, …
    fn apply(keys: &mut Vec<KeyRecord>, changes: &[KeyChange], now: i64) {
        for c in changes {
            match c {
                KeyChange::Create { state, .. } => {
                    let kid = format!("k{}", keys.len() + 1);
                    keys.push(key(&kid, *state, now));
                }
                KeyChange::Transition { kid, from, to } => {
                    if let Some(k) = keys.iter_mut().find(|k| k.kid == *kid && k.state == *from) {
                        k.state = *to;
                        k.state_since = now;
                    }
                }
            }
        }
    }

    fn states(keys: &[KeyRecord]) -> Vec<(String, KeyState)> {
        keys.iter().map(|k| (k.kid.clone(), k.state)).collect()
    }

    #[test]
    fn bootstrap_creates_an_active_key() {
        assert_eq!(
            plan(&[], UnixTime(0), &POLICY, &[Alg::EdDSA]),
            vec![KeyChange::Create {
                alg: Alg::EdDSA,
                state: KeyState::Active
            }]
        );
    }

    #[test]
    fn a_key_is_published_before_it_signs_and_after_it_stops() {
        let mut keys = vec![key("k1", KeyState::Active, 0)];
        let mut published_at = std::collections::HashMap::new();
        let mut signing_at = std::collections::HashMap::new();
        let mut unpublished_at = std::collections::HashMap::new();
        let mut stopped_signing_at = std::collections::HashMap::new();
        // Walk time in steps of 10 s through three rotations.
        for now in (0..3500).step_by(10) {
            let changes = plan(&keys, UnixTime(now), &POLICY, &[Alg::EdDSA]);
            apply(&mut keys, &changes, now);
            for k in &keys {
                if k.state.is_published() {
                    published_at.entry(k.kid.clone()).or_insert(now);
                } else {
                    unpublished_at.entry(k.kid.clone()).or_insert(now);
                }
                if k.state == KeyState::Active {
                    signing_at.entry(k.kid.clone()).or_insert(now);
                } else if signing_at.contains_key(&k.kid) {
                    stopped_signing_at.entry(k.kid.clone()).or_insert(now);
                }
            }
            assert_eq!(
                keys.iter().filter(|k| k.state == KeyState::Active).count(),
                1,
                "one active key at {now}: {:?}",
                states(&keys)
            );
        }
        assert!(
            keys.len() >= 4,
            "three rotations happened: {:?}",
            states(&keys)
        );
        for (kid, signs) in &signing_at {
            if kid != "k1" {
                assert!(
                    signs - published_at[kid] >= POLICY.prepublish,
                    "{kid} signed before being published long enough"
                );
            }
        }
        for (kid, gone) in &unpublished_at {
            assert!(
                gone - stopped_signing_at[kid] >= POLICY.retire_after,
                "{kid} left the JWKS too early"
            );
        }
        // Rotation period: each key signs for about rotation_interval.
        let k2 = signing_at["k2"];
        let k3 = signing_at["k3"];
        assert!(
            (k3 - k2 - POLICY.rotation_interval).abs() <= 10,
            "k2 signed from {k2}, k3 from {k3}"
        );
    }

    #[test]
    fn a_manual_next_key_takes_over_after_prepublication() {
        let mut keys = vec![
            key("k1", KeyState::Active, 0),
            key("k2", KeyState::Next, 50),
        ];
        assert!(plan(&keys, UnixTime(120), &POLICY, &[Alg::EdDSA]).is_empty());
        let changes = plan(&keys, UnixTime(150), &POLICY, &[Alg::EdDSA]);
        apply(&mut keys, &changes, 150);
        assert_eq!(
            states(&keys),
            vec![
                ("k1".into(), KeyState::Retiring),
                ("k2".into(), KeyState::Active)
            ]
        );
    }

    #[test]
    fn racing_bootstrap_keys_settle_on_the_oldest() {
        let keys = vec![key("a", KeyState::Active, 5), key("b", KeyState::Active, 3)];
        let changes = plan(&keys, UnixTime(10), &POLICY, &[Alg::EdDSA]);
        assert_eq!(
            changes,
            vec![KeyChange::Transition {
                kid: "a".into(),
                from: KeyState::Active,
                to: KeyState::Retiring
            }]
        );
    }
}
