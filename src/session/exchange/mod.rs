//! The judged exchange: what a logged-in session with rules does between its two sockets.
//! Sans-I/O: the relay hands it the bytes it read from either side and writes out what it
//! queues; it owns both framers and every protocol decision of message mode.
//!
//! One promise shapes it: **the backend executes only commands the rules judged.** So:
//! - every client command is assembled and tokenized whole (`imap::command`) before the
//!   rules see it; one that does not tokenize is answered BAD and none of it goes on;
//! - the backend receives imapgate's serialization of what the rules saw
//!   (`command::encode`), under a tag of imapgate's (`tags.rs`), never the client's bytes;
//! - every literal goes to the backend as a synchronizing one, sent only after the
//!   backend's own `+`: a backend that rejects a command early never receives its literal,
//!   whatever its error recovery does with the rest of the line;
//! - IDLE ends only with an exact `DONE`; any other line ends it and is judged as a command;
//! - a literal too large to hold (an APPEND message) streams, but every later argument of
//!   the same command is judged before it is sent, and sizes count per message;
//! - a continuation request the backend was not asked for ends the session.
//!
//! The client side (`client.rs`) turns client bytes into judged commands on the backend
//! queue; the server side (`server.rs`) turns backend responses into client bytes,
//! releasing the client side when the backend grants or refuses a literal.

mod client;
#[cfg(any(test, fuzzing))]
pub mod model;
mod server;
mod tags;

use std::collections::VecDeque;
use std::time::Instant;

use crate::rules::{Engine, Verdict};

use client::Client;
use server::Server;
use tags::Tags;

/// Largest literal held for the rules; a larger one streams (APPEND data) or is refused.
pub const INSPECT_LITERAL: u64 = 64 * 1024;

/// Largest command or response held for the rules (lines and held literals together).
pub const INSPECT_MAX: usize = 256 * 1024;

/// Stop reading a side while this much waits to go the other way, imapgate's own answers
/// included: a client that never reads cannot make imapgate buffer without bound.
pub const QUEUE_HIGH_WATER: usize = 256 * 1024;

/// Commands sent to the backend and not yet answered; beyond this the client waits.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Why the exchange wants the session to end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// A rule ended it; the detail names the limit.
    Limit(String),
    /// A refused part of a streamed command could not be withdrawn from the backend.
    Aborted,
    /// The backend broke the protocol in a way imapgate cannot follow safely.
    Backend(String),
}

/// What goes to the backend, in order.
#[derive(Debug, PartialEq, Eq)]
enum Out {
    /// Bytes.
    Data(Vec<u8>),
    /// Nothing more goes out until the backend sends a continuation request for the
    /// command with this (backend) tag, or answers it.
    Await(Await),
    /// The command with this backend tag ends here.
    EndOfCommand(String),
}

#[derive(Debug, PartialEq, Eq)]
struct Await {
    tag: String,
    kind: AwaitKind,
}

/// What a continuation request from the backend means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AwaitKind {
    /// A literal imapgate holds: its bytes follow; the `+` is imapgate's business.
    Literal,
    /// A literal that streams from the client: the client is released (and shown `+`
    /// when it waits for one).
    Streamed,
    /// IDLE: the client is shown the `+` and may send DONE.
    Idle,
}

/// The judged exchange of one session. See the module documentation.
pub struct Exchange {
    /// The session's rules and what they know.
    pub rules: Engine,
    client: Client,
    server: Server,
    tags: Tags,
    to_backend: VecDeque<Out>,
    to_client: Vec<u8>,
    /// imapgate's own answers, waiting for the server stream to reach a message boundary.
    answers: Vec<u8>,
    stop: Option<Stop>,
    /// The client sent LOGOUT.
    closing: bool,
    /// The backend said BYE.
    server_bye: bool,
    refusals: RefusalLog,
}

impl Exchange {
    /// The exchange of a session with these rules.
    pub fn new(rules: Engine) -> Exchange {
        Exchange {
            rules,
            client: Client::new(),
            server: Server::new(),
            tags: Tags::default(),
            to_backend: VecDeque::new(),
            to_client: Vec::new(),
            answers: Vec::new(),
            stop: None,
            closing: false,
            server_bye: false,
            refusals: RefusalLog::default(),
        }
    }

    /// Takes bytes the client sent; returns how many were consumed. The rest is offered
    /// again later (the exchange holds client bytes while the backend decides on a
    /// literal, or while queues are full).
    pub fn client_input(&mut self, data: &[u8], now: Instant) -> usize {
        client::input(self, data, now)
    }

    /// Takes bytes the backend sent; returns how many were consumed.
    pub fn server_input(&mut self, data: &[u8], now: Instant) -> usize {
        server::input(self, data, now)
    }

    /// True while client bytes may be read: the queues toward both peers have room.
    pub fn wants_client_input(&self) -> bool {
        self.stop.is_none()
            && self.backend_queued() < QUEUE_HIGH_WATER
            && self.to_client.len() + self.answers.len() < QUEUE_HIGH_WATER
            && self.tags.len() < MAX_IN_FLIGHT
    }

    /// True while backend bytes may be read: the queue toward the client has room.
    pub fn wants_server_input(&self) -> bool {
        self.to_client.len() < QUEUE_HIGH_WATER
    }

