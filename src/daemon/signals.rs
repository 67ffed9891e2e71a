//! Signals as a pollable descriptor (signalfd), and the process-wide shutdown notice.
//!
//! The main thread blocks SIGHUP, SIGINT, SIGTERM, SIGUSR1 and SIGCHLD before any other
//! thread exists, so every thread inherits the mask and the signals are only ever read
//! from the signalfd by the accept loop: no handler code runs at a random point.
//!
//! Sessions learn about a shutdown from [`shutdown_fd`]: it becomes readable (and stays
//! readable) when the sessions still open must say `* BYE` and end. A session's poll
//! loop watches it; it must never be read. [`is_shutting_down`] says the same without
//! polling. In thread mode the accept loop raises it after `shutdown_grace`; in a
//! fork-mode session process and in inetd mode it is a signalfd for SIGTERM/SIGINT, so
//! the listener process (or inetd, systemd) asks a session to end by sending SIGTERM.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// What a signal asks of the accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// SIGHUP: reload the configuration and reopen the log file.
    Reload,
    /// SIGTERM or SIGINT: stop accepting, drain, exit.
    Terminate,
    /// SIGUSR1: log the status line.
    Status,
    /// SIGCHLD: reap session processes.
    Child,
}

fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGHUP, Signal::SIGINT, Signal::SIGTERM, Signal::SIGUSR1, Signal::SIGCHLD] {
        set.add(s);
    }
    set
}

/// Blocks the handled signals in the calling thread (and every thread it starts later)
/// and returns the descriptor they arrive on. Call in the main thread before any other
/// thread is started.
pub fn install() -> io::Result<SignalFd> {
    let set = handled();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    Ok(SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?)
}

/// Reads every pending signal off `fd`, in arrival order.
pub fn pending(fd: &mut SignalFd) -> Vec<Event> {
    let mut events = Vec::new();
    while let Ok(Some(info)) = fd.read_signal() {
        let event = match Signal::try_from(info.ssi_signo as i32) {
            Ok(Signal::SIGHUP) => Event::Reload,
            Ok(Signal::SIGINT | Signal::SIGTERM) => Event::Terminate,
            Ok(Signal::SIGUSR1) => Event::Status,
            Ok(Signal::SIGCHLD) => Event::Child,
            _ => continue,
        };
        events.push(event);
    }
    events
}

/// The shutdown descriptor: a pipe (thread mode) or a signalfd (session process).
static SHUTDOWN: OnceLock<Shutdown> = OnceLock::new();

enum Shutdown {
    /// Read end and write end; one byte is written, never read.
    Pipe(OwnedFd, OwnedFd),
    /// Pending SIGTERM/SIGINT make it readable.
    Signal(SignalFd),
}

/// Sets up the shutdown notice as a pipe the accept loop writes to (thread mode).
pub fn init_shutdown_pipe() -> io::Result<()> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
    let _ = SHUTDOWN.set(Shutdown::Pipe(r, w));
    Ok(())
}

/// Sets up the shutdown notice as a signalfd for SIGTERM and SIGINT, which stay blocked
/// (a fork-mode session process, inetd mode). SIGCHLD is unblocked: a session has no
/// children. SIGHUP and SIGUSR1 stay blocked, so they are ignored.
pub fn init_shutdown_signal() -> io::Result<()> {
    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    term.add(Signal::SIGINT);
    let mut rest = handled();
    rest.add(Signal::SIGTERM);
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&rest), None)?;
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&chld), None)?;
    let fd = SignalFd::with_flags(&term, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
    let _ = SHUTDOWN.set(Shutdown::Signal(fd));
    Ok(())
}

/// Tells every session to end now (thread mode; idempotent).
pub fn begin_shutdown() {
    if let Some(Shutdown::Pipe(_, w)) = SHUTDOWN.get() {
        let _ = nix::unistd::write(w, b"x");
    }
}

/// Readable once the sessions must end; watch it with POLLIN and never read it.
/// `None` when no shutdown notice was set up (unit tests, `-t`).
pub fn shutdown_fd() -> Option<BorrowedFd<'static>> {
    match SHUTDOWN.get()? {
        Shutdown::Pipe(r, _) => Some(r.as_fd()),
        Shutdown::Signal(fd) => Some(fd.as_fd()),
    }
}

/// True once the sessions must end.
pub fn is_shutting_down() -> bool {
    let Some(fd) = shutdown_fd() else {
        return false;
    };
    let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
    matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0)
}
