//! See `imapgate::fuzzing::smuggling` (`session::exchange::model`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| imapgate::fuzzing::smuggling(data));