    fn backend_queued(&self) -> usize {
        self.to_backend.iter().map(|o| if let Out::Data(d) = o { d.len() } else { 0 }).sum()
    }

    /// The next bytes for the backend, unless the queue waits for the backend.
    pub fn to_backend(&mut self) -> Option<&[u8]> {
        while matches!(self.to_backend.front(), Some(Out::EndOfCommand(_)))
            || matches!(self.to_backend.front(), Some(Out::Data(d)) if d.is_empty())
        {
            self.to_backend.pop_front();
        }
        match self.to_backend.front() {
            Some(Out::Data(d)) => Some(d),
            _ => None,
        }
    }

    /// `n` bytes of `to_backend` were written.
    pub fn backend_wrote(&mut self, n: usize) {
        if let Some(Out::Data(d)) = self.to_backend.front_mut() {
            if n >= d.len() {
                self.to_backend.pop_front();
            } else {
                d.drain(..n);
            }
        }
    }

    /// The bytes waiting for the client.
    pub fn to_client(&self) -> &[u8] {
        &self.to_client
    }

    /// `n` bytes of `to_client` were written.
    pub fn client_wrote(&mut self, n: usize) {
        self.to_client.drain(..n);
        if self.to_client.is_empty() && self.to_client.capacity() > 64 * 1024 {
            self.to_client = Vec::new();
        }
    }

    /// Set when the session must end (once `to_client` is written).
    pub fn stop(&self) -> Option<&Stop> {
        self.stop.as_ref()
    }

    /// The client sent LOGOUT: a close is the expected end.
    pub fn closing(&self) -> bool {
        self.closing
    }

    /// The backend said BYE.
    pub fn server_bye(&self) -> bool {
        self.server_bye
    }

    /// The next moment `on_time` must be called.
    pub fn deadline(&self) -> Option<Instant> {
        self.rules.deadline()
    }

    /// Lets rules act on time (session and idle limits).
    pub fn on_time(&mut self, now: Instant) {
        if let Verdict::Disconnect { bye, reason } = self.rules.on_time(now) {
            self.answer(format!("* BYE {bye}\r\n").as_bytes());
            self.stop = Some(Stop::Limit(reason));
        }
    }

    /// The session is over: logs what the refusal log left out.
    pub fn finish(&mut self) {
        self.refusals.summary(self.rules.cx.session);
    }

    /// Queues one of imapgate's own answers, at the next server message boundary.
    fn answer(&mut self, text: &[u8]) {
        if self.server.at_boundary() {
            self.push_client(text);
        } else {
            self.answers.extend_from_slice(text);
        }
    }

    fn push_client(&mut self, bytes: &[u8]) {
        self.rules.cx.bytes_to_client += bytes.len() as u64;
        self.to_client.extend_from_slice(bytes);
    }

    /// The server stream reached a message boundary: imapgate's answers may go.
    fn flush_answers(&mut self) {
        if !self.answers.is_empty() {
            let answers = std::mem::take(&mut self.answers);
            self.push_client(&answers);
        }
    }

    fn push_backend(&mut self, bytes: &[u8]) {
        if let Some(Out::Data(last)) = self.to_backend.back_mut() {
            last.extend_from_slice(bytes);
        } else {
            self.to_backend.push_back(Out::Data(bytes.to_vec()));
        }
    }

    /// The backend answered the command `tag` while its rest waited for a `+`: none of the
    /// rest goes out.
    fn drop_rest_of(&mut self, tag: &str) {
        let Some(at) =
            self.to_backend.iter().position(|o| matches!(o, Out::Await(a) if a.tag == tag))
        else {
            return;
        };
        let end = self
            .to_backend
            .iter()
            .skip(at)
            .position(|o| matches!(o, Out::EndOfCommand(t) if t == tag))
            .map_or(self.to_backend.len(), |i| at + i + 1);
        self.to_backend.drain(at..end);
    }
}

/// Per session, the first refusals are logged one by one; after that they are counted
/// and summed up once, so a client flooding refused commands cannot flood the log.
#[derive(Debug, Default)]
struct RefusalLog {
    logged: u32,
    suppressed: u64,
}

/// Refusals logged one by one per session.
const REFUSALS_LOGGED: u32 = 20;

impl RefusalLog {
    fn refused(&mut self, session: u64, rule: Option<&str>, tag: &str, name: &str, answer: &str) {
        if self.logged < REFUSALS_LOGGED {
            self.logged += 1;
            let by = rule.map_or("imapgate".to_string(), |r| format!("rule={r}"));
            log::info!(
                "id={session} {by} refused tag={} command={}: {}",
                crate::session::printable(tag),
                crate::session::printable(name),
                crate::session::printable(answer.trim_end())
            );
            if self.logged == REFUSALS_LOGGED {
                log::info!("id={session} further refusals in this session are counted, not logged");
            }
        } else {
            self.suppressed += 1;
        }
    }

    fn summary(&mut self, session: u64) {
        if self.suppressed > 0 {
            log::info!(
                "id={session} refused {} more commands (not logged one by one)",
                self.suppressed
            );
            self.suppressed = 0;
        }
    }
}

#[cfg(test)]
mod tests;
