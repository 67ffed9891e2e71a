//! See `imapgate::fuzzing::proxy`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imapgate::fuzzing::proxy(data));
