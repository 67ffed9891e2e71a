//! Message mode: what the relay does for a session with active rules. Sans-I/O: the relay
//! hands it the bytes its framers consumed, step by step, and writes out what it queues.
//!
//! Each message is assembled whole (lines and literals up to `INSPECT_LITERAL` each,
//! `INSPECT_MAX` in all) before rules see it, so a command can be refused with nothing of
//! it sent on. A larger literal (an APPEND body, a FETCH of a big message) is decided on
//! when it is announced, from the message so far, and then streams through unseen.
//!
//! Literals: the client's small synchronizing literals are granted by imapgate itself
//! (`+`), since the backend has not seen the command yet. When the command is passed on,
//! each such literal is sent to the backend only after the backend's own `+`, which is
//! swallowed (`Out::AwaitContinuation`); if the backend answers the command instead, the
//! rest of it is dropped. A large synchronizing literal is granted by the backend's `+`,
//! passed to the client, exactly as in the fast path. A refused command's literals never
//! reach the backend: a synchronizing one is never invited (the client gets the answer
//! instead of `+`), a non-synchronizing one is read and dropped.

use std::collections::VecDeque;
use std::time::Instant;

use crate::imap::framer::{AfterContinuation, Event, Framer, Literal, Side};
use crate::imap::response::{self, Kind};
use crate::imap::{capability, command};
use crate::rules::{Command, Engine, Response, Verdict};

/// Largest literal assembled for inspection; larger ones stream.
pub const INSPECT_LITERAL: u64 = 64 * 1024;

/// Commands without arguments (RFC 9051 and extensions): one carrying any is refused.
const TAKES_NO_ARGUMENTS: &[&str] = &[
    "NOOP",
    "CHECK",
    "CAPABILITY",
    "LOGOUT",
    "IDLE",
    "EXPUNGE",
    "CLOSE",
    "UNSELECT",
    "NAMESPACE",
    "STARTTLS",
];

/// Largest message assembled for inspection (lines and literals together).
pub const INSPECT_MAX: usize = 256 * 1024;

/// What to write to the backend, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Out {
    /// Bytes.
    Data(Vec<u8>),
    /// Stop until the backend sends a continuation request (swallowed) for the command
    /// with this tag; its tagged answer instead drops the rest up to `EndOfCommand`.
    AwaitContinuation(String),
    /// Where a command's bytes end.
    EndOfCommand,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Assembling a message for the rules.
    #[default]
    Collect,
    /// Passing the rest of a decided message through unseen.
    Stream,
    /// Dropping the rest of a refused message.
    Discard,
}

#[derive(Debug, Default)]
struct Assembly {
    buf: Vec<u8>,
    literal_sizes: Vec<u64>,
    /// Offsets in `buf` right after each synchronizing literal imapgate granted itself.
    granted_at: Vec<usize>,
    mode: Mode,
    /// The message is a command (not an IDLE or AUTHENTICATE continuation line).
    is_command: bool,
}

impl Assembly {
    fn reset(&mut self) {
        self.buf = Vec::new();
        self.literal_sizes.clear();
        self.granted_at.clear();
        self.mode = Mode::Collect;
    }
}

/// Message-mode state of one session.
pub struct Filter {
    /// The session's rules.
    pub engine: Engine,
    client: Assembly,
    server: Assembly,
    to_backend: VecDeque<Out>,
    to_client: Vec<u8>,
    /// imapgate's own answers, waiting for the server stream to reach a message boundary.
    deferred: Vec<u8>,
    /// Tag of an IDLE command passed on, until its tagged answer.
    idle_tag: Option<String>,
    /// Set when a rule ended the session: the SESSION-END reason.
    pub ending: Option<String>,
    /// The client sent LOGOUT.
    pub closing: bool,
    /// The server said BYE.
    pub server_bye: bool,
}

impl Filter {
    /// Message mode for a session with these rules.
    pub fn new(engine: Engine) -> Filter {
        Filter {
            engine,
            client: Assembly::default(),
            server: Assembly::default(),
            to_backend: VecDeque::new(),
            to_client: Vec::new(),
            deferred: Vec::new(),
            idle_tag: None,
            ending: None,
            closing: false,
            server_bye: false,
        }
    }

