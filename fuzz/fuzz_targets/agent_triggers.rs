//! Fuzz target: see imager_fuzz::agent_triggers.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| imager_fuzz::agent_triggers(data));
