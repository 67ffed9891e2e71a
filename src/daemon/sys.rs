//! The only module with `unsafe`: the libc syslog interface, fork(2), _exit(2) and
//! adopting descriptors passed by systemd. Every block says why it is sound.
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

/// Which side of a `fork` this process is on.
pub enum Forked {
    /// The new process.
    Child,
    /// The parent, with the child's PID.
    Parent(nix::unistd::Pid),
}

/// fork(2) for the fork-mode listener process, which checks that it has a single thread
/// before calling this ([`thread_count`]).
pub fn fork_single_threaded() -> std::io::Result<Forked> {
    // SAFETY: fork is unsafe because only async-signal-safe functions may run in the
    // child of a multi-threaded process (another thread may hold a lock). The caller,
    // the fork-mode listener, has verified that it is single-threaded (`thread_count()
    // == 1`) and never starts threads, so the child inherits no lock held by anyone else
    // and may run ordinary code.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child)),
    }
}

/// Number of threads of this process, from /proc/self/status (0 when unknown).
pub fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Ends a forked session process at once, without running exit handlers or flushing
/// stdio buffers it inherited from the listener process (they belong to the parent).
pub fn exit_child(code: i32) -> ! {
    // SAFETY: _exit(2) takes a plain integer and never returns; it is the documented way
    // to end a forked child without running the parent's atexit handlers.
    unsafe { libc::_exit(code) }
}

/// Takes ownership of a descriptor passed by systemd socket activation, after checking
/// that it is an open socket. `None` when it is not.
pub fn adopt_socket(fd: std::os::fd::RawFd) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let st = nix::sys::stat::fstat(fd).ok()?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return None;
    }
    // SAFETY: `fd` is open (fstat succeeded) and, by the sd_listen_fds(3) protocol, was
    // passed to this process for it to own; `socket_activation::take` adopts each
    // descriptor number once and clears LISTEN_FDS, so no other owner exists.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}