    /// Bytes queued for the backend (for backpressure).
    pub fn backend_queued(&self) -> usize {
        self.to_backend.iter().map(|o| if let Out::Data(d) = o { d.len() } else { 0 }).sum()
    }

    /// Bytes queued for the client (for backpressure).
    pub fn client_queued(&self) -> usize {
        self.to_client.len()
    }

    /// The next bytes for the backend, unless the queue waits for a continuation.
    pub fn backend_front(&mut self) -> Option<&[u8]> {
        while matches!(self.to_backend.front(), Some(Out::EndOfCommand))
            || matches!(self.to_backend.front(), Some(Out::Data(d)) if d.is_empty())
        {
            self.to_backend.pop_front();
        }
        match self.to_backend.front() {
            Some(Out::Data(d)) => Some(d),
            _ => None,
        }
    }

    /// `n` bytes of the front chunk were written to the backend.
    pub fn backend_wrote(&mut self, n: usize) {
        if let Some(Out::Data(d)) = self.to_backend.front_mut() {
            if n >= d.len() {
                self.to_backend.pop_front();
            } else {
                d.drain(..n);
            }
        }
    }

    /// The bytes queued for the client.
    pub fn client_pending(&self) -> &[u8] {
        &self.to_client
    }

    /// `n` bytes were written to the client.
    pub fn client_wrote(&mut self, n: usize) {
        self.to_client.drain(..n);
        if self.to_client.is_empty() && self.to_client.capacity() > 64 * 1024 {
            self.to_client = Vec::new();
        }
    }

    /// Queues one of imapgate's own answers at the next server message boundary.
    fn answer_client(&mut self, text: &[u8]) {
        if self.server.mode == Mode::Collect {
            self.push_client(text);
        } else {
            self.deferred.extend_from_slice(text);
        }
    }

    fn push_client(&mut self, bytes: &[u8]) {
        self.engine.cx.bytes_to_client += bytes.len() as u64;
        self.to_client.extend_from_slice(bytes);
    }

    fn push_backend(&mut self, bytes: &[u8]) {
        if let Some(Out::Data(last)) = self.to_backend.back_mut() {
            last.extend_from_slice(bytes);
        } else {
            self.to_backend.push_back(Out::Data(bytes.to_vec()));
        }
    }

    /// Takes one step of the client framer: `chunk` is what it consumed, `event` what it
    /// reported, `was_first` whether the step began in a message's first line.
    pub fn client_step(
        &mut self,
        chunk: &[u8],
        event: Option<Event>,
        framer: &mut Framer,
        was_first: bool,
        now: Instant,
    ) {
        self.engine.cx.bytes_from_client += chunk.len() as u64;
        match self.client.mode {
            Mode::Stream => {
                self.push_backend(chunk);
                if event == Some(Event::LineEnd(None)) {
                    self.to_backend.push_back(Out::EndOfCommand);
                    self.client.reset();
                }
                return;
            }
            Mode::Discard => {
                match event {
                    Some(Event::LineEnd(Some(lit))) if lit.sync => {
                        framer.refuse();
                        self.client.reset();
                    }
                    Some(Event::LineEnd(None)) => self.client.reset(),
                    _ => {}
                }
                return;
            }
            Mode::Collect => {}
        }
        if self.client.buf.is_empty() {
            self.client.is_command = was_first;
            self.engine.cx.last_activity = Some(now);
        }
        self.client.buf.extend_from_slice(chunk);
        match event {
            Some(Event::LineEnd(Some(lit))) => self.client_literal(lit, framer),
            Some(Event::LineEnd(None)) if !self.client.is_command => {
                // IDLE's DONE or an AUTHENTICATE response: not a command, passed as is.
                let line = std::mem::take(&mut self.client.buf);
                self.push_backend(&line);
                self.to_backend.push_back(Out::EndOfCommand);
                self.client.reset();
            }
            Some(Event::LineEnd(None)) => self.decide_command(true, None, framer),
            _ if self.client.buf.len() > INSPECT_MAX => self.decide_command(false, None, framer),
            _ => {}
        }
    }

