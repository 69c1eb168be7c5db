#![no_main]
//! cargo-fuzz target `features`: see `fuzz/harness.rs`.

#[path = "../harness.rs"]
#[allow(dead_code)]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::features(data));
