//! One client session from the first byte to the last: greeting, the pre-login dialogue
//! (`imap::preauth`), routing and backend login (`route`, `backend`), then the relay. It
//! owns the three log lines an administrator greps: SESSION-START, LOGIN, SESSION-END.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::backend::{self, LoginError};
use crate::config::{Config, TlsMode};
use crate::imap::capability;
use crate::imap::preauth::{Action, Limits, Login, PreAuth, Security};
use crate::relay::{Counters, End, Relay};
use crate::route::{self, RouteError};
use crate::tls;
use crate::transport::Transport;
use crate::Runtime;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A new session id, unique in this process.
pub fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Where a session came from.
#[derive(Clone, Debug)]
pub struct Origin {
    /// Session id for the log.
    pub id: u64,
    /// The client's address, or a description when it has none (a socket pair).
    pub client: String,
    /// Index of the listener in the configuration.
    pub listener: usize,
}

/// Serves one client connection to its end and logs it. Never panics on client input.
pub fn serve(runtime: Arc<Runtime>, origin: Origin, client: TcpStream) {
    let started = Instant::now();
    let config = &runtime.config;
    let listener = &config.listeners[origin.listener];
    log::info!(
        "SESSION-START id={} client={} listener={}",
        origin.id,
        origin.client,
        listener.name
    );
    let _ = client.set_nodelay(true);
    let mut session = Session {
        config,
        tls: &runtime.tls,
        origin: &origin,
        user: None,
        client_tls: None,
        counters: Counters::default(),
    };
    let reason = session.run(Transport::plain(client));
    let user = session.user.as_deref().map_or("-".to_string(), printable);
    log::info!(
        "SESSION-END id={} user={} duration={:.3}s from_client={} to_client={} reason={}",
        origin.id,
        user,
        started.elapsed().as_secs_f64(),
        session.counters.from_client,
        session.counters.to_client,
        reason
    );
}

/// A login name as it may appear in a log line: printable, no spaces, bounded.
pub fn printable(user: &str) -> String {
    let clean = user.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '\\');
    if clean && user.len() <= 256 {
        return user.to_string();
    }
    let escaped: String = user.chars().take(256).flat_map(char::escape_default).collect();
    format!("\"{escaped}\"")
}

struct Session<'a> {
    config: &'a Config,
    tls: &'a tls::Contexts,
    origin: &'a Origin,
    user: Option<String>,
    /// `tls=VERSION/SUITE` and the client certificate subject, for the LOGIN line.
    client_tls: Option<String>,
    counters: Counters,
}

