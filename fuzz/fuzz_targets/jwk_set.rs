//! cargo-fuzz target: `wsgate::fuzzing::fuzz_jwk_set` (the invariants live there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsgate::fuzzing::fuzz_jwk_set(data));
