//! From a LOGIN to a relayed session: routing the login name to a backend (or a pool),
//! logging in there, answering the client under its own tag with the listener's
//! capability set, and starting the rules; or, on failure, the equal-time answer, the
//! failure record and the LOGIN log line.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dialogue::{client_error, read_client, ClientLink, Session};
use super::exchange::Exchange;
use super::relay::{Counters, Relay};
use super::{printable, End, Host, BLOCKED_BYE};
use crate::backend::connect::{Challenges, Proof};
use crate::backend::{self, LoginError};
use crate::config::TlsMode;
use crate::imap::preauth::{Action, Credential, Login, PreAuth};
use crate::imap::sasl::Secret;
use crate::lookup::{Answer, Destination, Found, Outcome, Query};
use crate::metrics::{self, Metric};
use crate::net::tls;
use crate::net::transport::Transport;
use crate::rules::{self, Engine, Response};

/// Why a login failed, for the LOGIN line and the client's answer.
struct Failure {
    /// The tagged answer's text after the tag.
    answer: String,
    /// `reason=` of the LOGIN line.
    reason: &'static str,
    /// `detail=` of the LOGIN line.
    detail: Option<String>,
    /// Counts as a failed attempt (delay, block, `max_login_failures`).
    counts: bool,
    /// At least this long before the answer (a lookup's `wait`).
    wait: Option<Duration>,
}

/// Why a backend's challenge to a bearer-token login could not be answered.
enum ChallengeFailure {
    /// The client's response cannot be sent on: it is answered with `BAD` and counts.
    Invalid(&'static str),
    /// The client closed the connection.
    Closed,
    /// Reading from or writing to the client failed (or the deadline passed).
    Io(io::Error),
}

/// Where a login is tried: configured backends (with their up/down state), or a host a
/// lookup named.
enum Candidate {
    Configured(usize),
    Unnamed(Box<crate::config::Backend>, Option<tls::BackendTls>),
}

impl Session<'_> {
    /// Routes and logs in. On failure the client has its answer and `Err` says whether the
    /// session ends (`Some`) or the dialogue goes on (`None`).
    pub(super) fn login(
        &mut self,
        link: &mut ClientLink<'_>,
        login: Login,
    ) -> Result<backend::Session, Option<End>> {
        let attempt = Instant::now();
        let lookup =
            Arc::clone(&self.runtime.maps[self.runtime.config.listeners[self.origin.listener].map]);
        let password = match &login.credential {
            Credential::Password(p) => Some(p),
            Credential::Bearer(_) => None,
        };
        let client_cert = link.client.tls_state().and_then(tls::peer_subject);
        let query = Query {
            user: &login.user,
            password,
            client: self.origin.peer.addr(),
            tls: link.client.is_tls(),
            client_cert: client_cert.as_deref(),
            attempt: link.preauth.failures() + 1,
        };
        let answer = match lookup.find(&query) {
            Outcome::Found(Found::Route(answer)) => answer,
            outcome => {
                let failure = refusal(&lookup.name, outcome);
                return self.login_failed(
                    link.client,
                    link.preauth,
                    &login,
                    failure,
                    None,
                    attempt,
                );
            }
        };
        let (candidates, name) = match self.candidates(&answer, &login.user) {
            Ok(found) => found,
            Err(why) => {
                log::warn!("map {}: {why}", lookup.name);
                let failure = failed(unavailable(), "lookup-failed", Some(why), false);
                return self.login_failed(
                    link.client,
                    link.preauth,
                    &login,
                    failure,
                    None,
                    attempt,
                );
            }
        };
        let user = answer.destuser.as_deref().unwrap_or(&login.user);
        let proof = match (&answer.master, &answer.pass, &login.credential) {
            (Some((master, pass)), _, _) => Proof::Master { user: master, password: pass },
            (None, Some(pass), _) => Proof::Password(pass),
            (None, None, Credential::Password(p)) => Proof::Password(p),
            (None, None, Credential::Bearer(token)) => Proof::Bearer(token),
        };
        let client_id = link.preauth.client_id().map(<[_]>::to_vec);
        let attempt_on = Attempt { user, proof, client_id: client_id.as_deref() };
        let mut challenge_failure = None;
        let mut relayed = Counters::default();
        let host = self.host;
        let mut challenges =
            |challenge: &[u8]| match relay_challenge(link, host, challenge, &mut relayed) {
                Ok(response) => Some(response),
                Err(why) => {
                    challenge_failure = Some(why);
                    None
                }
            };
        let result = self.try_backends(&candidates, &attempt_on, &mut challenges);
        self.counters.from_client += relayed.from_client;
        self.counters.to_client += relayed.to_client;
        let failure = match result {
            Ok((backend, session)) => {
                return self.logged_in(link.client, link.preauth, login, backend, session)
            }
            Err(LoginError::Rejected(text)) => {
                failed(format!("{text}\r\n"), "rejected", None, true)
            }
            Err(LoginError::Unavailable(why) | LoginError::Unsupported(why)) => {
                log::warn!("no backend available for id={}: {why}", self.origin.id);
                failed(unavailable(), "backend-unavailable", Some(why), false)
            }
            Err(LoginError::Cancelled) => match challenge_failure.take() {
                Some(ChallengeFailure::Invalid(why)) => {
                    failed(format!("BAD {why}.\r\n"), "bad-response", None, true)
                }
                Some(ChallengeFailure::Io(e)) => {
                    return Err(Some(self.receive_failed(link.client, e)))
                }
                Some(ChallengeFailure::Closed) | None => return Err(Some(End::ClientClosed)),
            },
        };
        self.login_failed(link.client, link.preauth, &login, failure, Some(name), attempt)
    }

