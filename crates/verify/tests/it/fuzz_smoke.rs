//! The fuzz target's checks on stable, without libFuzzer: a seeded generator feeds it
//! random bytes, token-shaped strings, edits of genuine tokens and the committed seeds
//! of crates/verify/fuzz/seeds. Iterations: LATCHKEY_FUZZ_ITERATIONS (default 20,000).

use crate::fuzz_target::{check, target};

/// xorshift64*: deterministic, so a failure names its seed and iteration.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const DEFAULT_ITERATIONS: usize = 20_000;
const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#[test]
fn fuzz_smoke() {
    let seed = 0x01a7_c4e7_u64;
    let mut rng = Rng(seed);
    let genuine = target().valid.clone();
    let iterations: usize = std::env::var("LATCHKEY_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS);
    let seeds_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/verify_token");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(seeds_dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "seeds in {seeds_dir}");
    for seed_input in &seeds {
        check(seed_input);
    }
    for i in 0..iterations {
        let input: Vec<u8> = match i % 5 {
            // A committed seed with a few random bytes overwritten.
            4 => {
                let mut v = seeds[rng.below(seeds.len())].clone();
                for _ in 0..1 + rng.below(4) {
                    if !v.is_empty() {
                        let at = rng.below(v.len());
                        v[at] = rng.next() as u8;
                    }
                }
                v
            }
            // Raw bytes.
            0 => {
                let n = rng.below(200);
                rng.bytes(n)
            }
            // Token-shaped: base64url segments and dots.
            1 => {
                let n = rng.below(300);
                (0..n)
                    .map(|_| {
                        if rng.below(40) == 0 {
                            b'.'
                        } else {
                            B64URL[rng.below(B64URL.len())]
                        }
                    })
                    .collect()
            }
            // A genuine token with a few edits (the target's edit script).
            _ => {
                let mut v = vec![rng.below(genuine.len()) as u8];
                let edits = 1 + rng.below(6);
                v.extend(rng.bytes(edits * 4));
                v
            }
        };
        let result = std::panic::catch_unwind(|| check(&input));
        assert!(
            result.is_ok(),
            "seed {seed:#x}, iteration {i}, input {:?}",
            String::from_utf8_lossy(&input)
        );
    }
    // And the genuine tokens themselves, through the same target.
    for t in &genuine {
        check(t.as_bytes());
    }
}
