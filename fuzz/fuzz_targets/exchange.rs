//! See `imapgate::fuzzing::exchange`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imapgate::fuzzing::exchange(data));