    fn client_literal(&mut self, lit: Literal, framer: &mut Framer) {
        self.client.literal_sizes.push(lit.size);
        let small = lit.size <= INSPECT_LITERAL
            && self.client.buf.len() as u64 + lit.size <= INSPECT_MAX as u64;
        if !self.client.is_command {
            // A literal in a continuation line is not IMAP; let the server judge it.
            let line = std::mem::take(&mut self.client.buf);
            self.push_backend(&line);
            self.client.mode = Mode::Stream;
            return;
        }
        if !small {
            return self.decide_command(false, Some(lit), framer);
        }
        if lit.sync {
            // The rules decide on what came so far before the client is invited to send
            // the literal: a refused command's literal is never sent (RFC 9051 §7.5).
            let sizes = self.client.literal_sizes.clone();
            if let (Some(cmd), verdict) = self.judge(&self.client.buf.clone(), sizes, false, true) {
                if verdict != Verdict::Pass {
                    self.client.reset();
                    return self.refuse(&cmd.tag, verdict, false, Some(lit), framer);
                }
            }
            self.client.granted_at.push(self.client.buf.len());
            self.answer_client(b"+ Ready for literal data\r\n");
            framer.grant();
        }
    }

    /// What the built-in checks and the rules say about a command (or its beginning:
    /// `complete` false). A `preview` is a look before a small literal is invited; the
    /// same command is judged again once complete.
    fn judge(
        &mut self,
        raw: &[u8],
        sizes: Vec<u64>,
        complete: bool,
        preview: bool,
    ) -> (Option<Command>, Verdict) {
        let Some(mut cmd) = Command::parse(raw, sizes, complete) else {
            return (None, Verdict::Pass);
        };
        cmd.preview = preview;
        // Dovecot does not read the arguments of these commands: a literal after one would
        // be taken for the next command, unseen by the rules. So they carry nothing.
        if TAKES_NO_ARGUMENTS.contains(&cmd.name.as_str())
            && (cmd.args.as_ref().is_none_or(|a| !a.is_empty()) || !cmd.literal_sizes.is_empty())
        {
            return (
                Some(cmd.clone()),
                Verdict::Reply(format!("BAD {} takes no arguments.", cmd.name)),
            );
        }
        if cmd.name == "STARTTLS" {
            return (
                Some(cmd),
                Verdict::Reply("NO [CANNOT] STARTTLS is not available after login.".into()),
            );
        }
        let verdict = match capability::refusal(raw, &self.engine.cx.capabilities) {
            Some(text) => Verdict::Reply(text),
            None => self.engine.command(&mut cmd),
        };
        (Some(cmd), verdict)
    }

    /// Runs the rules on the assembled command (all of it, or up to a large literal).
    fn decide_command(&mut self, complete: bool, pending: Option<Literal>, framer: &mut Framer) {
        let raw = std::mem::take(&mut self.client.buf);
        let sizes = std::mem::take(&mut self.client.literal_sizes);
        let (Some(cmd), verdict) = self.judge(&raw, sizes, complete, false) else {
            // No tag or name: not ours to judge; the server answers BAD.
            return self.pass_command(raw, complete, "*");
        };
        match verdict {
            Verdict::Pass => {
                let bytes = if cmd.modified && complete {
                    command::encode(&cmd.tag, &cmd.name, cmd.args.as_deref().unwrap_or_default())
                } else {
                    raw
                };
                if cmd.modified && complete {
                    self.client.granted_at = sync_literal_ends(&bytes);
                }
                if complete && cmd.name == "IDLE" {
                    self.idle_tag = Some(cmd.tag.clone());
                }
                self.pass_command(bytes, complete, &cmd.tag);
                if complete {
                    match cmd.name.as_str() {
                        "IDLE" => framer.wait_for_continuation(AfterContinuation::Command),
                        "AUTHENTICATE" => framer.wait_for_continuation(AfterContinuation::Wait),
                        "LOGOUT" => self.closing = true,
                        _ => {}
                    }
                }
            }
            refusal => self.refuse(&cmd.tag, refusal, complete, pending, framer),
        }
    }

