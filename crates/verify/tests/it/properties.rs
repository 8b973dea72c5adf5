//! Property: no mutation of a valid token's bytes is accepted.

use proptest::prelude::*;

use crate::fuzz_target::{run_now, target};
use latchkey_verify::Policy;

fn refused(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(text) => run_now(target().verifier.verify(text, &Policy::any())).is_err(),
        Err(_) => true, // not even a string: no HTTP header could carry it
    }
}

fn genuine(which: usize) -> Vec<u8> {
    let valid = &target().valid;
    valid[which % valid.len()].as_bytes().to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn replacing_a_byte(which in 0usize..4, at in any::<prop::sample::Index>(), b in any::<u8>()) {
        let mut t = genuine(which);
        let i = at.index(t.len());
        prop_assume!(t[i] != b);
        t[i] = b;
        prop_assert!(refused(&t));
    }

    #[test]
    fn inserting_a_byte(which in 0usize..4, at in any::<prop::sample::Index>(), b in any::<u8>()) {
        let mut t = genuine(which);
        t.insert(at.index(t.len() + 1), b);
        prop_assert!(refused(&t));
    }

    #[test]
    fn deleting_bytes(which in 0usize..4, at in any::<prop::sample::Index>(), n in 1usize..8) {
        let mut t = genuine(which);
        let i = at.index(t.len());
        let end = (i + n).min(t.len());
        t.drain(i..end);
        prop_assert!(refused(&t));
    }

    #[test]
    fn flipping_a_bit(which in 0usize..4, at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut t = genuine(which);
        let i = at.index(t.len());
        t[i] ^= 1 << bit;
        prop_assert!(refused(&t));
    }

    #[test]
    fn swapping_two_bytes(which in 0usize..4, a in any::<prop::sample::Index>(), b in any::<prop::sample::Index>()) {
        let mut t = genuine(which);
        let (i, j) = (a.index(t.len()), b.index(t.len()));
        prop_assume!(t[i] != t[j]);
        t.swap(i, j);
        prop_assert!(refused(&t));
    }

    #[test]
    fn truncating_or_extending(which in 0usize..4, keep in any::<prop::sample::Index>(), tail in proptest::collection::vec(any::<u8>(), 0..16)) {
        let original = genuine(which);
        let mut t = original[..keep.index(original.len())].to_vec();
        t.extend(tail);
        prop_assume!(t != original);
        prop_assert!(refused(&t));
    }
}
