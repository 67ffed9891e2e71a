//! The not-authenticated state, answered by imapgate itself (no backend is involved until
//! the client presents credentials). Sans-I/O: `PreAuth::feed` takes client bytes and
//! returns what to send and when to log in; the session driver does the I/O.
//!
//! Every command is assembled whole, with its literals, under two limits (command size
//! and literal size), so a client cannot make us buffer more than a few kilobytes. A
//! synchronizing literal over the limit is refused before the client sends it; an
//! oversized non-synchronizing one ends the connection (RFC 7888 §4 allows either).

use zeroize::Zeroize;

use super::bearer::{self, Bearer};
use super::capability;
use super::command::{self, Arg, Command};
use super::framer::{Event, Framer, Literal, Side};
use super::sasl::{self, Mechanism, Secret};

/// Bounds on what a client may send before login.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest command, lines and literals together.
    pub max_command: usize,
    /// Longest single literal.
    pub max_literal: usize,
    /// Failed logins before the connection is closed.
    pub max_failures: u32,
}

/// Consecutive malformed commands before the connection is closed.
const MAX_BAD_COMMANDS: u32 = 10;

/// RFC 2971 §3.3 limits on ID parameters.
const ID_MAX_PAIRS: usize = 30;
const ID_MAX_FIELD: usize = 30;
const ID_MAX_VALUE: usize = 1024;

/// Credentials to try on a backend, under the client's tag.
#[derive(Debug)]
pub struct Login {
    /// The client's tag, for the answer.
    pub tag: String,
    /// The login name (for a bearer token, the one its message names).
    pub user: String,
    /// What proves it; never logged.
    pub credential: Credential,
    /// The SASL mechanism the client used; `None` for the LOGIN command.
    pub mechanism: Option<Mechanism>,
}

/// What a client proved its identity with.
#[derive(Debug)]
pub enum Credential {
    /// A password (LOGIN, AUTHENTICATE PLAIN or LOGIN): imapgate logs in to the backend
    /// the way the backend's `login_method` says.
    Password(Secret),
    /// A bearer token, which only the backend can check: replayed in its own mechanism.
    Bearer(Bearer),
}

/// Where an AUTHENTICATE exchange stands, waiting for the client's next response.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Plain,
    /// LOGIN: `Username:` was asked.
    LoginUser,
    /// LOGIN: `Password:` was asked for this user.
    LoginPassword(Vec<u8>),
    Bearer(Mechanism),
}

/// What the listener offers in the way of TLS and mechanisms, and what is on now.
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// STARTTLS may be used (the listener has `tls = starttls`).
    pub starttls_offered: bool,
    /// The connection is encrypted (implicit TLS, or after STARTTLS).
    pub tls_active: bool,
    /// LOGIN and AUTHENTICATE are refused before TLS.
    pub login_requires_tls: bool,
    /// The bearer-token mechanisms offered: those the listener passes through
    /// (`oauth_mechanisms`) and every backend it routes to offers.
    pub bearer: Vec<Mechanism>,
}

/// Something for the driver to do, in order.
#[derive(Debug)]
pub enum Action {
    /// Send these bytes to the client.
    Send(Vec<u8>),
    /// Send the tagged OK, discard every byte the client sent after the STARTTLS line,
    /// run the TLS handshake, then call `PreAuth::tls_started`. `feed` stopped here.
    StartTls(String),
    /// Route and log in; `feed` stopped right after this command.
    Login(Login),
    /// Close the connection after sending what came before.
    Close(Closed),
}

/// Why the dialogue closed the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The client said LOGOUT.
    Logout,
    /// Too many malformed commands in a row.
    BadCommands,
    /// Too many failed logins.
    FailedLogins,
    /// A literal over the limit.
    LiteralTooLarge,
}

/// The pre-login conversation of one client. See the module documentation.
#[derive(Debug)]
pub struct PreAuth {
    framer: Framer,
    limits: Limits,
    message: Vec<u8>,
    /// The current command is being skipped after it was answered with an error.
    discarding: bool,
    /// Tag and step of an AUTHENTICATE waiting for the client's response line.
    authenticating: Option<(String, Step)>,
    failures: u32,
    bad_commands: u32,
    client_id: Option<Vec<(String, Option<String>)>>,
    security: Security,
    /// Capabilities all backends of the listener offer, announced beside imapgate's own.
    backend_caps: Vec<String>,
}

impl PreAuth {
    /// A new conversation under `limits`.
    pub fn new(limits: Limits, security: Security) -> PreAuth {
        PreAuth {
            security,
            backend_caps: Vec::new(),
            framer: Framer::new(Side::Client),
            limits,
            message: Vec::new(),
            discarding: false,
            authenticating: None,
            failures: 0,
            bad_commands: 0,
            client_id: None,
        }
    }

