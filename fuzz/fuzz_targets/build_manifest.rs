//! Fuzz target: see imager_fuzz::build_manifest.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| imager_fuzz::build_manifest(data));
