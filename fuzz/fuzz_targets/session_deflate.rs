//! cargo-fuzz target: `wsgate::fuzzing::fuzz_session_deflate` (the invariants live there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsgate::fuzzing::fuzz_session_deflate(data));
