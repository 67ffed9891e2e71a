//! See `imapgate::fuzzing::preauth`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imapgate::fuzzing::preauth(data));
