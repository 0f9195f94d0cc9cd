//! Fuzz target: see imager_fuzz::journal.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| imager_fuzz::journal(data));
