//! The smuggling property in-process: a client stream through a judged exchange to a
//! model of a lenient backend (Dovecot's quirks); the backend never executes a denied
//! command or touches a hidden folder. See `session::exchange::model`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imapgate::session::exchange::model::check(data);
});
