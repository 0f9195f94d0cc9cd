//! Fuzz target: see imager_fuzz::bitcode_patch.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| imager_fuzz::bitcode_patch(data));
