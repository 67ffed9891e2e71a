//! Fork mode: a single-threaded listener process polls its listening sockets, the
//! signal descriptor, the report pipe and the connections whose PROXY header is still
//! arriving; it admits each connection (access list, limits, login block, all counted
//! here) and forks one single-threaded session process for it. The session process
//! closes what it inherited, chroots and drops privileges before it reads a byte from
//! the client, serves the one session, and exits. A crash of a session process touches
//! nothing else; the listener reaps it and frees its place.
//!
//! The listener process keeps its privileges so that a reload can change everything
//! (files readable by root only, new listening ports, new privileges). It reads no IMAP
//! byte; the only client-controlled input it parses is a PROXY header, and only from
//! `proxy_trusted` addresses, with the bounded parser of `proxy_protocol.rs`.
//!
//! Session processes report to the listener through one pipe, one line per event
//! (shorter than PIPE_BUF, so lines from many processes never mix): `F IP` for a failed
//! login (the login block is the listener's), `B FROM TO` for the byte counts, `M ...`
//! for what the session counted in the metrics registry (`crate::metrics`).
//!
//! With `[global] metrics`, the listener process also serves the scrapes from this loop
//! (`scrape.rs`: non-blocking and bounded, it never holds the accept loop).

use std::collections::HashMap;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::daemon::admission::{self, Refusal, Slot};
use crate::daemon::host::ForkChild;
use crate::daemon::listener::{self, Bound, BYE_WAIT, PROXY_HEADER_TIMEOUT};
use crate::daemon::scrape;
use crate::daemon::signals::{self, Event, Signals};
use crate::daemon::sys::{self, Forked};
use crate::daemon::{exit, privdrop, reload, stats};
use crate::net::proxy_protocol;
use crate::session::Runtime;
use crate::session::{self, Origin, Peer, SessionId};

struct Child {
    _slot: Slot,
    id: SessionId,
    /// The listener's name, for the open-sessions gauge.
    listener: String,
}

struct Pending {
    stream: TcpStream,
    peer: SocketAddr,
    listener: usize,
    deadline: Instant,
}

struct Parent {
    runtime: Arc<Runtime>,
    bound: Vec<Bound>,
    signals: Option<Signals>,
    report_r: Option<OwnedFd>,
    report_w: OwnedFd,
    reports: Vec<u8>,
    children: HashMap<Pid, Child>,
    pending: Vec<Pending>,
    ctx: reload::Ctx,
    metrics: Option<scrape::Server>,
}

/// Runs the fork-mode listener until SIGTERM/SIGINT; returns the exit code.
pub fn run(
    runtime: Arc<Runtime>,
    bound: Vec<Bound>,
    signals: Signals,
    ctx: reload::Ctx,
    metrics: Option<scrape::Server>,
) -> i32 {
    if sys::thread_count() != 1 {
        log::error!("fork mode: the listener process must be single-threaded to fork safely");
        return exit::OSERR;
    }
    let flags = nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK;
    let (report_r, report_w) = match nix::unistd::pipe2(flags) {
        Ok(p) => p,
        Err(e) => {
            log::error!("fork mode: pipe: {e}");
            return exit::OSERR;
        }
    };
    for b in &bound {
        log::info!(
            "listening on {} (listener {})",
            b.addr,
            runtime.config.listeners[b.listener].name
        );
    }
    let mut p = Parent {
        runtime,
        bound,
        signals: Some(signals),
        report_r: Some(report_r),
        report_w,
        reports: Vec::new(),
        children: HashMap::new(),
        pending: Vec::new(),
        ctx,
        metrics,
    };
    p.serve()
}

/// What one poll round found.
#[derive(Default)]
struct Ready {
    signals: bool,
    reports: bool,
    listeners: Vec<usize>,
    pending: Vec<usize>,
    /// Events on the metrics server's descriptors (`scrape::Server::poll_fds`).
    metrics: Vec<bool>,
}

