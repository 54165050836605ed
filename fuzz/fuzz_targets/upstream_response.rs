//! cargo-fuzz target: `wsgate::fuzzing::fuzz_upstream_response` (the invariants live there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsgate::fuzzing::fuzz_upstream_response(data));
