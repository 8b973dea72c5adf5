#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| latchkey_core::fuzzing::request_parsers(data));