impl Parent {
    fn serve(&mut self) -> i32 {
        loop {
            let ready = self.wait(Duration::from_secs(1));
            if ready.reports {
                self.read_reports();
            }
            if ready.signals {
                let events = self.signals.as_mut().map(Signals::pending).unwrap_or_default();
                for event in events {
                    match event {
                        Event::Child => self.reap(),
                        Event::Reload => self.reload(),
                        Event::Status => log::info!("{}", stats::status_line("fork", "unknown")),
                        Event::Terminate => return self.drain(),
                    }
                }
            }
            for i in ready.listeners {
                self.accept_all(i);
            }
            self.advance_pending(&ready.pending);
            if let Some(server) = &mut self.metrics {
                server.service(&ready.metrics, &|| crate::metrics::global().render());
            }
            self.reap();
        }
    }

    fn wait(&self, timeout: Duration) -> Ready {
        let mut fds = Vec::new();
        if let Some(s) = &self.signals {
            fds.push(PollFd::new(s.fd(), PollFlags::POLLIN));
        }
        if let Some(r) = &self.report_r {
            fds.push(PollFd::new(r.as_fd(), PollFlags::POLLIN));
        }
        fds.extend(self.bound.iter().map(|b| PollFd::new(b.socket.as_fd(), PollFlags::POLLIN)));
        fds.extend(self.pending.iter().map(|c| PollFd::new(c.stream.as_fd(), PollFlags::POLLIN)));
        let before_metrics = fds.len();
        if let Some(server) = &self.metrics {
            fds.extend(server.poll_fds());
        }
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        if nix::poll::poll(&mut fds, PollTimeout::from(ms)).is_err() {
            return Ready::default();
        }
        let on: Vec<bool> =
            fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
        let n = self.bound.len();
        Ready {
            signals: on[0],
            reports: on[1],
            listeners: (0..n).filter(|i| on[2 + i]).collect(),
            pending: (0..self.pending.len()).filter(|i| on[2 + n + i]).collect(),
            metrics: on[before_metrics..].to_vec(),
        }
    }