    /// Answers a refused command and makes sure none of it goes on.
    fn refuse(
        &mut self,
        tag: &str,
        verdict: Verdict,
        complete: bool,
        pending: Option<Literal>,
        framer: &mut Framer,
    ) {
        match verdict {
            Verdict::Pass => {}
            Verdict::Reply(text) => {
                let answer = format!("{tag} {text}\r\n");
                self.refuse_command(answer.as_bytes(), complete, pending, framer)
            }
            Verdict::Drop => {
                let text = format!("{tag} NO [CANNOT] Command refused.\r\n");
                self.refuse_command(text.as_bytes(), complete, pending, framer)
            }
            Verdict::Disconnect { bye, reason } => {
                self.answer_client(format!("* BYE {bye}\r\n").as_bytes());
                self.ending = Some(reason);
                self.refuse_command(b"", complete, pending, framer);
            }
        }
    }

    fn pass_command(&mut self, bytes: Vec<u8>, complete: bool, tag: &str) {
        let mut start = 0;
        for at in std::mem::take(&mut self.client.granted_at) {
            self.push_backend(&bytes[start..at]);
            self.to_backend.push_back(Out::AwaitContinuation(tag.to_string()));
            start = at;
        }
        self.push_backend(&bytes[start..]);
        self.client.granted_at.clear();
        if complete {
            self.to_backend.push_back(Out::EndOfCommand);
            self.client.reset();
        } else {
            self.client.mode = Mode::Stream;
        }
    }

    fn refuse_command(
        &mut self,
        answer: &[u8],
        complete: bool,
        pending: Option<Literal>,
        framer: &mut Framer,
    ) {
        self.answer_client(answer);
        self.client.reset();
        match pending {
            // RFC 9051 §7.5: answering instead of `+` means the literal never comes.
            Some(lit) if lit.sync => framer.refuse(),
            Some(_) => self.client.mode = Mode::Discard,
            None if !complete => self.client.mode = Mode::Discard,
            None => {}
        }
    }

    /// Takes one step of the server framer (see `client_step`).
    pub fn server_step(
        &mut self,
        chunk: &[u8],
        event: Option<Event>,
        client: &mut Framer,
        now: Instant,
    ) {
        match self.server.mode {
            Mode::Stream | Mode::Discard => {
                if self.server.mode == Mode::Stream {
                    self.push_client(chunk);
                }
                if event == Some(Event::LineEnd(None)) {
                    self.server.reset();
                    self.flush_deferred();
                }
                return;
            }
            Mode::Collect => {}
        }
        if self.server.buf.is_empty() {
            self.engine.cx.last_activity = Some(now);
        }
        self.server.buf.extend_from_slice(chunk);
        match event {
            Some(Event::LineEnd(Some(lit))) => {
                self.server.literal_sizes.push(lit.size);
                if lit.size > INSPECT_LITERAL
                    || self.server.buf.len() as u64 + lit.size > INSPECT_MAX as u64
                {
                    self.decide_response(false, client);
                }
            }
            Some(Event::LineEnd(None)) => self.decide_response(true, client),
            _ if self.server.buf.len() > INSPECT_MAX => self.decide_response(false, client),
            _ => {}
        }
    }