    /// The greeting, with the pre-login capabilities in its response code.
    pub fn greeting(&self, text: &str) -> Vec<u8> {
        format!("* OK [CAPABILITY {}] {text}\r\n", self.capabilities()).into_bytes()
    }

    /// The capabilities as they stand now (RFC 9051 §6.2.1, §6.2.3: STARTTLS only before
    /// TLS; LOGINDISABLED and no AUTH= while logins must wait for TLS).
    pub fn capabilities(&self) -> String {
        let sec = &self.security;
        let login_allowed = sec.tls_active || !sec.login_requires_tls;
        let starttls = sec.starttls_offered && !sec.tls_active;
        let mut caps = capability::pre_login(starttls, login_allowed, &sec.bearer);
        for cap in &self.backend_caps {
            if !capability::has(&caps, cap) {
                caps.push(cap.clone());
            }
        }
        caps.join(" ")
    }

    /// Adds backend capabilities (IDLE, NAMESPACE, ...) to the pre-login list.
    pub fn set_backend_capabilities(&mut self, caps: Vec<String>) {
        self.backend_caps = caps;
    }

    /// TLS is now on: forget everything read before it (RFC 9051 §6.2.1) and go on.
    pub fn tls_started(&mut self) {
        self.security.tls_active = true;
        self.framer = Framer::new(Side::Client);
        self.end_message();
        self.authenticating = None;
    }

    /// The client's ID parameters, once it sent them (`Some(empty)` for `ID NIL`).
    pub fn client_id(&self) -> Option<&[(String, Option<String>)]> {
        self.client_id.as_deref()
    }