    /// The backends to try for an answer, and the name the LOGIN line gives them.
    fn candidates(&self, answer: &Answer, user: &str) -> Result<(Vec<Candidate>, String), String> {
        let config = &self.runtime.config;
        match &answer.to {
            Destination::Target(target) => {
                let turn = self.runtime.backends.next_turn();
                let user = answer.destuser.as_deref().unwrap_or(user);
                let list =
                    config.candidates(*target, user, turn).into_iter().map(Candidate::Configured);
                Ok((list.collect(), config.target_name(*target)))
            }
            Destination::Host { host, port, tls: mode } => {
                // The answering map's, not the listener's: in a chain they differ.
                let defaults = answer.host_defaults;
                let mut backend = match defaults {
                    Some(i) => config.backends[i].clone(),
                    None => crate::config::Backend::unnamed(host, *port),
                };
                backend.host = host.clone();
                backend.tls = mode.unwrap_or(backend.tls);
                backend.port = port.unwrap_or(match (defaults, backend.tls) {
                    (Some(i), m) if m == config.backends[i].tls => config.backends[i].port,
                    (_, TlsMode::Implicit) => 993,
                    _ => 143,
                });
                backend.name = format!("{host}:{}", backend.port);
                backend.tls_name = None;
                let tls = match backend.tls {
                    TlsMode::None => None,
                    mode => {
                        let base = defaults.and_then(|i| self.runtime.tls.backends[i].as_ref());
                        let base = base.ok_or_else(|| {
                            format!("tls = {mode:?} for host {host} needs host_defaults naming a backend with TLS")
                        })?;
                        let server_name = rustls::pki_types::ServerName::try_from(host.clone())
                            .map_err(|e| format!("host {host}: {e}"))?;
                        Some(tls::BackendTls {
                            mode,
                            server_name,
                            config: Arc::clone(&base.config),
                        })
                    }
                };
                let name = backend.name.clone();
                Ok((vec![Candidate::Unnamed(Box::new(backend), tls)], name))
            }
            Destination::Default => Err("the answer names no backend".into()),
        }
    }

