//! Standalone mode: get the listening sockets (bind them, or take them from systemd),
//! then accept in one poll loop over the sockets and the signal descriptor. In thread
//! mode (this file) each admitted connection gets its own thread with a bounded stack;
//! a session that panics ends its own thread only. Fork mode is `fork.rs`.
//!
//! Before a connection gets its greeting it passes, in order: the PROXY header (on a
//! `proxy_protocol` listener, only from `proxy_trusted` addresses), the listener's
//! `deny`/`allow` lists, the per-address login block, and the session limits; refused
//! connections get one `* BYE [UNAVAILABLE] reason` line and a REFUSED log line.

use std::collections::HashSet;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::config::Config;
use crate::daemon::admission::{self, Refusal, Slot};
use crate::daemon::discovery::Discovery;
use crate::daemon::host::InProcess;
use crate::daemon::reload;
use crate::daemon::signals::{self, Event, Signals};
use crate::daemon::workers::Workers;
use crate::daemon::{socket_activation, stats};
use crate::net::proxy_protocol;
use crate::session::Runtime;
use crate::session::{self, Origin, Peer, SessionId};

/// Longest wait for the PROXY header of a connection from a load balancer.
pub const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// After `shutdown_grace`, how long sessions get to say BYE before the process exits.
pub const BYE_WAIT: Duration = Duration::from_secs(5);

/// A bound listening socket and the listener section it belongs to.
pub struct Bound {
    /// The socket, non-blocking.
    pub socket: TcpListener,
    /// Index into `Config::listeners`.
    pub listener: usize,
    /// Its local address.
    pub addr: SocketAddr,
    /// Passed by systemd rather than bound here.
    pub activated: bool,
}

/// Takes the sockets systemd passed (LISTEN_FDS), or binds every address of every
/// listener.
pub fn bind(config: &Config) -> Result<Vec<Bound>, String> {
    let names: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
    let bound = match socket_activation::take()? {
        Some(passed) => {
            let mut bound = Vec::new();
            for (listener, socket) in socket_activation::assign(passed, &names)? {
                let addr = socket.local_addr().map_err(|e| e.to_string())?;
                log::info!("listener {}: socket {addr} passed by systemd", names[listener]);
                bound.push(Bound { socket, listener, addr, activated: true });
            }
            bound
        }
        None => bind_addresses(config, &[])?,
    };
    for b in &bound {
        b.socket.set_nonblocking(true).map_err(|e| format!("{}: {e}", b.addr))?;
    }
    Ok(bound)
}

/// Binds every configured address, reusing the sockets in `keep` that are already bound
/// to it (a fork-mode reload).
pub fn bind_addresses(config: &Config, keep: &[Bound]) -> Result<Vec<Bound>, String> {
    let mut bound = Vec::new();
    for (index, listener) in config.listeners.iter().enumerate() {
        for addr in &listener.listen {
            let socket = match keep.iter().find(|b| b.addr == *addr && !b.activated) {
                Some(b) => b.socket.try_clone().map_err(|e| format!("{addr}: {e}"))?,
                None => TcpListener::bind(addr).map_err(|e| {
                    format!("listener {}: cannot listen on {addr}: {e}", listener.name)
                })?,
            };
            socket.set_nonblocking(true).map_err(|e| format!("{addr}: {e}"))?;
            bound.push(Bound { socket, listener: index, addr: *addr, activated: false });
        }
    }
    Ok(bound)
}

/// Points bound sockets at the listeners of a new configuration, by listener name.
/// Fails when a listener with bound sockets is gone.
pub fn remap(bound: &mut [Bound], old: &Config, new: &Config) -> Result<(), String> {
    let mut map = Vec::new();
    for b in bound.iter() {
        let name = &old.listeners[b.listener].name;
        let index = new.listeners.iter().position(|l| &l.name == name).ok_or_else(|| {
            format!("listener {name} was removed, but its sockets cannot be closed in thread mode; restart imapgate")
        })?;
        map.push(index);
    }
    for (b, index) in bound.iter_mut().zip(map) {
        b.listener = index;
    }
    Ok(())
}

/// Logs the listening addresses a thread-mode reload cannot apply.
fn warn_unbound(bound: &[Bound], new: &Config) {
    let have: HashSet<(usize, SocketAddr)> = bound.iter().map(|b| (b.listener, b.addr)).collect();
    if bound.iter().any(|b| b.activated) {
        return;
    }
    for (i, l) in new.listeners.iter().enumerate() {
        for addr in l.listen.iter().filter(|a| !have.contains(&(i, **a))) {
            log::warn!(
                "reload: listener {}: {addr} is not listened on: addresses cannot change in \
                 thread mode after privileges were dropped; restart imapgate",
                l.name
            );
        }
    }
    for b in bound {
        if !new.listeners[b.listener].listen.contains(&b.addr) && !b.activated {
            log::warn!(
                "reload: listener {}: still listening on {} until restart",
                new.listeners[b.listener].name,
                b.addr
            );
        }
    }
}