    /// Consumes a prefix of `data`, appending actions to `out`, and returns its length.
    /// It stops after a `Login` or `Close` action; unconsumed bytes are the client's
    /// pipelined commands and must be offered again (or to the relay after login).
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<Action>) -> usize {
        let mut pos = 0;
        while pos < data.len() {
            let step = self.framer.advance(&data[pos..]);
            let chunk = &data[pos..pos + step.consumed];
            pos += step.consumed;
            if !self.discarding && self.collect(chunk, out) {
                break;
            }
            let done = match step.event {
                Some(Event::LineEnd(Some(literal))) => self.on_literal(literal, out),
                Some(Event::LineEnd(None)) => self.on_message_end(out),
                _ => false,
            };
            if done {
                break;
            }
        }
        pos
    }

    /// Adds to the message being read; over the limit, answers and skips the rest of it.
    /// Returns true when the connection must close.
    fn collect(&mut self, chunk: &[u8], out: &mut Vec<Action>) -> bool {
        if self.message.len() + chunk.len() <= self.limits.max_command {
            self.message.extend_from_slice(chunk);
            return false;
        }
        self.message.zeroize();
        self.message = Vec::new();
        self.discarding = true;
        let limit = self.limits.max_command;
        if let Some((tag, _)) = self.authenticating.take() {
            out.push(send(format!("{tag} BAD Response too long (limit {limit} bytes).\r\n")));
            return self.login_failed(out);
        }
        self.reply_current(out, "BAD", &format!("Command too long (limit {limit} bytes)"));
        false
    }

    /// Decides on a literal just announced; returns true when the connection must close.
    fn on_literal(&mut self, literal: Literal, out: &mut Vec<Action>) -> bool {
        // A SASL response is a bare base64 line: a literal announcement makes it invalid.
        if let Some((tag, _)) = self.authenticating.take().filter(|_| !self.discarding) {
            out.push(send(format!("{tag} BAD Invalid base64 data.\r\n")));
            if literal.sync {
                // RFC 9051 §7.5: answering instead of `+` means the literal never comes.
                self.framer.refuse();
                self.end_message();
            } else {
                self.discarding = true;
            }
            return self.login_failed(out);
        }
        let too_big = literal.size > self.limits.max_literal as u64
            || self.message.len() as u64 + literal.size > self.limits.max_command as u64;
        if self.discarding || too_big {
            if !literal.sync {
                if self.discarding {
                    return false; // its bytes are skipped with the rest of the command
                }
                out.push(Action::Send(b"* BYE Literal too large.\r\n".to_vec()));
                out.push(Action::Close(Closed::LiteralTooLarge));
                return true;
            }
            if !self.discarding {
                let text = format!("Literal too large (limit {} bytes)", self.limits.max_literal);
                self.reply_current(out, "BAD", &text);
            }
            // RFC 9051 §7.5: answering instead of `+` means the literal never comes.
            self.framer.refuse();
            self.end_message();
            return false;
        }
        if literal.sync {
            out.push(Action::Send(b"+ Ready for literal data\r\n".to_vec()));
            self.framer.grant();
        }
        false
    }

    fn end_message(&mut self) {
        // The message may have been a LOGIN: its password does not stay in freed memory.
        self.message.zeroize();
        self.message = Vec::new();
        self.discarding = false;
    }

    /// Answers with the tag of the command being read, or untagged when it has none.
    fn reply_current(&mut self, out: &mut Vec<Action>, status: &str, text: &str) {
        let tag = match command::tag_and_name(self.framer.head()) {
            Some((tag, _)) => String::from_utf8_lossy(tag).into_owned(),
            None => "*".to_string(),
        };
        out.push(Action::Send(format!("{tag} {status} {text}\r\n").into_bytes()));
    }

    fn on_message_end(&mut self, out: &mut Vec<Action>) -> bool {
        if self.discarding {
            self.end_message();
            return false;
        }
        // It may hold a password or a token: zeroed when dropped.
        let message = Secret::new(std::mem::take(&mut self.message));
        let message = message.expose();
        if let Some((tag, step)) = self.authenticating.take() {
            let line = message.strip_suffix(b"\n").unwrap_or(message);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            return self.on_sasl_response(tag, step, line, out);
        }
        match command::parse_pre_login(message) {
            Ok(cmd) => {
                self.bad_commands = 0;
                self.on_command(cmd, out)
            }
            Err(e) => {
                let tag = e.tag.as_deref().unwrap_or("*");
                out.push(send(format!("{tag} BAD {}\r\n", e.reason)));
                self.bad_commands += 1;
                self.close_if(self.bad_commands >= MAX_BAD_COMMANDS, Closed::BadCommands, out)
            }
        }
    }

    /// When `cond` holds, says `* BYE Too many ...` and closes, returning true.
    fn close_if(&self, cond: bool, why: Closed, out: &mut Vec<Action>) -> bool {
        if cond {
            let what = if why == Closed::BadCommands { "bad commands" } else { "failed logins" };
            out.push(send(format!("* BYE Too many {what}.\r\n")));
            out.push(Action::Close(why));
        }
        cond
    }

    fn on_command(&mut self, cmd: Command, out: &mut Vec<Action>) -> bool {
        let tag = &cmd.tag;
        match cmd.name.as_str() {
            "CAPABILITY" => {
                let caps = self.capabilities();
                out.push(send(format!(
                    "* CAPABILITY {caps}\r\n{tag} OK Capability completed.\r\n"
                )));
            }
            "NOOP" => out.push(send(format!("{tag} OK NOOP completed.\r\n"))),
            "LOGOUT" => {
                out.push(send(format!("* BYE Logging out.\r\n{tag} OK Logout completed.\r\n")));
                out.push(Action::Close(Closed::Logout));
                return true;
            }
            "ID" => self.on_id(&cmd, out),
            "LOGIN" | "AUTHENTICATE"
                if self.security.login_requires_tls && !self.security.tls_active =>
            {
                let text = "[PRIVACYREQUIRED] Log in only after STARTTLS.";
                out.push(send(format!("{tag} NO {text}\r\n")));
                let mut cmd = cmd;
                cmd.wipe();
            }
            "LOGIN" => return self.on_login(cmd, out),
            "AUTHENTICATE" => return self.on_authenticate(cmd, out),
            "STARTTLS" if !cmd.args.is_empty() => {
                out.push(send(format!("{tag} BAD STARTTLS takes no arguments.\r\n")))
            }
            "STARTTLS" if self.security.tls_active => {
                out.push(send(format!("{tag} BAD TLS is already on.\r\n")))
            }
            "STARTTLS" if self.security.starttls_offered => {
                out.push(Action::StartTls(cmd.tag));
                return true;
            }
            "STARTTLS" => out.push(send(format!("{tag} BAD STARTTLS is not offered here.\r\n"))),
            _ => {
                out.push(send(format!("{tag} BAD Command unknown or not valid before login.\r\n")))
            }
        }
        false
    }

    fn on_id(&mut self, cmd: &Command, out: &mut Vec<Action>) {
        match parse_id(&cmd.args) {
            Ok(params) => {
                self.client_id = Some(params);
                let version = env!("CARGO_PKG_VERSION");
                out.push(send(format!(
                    "* ID (\"name\" \"imapgate\" \"version\" \"{version}\")\r\n{} OK ID completed.\r\n",
                    cmd.tag
                )));
            }
            Err(reason) => out.push(send(format!("{} BAD {reason}\r\n", cmd.tag))),
        }
    }

    fn on_login(&mut self, mut cmd: Command, out: &mut Vec<Action>) -> bool {
        let (Some(user), Some(pass), 2) = (
            cmd.args.first().and_then(Arg::astring),
            cmd.args.get(1).and_then(Arg::astring),
            cmd.args.len(),
        ) else {
            out.push(send(format!("{} BAD Usage: LOGIN user password\r\n", cmd.tag)));
            cmd.wipe();
            return false;
        };
        let (user, password) = (user.to_vec(), Secret::new(pass.to_vec()));
        cmd.wipe();
        self.try_login(cmd.tag, &user, Credential::Password(password), None, out)
    }

    fn on_authenticate(&mut self, mut cmd: Command, out: &mut Vec<Action>) -> bool {
        let tag = std::mem::take(&mut cmd.tag);
        let mechanism = cmd.args.first().and_then(Arg::astring).and_then(Mechanism::named);
        let offered = |m: &Mechanism| !m.is_bearer() || self.security.bearer.contains(m);
        let Some(mechanism) = mechanism.filter(offered) else {
            let text = "[CANNOT] Unsupported authentication mechanism.";
            out.push(send(format!("{tag} NO {text}\r\n")));
            return false;
        };
        let step = match mechanism {
            Mechanism::Plain => Step::Plain,
            Mechanism::Login => Step::LoginUser,
            bearer => Step::Bearer(bearer),
        };
        match cmd.args.get_mut(1..) {
            // RFC 4959: "=" is an empty initial response.
            Some([Arg::Atom(ir)]) => {
                let ir = if ir == b"=" { Vec::new() } else { std::mem::take(ir) };
                let ir = Secret::new(ir);
                cmd.wipe();
                self.on_sasl_response(tag, step, ir.expose(), out)
            }
            Some([]) => {
                let prompt = if step == Step::LoginUser { sasl::LOGIN_USER_PROMPT } else { "" };
                out.push(send(format!("+ {prompt}\r\n")));
                self.authenticating = Some((tag, step));
                false
            }
            _ => {
                cmd.wipe();
                out.push(send(format!("{tag} BAD Invalid initial response.\r\n")));
                self.login_failed(out)
            }
        }
    }

    /// One client response of an AUTHENTICATE exchange (a line without its CRLF, or the
    /// initial response).
    fn on_sasl_response(
        &mut self,
        tag: String,
        step: Step,
        line: &[u8],
        out: &mut Vec<Action>,
    ) -> bool {
        if line == b"*" {
            out.push(send(format!("{tag} BAD Authentication cancelled.\r\n")));
            return false;
        }
        let Some(data) = sasl::base64_decode(line).map(Secret::new) else {
            out.push(send(format!("{tag} BAD Invalid base64 data.\r\n")));
            return self.login_failed(out);
        };
        let data = data.expose();
        match step {
            Step::Plain => match sasl::decode_plain(data) {
                Err(reason) => {
                    out.push(send(format!("{tag} BAD {reason}.\r\n")));
                    self.login_failed(out)
                }
                Ok(plain) if !plain.authzid.is_empty() && plain.authzid != plain.user => {
                    let text = "[AUTHORIZATIONFAILED] Authorization identities are not supported.";
                    out.push(send(format!("{tag} NO {text}\r\n")));
                    self.login_failed(out)
                }
                Ok(plain) => {
                    let credential = Credential::Password(plain.password);
                    self.try_login(tag, &plain.user, credential, Some(Mechanism::Plain), out)
                }
            },
            Step::LoginUser => {
                out.push(send(format!("+ {}\r\n", sasl::LOGIN_PASSWORD_PROMPT)));
                self.authenticating = Some((tag, Step::LoginPassword(data.to_vec())));
                false
            }
            Step::LoginPassword(user) => {
                let credential = Credential::Password(Secret::new(data.to_vec()));
                self.try_login(tag, &user, credential, Some(Mechanism::Login), out)
            }
            Step::Bearer(mechanism) => match bearer::decode(mechanism, data) {
                Err(reason) => {
                    out.push(send(format!("{tag} BAD {reason}.\r\n")));
                    self.login_failed(out)
                }
                Ok(token) => {
                    let user = token.user.clone().into_bytes();
                    self.try_login(tag, &user, Credential::Bearer(token), Some(mechanism), out)
                }
            },
        }
    }

    fn try_login(
        &mut self,
        tag: String,
        user: &[u8],
        credential: Credential,
        mechanism: Option<Mechanism>,
        out: &mut Vec<Action>,
    ) -> bool {
        // RFC 9051 quoted strings cannot carry CR, LF or NUL, and a literal carrying them
        // could confuse a backend's own parser: such credentials are never sent on.
        let unsafe_byte = |b: &u8| matches!(b, b'\r' | b'\n' | 0);
        let user = match std::str::from_utf8(user) {
            Ok(u) if !u.is_empty() && !user.iter().any(unsafe_byte) => u,
            _ => {
                let text = "[AUTHENTICATIONFAILED] Invalid user name.";
                out.push(send(format!("{tag} NO {text}\r\n")));
                return self.login_failed(out);
            }
        };
        if let Credential::Password(password) = &credential {
            if password.expose().iter().any(unsafe_byte) {
                let text = "[AUTHENTICATIONFAILED] Passwords must not contain CR, LF or NUL.";
                out.push(send(format!("{tag} NO {text}\r\n")));
                return self.login_failed(out);
            }
        }
        out.push(Action::Login(Login { tag, user: user.to_string(), credential, mechanism }));
        true
    }

    /// Reads the client's answer to a challenge the backend sent during a bearer-token
    /// login (RFC 7628 §3.2.2: an error report, answered with a dummy response before the
    /// backend answers the command), which the driver passed on. Returns the bytes
    /// consumed and, once a line is complete, the response to send to the backend (a
    /// base64 line, or `*` to cancel) or why it cannot be sent.
    pub fn challenge_response(
        &mut self,
        data: &[u8],
    ) -> (usize, Option<Result<Secret, &'static str>>) {
        let mut pos = 0;
        while pos < data.len() {
            let step = self.framer.advance(&data[pos..]);
            let chunk = &data[pos..pos + step.consumed];
            pos += step.consumed;
            let line_ended = step.event == Some(Event::LineEnd(None));
            if self.message.len() + chunk.len() > self.limits.max_command {
                self.end_message();
                // The rest of the line is skipped as an answered command's would be.
                self.discarding = !line_ended;
                return (pos, Some(Err("Response too long")));
            }
            self.message.extend_from_slice(chunk);
            match step.event {
                Some(Event::LineEnd(Some(literal))) => {
                    self.end_message();
                    if literal.sync {
                        self.framer.refuse();
                    } else {
                        self.discarding = true;
                    }
                    return (pos, Some(Err("Invalid response")));
                }
                Some(Event::LineEnd(None)) => {
                    let message = Secret::new(std::mem::take(&mut self.message));
                    let line = message.expose();
                    let line = line.strip_suffix(b"\n").unwrap_or(line);
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    let base64 = |b: &u8| b.is_ascii_alphanumeric() || b"+/=".contains(b);
                    if line != b"*" && !line.iter().all(base64) {
                        return (pos, Some(Err("Invalid base64 data")));
                    }
                    return (pos, Some(Ok(Secret::new(line.to_vec()))));
                }
                _ => {}
            }
        }
        (pos, None)
    }

    /// Failed logins so far in this connection.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Counts a failed login; after too many, appends the BYE and returns true.
    pub fn login_failed(&mut self, out: &mut Vec<Action>) -> bool {
        self.failures += 1;
        self.close_if(self.failures >= self.limits.max_failures, Closed::FailedLogins, out)
    }
}

