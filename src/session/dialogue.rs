//! The pre-login dialogue: the greeting, implicit TLS or STARTTLS, and the commands of
//! the not-authenticated state, which `imap::preauth` answers (a sans-I/O state machine);
//! this driver reads and writes for it, under one deadline, until a LOGIN succeeds and
//! the session moves on to the relay (`login.rs`).

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zeroize::Zeroize;

use super::exchange::Exchange;
use super::relay::Counters;
use super::{printable, End, Host, Origin, Runtime};
use crate::config::TlsMode;
use crate::imap::preauth::{Action, Closed, Limits, PreAuth, Security};
use crate::imap::sasl::Mechanism;
use crate::net::tls;
use crate::net::transport::Transport;

/// One session's state, from the greeting to the relay.
pub(super) struct Session<'a> {
    pub(super) runtime: &'a Runtime,
    pub(super) origin: &'a Origin,
    pub(super) host: &'a dyn Host,
    /// The login name, once logged in.
    pub(super) user: Option<String>,
    /// `tls=VERSION/SUITE` and the client certificate subject, for the LOGIN line.
    pub(super) client_tls: Option<String>,
    /// The judged exchange for the relay, when the listener's rules apply to this session.
    pub(super) exchange: Option<Exchange>,
    /// The capabilities the client was shown after login.
    pub(super) shown: Vec<String>,
    pub(super) counters: Counters,
    /// The part of `counters` the relay already added to the metrics.
    pub(super) metered: Counters,
}

impl<'a> Session<'a> {
    pub(super) fn new(runtime: &'a Runtime, origin: &'a Origin, host: &'a dyn Host) -> Self {
        Session {
            runtime,
            origin,
            host,
            user: None,
            client_tls: None,
            exchange: None,
            shown: Vec::new(),
            counters: Counters::default(),
            metered: Counters::default(),
        }
    }

    /// The login name and the byte counts, for SESSION-END, and the part of those the
    /// relay already added to the metrics.
    pub(super) fn finish(self) -> (Option<String>, Counters, Counters) {
        (self.user, self.counters, self.metered)
    }

    /// Runs the session to its end.
    pub(super) fn run(&mut self, mut client: Transport) -> End {
        let global = &self.runtime.config.global;
        // A deadline, not an inactivity timer: a client trickling one byte at a time
        // gets no more time than a silent one.
        let deadline = Instant::now() + global.preauth_timeout;
        let _ = client.set_write_timeout(Some(global.preauth_timeout));
        let listener_tls = self.runtime.tls.listeners[self.origin.listener].as_ref();
        let mut security = Security::default();
        let reachable = &self.runtime.reachable[self.origin.listener];
        let listener = &self.runtime.config.listeners[self.origin.listener];
        // A bearer token is passed through: offered only where every backend takes it.
        security.bearer = (listener.oauth_mechanisms.iter())
            .filter_map(|name| Mechanism::named(name.as_bytes()))
            .filter(|m| self.runtime.backends.all_offer(reachable, &m.capability()))
            .collect();
        if let Some(tls) = listener_tls {
            security.starttls_offered = tls.mode == TlsMode::Starttls;
            security.login_requires_tls = tls.login_requires_tls;
            if tls.mode == TlsMode::Implicit {
                if let Err(end) = self.start_tls(&mut client, tls, deadline) {
                    return end;
                }
                security.tls_active = true;
            }
        }
        let limits = Limits {
            max_command: global.preauth_max_line,
            max_literal: global.preauth_max_literal,
            max_failures: global.max_login_failures,
        };
        let mut preauth = PreAuth::new(limits, security);
        preauth.set_backend_capabilities(self.runtime.backends.before_login(reachable));
        if let Err(e) = self.send(&mut client, &preauth.greeting(&global.greeting)) {
            return client_error(e);
        }
        let mut input = Vec::new();
        loop {
            let mut actions = Vec::new();
            let used = preauth.feed(&input, &mut actions);
            input.drain(..used);
            for action in actions {
                let outcome = match action {
                    Action::Send(bytes) => self.send(&mut client, &bytes).err().map(client_error),
                    Action::Close(why) => Some(closed(why)),
                    Action::StartTls(tag) => {
                        let ok = format!("{tag} OK Begin TLS negotiation now.\r\n");
                        match self.send(&mut client, ok.as_bytes()) {
                            Err(e) => Some(client_error(e)),
                            Ok(()) => {
                                self.discard_after_starttls(&mut input);
                                let tls = listener_tls.expect("STARTTLS is offered only with TLS");
                                let started = self.start_tls(&mut client, tls, deadline);
                                preauth.tls_started();
                                started.err()
                            }
                        }
                    }
                    Action::Login(login) => {
                        let mut link = ClientLink {
                            client: &mut client,
                            input: &mut input,
                            preauth: &mut preauth,
                            deadline,
                        };
                        match self.login(&mut link, login) {
                            Ok(backend) => {
                                return self.relay(client, backend, std::mem::take(&mut input))
                            }
                            Err(end) => end,
                        }
                    }
                };
                if let Some(end) = outcome {
                    return end;
                }
            }
            if self.host.stopping() {
                let _ = self.send(&mut client, b"* BYE [UNAVAILABLE] Server shutting down.\r\n");
                return End::Shutdown;
            }
            match self.receive(&mut client, &mut input, deadline) {
                Ok(0) => return End::ClientClosed,
                Ok(_) => {}
                Err(e) => return self.receive_failed(&mut client, e),
            }
        }
    }

