//! Fuzz target: see imager_fuzz::manifest_text.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| imager_fuzz::manifest_text(data));
