//! One client session from the first byte to the last: greeting, the pre-login dialogue
//! (`imap::preauth`), routing and backend login (`route`, `backend`), then the relay. It
//! owns the three log lines an administrator greps: SESSION-START, LOGIN, SESSION-END.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::backend::{self, LoginError};
use crate::config::Config;
use crate::imap::capability;
use crate::imap::preauth::{Action, Limits, Login, PreAuth};
use crate::relay::{Counters, End, Relay};
use crate::route::{self, RouteError};

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
pub fn serve(config: Arc<Config>, origin: Origin, client: TcpStream) {
    let started = Instant::now();
    let listener = &config.listeners[origin.listener];
    log::info!(
        "SESSION-START id={} client={} listener={}",
        origin.id,
        origin.client,
        listener.name
    );
    let _ = client.set_nodelay(true);
    let mut session = Session {
        config: &config,
        origin: &origin,
        user: None,
        counters: Counters::default(),
    };
    let reason = session.run(client);
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
    let clean = user
        .chars()
        .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\');
    if clean && user.len() <= 256 {
        return user.to_string();
    }
    let escaped: String = user
        .chars()
        .take(256)
        .flat_map(char::escape_default)
        .collect();
    format!("\"{escaped}\"")
}

struct Session<'a> {
    config: &'a Config,
    origin: &'a Origin,
    user: Option<String>,
    counters: Counters,
}

impl Session<'_> {
    fn run(&mut self, mut client: TcpStream) -> String {
        let global = &self.config.global;
        // A deadline, not an inactivity timer: a client trickling one byte at a time
        // gets no more time than a silent one.
        let deadline = Instant::now() + global.preauth_timeout;
        let _ = client.set_write_timeout(Some(global.preauth_timeout));
        let mut preauth = PreAuth::new(Limits {
            max_command: global.preauth_max_line,
            max_literal: global.preauth_max_literal,
            max_failures: global.max_login_failures,
        });
        if self
            .send(&mut client, &PreAuth::greeting(&global.greeting))
            .is_err()
        {
            return "client-error (greeting)".into();
        }
        let mut input = Vec::new();
        loop {
            let mut actions = Vec::new();
            let used = preauth.feed(&input, &mut actions);
            input.drain(..used);
            for action in actions {
                let outcome = match action {
                    Action::Send(bytes) => self
                        .send(&mut client, &bytes)
                        .err()
                        .map(|e| format!("client-error ({e})")),
                    Action::Close(why) => Some(why.replace(' ', "-")),
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
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    let _ = self.send(&mut client, b"* BYE Autologout; idle for too long.\r\n");
                    return "preauth-timeout".into();
                }
                Err(e) => return format!("client-error ({e})"),
            }
        }
    }

    fn send(&mut self, client: &mut TcpStream, bytes: &[u8]) -> io::Result<()> {
        client.write_all(bytes)?;
        self.counters.to_client += bytes.len() as u64;
        Ok(())
    }

    fn receive(
        &mut self,
        client: &mut TcpStream,
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
        client: &mut TcpStream,
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
                match backend::login(backend, &route.user, &login.password) {
                    Ok(session) => {
                        log::info!(
                            "LOGIN id={id} user={user} backend={} result=ok",
                            backend.name
                        );
                        self.user = Some(login.user);
                        let caps = capability::after_login(&session.capabilities).join(" ");
                        let ok = format!(
                            "{} OK [CAPABILITY {caps}] {}\r\n",
                            login.tag, session.ok_text
                        );
                        return match self.send(client, ok.as_bytes()) {
                            Ok(()) => Ok(session),
                            Err(e) => Err(Some(format!("client-error ({e})"))),
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
        log::info!("LOGIN id={id} user={user} backend=- result=failed reason={reason}");
        if counts {
            // The same delay for unknown users and wrong passwords: timing tells nothing.
            let delay = self.config.global.login_failure_delay;
            std::thread::sleep(delay.saturating_sub(attempt.elapsed()));
        }
        let answer = format!("{} {answer}", login.tag);
        if let Err(e) = self.send(client, answer.as_bytes()) {
            return Err(Some(format!("client-error ({e})")));
        }
        let mut more = Vec::new();
        if counts && preauth.login_failed(&mut more) {
            for action in more {
                if let Action::Send(bytes) = action {
                    let _ = self.send(client, &bytes);
                }
            }
            return Err(Some("too-many-failed-logins".into()));
        }
        Err(None)
    }

    fn relay(
        &mut self,
        client: TcpStream,
        backend: backend::Session,
        pipelined: Vec<u8>,
    ) -> String {
        let idle = self.config.global.idle_timeout;
        let from_client_before = self.counters;
        let relay = match Relay::new(client, backend.stream, pipelined, backend.leftover, idle) {
            Ok(relay) => relay,
            Err(e) => return format!("client-error ({e})"),
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
