//! See `imapgate::fuzzing::command`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imapgate::fuzzing::command(data));
