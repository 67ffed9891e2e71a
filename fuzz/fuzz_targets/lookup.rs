//! See `imapgate::fuzzing::lookup`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imapgate::fuzzing::lookup(data));
