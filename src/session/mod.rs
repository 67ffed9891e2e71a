//! One client session from the first byte to the last: greeting and the pre-login
//! dialogue (`dialogue.rs`, around `imap::preauth`), routing and backend login
//! (`login.rs`), then the relay (`relay.rs`, judged through `exchange/` when rules
//! apply). It owns the three log lines an administrator greps: SESSION-START, LOGIN,
//! SESSION-END, and asks the process model it runs in for nothing but what `Host` says.

mod dialogue;
pub mod exchange;
mod login;
pub mod relay;

use std::fmt;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{self, Config};
use crate::metrics::{self, Metric};
use crate::net::transport::Transport;
use crate::rules;

/// What every session shares: the configuration and what was built from it.
#[derive(Debug)]
pub struct Runtime {
    /// The loaded configuration.
    pub config: Config,
    /// TLS configurations, loaded before any privilege drop.
    pub tls: crate::net::tls::Contexts,
    /// What is known about the backends: up or down, capabilities.
    pub backends: crate::backend::state::Backends,
    /// Per listener, the backends its map can route to.
    pub reachable: Vec<Vec<usize>>,
    /// The rules, in configuration order (a listener's `rules` index into them).
    pub rules: Vec<Arc<rules::RuleDef>>,
    /// Every map's lookup, indexed like `config.maps`.
    pub maps: Vec<Arc<crate::lookup::Lookup>>,
}

impl Runtime {
    /// Everything sessions share, built from a loaded configuration.
    pub fn new(
        config: Config,
        tls: crate::net::tls::Contexts,
        rules: Vec<Arc<rules::RuleDef>>,
        maps: Vec<Arc<crate::lookup::Lookup>>,
    ) -> Runtime {
        let backends = crate::backend::state::Backends::new(&config);
        let reachable = (0..config.listeners.len())
            .map(|l| crate::backend::state::reachable(&config, l))
            .collect();
        Runtime { config, tls, backends, reachable, rules, maps }
    }
}

/// What a session asks of the process model it runs in (a thread, a forked session
/// process, an inetd child). The daemon provides it, so sessions touch no global of the
/// process: thread mode keeps the failed-login record in-process, a forked session
/// process also reports to its listener.
pub trait Host: Send + Sync {
    /// A login from `ip` failed: how long to hold the answer back (`base` at the first
    /// failure, more after further ones), and whether the address is now blocked.
    fn login_failed(&self, ip: IpAddr, settings: &config::Daemon, base: Duration) -> Penalty;
    /// The session is over; its byte counts are for the status line.
    fn finished(&self, from_client: u64, to_client: u64);
    /// The session counted something in the metrics registry (a login, bytes relayed,
    /// its end): a process model whose registry is not the one scraped sends it on.
    fn counted(&self) {}
    /// True once the process is stopping: sessions say BYE and end.
    fn stopping(&self) -> bool;
    /// A descriptor that becomes readable when the process starts stopping, for polls.
    fn stop_fd(&self) -> Option<BorrowedFd<'_>>;
}

/// What a failed login costs (see `Host::login_failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Penalty {
    /// How long the answer is held back.
    pub delay: Duration,
    /// The client's address is blocked now: end the session.
    pub blocked: bool,
}

/// The line a blocked address gets, from a session or instead of a greeting.
pub const BLOCKED_BYE: &[u8] =
    b"* BYE [UNAVAILABLE] Too many failed logins from your address, try again later.\r\n";

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A session's id in the log, unique in this process (fork mode: in the listener).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionId(pub u64);

impl SessionId {
    /// A new id.
    pub fn next() -> SessionId {
        SessionId(NEXT_ID.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Who the client is, as far as the socket (or a PROXY header) says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// An internet address and port.
    Inet(SocketAddr),
    /// A socket without one (a socket pair under inetd): `local` in logs.
    Local,
}

impl Peer {
    /// The address, when there is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Peer::Inet(a) => Some(a.ip()),
            Peer::Local => None,
        }
    }

    /// The address and port, when there are.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            Peer::Inet(a) => Some(*a),
            Peer::Local => None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Inet(a) => a.fmt(f),
            Peer::Local => f.write_str("local"),
        }
    }
}

