//! One client session from the first byte to the last: greeting, the pre-login dialogue
//! (`imap::preauth`), routing and backend login (`route`, `backend`), then the relay. It
//! owns the three log lines an administrator greps: SESSION-START, LOGIN, SESSION-END.

pub mod exchange;
pub mod relay;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::route::{self, RouteError};
use crate::backend::{self, LoginError};
use crate::config::{Config, TlsMode};
use crate::imap::preauth::{Action, Limits, Login, PreAuth, Security};
use crate::net::tls;
use crate::net::transport::Transport;
use crate::rules::{self, Engine, Response};
use crate::session::relay::{Counters, End, Relay};
use exchange::Exchange;

/// What every session shares: the configuration and the TLS configurations built from it.
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
}

impl Runtime {
    /// Everything sessions share, built from a loaded configuration.
    pub fn new(config: Config, tls: crate::net::tls::Contexts) -> Runtime {
        let backends = crate::backend::state::Backends::new(&config);
        let reachable = (0..config.listeners.len())
            .map(|l| crate::backend::state::reachable(&config, l))
            .collect();
        Runtime { config, tls, backends, reachable }
    }
}

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
        runtime: &runtime,
        config,
        tls: &runtime.tls,
        origin: &origin,
        user: None,
        client_tls: None,
        exchange: None,
        shown: Vec::new(),
        counters: Counters::default(),
    };
    let reason = session.run(Transport::plain(client));
    crate::daemon::stats::add_bytes(session.counters.from_client, session.counters.to_client);
    let user = session.user.as_deref().map_or("-".to_string(), printable);
    // Reasons are one word for greps; "word (details)" puts the details in their own field.
    let (reason, detail) = match reason.split_once(" (") {
        Some((word, rest)) => {
            (word.to_string(), format!(" detail={}", printable(rest.trim_end_matches(')'))))
        }
        None => (reason, String::new()),
    };
    log::info!(
        "SESSION-END id={} user={} duration={:.3}s from_client={} to_client={} reason={}{}",
        origin.id,
        user,
        started.elapsed().as_secs_f64(),
        session.counters.from_client,
        session.counters.to_client,
        reason,
        detail
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
    runtime: &'a Runtime,
    config: &'a Config,
    tls: &'a tls::Contexts,
    origin: &'a Origin,
    user: Option<String>,
    /// `tls=VERSION/SUITE` and the client certificate subject, for the LOGIN line.
    client_tls: Option<String>,
    /// The judged exchange for the relay, when the listener's rules apply to this session.
    exchange: Option<Exchange>,
    /// The capabilities the client was shown after login.
    shown: Vec<String>,
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
        let reachable = &self.runtime.reachable[self.origin.listener];
        preauth.set_backend_capabilities(self.runtime.backends.before_login(reachable));
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
            if crate::daemon::signals::is_shutting_down() {
                let _ = self.send(&mut client, b"* BYE [UNAVAILABLE] Server shutting down.\r\n");
                return "shutdown".into();
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
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    let _ =
                        self.send(&mut client, b"* BYE [UNAVAILABLE] Server shutting down.\r\n");
                    return "shutdown".into();
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
                    self.counters.from_client += n as u64;
                    return Ok(n);
                }
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    if crate::daemon::signals::is_shutting_down() {
                        return Err(io::Error::new(io::ErrorKind::Interrupted, "shutdown"));
                    }
                }
                Err(e) => return Err(e),
            }
        }
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
        let mut backend_name = "-".to_string();
        let (answer, reason, detail, counts) = match route::lookup(self.config, map, &login.user) {
            Err(RouteError::NoMatch) => (auth_failed(), "no-route", None, true),
            Err(e @ RouteError::UnknownBackend(_)) => {
                log::error!("map {}: {e}", map.name);
                (unavailable(), "route-error", Some(e.to_string()), false)
            }
            Ok(route) => {
                let turn = self.runtime.backends.next_turn();
                let candidates = self.config.candidates(route.backend, &route.user, turn);
                backend_name = self.config.target_name(route.backend);
                match self.try_backends(&candidates, &route.user, &login.password, preauth) {
                    Ok((index, session)) => {
                        let backend = &self.config.backends[index];
                        log::info!(
                            "LOGIN id={id} user={user} backend={} result=ok{}{}",
                            backend.name,
                            self.client_tls.as_deref().map_or(String::new(), |t| format!(" {t}")),
                            session
                                .tls
                                .as_deref()
                                .map_or(String::new(), |t| format!(" backend_tls={t}")),
                        );
                        let reachable = &self.runtime.reachable[self.origin.listener];
                        let caps = self.runtime.backends.after_login(
                            reachable,
                            index,
                            &session.capabilities,
                        );
                        let mut ok = format!(
                            "{} OK [CAPABILITY {}] {}\r\n",
                            login.tag,
                            caps.join(" "),
                            session.ok_text
                        )
                        .into_bytes();
                        self.shown = caps.clone();
                        self.exchange =
                            self.start_rules(&login.user, caps, &backend.name, preauth, client);
                        if let Some(exchange) = self.exchange.as_mut() {
                            // Rules see the LOGIN answer too: its [CAPABILITY] code is a list.
                            let mut resp =
                                Response { raw: ok, complete: true, literal_sizes: vec![] };
                            exchange.rules.response(&mut resp);
                            ok = resp.raw;
                        }
                        self.user = Some(login.user);
                        return match self.send(client, &ok) {
                            Ok(()) => Ok(session),
                            Err(e) => Err(Some(client_error(e))),
                        };
                    }
                    Err(LoginError::Rejected(text)) => {
                        (format!("{text}\r\n"), "rejected", None, true)
                    }
                    Err(LoginError::Unavailable(why)) => {
                        log::warn!("no backend available for id={id}: {why}");
                        (unavailable(), "backend-unavailable", Some(why), false)
                    }
                }
            }
        };
        let tls = self.client_tls.as_deref().map_or(String::new(), |t| format!(" {t}"));
        // client= comes last, after anything the client chose, for fail2ban's <HOST>.
        let ip = crate::daemon::admission::parse_ip(&self.origin.client)
            .map_or("-".into(), |a| a.to_string());
        log::info!(
            "LOGIN id={id} user={user} backend={backend_name} result=failed reason={reason}{}{tls} client={ip}",
            detail.map_or(String::new(), |d| format!(" detail={}", printable(&d)))
        );
        let mut blocked = false;
        if counts {
            // The same delay for unknown users and wrong passwords: timing tells nothing.
            // It grows with the failures from this address (limits.rs), up to a block.
            let global = &self.config.global;
            let failure = crate::daemon::admission::login_failed(
                &self.origin.client,
                &global.daemon,
                global.login_failure_delay,
            );
            blocked = failure.blocked;
            std::thread::sleep(failure.delay.saturating_sub(attempt.elapsed()));
        }
        let answer = format!("{} {answer}", login.tag);
        if let Err(e) = self.send(client, answer.as_bytes()) {
            return Err(Some(client_error(e)));
        }
        if blocked {
            let _ = self.send(client, crate::daemon::admission::Refusal::Blocked.bye());
            return Err(Some("login-blocked".into()));
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

    /// Tries the candidate backends in order, skipping those marked down (unless all
    /// are). A backend that cannot be reached or greets badly is marked down and the next
    /// is tried; a refused login is final: the same password will not do elsewhere.
    fn try_backends(
        &self,
        candidates: &[usize],
        user: &str,
        password: &crate::imap::sasl::Secret,
        preauth: &PreAuth,
    ) -> Result<(usize, backend::Session), LoginError> {
        let states = &self.runtime.backends;
        let up: Vec<usize> = candidates.iter().copied().filter(|&i| states.is_up(i)).collect();
        let order = if up.is_empty() { candidates.to_vec() } else { up };
        let info = backend::ClientInfo {
            id: preauth.client_id(),
            addr: self.origin.client.parse().ok(),
            session: self.origin.id,
        };
        let mut last = LoginError::Unavailable("no backend to try".into());
        for i in order {
            let backend = &self.config.backends[i];
            match backend::login(backend, self.tls.backends[i].as_ref(), &info, user, password) {
                Ok(session) => {
                    states.mark_up(i);
                    states.learn(
                        i,
                        Some(session.pre_login.clone()),
                        Some(session.capabilities.clone()),
                    );
                    return Ok((i, session));
                }
                Err(LoginError::Unavailable(why)) => {
                    states.mark_down(i, backend.login.down_time, &why);
                    last = LoginError::Unavailable(format!("{}: {why}", backend.name));
                }
                Err(rejected) => {
                    states.mark_up(i);
                    return Err(rejected);
                }
            }
        }
        Err(last)
    }

    /// The listener's rules for this session, in a judged exchange, when any may apply.
    fn start_rules(
        &self,
        user: &str,
        capabilities: Vec<String>,
        backend: &str,
        preauth: &PreAuth,
        client: &Transport,
    ) -> Option<Exchange> {
        let listener = &self.config.listeners[self.origin.listener];
        let defs: Vec<_> =
            listener.rules.iter().map(|&i| Arc::clone(&self.config.rules[i])).collect();
        if defs.is_empty() {
            return None;
        }
        let now = Instant::now();
        let cx = rules::Context {
            session: self.origin.id,
            client_ip: self.origin.client.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()),
            listener: listener.name.clone(),
            tls: client.is_tls(),
            client_cert: client.tls_state().and_then(tls::peer_subject),
            user: user.to_string(),
            backend: backend.to_string(),
            client_id: preauth.client_id().map(<[_]>::to_vec),
            capabilities,
            started: Some(now),
            last_activity: Some(now),
            ..rules::Context::default()
        };
        let engine = Engine::new(&defs, cx);
        // A session whose rules cannot apply now and cannot wake up later (no ID test)
        // keeps the fast path.
        (engine.is_active() || engine.may_become_active()).then(|| Exchange::new(engine))
    }

    fn relay(
        &mut self,
        client: Transport,
        backend: backend::Session,
        pipelined: Vec<u8>,
    ) -> String {
        let idle = self.config.global.idle_timeout;
        let from_client_before = self.counters;
        let exchange = self.exchange.take();
        let shown = std::mem::take(&mut self.shown);
        let relay = match Relay::new(
            client,
            backend.stream,
            pipelined,
            backend.leftover,
            idle,
            exchange,
            shown,
        ) {
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
