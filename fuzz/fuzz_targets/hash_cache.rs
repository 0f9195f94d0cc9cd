//! Fuzz target: see imager_fuzz::hash_cache.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| imager_fuzz::hash_cache(data));