/// Where a session came from.
#[derive(Clone, Copy, Debug)]
pub struct Origin {
    /// Session id for the log.
    pub id: SessionId,
    /// The client.
    pub peer: Peer,
    /// Index of the listener in the configuration.
    pub listener: usize,
}

/// How a session ended: the `reason=` word of SESSION-END and, for some, a `detail=`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The client logged out (or closed after the server's BYE).
    Logout,
    /// The client closed the connection.
    ClientClosed,
    /// A socket or TLS error on the client side.
    ClientError(String),
    /// No login before `preauth_timeout`.
    PreauthTimeout,
    /// The TLS handshake with the client failed.
    TlsHandshakeFailed,
    /// `max_login_failures` failed logins in this session.
    FailedLogins,
    /// The client's address got blocked after failed logins.
    LoginBlocked,
    /// Too many malformed commands before login.
    BadCommands,
    /// A literal larger than `preauth_max_literal` before login.
    LiteralTooLarge,
    /// The backend closed or failed; the client was told with `* BYE`.
    BackendClosed(String),
    /// The backend said BYE and closed.
    BackendBye,
    /// Nothing moved for `idle_timeout`.
    IdleTimeout,
    /// A `limits` rule ended the session; the detail names the limit.
    Limit(String),
    /// A refused part of a streamed command could not be withdrawn from the backend.
    Aborted,
    /// imapgate is stopping.
    Shutdown,
}

impl End {
    /// The one-word reason, stable for greps.
    pub fn word(&self) -> &'static str {
        match self {
            End::Logout => "logout",
            End::ClientClosed => "client-closed",
            End::ClientError(_) => "client-error",
            End::PreauthTimeout => "preauth-timeout",
            End::TlsHandshakeFailed => "tls-handshake-failed",
            End::FailedLogins => "failed-logins",
            End::LoginBlocked => "login-blocked",
            End::BadCommands => "bad-commands",
            End::LiteralTooLarge => "literal-too-large",
            End::BackendClosed(_) => "backend-closed",
            End::BackendBye => "backend-bye",
            End::IdleTimeout => "idle-timeout",
            End::Limit(_) => "limit",
            End::Aborted => "refused-mid-command",
            End::Shutdown => "shutdown",
        }
    }

    /// More to say, for `detail=`.
    pub fn detail(&self) -> Option<&str> {
        match self {
            End::ClientError(d) | End::BackendClosed(d) | End::Limit(d) => Some(d),
            _ => None,
        }
    }
}

/// Serves one client connection to its end and logs it. Never panics on client input.
pub fn serve(runtime: Arc<Runtime>, origin: Origin, client: TcpStream, host: &dyn Host) {
    let started = Instant::now();
    let listener = &runtime.config.listeners[origin.listener];
    log::info!("SESSION-START id={} client={} listener={}", origin.id, origin.peer, listener.name);
    let _ = client.set_nodelay(true);
    let mut session = dialogue::Session::new(&runtime, &origin, host);
    let end = session.run(Transport::plain(client));
    let (user, counters, metered) = session.finish();
    host.finished(counters.from_client, counters.to_client);
    let name = listener.name.as_str();
    // The relay added its bytes as they went; what is left came before it.
    let from_client = counters.from_client.saturating_sub(metered.from_client);
    let to_client = counters.to_client.saturating_sub(metered.to_client);
    metrics::add(Metric::BytesFromClients, &[name], from_client);
    metrics::add(Metric::BytesToClients, &[name], to_client);
    metrics::add(Metric::SessionsEnded, &[name, end.word()], 1);
    host.counted();
    let user = user.as_deref().map_or("-".to_string(), printable);
    log::info!(
        "SESSION-END id={} user={} duration={:.3}s from_client={} to_client={} reason={}{}",
        origin.id,
        user,
        started.elapsed().as_secs_f64(),
        counters.from_client,
        counters.to_client,
        end.word(),
        end.detail().map_or(String::new(), |d| format!(" detail={}", printable(d)))
    );
}

/// A login name (or any client-chosen text) as it may appear in a log line: printable,
/// no spaces, bounded; else quoted with escapes.
pub fn printable(user: &str) -> String {
    let clean = user.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '\\');
    if clean && user.len() <= 256 {
        return user.to_string();
    }
    let escaped: String = user.chars().take(256).flat_map(char::escape_default).collect();
    format!("\"{escaped}\"")
}
