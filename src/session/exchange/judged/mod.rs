//! The judged exchange: a logged-in session with rules. One promise shapes it: **the
//! backend executes only commands the rules judged.** So:
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
//! releasing the client side when the backend grants or refuses a literal. Client input
//! is copied as it is judged; large responses stream to the client in place.

mod client;
mod server;
mod tags;

use std::time::Instant;

use super::queue::Queue;
use super::Stop;
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

/// The judged exchange of one session. See the module documentation.
pub(super) struct Judged {
    /// The session's rules and what they know.
    pub(super) rules: Engine,
    client: Client,
    server: Server,
    tags: Tags,
    pub(super) to_backend: Queue,
    pub(super) to_client: Queue,
    /// imapgate's own answers, waiting for the server stream to reach a message boundary.
    answers: Vec<u8>,
    pub(super) stop: Option<Stop>,
    /// The client sent LOGOUT.
    pub(super) closing: bool,
    /// The backend said BYE.
    pub(super) server_bye: bool,
    refusals: RefusalLog,
    pub(super) compress: super::Compress,
    /// imapgate's COMPRESS answer is among `answers`: deflate starts right after them.
    deflate_after_answers: bool,
}

impl Judged {
    pub(super) fn new(rules: Engine) -> Judged {
        Judged {
            rules,
            client: Client::new(),
            server: Server::new(),
            tags: Tags::default(),
            to_backend: Queue::default(),
            to_client: Queue::default(),
            answers: Vec::new(),
            stop: None,
            closing: false,
            server_bye: false,
            refusals: RefusalLog::default(),
            compress: super::Compress::Off,
            deflate_after_answers: false,
        }
    }

    pub(super) fn client_input(&mut self, data: &[u8], now: Instant) -> usize {
        client::input(self, data, now)
    }

    pub(super) fn server_input(&mut self, data: &[u8], now: Instant) -> usize {
        server::input(self, data, now)
    }

    /// True while client bytes may be read: the queues toward both peers have room.
    pub(super) fn wants_client_input(&self) -> bool {
        self.stop.is_none()
            && self.compress != super::Compress::Switching
            && self.to_backend.own_bytes() < QUEUE_HIGH_WATER
            && self.to_client.own_bytes() + self.answers.len() < QUEUE_HIGH_WATER
            && self.tags.len() < MAX_IN_FLIGHT
    }

    /// True while backend bytes may be read: the queue toward the client has room.
    pub(super) fn wants_server_input(&self) -> bool {
        self.to_client.own_bytes() < QUEUE_HIGH_WATER
    }

    /// True when the client stream is between messages and nothing waits for it.
    pub(super) fn at_client_boundary(&self) -> bool {
        self.server.at_boundary() && self.to_client.is_empty()
    }

    pub(super) fn on_time(&mut self, now: Instant) {
        if let Verdict::Disconnect { bye, reason } = self.rules.on_time(now) {
            self.answer(format!("* BYE {bye}\r\n").as_bytes());
            self.stop = Some(Stop::Limit(reason));
        }
    }

    pub(super) fn finish(&mut self) {
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

    /// imapgate's answer to COMPRESS, at the next server message boundary, with deflate
    /// toward the client starting right after it.
    fn answer_then_deflate(&mut self, text: &[u8]) {
        self.answer(text);
        if self.answers.is_empty() {
            self.to_client.push_item(super::queue::Item::StartDeflate);
        } else {
            self.deflate_after_answers = true;
        }
        self.compress = super::Compress::Switching;
    }

    fn push_client(&mut self, bytes: &[u8]) {
        self.rules.cx.bytes_to_client += bytes.len() as u64;
        self.to_client.push(bytes);
    }

    /// The server stream reached a message boundary: imapgate's answers may go.
    fn flush_answers(&mut self) {
        if !self.answers.is_empty() {
            let answers = std::mem::take(&mut self.answers);
            self.push_client(&answers);
            if std::mem::take(&mut self.deflate_after_answers) {
                self.to_client.push_item(super::queue::Item::StartDeflate);
            }
        }
    }

    fn push_backend(&mut self, bytes: &[u8]) {
        self.to_backend.push(bytes);
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
