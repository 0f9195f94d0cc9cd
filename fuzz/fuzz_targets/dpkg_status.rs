//! Fuzz target: see imager_fuzz::dpkg_status.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| imager_fuzz::dpkg_status(data));
