//! Fuzz target: see imager_fuzz::chunked_records.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| imager_fuzz::chunked_records(data));