    fn decide_response(&mut self, complete: bool, client: &mut Framer) {
        let raw = std::mem::take(&mut self.server.buf);
        let sizes = std::mem::take(&mut self.server.literal_sizes);
        match response::kind(&raw) {
            Kind::Continuation => {
                if let Some(Out::AwaitContinuation(_)) = self.to_backend.front() {
                    // The backend's `+` for a literal imapgate already granted: swallowed.
                    self.to_backend.pop_front();
                    return self.finish_response(complete);
                }
                if client.is_waiting() && self.idle_tag.is_some() {
                    self.engine.cx.idling = true;
                }
                client.grant();
            }
            Kind::Tagged(tag) => {
                let tag = String::from_utf8_lossy(tag).into_owned();
                if matches!(self.to_backend.front(), Some(Out::AwaitContinuation(t)) if *t == tag) {
                    self.drop_rest_of_command();
                }
                let waiting =
                    command::tag_and_name(client.head()).map(|(t, _)| t == tag.as_bytes());
                if client.is_waiting() && waiting == Some(true) {
                    // The backend answered instead of inviting the literal: the command is
                    // over, and what the client sends next is a new command, judged anew.
                    client.refuse();
                    if self.client.mode == Mode::Stream {
                        self.to_backend.push_back(Out::EndOfCommand);
                        self.client.reset();
                    }
                }
                if self.idle_tag.as_deref() == Some(&tag) {
                    self.idle_tag = None;
                    self.engine.cx.idling = false;
                }
            }
            Kind::Untagged => {
                if response::status(&raw).is_some_and(|s| s.status == "BYE") {
                    self.server_bye = true;
                }
                self.learn_delimiter(&raw);
            }
        }
        let tagged = !matches!(response::kind(&raw), Kind::Untagged);
        let shown = &self.engine.cx.capabilities;
        let raw =
            match response::capabilities(&raw).and(response::replace_capabilities(&raw, shown)) {
                Some(replaced) if !shown.is_empty() => replaced,
                _ => raw,
            };
        let mut resp = Response { raw, complete, literal_sizes: sizes };
        match self.engine.response(&mut resp) {
            Verdict::Pass => self.push_client(&resp.raw),
            Verdict::Reply(_) | Verdict::Drop if tagged => self.push_client(&resp.raw),
            Verdict::Reply(_) | Verdict::Drop => {
                if !complete {
                    self.server.mode = Mode::Discard;
                    return;
                }
            }
            Verdict::Disconnect { bye, reason } => {
                self.push_client(format!("* BYE {bye}\r\n").as_bytes());
                self.ending = Some(reason);
                self.server.mode = Mode::Discard;
                return;
            }
        }
        if !complete {
            self.server.mode = Mode::Stream;
            return;
        }
        self.finish_response(complete);
    }

    fn finish_response(&mut self, complete: bool) {
        if complete {
            self.server.reset();
            self.flush_deferred();
        } else {
            self.server.mode = Mode::Discard;
        }
    }

    fn flush_deferred(&mut self) {
        if !self.deferred.is_empty() {
            let deferred = std::mem::take(&mut self.deferred);
            self.push_client(&deferred);
        }
    }

    /// The backend answered a command before taking its literal: the rest never goes out.
    fn drop_rest_of_command(&mut self) {
        while let Some(out) = self.to_backend.pop_front() {
            if out == Out::EndOfCommand {
                break;
            }
        }
    }

    /// `* LIST (...) "/" name` shows the hierarchy delimiter rules need.
    fn learn_delimiter(&mut self, raw: &[u8]) {
        if self.engine.cx.delimiter.is_some()
            || !(raw.starts_with(b"* LIST ") || raw.starts_with(b"* LSUB "))
        {
            return;
        }
        if let Ok(c) = command::parse_untagged(raw) {
            let delim = c.args.get(1).and_then(|a| a.astring()).filter(|d| d.len() == 1);
            if let Some(d) = delim {
                self.engine.cx.delimiter = Some(char::from(d[0]));
            }
        }
    }

    /// Lets rules act on time.
    pub fn on_time(&mut self, now: Instant) {
        if let Verdict::Disconnect { bye, reason } = self.engine.on_time(now) {
            self.answer_client(format!("* BYE {bye}\r\n").as_bytes());
            self.ending = Some(reason);
        }
    }
}

/// Offsets right after each synchronizing literal announcement in an encoded command.
fn sync_literal_ends(bytes: &[u8]) -> Vec<usize> {
    let mut framer = Framer::new(Side::Client);
    let mut ends = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let step = framer.advance(&bytes[pos..]);
        pos += step.consumed;
        if let Some(Event::LineEnd(Some(lit))) = step.event {
            if lit.sync {
                ends.push(pos);
            }
            framer.grant();
        }
        if step.consumed == 0 && step.event.is_none() {
            framer.grant();
        }
    }
    ends
}