fn send(text: String) -> Action {
    Action::Send(text.into_bytes())
}

/// RFC 2971: `ID NIL` or `ID (field value ...)` with string fields and string-or-NIL values.
fn parse_id(args: &[Arg]) -> Result<Vec<(String, Option<String>)>, &'static str> {
    let invalid = "Invalid ID parameters (RFC 2971: ID NIL or ID (\"field\" \"value\" ...))";
    match args {
        [arg] if arg.is_nil() => Ok(Vec::new()),
        [Arg::List(items)] if items.len() % 2 == 0 && items.len() / 2 <= ID_MAX_PAIRS => {
            let mut params = Vec::new();
            for pair in items.chunks(2) {
                let Some(field) = pair[0].string() else {
                    return Err(invalid);
                };
                let value = match pair[1].string() {
                    Some(v) if v.len() <= ID_MAX_VALUE => Some(v),
                    _ if pair[1].is_nil() => None,
                    _ => return Err(invalid),
                };
                if field.len() > ID_MAX_FIELD {
                    return Err(invalid);
                }
                let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                params.push((text(field), value.map(text)));
            }
            Ok(params)
        }
        _ => Err(invalid),
    }
}

#[cfg(test)]
mod tests_support {
    use super::*;

    pub const LIMITS: Limits = Limits { max_command: 200, max_literal: 50, max_failures: 2 };
    pub const PLAIN: Security = Security {
        starttls_offered: false,
        tls_active: false,
        login_requires_tls: false,
        bearer: Vec::new(),
    };
    pub const STARTTLS: Security = Security {
        starttls_offered: true,
        tls_active: false,
        login_requires_tls: true,
        bearer: Vec::new(),
    };

