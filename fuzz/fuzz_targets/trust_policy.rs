//! Fuzz target: see imager_fuzz::trust_policy.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| imager_fuzz::trust_policy(data));