/// Thread mode: starts backend discovery, accepts until SIGTERM/SIGINT, then drains.
/// Returns the exit code.
pub fn run(
    mut runtime: Arc<Runtime>,
    mut bound: Vec<Bound>,
    mut signals: Signals,
    mut ctx: reload::Ctx,
) -> i32 {
    for b in &bound {
        log::info!(
            "listening on {} (listener {})",
            b.addr,
            runtime.config.listeners[b.listener].name
        );
    }
    let discovery = Discovery::start(Arc::clone(&runtime))
        .map_err(|e| log::warn!("cannot start backend discovery: {e}"))
        .ok();
    loop {
        let (sig_ready, ready) = match wait(&signals, &bound, None) {
            Ok(r) => r,
            Err(e) => {
                log::error!("poll: {e}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if sig_ready {
            for event in signals.pending() {
                match event {
                    Event::Reload => {
                        crate::daemon::logging::reopen();
                        if let Some(new) = reload::load(&mut ctx, &runtime) {
                            match remap(&mut bound, &runtime.config, &new.config) {
                                Ok(()) => {
                                    warn_unbound(&bound, &new.config);
                                    // New sessions get the new runtime: so must discovery.
                                    if let Some(d) = &discovery {
                                        d.retarget(Arc::clone(&new));
                                    }
                                    runtime = new;
                                }
                                Err(e) => log::error!(
                                    "reload: {e}; the configuration in force is unchanged"
                                ),
                            }
                        }
                    }
                    Event::Status => {
                        log::info!("{}", stats::status_line("thread", &runtime.backends.status()))
                    }
                    Event::Terminate => {
                        // Connections already queued were sent here by a load balancer
                        // that will not resend them: serve them; closing the sockets
                        // then refuses new ones, which a load balancer retries elsewhere.
                        for b in &bound {
                            accept_all(&runtime, b);
                        }
                        drop(bound);
                        return drain(&runtime, &mut signals);
                    }
                    Event::Child => {}
                }
            }
        }
        for i in ready {
            accept_all(&runtime, &bound[i]);
        }
    }
}

/// Polls the signal descriptor and the listening sockets; returns whether signals are
/// pending and which sockets are ready.
pub fn wait(
    signals: &Signals,
    bound: &[Bound],
    timeout: Option<Duration>,
) -> io::Result<(bool, Vec<usize>)> {
    let mut fds = vec![PollFd::new(signals.fd(), PollFlags::POLLIN)];
    fds.extend(bound.iter().map(|b| PollFd::new(b.socket.as_fd(), PollFlags::POLLIN)));
    let timeout = timeout.map_or(PollTimeout::NONE, |t| {
        PollTimeout::from(u16::try_from(t.as_millis()).unwrap_or(u16::MAX))
    });
    match nix::poll::poll(&mut fds, timeout) {
        Ok(_) => {}
        Err(nix::errno::Errno::EINTR) => return Ok((false, Vec::new())),
        Err(e) => return Err(e.into()),
    }
    let is_ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
    let sig = is_ready(&fds[0]);
    let ready = fds[1..].iter().enumerate().filter(|(_, f)| is_ready(f)).map(|(i, _)| i).collect();
    Ok((sig, ready))
}

fn accept_all(runtime: &Arc<Runtime>, bound: &Bound) {
    loop {
        match bound.socket.accept() {
            Ok((stream, peer)) => spawn_session(runtime, bound.listener, stream, peer),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE and friends: wait a little instead of spinning on the error.
                log::error!("accept on {}: {e}", bound.addr);
                thread::sleep(Duration::from_millis(100));
                return;
            }
        }
    }
}

/// Sends the refusal line and logs it. The socket is closed when dropped.
pub fn refuse(mut stream: &TcpStream, refusal: Refusal, client: SocketAddr, listener: &str) {
    stats::refused(refusal.reason());
    let level =
        if refusal == Refusal::UntrustedProxy { log::Level::Warn } else { log::Level::Info };
    log::log!(
        level,
        "REFUSED client={} listener={listener} reason={}",
        client.ip(),
        refusal.reason()
    );
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(refusal.bye());
}

/// The access list, the login block and the limits, for a client at `client`.
pub fn admit(runtime: &Runtime, listener: usize, client: SocketAddr) -> Result<Slot, Refusal> {
    if !runtime.config.listeners[listener].access.permits(client.ip()) {
        return Err(Refusal::Denied);
    }
    admission::admit(client.ip(), &runtime.config.global.daemon)
}

/// The session threads of this process (thread mode).
fn workers() -> &'static Workers {
    static WORKERS: std::sync::OnceLock<Workers> = std::sync::OnceLock::new();
    WORKERS.get_or_init(Workers::default)
}

