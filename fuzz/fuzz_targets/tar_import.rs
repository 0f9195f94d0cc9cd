//! Fuzz target: see imager_fuzz::tar_import.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| imager_fuzz::tar_import(data));
