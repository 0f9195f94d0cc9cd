//! Fuzz target: see imager_fuzz::protocol_stream.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| imager_fuzz::protocol_stream(data));
