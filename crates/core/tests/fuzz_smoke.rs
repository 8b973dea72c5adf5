//! The fuzz targets' checks on stable Rust: every seed in crates/core/fuzz/seeds, then
//! random mutations of them (a fixed-seed generator, so a failure reproduces). The real
//! coverage-guided runs use `scripts/fuzz` (libFuzzer, nightly). Iterations per target:
//! LATCHKEY_FUZZ_ITERATIONS (default 20,000).

#![allow(clippy::panic, reason = "a test fails by panicking")]

use latchkey_core::fuzzing;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }
}

const INTERESTING: &[&[u8]] = &[
    b"%", b"%00", b"%ff", b"&", b"=", b"+", b"#", b"\xff", b"\xc3", b"\n", b".", b"..", b"//",
    b"@", b":", b"[", b"]", b"%2e", b"\\u0000", b"{\"a\":", b"eyJ",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = u8::try_from(rng.next() & 0xff).unwrap_or(0);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v.remove(i);
            }
            2 => {
                let i = rng.below(v.len() + 1);
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                v.splice(i..i, piece.iter().copied());
            }
            3 if v.len() > 2 => {
                let a = rng.below(v.len());
                let b = rng.below(v.len());
                let (lo, hi) = (a.min(b), a.max(b));
                let chunk = v[lo..hi].to_vec();
                v.extend(chunk);
            }
            4 => v.truncate(rng.below(v.len() + 1)),
            _ => v.push(b'a' + u8::try_from(rng.below(26)).unwrap_or(0)),
        }
    }
    v
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed directory {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read(e.path()).ok())
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

fn run(target: &str, f: fn(&[u8])) {
    let iterations: usize = std::env::var("LATCHKEY_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seeds = seeds(target);
    for s in &seeds {
        f(s);
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ target.len() as u64);
    for _ in 0..iterations {
        let pick = rng.below(seeds.len());
        let input = mutate(&mut rng, &seeds[pick]);
        let result = std::panic::catch_unwind(|| f(&input));
        assert!(
            result.is_ok(),
            "{target} panicked on input {:?}",
            String::from_utf8_lossy(&input)
        );
    }
}

#[test]
fn request_parsers() {
    run("request_parsers", fuzzing::request_parsers);
}

#[test]
fn redirect_uris() {
    run("redirect_uris", fuzzing::redirect_uris);
}

#[test]
fn jws() {
    run("jws", fuzzing::jws);
}