    /// Feeds `input` whole and renders the actions as text.
    pub fn run(p: &mut PreAuth, input: &[u8]) -> (usize, String) {
        let mut out = Vec::new();
        let n = p.feed(input, &mut out);
        let text = out
            .iter()
            .map(|a| match a {
                Action::Send(b) => String::from_utf8_lossy(b).into_owned(),
                Action::Login(l) => {
                    let mech = l.mechanism.map_or(String::new(), |m| format!(" {}", m.name()));
                    let proof = match &l.credential {
                        Credential::Password(p) => format!("{p:?}"),
                        Credential::Bearer(b) => format!("{b:?}"),
                    };
                    format!("LOGIN {} {} {proof}{mech}\n", l.tag, l.user)
                }
                Action::Close(why) => format!("CLOSE {why:?}\n"),
                Action::StartTls(tag) => format!("STARTTLS {tag}\n"),
            })
            .collect();
        (n, text)
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;

    fn password_of(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PreAuth::new(LIMITS, PLAIN).feed(input, &mut out);
        match out.pop() {
            Some(Action::Login(Login { credential: Credential::Password(p), .. })) => {
                p.expose().to_vec()
            }
            other => panic!("no login: {other:?}"),
        }
    }

    #[test]
    fn simple_commands_are_answered_locally() {
        let mut p = PreAuth::new(LIMITS, PLAIN);
        let (_, t) = run(&mut p, b"a CAPABILITY\r\nb noop\r\nc ID (\"name\" \"Kontact\")\r\n");
        assert!(t.starts_with(
            "* CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID AUTH=PLAIN AUTH=LOGIN\r\na OK"
        ));
        assert!(t.contains("b OK NOOP completed.\r\n"));
        assert!(t.contains("* ID (\"name\" \"imapgate\""));
        assert_eq!(p.client_id().unwrap()[0], ("name".into(), Some("Kontact".into())));
        let (_, t) = run(&mut p, b"d LOGOUT\r\ne NOOP\r\n");
        assert_eq!(t, "* BYE Logging out.\r\nd OK Logout completed.\r\nCLOSE Logout\n");
    }

    #[test]
    fn login_stops_feeding_so_pipelined_commands_reach_the_relay() {
        let mut p = PreAuth::new(LIMITS, PLAIN);
        let input = b"a LOGIN alice secret\r\nb SELECT INBOX\r\n";
        let (n, t) = run(&mut p, input);
        assert_eq!(t, "LOGIN a alice <redacted>\n");
        assert_eq!(&input[n..], b"b SELECT INBOX\r\n");
    }

    #[test]
    fn passwords_arrive_intact_through_every_string_form() {
        let want = "p a\"s\\s é".as_bytes();
        assert_eq!(password_of("a LOGIN u \"p a\\\"s\\\\s é\"\r\n".as_bytes()), want);
        let mut lit = format!("a LOGIN u {{{}}}\r\n", want.len()).into_bytes();
        lit.extend_from_slice(want);
        lit.extend_from_slice(b"\r\n");
        assert_eq!(password_of(&lit), want);
        let plus = String::from_utf8_lossy(&lit).replace("}\r\n", "+}\r\n");
        assert_eq!(password_of(plus.as_bytes()), want);
    }

    #[test]
    fn a_synchronizing_literal_is_invited_then_read() {
        let mut p = PreAuth::new(LIMITS, PLAIN);
        let (n, t) = run(&mut p, b"a LOGIN {5}\r\n");
        assert_eq!((n, t.as_str()), (13, "+ Ready for literal data\r\n"));
        let (_, t) = run(&mut p, b"alice secret\r\n");
        assert_eq!(t, "LOGIN a alice <redacted>\n");
    }

    #[test]
    fn oversized_literals_are_refused_without_being_read() {
        let mut p = PreAuth::new(LIMITS, PLAIN);
        let (_, t) = run(&mut p, b"a LOGIN {51}\r\nb NOOP\r\n");
        assert_eq!(t, "a BAD Literal too large (limit 50 bytes)\r\nb OK NOOP completed.\r\n");
        let (_, t) = run(&mut p, b"c LOGIN {51+}\r\n");
        assert_eq!(t, "* BYE Literal too large.\r\nCLOSE LiteralTooLarge\n");
    }

    #[test]
    fn an_overlong_command_is_answered_once_and_skipped() {
        let mut p = PreAuth::new(LIMITS, PLAIN);
        let mut input = b"a NOOP ".to_vec();
        input.extend(std::iter::repeat_n(b'x', 300));
        input.extend_from_slice(b"\r\nb NOOP\r\n");
        let (_, t) = run(&mut p, &input);
        assert_eq!(t, "a BAD Command too long (limit 200 bytes)\r\nb OK NOOP completed.\r\n");
    }

    #[test]
    fn authenticate_plain_with_and_without_initial_response() {
        let mut p = PreAuth::new(LIMITS, PLAIN);
        let (_, t) = run(&mut p, b"a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n");
        assert_eq!(t, "LOGIN a alice <redacted> PLAIN\n");
        let mut p = PreAuth::new(LIMITS, PLAIN);
        let (_, t) = run(&mut p, b"b authenticate plain\r\n");
        assert_eq!(t, "+ \r\n");
        let (_, t) = run(&mut p, b"AGFsaWNlAHNlY3JldA==\r\n");
        assert_eq!(t, "LOGIN b alice <redacted> PLAIN\n");
        let mut p = PreAuth::new(LIMITS, PLAIN);
        run(&mut p, b"c AUTHENTICATE PLAIN\r\n");
        let (_, t) = run(&mut p, b"*\r\nd NOOP\r\n");
        assert_eq!(t, "c BAD Authentication cancelled.\r\nd OK NOOP completed.\r\n");
    }

    #[test]
    fn authenticate_login_asks_for_user_and_password() {
        let mut p = PreAuth::new(LIMITS, PLAIN);
        let (_, t) = run(&mut p, b"a AUTHENTICATE LOGIN\r\n");
        assert_eq!(t, "+ VXNlcm5hbWU6\r\n");
        let (_, t) = run(&mut p, b"YWxpY2U=\r\n");
        assert_eq!(t, "+ UGFzc3dvcmQ6\r\n");
        let (_, t) = run(&mut p, b"c2VjcmV0\r\n");
        assert_eq!(t, "LOGIN a alice <redacted> LOGIN\n");
        // With an initial response the user name is already there.
        let mut p = PreAuth::new(LIMITS, PLAIN);
        let (_, t) = run(&mut p, b"b AUTHENTICATE LOGIN YWxpY2U=\r\nc2VjcmV0\r\nc NOOP\r\n");
        assert_eq!(t, "+ UGFzc3dvcmQ6\r\nLOGIN b alice <redacted> LOGIN\n");
        // `*` cancels at either prompt.
        let mut p = PreAuth::new(LIMITS, PLAIN);
        let (_, t) = run(&mut p, b"c AUTHENTICATE LOGIN YWxpY2U=\r\n*\r\nd NOOP\r\n");
        assert_eq!(
            t,
            "+ UGFzc3dvcmQ6\r\nc BAD Authentication cancelled.\r\nd OK NOOP completed.\r\n"
        );
    }

    #[test]
    fn bad_sasl_responses_are_answered_and_count_as_failures() {
        let mut p = PreAuth::new(LIMITS, PLAIN);
        let (_, t) = run(&mut p, b"a AUTHENTICATE LOGIN\r\nnot base64!\r\nb NOOP\r\n");
        assert_eq!(t, "+ VXNlcm5hbWU6\r\na BAD Invalid base64 data.\r\nb OK NOOP completed.\r\n");
        // Overlong: answered under the AUTHENTICATE tag, the rest of the line skipped.
        let mut long = b"c AUTHENTICATE PLAIN\r\n".to_vec();
        long.extend(std::iter::repeat_n(b'A', 300));
        long.extend_from_slice(b"\r\nd NOOP\r\n");
        let (_, t) = run(&mut p, &long);
        assert_eq!(
            t,
            "+ \r\nc BAD Response too long (limit 200 bytes).\r\n\
             * BYE Too many failed logins.\r\nCLOSE FailedLogins\n"
        );
        // A literal cannot be a SASL response; a synchronizing one is never invited.
        let mut p = PreAuth::new(LIMITS, PLAIN);
        let (_, t) = run(&mut p, b"e AUTHENTICATE PLAIN\r\n{4}\r\nf NOOP\r\n");
        assert_eq!(t, "+ \r\ne BAD Invalid base64 data.\r\nf OK NOOP completed.\r\n");
        let (_, t) = run(&mut p, b"g AUTHENTICATE PLAIN\r\nAB {4+}\r\nh NOOP\r\ni NOOP\r\n");
        assert!(t.starts_with("+ \r\ng BAD Invalid base64 data.\r\n* BYE"), "{t}");
    }

    #[test]
    fn bearer_tokens_need_the_listener_and_name_their_user() {
        let token = sasl::base64_encode(b"user=carol@example.org\x01auth=Bearer abc\x01\x01");
        let line = format!("a AUTHENTICATE XOAUTH2 {token}\r\n");
        let mut p = PreAuth::new(LIMITS, PLAIN);
        let (_, t) = run(&mut p, line.as_bytes());
        assert_eq!(t, "a NO [CANNOT] Unsupported authentication mechanism.\r\n");
        let offered = Security { bearer: vec![Mechanism::XOAuth2], ..PLAIN };
        let mut p = PreAuth::new(LIMITS, offered.clone());
        assert!(p.capabilities().ends_with("AUTH=PLAIN AUTH=LOGIN AUTH=XOAUTH2"));
        let (_, t) = run(&mut p, line.as_bytes());
        assert_eq!(t, "LOGIN a carol@example.org Bearer(XOAUTH2, user=\"carol@example.org\", <redacted>) XOAUTH2\n");
        // Without an initial response, after an empty prompt.
        let mut p = PreAuth::new(LIMITS, offered.clone());
        let (_, t) = run(&mut p, b"b AUTHENTICATE xoauth2\r\n");
        assert_eq!(t, "+ \r\n");
        let (_, t) = run(&mut p, format!("{token}\r\n").as_bytes());
        assert!(t.starts_with("LOGIN b carol@example.org"), "{t}");
        // OAUTHBEARER is offered only when listed.
        let mut p = PreAuth::new(LIMITS, offered);
        let (_, t) = run(&mut p, b"c AUTHENTICATE OAUTHBEARER\r\n");
        assert!(t.starts_with("c NO [CANNOT]"), "{t}");
    }

    #[test]
    fn a_challenge_response_is_one_base64_line() {
        let offered = Security { bearer: vec![Mechanism::OAuthBearer], ..PLAIN };
        let mut p = PreAuth::new(LIMITS, offered);
        let ir = sasl::base64_encode(b"n,a=dave,\x01auth=Bearer tok\x01\x01");
        let (_, t) = run(&mut p, format!("a AUTHENTICATE OAUTHBEARER {ir}\r\n").as_bytes());
        assert!(t.starts_with("LOGIN a dave"), "{t}");
        assert_eq!(p.challenge_response(b"AQ").0, 2);
        let (used, line) = p.challenge_response(b"==\r\nb NOOP\r\n");
        assert_eq!((used, line.unwrap().unwrap().expose()), (4, &b"AQ=="[..]));
        assert_eq!(p.challenge_response(b"*\r\n").1.unwrap().unwrap().expose(), b"*");
        assert!(p.challenge_response(b"x y\r\n").1.unwrap().is_err());
        // A literal is refused and never invited; an overlong line is skipped to its end.
        let (_, r) = p.challenge_response(b"AB {5}\r\nb NOOP\r\n");
        assert_eq!(r.unwrap().err(), Some("Invalid response"));
        let mut long = vec![b'A'; 300];
        long.extend_from_slice(b"\r\nb NOOP\r\n");
        let (used, r) = p.challenge_response(&long);
        assert_eq!(r.unwrap().err(), Some("Response too long"));
        let (_, t) = run(&mut p, &long[used..]);
        assert_eq!(t, "b OK NOOP completed.\r\n");
    }

    #[test]
    fn unsafe_credentials_never_leave_and_failures_are_counted() {
        let mut p = PreAuth::new(LIMITS, PLAIN);
        let (_, t) = run(&mut p, b"a LOGIN alice {3}\r\n");
        assert!(t.starts_with('+'));
        let (_, t) = run(&mut p, b"a\nb\r\n");
        assert!(t.starts_with("a NO [AUTHENTICATIONFAILED]"), "{t}");
        let (_, t) = run(&mut p, b"x AUTHENTICATE PLAIN AGFsaWNlAGENYg==\r\n");
        assert!(t.contains("x NO [AUTHENTICATIONFAILED]"), "{t}");
        assert!(t.ends_with("* BYE Too many failed logins.\r\nCLOSE FailedLogins\n"));
    }

    #[test]
    fn malformed_commands_get_specific_bad_answers() {
        let mut p = PreAuth::new(LIMITS, PLAIN);
        let (_, t) = run(&mut p, b"a LOGIN \"x\r\nb SELECT INBOX\r\nc ID (\"k\")\r\n");
        assert!(t.starts_with("a BAD Unterminated quoted string\r\n"), "{t}");
        assert!(t.contains("b BAD Command unknown or not valid before login.\r\n"));
        assert!(t.contains("c BAD Invalid ID parameters"));
    }
}

#[cfg(test)]
mod starttls_tests {
    use super::tests_support::*;
    use super::*;