    fn accept_all(&mut self, index: usize) {
        loop {
            let (stream, peer) = match self.bound[index].socket.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("accept on {}: {e}", self.bound[index].addr);
                    return;
                }
            };
            let listener = self.bound[index].listener;
            let access = &self.runtime.config.listeners[listener].access;
            if !access.proxy_protocol {
                let _ = stream.set_nonblocking(false);
                self.dispatch(stream, peer, listener);
            } else if !access.trusts(peer.ip()) {
                let name = &self.runtime.config.listeners[listener].name;
                listener::refuse(&stream, Refusal::UntrustedProxy, peer, name);
            } else {
                let _ = stream.set_nonblocking(true);
                let deadline = Instant::now() + PROXY_HEADER_TIMEOUT;
                self.pending.push(Pending { stream, peer, listener, deadline });
            }
        }
    }

    /// Reads PROXY headers as they arrive, without ever blocking the listener.
    fn advance_pending(&mut self, ready: &[usize]) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.pending.len() {
            let c = &self.pending[i];
            let outcome =
                if ready.contains(&i) { proxy_protocol::try_take(&c.stream) } else { Ok(None) };
            let name = self.runtime.config.listeners[c.listener].name.clone();
            match outcome {
                Ok(None) if now < c.deadline => {
                    i += 1;
                    continue;
                }
                Ok(None) => log::warn!("listener {name}: no PROXY header from {} in time", c.peer),
                Err(e) => log::warn!("listener {name}: PROXY header from {}: {e}", c.peer),
                Ok(Some(h)) => {
                    let c = self.pending.remove(i);
                    // `ready` indices past `i` shift by one; they are re-polled next round.
                    let client = h.addrs.map_or(c.peer, |(src, _)| src);
                    let _ = c.stream.set_nonblocking(false);
                    self.dispatch(c.stream, client, c.listener);
                    return;
                }
            }
            self.pending.remove(i);
        }
    }

    fn dispatch(&mut self, stream: TcpStream, client: SocketAddr, listener: usize) {
        let slot = match listener::admit(&self.runtime, listener, client) {
            Ok(slot) => slot,
            Err(r) => {
                let name = &self.runtime.config.listeners[listener].name;
                return listener::refuse(&stream, r, client, name);
            }
        };
        // Ids come from the listener so they stay unique across session processes.
        let id = SessionId::next();
        let origin = Origin { id, peer: Peer::Inet(client), listener };
        match sys::fork_single_threaded() {
            Ok(Forked::Child) => self.child(stream, origin),
            Ok(Forked::Parent(pid)) => {
                let name = self.runtime.config.listeners[listener].name.clone();
                stats::session_started(&name);
                self.children.insert(pid, Child { _slot: slot, id, listener: name });
            }
            Err(e) => {
                log::error!("fork for session id={id}: {e}");
                let name = &self.runtime.config.listeners[listener].name;
                listener::refuse(&stream, Refusal::TooMany, client, name);
            }
        }
    }

    /// The session process: close what belongs to the listener, drop privileges, serve.
    fn child(&mut self, stream: TcpStream, origin: Origin) -> ! {
        self.bound.clear();
        self.pending.clear();
        self.metrics = None;
        // What the listener counted is the listener's to show; this process reports
        // only what it counts itself.
        crate::metrics::global().reset();
        // The handlers write into the listener's pipe: a signal to this process must not
        // look like one to the listener.
        if let Some(signals) = self.signals.take() {
            signals.remove();
        }
        self.report_r = None;
        // The children map is the listener's; forgetting it frees nothing it owns.
        std::mem::forget(std::mem::take(&mut self.children));
        let host = match self.report_w.try_clone() {
            Ok(report) => ForkChild { report },
            Err(e) => {
                log::error!("session id={}: report pipe: {e}", origin.id);
                sys::exit_child(exit::OSERR);
            }
        };
        if let Err(e) = signals::init_shutdown_signal() {
            log::error!("session id={}: signals: {e}", origin.id);
            sys::exit_child(exit::OSERR);
        }
        if let Some(spec) = &self.ctx.spec {
            if let Err(e) = privdrop::drop_privileges(spec) {
                log::error!("session id={}: {e}", origin.id);
                let mut s = &stream;
                let _ =
                    std::io::Write::write_all(&mut s, b"* BYE [UNAVAILABLE] Internal error.\r\n");
                sys::exit_child(exit::NOPERM);
            }
        }
        session::serve(Arc::clone(&self.runtime), origin, stream, &host);
        sys::exit_child(0)
    }

    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.ended(pid, code, None),
                Ok(WaitStatus::Signaled(pid, sig, _)) => self.ended(pid, 0, Some(sig)),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    fn ended(&mut self, pid: Pid, code: i32, signal: Option<Signal>) {
        let Some(child) = self.children.remove(&pid) else {
            return;
        };
        stats::session_ended(&child.listener);
        match signal {
            Some(sig) => log::warn!("session id={} (process {pid}) was killed by {sig}", child.id),
            None if code != 0 => {
                log::warn!("session id={} (process {pid}) exited with status {code}", child.id)
            }
            None => {}
        }
    }

    fn read_reports(&mut self) {
        let Some(fd) = &self.report_r else {
            return;
        };
        let mut buf = [0u8; 4096];
        let mut file = std::fs::File::from(fd.try_clone().expect("dup of an open pipe"));
        while let Ok(n) = file.read(&mut buf) {
            if n == 0 {
                break;
            }
            self.reports.extend_from_slice(&buf[..n]);
        }
        while let Some(end) = self.reports.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.reports.drain(..=end).collect();
            self.apply(&String::from_utf8_lossy(&line[..end]));
        }
        if self.reports.len() > 64 << 10 {
            self.reports.clear();
        }
    }

    fn apply(&self, line: &str) {
        let words: Vec<&str> = line.split(' ').collect();
        match words[..] {
            ["F", ip] => {
                if let Ok(ip) = ip.parse() {
                    admission::apply_report(ip, &self.runtime.config.global.daemon);
                }
            }
            ["B", from, to] => {
                stats::apply_bytes(from.parse().unwrap_or(0), to.parse().unwrap_or(0));
            }
            ["M", ..] => {
                if !crate::metrics::global().apply_report(&line[2..]) {
                    log::debug!("fork mode: bad metrics report {line:?}");
                }
            }
            _ => log::debug!("fork mode: unknown report {line:?}"),
        }
    }

    fn reload(&mut self) {
        crate::daemon::logging::reopen();
        let Some(new) = reload::load(&mut self.ctx, &self.runtime) else {
            return;
        };
        let activated = self.bound.iter().any(|b| b.activated);
        if activated {
            if let Err(e) = listener::remap(&mut self.bound, &self.runtime.config, &new.config) {
                log::error!("reload: {e}; the configuration in force is unchanged");
                return;
            }
        } else {
            match listener::bind_addresses(&new.config, &self.bound) {
                Ok(bound) => {
                    for b in bound.iter().filter(|b| !self.bound.iter().any(|o| o.addr == b.addr)) {
                        log::info!(
                            "listening on {} (listener {})",
                            b.addr,
                            new.config.listeners[b.listener].name
                        );
                    }
                    self.bound = bound;
                }
                Err(e) => {
                    log::error!("reload: {e}; the configuration in force is unchanged");
                    return;
                }
            }
        }
        self.runtime = new;
    }

    /// SIGTERM: stop accepting, give sessions `shutdown_grace`, then SIGTERM them (they
    /// say BYE), then SIGKILL what is left after [`BYE_WAIT`].
    fn drain(&mut self) -> i32 {
        // Connections already queued on the listening sockets were sent here by a load
        // balancer that will not resend them: take them before closing (closing resets
        // the queue), and finish reading their PROXY headers, each within its deadline.
        // From then on connecting is refused, which a load balancer retries elsewhere.
        for i in 0..self.bound.len() {
            self.accept_all(i);
        }
        self.bound.clear();
        while !self.pending.is_empty() {
            let ready = self.wait(Duration::from_millis(100));
            if ready.signals {
                // Reaping is all that matters for these few seconds (the headers'
                // deadline); a second SIGTERM counts once the grace below begins.
                let _ = self.signals.as_mut().map(Signals::pending);
            }
            if ready.reports {
                self.read_reports();
            }
            self.advance_pending(&ready.pending);
            self.reap();
        }
        let grace = self.runtime.config.global.daemon.shutdown_grace;
        log::info!(
            "shutting down: {} sessions open, waiting up to {grace:?} for them",
            self.children.len()
        );
        let mut deadline = Instant::now() + grace;
        let mut stage = 0;
        loop {
            self.reap();
            if self.children.is_empty() {
                log::info!("all sessions ended; exiting");
                return 0;
            }
            if Instant::now() >= deadline {
                let (sig, what) = if stage == 0 {
                    (Signal::SIGTERM, "telling {} sessions to end")
                } else {
                    (Signal::SIGKILL, "killing {} sessions that did not end")
                };
                if stage == 2 {
                    return 0;
                }
                log::info!("shutdown: {}", what.replace("{}", &self.children.len().to_string()));
                for pid in self.children.keys() {
                    let _ = kill(*pid, sig);
                }
                stage += 1;
                deadline = Instant::now() + BYE_WAIT;
            }
            let ready = self.wait(Duration::from_millis(100));
            if ready.reports {
                self.read_reports();
            }
            if let Some(server) = &mut self.metrics {
                server.service(&ready.metrics, &|| crate::metrics::global().render());
            }
            if ready.signals {
                let events = self.signals.as_mut().map(Signals::pending).unwrap_or_default();
                if stage == 0 && events.contains(&Event::Terminate) {
                    deadline = Instant::now();
                }
            }
        }
    }
}
