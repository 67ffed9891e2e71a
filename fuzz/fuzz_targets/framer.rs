//! See `imapgate::fuzzing::framer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imapgate::fuzzing::framer(data));