    #[test]
    fn before_tls_logins_are_refused_and_starttls_is_offered() {
        let mut p = PreAuth::new(LIMITS, STARTTLS);
        let greeting = String::from_utf8(p.greeting("hi")).unwrap();
        assert_eq!(
            greeting,
            "* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID STARTTLS LOGINDISABLED] hi\r\n"
        );
        let (_, t) = run(&mut p, b"a LOGIN alice secret\r\nb AUTHENTICATE PLAIN\r\n");
        let refusal = "NO [PRIVACYREQUIRED] Log in only after STARTTLS.\r\n";
        assert_eq!(t, format!("a {refusal}b {refusal}"));
    }

    #[test]
    fn starttls_stops_feeding_and_after_tls_the_capabilities_change() {
        let mut p = PreAuth::new(LIMITS, STARTTLS);
        let input = b"a STARTTLS\r\nb CAPABILITY\r\n";
        let (n, t) = run(&mut p, input);
        assert_eq!(t, "STARTTLS a\n");
        assert_eq!(&input[n..], b"b CAPABILITY\r\n", "the driver must discard these");
        p.tls_started();
        let (_, t) = run(&mut p, b"c CAPABILITY\r\nd STARTTLS\r\n");
        assert!(
            t.starts_with(
                "* CAPABILITY IMAP4rev1 SASL-IR LITERAL+ ID AUTH=PLAIN AUTH=LOGIN\r\nc OK"
            ),
            "{t}"
        );
        assert!(t.ends_with("d BAD TLS is already on.\r\n"));
        let (_, t) = run(&mut p, b"e LOGIN alice secret\r\n");
        assert_eq!(t, "LOGIN e alice <redacted>\n");
    }
}