    /// The backend accepted the login: the client gets its OK with the listener's
    /// capability set, seen by the rules like any capability list.
    fn logged_in(
        &mut self,
        client: &mut Transport,
        preauth: &PreAuth,
        login: Login,
        backend: (Option<usize>, String),
        session: backend::Session,
    ) -> Result<backend::Session, Option<End>> {
        let (index, name) = backend;
        let listener = self.runtime.config.listeners[self.origin.listener].name.as_str();
        metrics::add(Metric::Logins, &[listener, "ok", "none"], 1);
        self.host.counted();
        log::info!(
            "LOGIN id={} user={} backend={} result=ok{}{}{}{}",
            self.origin.id,
            printable(&login.user),
            name,
            mechanism(&login),
            self.client_tls.as_deref().map_or(String::new(), |t| format!(" {t}")),
            session.tls.as_deref().map_or(String::new(), |t| format!(" backend_tls={t}")),
            if session.compressed { " backend_compress=deflate" } else { "" },
        );
        let reachable = &self.runtime.reachable[self.origin.listener];
        // An unnamed host counts with every backend whose capabilities are known.
        let index = index.unwrap_or(usize::MAX);
        let mut caps = self.runtime.backends.after_login(reachable, index, &session.capabilities);
        // COMPRESS toward the client is imapgate's own (the backend link has its own).
        if self.runtime.config.listeners[self.origin.listener].compress {
            caps.push("COMPRESS=DEFLATE".to_string());
        }
        let ok =
            format!("{} OK [CAPABILITY {}] {}\r\n", login.tag, caps.join(" "), session.ok_text);
        let mut ok = ok.into_bytes();
        self.shown = caps.clone();
        self.exchange = self.start_rules(&login.user, caps, &name, preauth, client);
        if let Some(rules) = self.exchange.as_mut().and_then(Exchange::rules) {
            let mut resp = Response { raw: ok, complete: true, literal_sizes: vec![] };
            rules.response(&mut resp);
            ok = resp.raw;
        }
        self.user = Some(login.user);
        match self.send(client, &ok) {
            Ok(()) => Ok(session),
            Err(e) => Err(Some(client_error(e))),
        }
    }

    /// Logs the failure, holds the answer back as long for unknown users as for wrong
    /// passwords (the delay grows with the failures from the address, up to a block),
    /// answers, and ends the session after too many failures.
    fn login_failed(
        &mut self,
        client: &mut Transport,
        preauth: &mut PreAuth,
        login: &Login,
        failure: Failure,
        backend: Option<String>,
        attempt: Instant,
    ) -> Result<backend::Session, Option<End>> {
        let tls = self.client_tls.as_deref().map_or(String::new(), |t| format!(" {t}"));
        // client= comes last, after anything the client chose, for fail2ban's <HOST>.
        let ip = self.origin.peer.ip().map_or("-".into(), |a| a.to_string());
        log::info!(
            "LOGIN id={} user={} backend={} result=failed reason={}{}{}{tls} client={ip}",
            self.origin.id,
            printable(&login.user),
            backend.as_deref().unwrap_or("-"),
            failure.reason,
            mechanism(login),
            failure.detail.map_or(String::new(), |d| format!(" detail={}", printable(&d)))
        );
        let listener = self.runtime.config.listeners[self.origin.listener].name.as_str();
        metrics::add(Metric::Logins, &[listener, "failed", failure.reason], 1);
        let mut blocked = false;
        if let Some(wait) = failure.wait {
            std::thread::sleep(wait.saturating_sub(attempt.elapsed()));
        }
        if failure.counts {
            let global = &self.runtime.config.global;
            let base = global.login_failure_delay;
            let delay = match self.origin.peer.ip() {
                Some(ip) => {
                    let penalty = self.host.login_failed(ip, &global.daemon, base);
                    blocked = penalty.blocked;
                    penalty.delay
                }
                None => base,
            };
            // After the failure report (fork mode), which matters more in a full pipe.
            self.host.counted();
            std::thread::sleep(delay.saturating_sub(attempt.elapsed()));
        } else {
            self.host.counted();
        }
        let answer = format!("{} {}", login.tag, failure.answer);
        if let Err(e) = self.send(client, answer.as_bytes()) {
            return Err(Some(client_error(e)));
        }
        if blocked {
            let _ = self.send(client, BLOCKED_BYE);
            return Err(Some(End::LoginBlocked));
        }
        let mut more = Vec::new();
        if failure.counts && preauth.login_failed(&mut more) {
            for action in more {
                if let Action::Send(bytes) = action {
                    let _ = self.send(client, &bytes);
                }
            }
            return Err(Some(End::FailedLogins));
        }
        Err(None)
    }

