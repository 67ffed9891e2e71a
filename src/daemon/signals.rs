//! Signals as a pollable descriptor, and the process-wide shutdown notice.
//!
//! signal-hook's handlers set a flag and write a byte to a self-pipe (POSIX, unlike
//! Linux's signalfd), so the accept loop learns about SIGHUP, SIGINT, SIGTERM, SIGUSR1
//! and SIGCHLD by polling the pipe's read end; no code of imapgate runs at a random
//! point. Only the main thread takes these signals: every other thread is started with
//! them blocked (`spawn_quiet`), so their blocking socket calls are never interrupted.
//!
//! Sessions learn about a shutdown from [`shutdown_fd`]: it becomes readable (and stays
//! readable) when the sessions still open must say `* BYE` and end. A session's poll
//! loop watches it; it must never be read. [`is_shutting_down`] says the same without
//! polling. In thread mode the accept loop raises it after `shutdown_grace`; in a
//! fork-mode session process and in inetd mode SIGTERM or SIGINT raises it, so the
//! listener process (or inetd, systemd) asks a session to end by sending SIGTERM.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use signal_hook::SigId;

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

/// The signals the accept loop handles, and what each asks.
const HANDLED: [(Signal, Event); 5] = [
    (Signal::SIGHUP, Event::Reload),
    (Signal::SIGINT, Event::Terminate),
    (Signal::SIGTERM, Event::Terminate),
    (Signal::SIGUSR1, Event::Status),
    (Signal::SIGCHLD, Event::Child),
];

fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for (s, _) in HANDLED {
        set.add(s);
    }
    set
}

/// The accept loop's signals: a self-pipe to poll and one flag per signal.
pub struct Signals {
    read: UnixStream,
    flags: Vec<(Event, Arc<AtomicBool>)>,
    ids: Vec<SigId>,
}

impl Signals {
    /// Installs the handlers. Call in the main thread before any other thread starts.
    pub fn install() -> io::Result<Signals> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let mut signals = Signals { read, flags: Vec::new(), ids: Vec::new() };
        for (signal, event) in HANDLED {
            let flag = Arc::new(AtomicBool::new(false));
            signals.ids.push(signal_hook::flag::register(signal as i32, Arc::clone(&flag))?);
            let wake = write.try_clone()?;
            signals.ids.push(signal_hook::low_level::pipe::register(signal as i32, wake)?);
            signals.flags.push((event, flag));
        }
        Ok(signals)
    }

    /// Readable when a signal arrived.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// The signals that arrived since the last call (each kind once).
    pub fn pending(&mut self) -> Vec<Event> {
        let mut sink = [0u8; 64];
        while matches!(self.read.read(&mut sink), Ok(n) if n > 0) {}
        let mut events = Vec::new();
        for (event, flag) in &self.flags {
            if flag.swap(false, Ordering::SeqCst) && !events.contains(event) {
                events.push(*event);
            }
        }
        events
    }

    /// Removes the handlers (a forked session process, which must not write into its
    /// listener's pipe). Signals then do nothing until a new handler is registered.
    pub fn remove(self) {
        for id in self.ids {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Starts a thread with the handled signals blocked, so only the main thread takes them
/// and no blocking call of the new thread is interrupted.
pub fn spawn_quiet<F>(builder: thread::Builder, f: F) -> io::Result<thread::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    let mut old = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&handled()), Some(&mut old))?;
    let spawned = builder.spawn(f);
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
    spawned
}

/// The shutdown notice: a pipe whose read end becomes readable; one byte is written,
/// never read.
static SHUTDOWN: OnceLock<(OwnedFd, OwnedFd)> = OnceLock::new();

fn shutdown_pipe() -> io::Result<&'static (OwnedFd, OwnedFd)> {
    if let Some(pipe) = SHUTDOWN.get() {
        return Ok(pipe);
    }
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
    Ok(SHUTDOWN.get_or_init(|| (r, w)))
}

/// Sets up the shutdown notice for the accept loop to raise (thread mode).
pub fn init_shutdown_pipe() -> io::Result<()> {
    shutdown_pipe().map(drop)
}

/// Sets up the shutdown notice raised by SIGTERM or SIGINT (a fork-mode session process,
/// inetd mode). SIGHUP and SIGUSR1 are blocked: a session process ignores them, and they
/// must not interrupt its blocking calls.
pub fn init_shutdown_signal() -> io::Result<()> {
    let mut quiet = SigSet::empty();
    quiet.add(Signal::SIGHUP);
    quiet.add(Signal::SIGUSR1);
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&quiet), None)?;
    let (_, w) = shutdown_pipe()?;
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let wake = UnixStream::from(w.try_clone()?);
        signal_hook::low_level::pipe::register(signal as i32, wake)?;
    }
    Ok(())
}

/// Tells every session to end now (thread mode; idempotent).
pub fn begin_shutdown() {
    if let Some((_, w)) = SHUTDOWN.get() {
        let _ = nix::unistd::write(w, b"x");
    }
}

/// Readable once the sessions must end; watch it with POLLIN and never read it.
/// `None` when no shutdown notice was set up (unit tests, `-t`).
pub fn shutdown_fd() -> Option<BorrowedFd<'static>> {
    SHUTDOWN.get().map(|(r, _)| r.as_fd())
}

/// True once the sessions must end.
pub fn is_shutting_down() -> bool {
    let Some(fd) = shutdown_fd() else {
        return false;
    };
    let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
    matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0)
}
