//! Fuzz target: see imager_fuzz::protocol_body.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| imager_fuzz::protocol_body(data));
