//! The only module with `unsafe`: the libc syslog interface. Every block says why it is
//! sound.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::sync::OnceLock;

/// The identity string must outlive every `syslog` call: openlog keeps the pointer.
static IDENT: OnceLock<CString> = OnceLock::new();

/// Opens the syslog connection now (LOG_NDELAY), so it keeps working after a chroot.
pub fn openlog(facility: i32) {
    let ident = IDENT.get_or_init(|| CString::new("imapgate").expect("no NUL in a literal"));
    // SAFETY: `ident` is a valid NUL-terminated string that lives for the whole process
    // (a static), as openlog(3) requires; the flags and facility are plain integers.
    unsafe { libc::openlog(ident.as_ptr(), libc::LOG_PID | libc::LOG_NDELAY, facility) }
}

/// Sends one message at `priority`. NUL bytes in the message are replaced.
pub fn syslog(priority: i32, message: &str) {
    let message = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    // SAFETY: the format is a static NUL-terminated "%s" and its one argument is a valid
    // NUL-terminated C string, so syslog(3) reads exactly one string argument.
    unsafe { libc::syslog(priority, c"%s".as_ptr(), message.as_ptr()) }
}