impl Session<'_> {
    fn run(&mut self, mut client: Transport) -> String {
        let global = &self.config.global;
        // A deadline, not an inactivity timer: a client trickling one byte at a time
        // gets no more time than a silent one.
        let deadline = Instant::now() + global.preauth_timeout;
        let _ = client.set_write_timeout(Some(global.preauth_timeout));
        let listener_tls = self.tls.listeners[self.origin.listener].as_ref();
        let mut security = Security::default();
        if let Some(tls) = listener_tls {
            security.starttls_offered = tls.mode == TlsMode::Starttls;
            security.login_requires_tls = tls.login_requires_tls;
            if tls.mode == TlsMode::Implicit {
                if let Err(e) = self.start_tls(&mut client, tls, deadline) {
                    return e;
                }
                security.tls_active = true;
            }
        }
        let mut preauth = PreAuth::new(
            Limits {
                max_command: global.preauth_max_line,
                max_literal: global.preauth_max_literal,
                max_failures: global.max_login_failures,
            },
            security,
        );
        if self.send(&mut client, &preauth.greeting(&global.greeting)).is_err() {
            return "client-error (greeting)".into();
        }
        let mut input = Vec::new();
        loop {
            let mut actions = Vec::new();
            let used = preauth.feed(&input, &mut actions);
            input.drain(..used);
            for action in actions {
                let outcome = match action {
                    Action::Send(bytes) => self.send(&mut client, &bytes).err().map(client_error),
                    Action::Close(why) => Some(why.replace(' ', "-")),
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
                    Action::Login(login) => match self.login(&mut client, &mut preauth, login) {
                        Ok(backend) => {
                            return self.relay(client, backend, std::mem::take(&mut input))
                        }
                        Err(end) => end,
                    },
                };
                if let Some(reason) = outcome {
                    return reason;
                }
            }
            match self.receive(&mut client, &mut input, deadline) {
                Ok(0) => return "client-closed".into(),
                Ok(_) => {}
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    let _ = self.send(&mut client, b"* BYE Autologout; idle for too long.\r\n");
                    return "preauth-timeout".into();
                }
                Err(e) => return client_error(e),
            }
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

    /// Runs the TLS handshake with the client; `Err` holds the SESSION-END reason.
    fn start_tls(
        &mut self,
        client: &mut Transport,
        tls: &tls::ListenerTls,
        deadline: Instant,
    ) -> Result<(), String> {
        if let Err(e) = client.accept_tls(Arc::clone(&tls.config), deadline) {
            log::info!("id={} TLS handshake with the client failed: {e}", self.origin.id);
            return Err("tls-handshake-failed".into());
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

    fn send(&mut self, client: &mut Transport, bytes: &[u8]) -> io::Result<()> {
        client.write_all(bytes)?;
        self.counters.to_client += bytes.len() as u64;
        Ok(())
    }

    fn receive(
        &mut self,
        client: &mut Transport,
        input: &mut Vec<u8>,
        deadline: Instant,
    ) -> io::Result<usize> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        client.set_read_timeout(Some(left))?;
        let mut chunk = [0u8; 4096];
        let n = client.read(&mut chunk)?;
        input.extend_from_slice(&chunk[..n]);
        self.counters.from_client += n as u64;
        Ok(n)
    }

    /// Routes and logs in. On failure the client has its answer and `Err` says whether the
    /// session ends (`Some(reason)`) or the dialogue goes on (`None`).
    fn login(
        &mut self,
        client: &mut Transport,
        preauth: &mut PreAuth,
        login: Login,
    ) -> Result<backend::Session, Option<String>> {
        let attempt = Instant::now();
        let id = self.origin.id;
        let user = printable(&login.user);
        let listener = &self.config.listeners[self.origin.listener];
        let map = &self.config.maps[listener.map];
        let (answer, reason, counts) = match route::lookup(self.config, map, &login.user) {
            Err(RouteError::NoMatch) => (auth_failed(), "no-route".to_string(), true),
            Err(e @ RouteError::UnknownBackend(_)) => {
                log::error!("map {}: {e}", map.name);
                (unavailable(), format!("route-error ({e})"), false)
            }
            Ok(route) => {
                let backend = &self.config.backends[route.backend];
                let backend_tls = self.tls.backends[route.backend].as_ref();
                match backend::login(backend, backend_tls, &route.user, &login.password) {
                    Ok(session) => {
                        log::info!(
                            "LOGIN id={id} user={user} backend={} result=ok{}{}",
                            backend.name,
                            self.client_tls.as_deref().map_or(String::new(), |t| format!(" {t}")),
                            session
                                .tls
                                .as_deref()
                                .map_or(String::new(), |t| format!(" backend_tls={t}")),
                        );
                        self.user = Some(login.user);
                        let caps = capability::after_login(&session.capabilities).join(" ");
                        let ok =
                            format!("{} OK [CAPABILITY {caps}] {}\r\n", login.tag, session.ok_text);
                        return match self.send(client, ok.as_bytes()) {
                            Ok(()) => Ok(session),
                            Err(e) => Err(Some(client_error(e))),
                        };
                    }
                    Err(LoginError::Rejected(text)) => {
                        (format!("{text}\r\n"), "rejected".into(), true)
                    }
                    Err(LoginError::Unavailable(why)) => {
                        log::warn!("backend {} unavailable for id={id}: {why}", backend.name);
                        (unavailable(), format!("backend-unavailable ({why})"), false)
                    }
                }
            }
        };
        let tls = self.client_tls.as_deref().map_or(String::new(), |t| format!(" {t}"));
        log::info!("LOGIN id={id} user={user} backend=- result=failed reason={reason}{tls}");
        if counts {
            // The same delay for unknown users and wrong passwords: timing tells nothing.
            let delay = self.config.global.login_failure_delay;
            std::thread::sleep(delay.saturating_sub(attempt.elapsed()));
        }
        let answer = format!("{} {answer}", login.tag);
        if let Err(e) = self.send(client, answer.as_bytes()) {
            return Err(Some(client_error(e)));
        }
        let mut more = Vec::new();
        if counts && preauth.login_failed(&mut more) {
            for action in more {
                if let Action::Send(bytes) = action {
                    let _ = self.send(client, &bytes);
                }
            }
            return Err(Some("failed-logins".into()));
        }
        Err(None)
    }

    fn relay(
        &mut self,
        client: Transport,
        backend: backend::Session,
        pipelined: Vec<u8>,
    ) -> String {
        let idle = self.config.global.idle_timeout;
        let from_client_before = self.counters;
        let relay = match Relay::new(client, backend.stream, pipelined, backend.leftover, idle) {
            Ok(relay) => relay,
            Err(e) => return client_error(e),
        };
        let (end, counters) = relay.run();
        self.counters.from_client = from_client_before.from_client + counters.from_client;
        self.counters.to_client = from_client_before.to_client + counters.to_client;
        if let End::BackendClosed(why) = &end {
            log::warn!("id={} backend connection lost: {why}", self.origin.id);
        }
        end.reason()
    }
}

fn auth_failed() -> String {
    "NO [AUTHENTICATIONFAILED] Authentication failed.\r\n".into()
}

fn unavailable() -> String {
    "NO [UNAVAILABLE] Backend server unavailable, try again later.\r\n".into()
}

fn client_error(e: io::Error) -> String {
    format!("client-error ({e})")
}