fn spawn_session(runtime: &Arc<Runtime>, listener: usize, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nonblocking(false);
    let config = &runtime.config;
    let name = &config.listeners[listener].name;
    let proxied = config.listeners[listener].access.proxy_protocol;
    if proxied && !config.listeners[listener].access.trusts(peer.ip()) {
        return refuse(&stream, Refusal::UntrustedProxy, peer, name);
    }
    // Without a PROXY header the client is known now: refuse before starting a thread.
    let slot = if proxied {
        None
    } else {
        match admit(runtime, listener, peer) {
            Ok(slot) => Some((slot, peer)),
            Err(r) => return refuse(&stream, r, peer, name),
        }
    };
    let id = SessionId::next();
    let runtime_for_thread = Arc::clone(runtime);
    let stream_for_refusal = stream.try_clone();
    let builder =
        thread::Builder::new().name("session".into()).stack_size(config.global.thread_stack_size);
    let session = move || {
        let slot = match slot {
            Some(slot) => slot,
            None => match proxied_admission(&runtime_for_thread, listener, &stream, peer) {
                Some(admitted) => admitted,
                None => return,
            },
        };
        serve(runtime_for_thread, Origin { id, peer: Peer::Inet(slot.1), listener }, stream);
        drop(slot);
    };
    // The thread may serve other sessions afterwards: a panic ends this session only
    // (its slot and sockets are dropped while unwinding), and the log names it.
    let job = Box::new(move || {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(session)).is_err() {
            log::error!("session id={id} ended by an internal error");
        }
    });
    let spawned = workers().run(builder, job);
    if let Err(e) = spawned {
        log::error!("cannot start a thread for session id={id} from {peer}: {e}");
        if let Ok(s) = stream_for_refusal {
            refuse(&s, Refusal::TooMany, peer, name);
        }
    }
}

/// Thread mode with `proxy_protocol`: reads the header, then admits the real client.
fn proxied_admission(
    runtime: &Runtime,
    listener: usize,
    stream: &TcpStream,
    peer: SocketAddr,
) -> Option<(Slot, SocketAddr)> {
    let name = &runtime.config.listeners[listener].name;
    let client = match proxy_protocol::take(stream, PROXY_HEADER_TIMEOUT) {
        Ok(h) => h.addrs.map_or(peer, |(src, _)| src),
        Err(e) => {
            log::warn!("listener {name}: PROXY header from {peer}: {e}; connection closed");
            return None;
        }
    };
    match admit(runtime, listener, client) {
        Ok(slot) => Some((slot, client)),
        Err(r) => {
            refuse(stream, r, client, name);
            None
        }
    }
}

/// Runs one session and keeps the open-session count.
pub fn serve(runtime: Arc<Runtime>, origin: Origin, stream: TcpStream) {
    let name = runtime.config.listeners[origin.listener].name.clone();
    stats::session_started(&name);
    session::serve(runtime, origin, stream, &InProcess);
    stats::session_ended(&name);
}

/// SIGTERM, once the queued connections are taken and the listening sockets closed:
/// sessions get `shutdown_grace`, then the shutdown notice (they say BYE), then
/// [`BYE_WAIT`]. A second SIGTERM cuts the grace.
fn drain(runtime: &Runtime, signals: &mut Signals) -> i32 {
    let grace = runtime.config.global.daemon.shutdown_grace;
    log::info!("shutting down: {} sessions open, waiting up to {grace:?} for them", stats::open());
    let mut deadline = Instant::now() + grace;
    let mut told = false;
    loop {
        if stats::open() == 0 {
            log::info!("all sessions ended; exiting");
            return 0;
        }
        let now = Instant::now();
        if now >= deadline {
            if told {
                log::warn!("{} sessions did not end; exiting anyway", stats::open());
                return 0;
            }
            log::info!("shutdown grace over: telling {} sessions to end", stats::open());
            signals::begin_shutdown();
            told = true;
            deadline = now + BYE_WAIT;
        }
        if let Ok((true, _)) = wait(signals, &[], Some(Duration::from_millis(100))) {
            if signals.pending().contains(&Event::Terminate) && !told {
                deadline = Instant::now();
            }
        }
    }
}