    /// Ends the session after a failed read from the client, saying why when there is a
    /// reason to give.
    pub(super) fn receive_failed(&mut self, client: &mut Transport, e: io::Error) -> End {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                let _ = self.send(client, b"* BYE Autologout; idle for too long.\r\n");
                End::PreauthTimeout
            }
            io::ErrorKind::Interrupted => {
                let _ = self.send(client, b"* BYE [UNAVAILABLE] Server shutting down.\r\n");
                End::Shutdown
            }
            _ => client_error(e),
        }
    }

    /// RFC 9051 §11.1 and the STARTTLS injection attacks (CVE-2011-0411): bytes that came
    /// after the STARTTLS line, before TLS, were not protected and must not be obeyed.
    fn discard_after_starttls(&self, input: &mut Vec<u8>) {
        if !input.is_empty() {
            log::warn!(
                "id={} discarded {} bytes the client sent after STARTTLS before TLS",
                self.origin.id,
                input.len()
            );
            input.clear();
        }
    }

    /// Runs the TLS handshake with the client.
    fn start_tls(
        &mut self,
        client: &mut Transport,
        tls: &tls::ListenerTls,
        deadline: Instant,
    ) -> Result<(), End> {
        if let Err(e) = client.accept_tls(Arc::clone(&tls.config), deadline) {
            log::info!("id={} TLS handshake with the client failed: {e}", self.origin.id);
            return Err(End::TlsHandshakeFailed);
        }
        let state = client.tls_state().expect("TLS is on after a successful handshake");
        let mut info = format!("tls={}", tls::describe(state));
        if let Some(subject) = tls::peer_subject(state) {
            info.push_str(&format!(" client_cert={}", printable(&subject)));
        }
        log::debug!("id={} TLS established: {info}", self.origin.id);
        self.client_tls = Some(info);
        Ok(())
    }

    pub(super) fn send(&mut self, client: &mut Transport, bytes: &[u8]) -> io::Result<()> {
        client.write_all(bytes)?;
        self.counters.to_client += bytes.len() as u64;
        Ok(())
    }

    /// Reads what the client sent next into `input`, before `deadline`.
    fn receive(
        &mut self,
        client: &mut Transport,
        input: &mut Vec<u8>,
        deadline: Instant,
    ) -> io::Result<usize> {
        let n = read_client(client, input, deadline, self.host)?;
        self.counters.from_client += n as u64;
        Ok(n)
    }
}

/// Reads what the client sent next into `input`, before `deadline`; a shutdown reads as
/// `Interrupted`.
pub(super) fn read_client(
    client: &mut Transport,
    input: &mut Vec<u8>,
    deadline: Instant,
    host: &dyn Host,
) -> io::Result<usize> {
    // On the heap: stack pages touched here would stay resident for the session.
    let mut chunk = vec![0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        // Wake at least once a second to notice a shutdown.
        client.set_read_timeout(Some(left.min(Duration::from_secs(1))))?;
        match client.read(&mut chunk) {
            Ok(n) => {
                input.extend_from_slice(&chunk[..n]);
                // It may hold a password: not left in freed memory.
                chunk.zeroize();
                return Ok(n);
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                if host.stopping() {
                    return Err(io::Error::new(io::ErrorKind::Interrupted, "shutdown"));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The client's side of the dialogue while a login runs: a backend's challenge to a
/// bearer-token login is answered by the client (`login.rs`).
pub(super) struct ClientLink<'c> {
    pub(super) client: &'c mut Transport,
    /// Bytes the client sent after the command being answered.
    pub(super) input: &'c mut Vec<u8>,
    pub(super) preauth: &'c mut PreAuth,
    pub(super) deadline: Instant,
}

/// Why the pre-login dialogue closed the connection, as a session end.
fn closed(why: Closed) -> End {
    match why {
        Closed::Logout => End::Logout,
        Closed::BadCommands => End::BadCommands,
        Closed::FailedLogins => End::FailedLogins,
        Closed::LiteralTooLarge => End::LiteralTooLarge,
    }
}

pub(super) fn client_error(e: io::Error) -> End {
    End::ClientError(e.to_string())
}