    /// Tries the candidate backends in order, skipping those marked down (unless all
    /// are). A backend that cannot be reached or greets badly is marked down and the next
    /// is tried; a refused login is final: the same credentials will not do elsewhere.
    fn try_backends(
        &self,
        candidates: &[Candidate],
        attempt: &Attempt<'_>,
        challenges: &mut Challenges<'_>,
    ) -> Result<((Option<usize>, String), backend::Session), LoginError> {
        let states = &self.runtime.backends;
        let is_up = |c: &&Candidate| match c {
            Candidate::Configured(i) => states.is_up(*i),
            Candidate::Unnamed(..) => true,
        };
        let up: Vec<&Candidate> = candidates.iter().filter(is_up).collect();
        let order = if up.is_empty() { candidates.iter().collect() } else { up };
        let info = backend::ClientInfo {
            id: attempt.client_id,
            addr: self.origin.peer.addr(),
            session: self.origin.id.0,
        };
        let mut last = LoginError::Unavailable("no backend to try".into());
        for candidate in order {
            let (index, backend, tls) = match candidate {
                Candidate::Configured(i) => (
                    Some(*i),
                    &self.runtime.config.backends[*i],
                    self.runtime.tls.backends[*i].as_ref(),
                ),
                Candidate::Unnamed(b, tls) => (None, &**b, tls.as_ref()),
            };
            let started = Instant::now();
            let result =
                backend::login(backend, tls, &info, attempt.user, attempt.proof, challenges);
            // The time to a configured backend's answer (ok or no); a backend that could
            // not be reached has none. Unnamed hosts are not labels (unbounded).
            if index.is_some() && matches!(result, Ok(_) | Err(LoginError::Rejected(_))) {
                metrics::global().observe_login(&backend.name, started.elapsed());
            }
            match (result, index) {
                (Ok(session), i) => {
                    if let Some(i) = i {
                        states.mark_up(i);
                        let (pre, post) = (session.pre_login.clone(), session.capabilities.clone());
                        states.learn(i, Some(pre), Some(post));
                    }
                    return Ok(((i, backend.name.clone()), session));
                }
                (Err(LoginError::Unavailable(why)), i) => {
                    if let Some(i) = i {
                        states.mark_down(i, backend.login.down_time, &why);
                    }
                    last = LoginError::Unavailable(format!("{}: {why}", backend.name));
                }
                (Err(LoginError::Unsupported(why)), _) => {
                    last = LoginError::Unsupported(format!("{}: {why}", backend.name));
                }
                (Err(final_answer), i) => {
                    if let Some(i) = i {
                        states.mark_up(i);
                    }
                    return Err(final_answer);
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
        let listener = &self.runtime.config.listeners[self.origin.listener];
        let defs: Vec<_> =
            listener.rules.iter().map(|&i| Arc::clone(&self.runtime.rules[i])).collect();
        if defs.is_empty() {
            return None;
        }
        let now = Instant::now();
        let cx = rules::Context {
            session: self.origin.id.0,
            client_ip: self.origin.peer.ip(),
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
        (engine.is_active() || engine.may_become_active()).then(|| Exchange::judged(engine))
    }

    /// Relays the logged-in session to its end.
    pub(super) fn relay(
        &mut self,
        client: Transport,
        backend: backend::Session,
        pipelined: Vec<u8>,
    ) -> End {
        let idle = self.runtime.config.global.idle_timeout;
        let shown = std::mem::take(&mut self.shown);
        let exchange = self.exchange.take().unwrap_or_else(|| Exchange::fast(shown));
        let relay =
            match Relay::new(client, backend.stream, pipelined, backend.leftover, idle, exchange) {
                Ok(relay) => relay,
                Err(e) => return client_error(e),
            };
        let listener = &self.runtime.config.listeners[self.origin.listener].name;
        let (end, counters) = relay.metered(listener).run(self.host);
        self.metered = counters;
        self.counters.from_client += counters.from_client;
        self.counters.to_client += counters.to_client;
        if let End::BackendClosed(why) = &end {
            log::warn!("id={} backend connection lost: {why}", self.origin.id);
        }
        end
    }
}

/// ` mech=NAME` for a login by AUTHENTICATE, nothing for the LOGIN command.
fn mechanism(login: &Login) -> String {
    login.mechanism.map_or(String::new(), |m| format!(" mech={}", m.name()))
}

/// One login to try on the candidate backends.
struct Attempt<'a> {
    /// The user name for the backend (the map may have rewritten it).
    user: &'a str,
    proof: Proof<'a>,
    /// The client's ID parameters, when it sent ID.
    client_id: Option<&'a [(String, Option<String>)]>,
}

/// The failure for a lookup that routed nowhere.
fn refusal(map: &str, outcome: Outcome) -> Failure {
    match outcome {
        Outcome::NotFound => failed(auth_failed(), "no-route", None, true),
        Outcome::Failed(why) => {
            log::warn!("map {map}: {why}");
            failed(unavailable(), "lookup-failed", Some(format!("map {map}: {why}")), false)
        }
        Outcome::Found(Found::Refused { reason, wait }) => {
            let answer = match reason {
                Some(r) => format!("NO [ALERT] {}\r\n", r.chars().take(300).collect::<String>()),
                None => "NO [UNAVAILABLE] Login not allowed here.\r\n".into(),
            };
            Failure { wait, ..failed(answer, "nologin", None, false) }
        }
        Outcome::Found(Found::Rejected { text, wait }) => {
            let answer = match text {
                Some(t) => format!(
                    "NO [AUTHENTICATIONFAILED] {}\r\n",
                    t.chars().take(300).collect::<String>()
                ),
                None => auth_failed(),
            };
            Failure { wait, ..failed(answer, "rejected", None, true) }
        }
        Outcome::Found(Found::Route(_)) => failed(unavailable(), "lookup-failed", None, false),
    }
}

/// Sends a backend's challenge to the client and reads the client's response line.
fn relay_challenge(
    link: &mut ClientLink<'_>,
    host: &dyn Host,
    challenge: &[u8],
    counters: &mut Counters,
) -> Result<Secret, ChallengeFailure> {
    link.client.write_all(challenge).map_err(ChallengeFailure::Io)?;
    counters.to_client += challenge.len() as u64;
    loop {
        let (used, response) = link.preauth.challenge_response(link.input);
        link.input.drain(..used);
        match response {
            Some(Ok(line)) => return Ok(line),
            Some(Err(why)) => return Err(ChallengeFailure::Invalid(why)),
            None => {}
        }
        match read_client(link.client, link.input, link.deadline, host) {
            Ok(0) => return Err(ChallengeFailure::Closed),
            Ok(n) => counters.from_client += n as u64,
            Err(e) => return Err(ChallengeFailure::Io(e)),
        }
    }
}

fn failed(answer: String, reason: &'static str, detail: Option<String>, counts: bool) -> Failure {
    Failure { answer, reason, detail, counts, wait: None }
}

fn auth_failed() -> String {
    "NO [AUTHENTICATIONFAILED] Authentication failed.\r\n".into()
}

fn unavailable() -> String {
    "NO [UNAVAILABLE] Backend server unavailable, try again later.\r\n".into()
}
