//! Fuzz target: see imager_fuzz::deb_changelog.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| imager_fuzz::deb_changelog(data));
