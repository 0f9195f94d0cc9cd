//! Fuzz target: see imager_fuzz::dpkg_version.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| imager_fuzz::dpkg_version(data));
