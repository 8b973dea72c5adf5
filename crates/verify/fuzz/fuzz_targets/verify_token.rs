//! libFuzzer target: arbitrary bytes as a bearer token, as an `Authorization` header
//! value, and as an edit script applied to genuine tokens. Fails on any panic and on any
//! accepted token that the fixture did not issue. See ../Cargo.toml for how to run it.
#![no_main]

#[path = "../../tests/it/fuzz_target.rs"]
mod shared;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shared::check(data);
});
