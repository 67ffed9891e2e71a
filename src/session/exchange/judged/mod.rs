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
//! - a continuation request the backend was not asked for ends the session;
//! - a rule's own commands (`Rule::asks`, hiding folders by type) go out only when no
//!   client command is in flight or half read, under imapgate's tags, and no client
//!   command is read until they are answered; their answers never reach the client.
//!
//! The client side (`client.rs`) turns client bytes into judged commands on the backend
//! queue; the server side (`server.rs`) turns backend responses into client bytes,
//! releasing the client side when the backend grants or refuses a literal. Client input
//! is copied as it is judged; large responses stream to the client in place.

mod client;
mod server;
mod tags;

use std::time::Instant;

use super::queue::{Await, AwaitKind, Item, Queue};
use super::Stop;
use crate::imap::command;
use crate::imap::response::{self, Kind};
use crate::rules::{Engine, Response, Verdict};

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
    /// A rule's own commands out on the backend (`Rule::asks`).
    asking: Option<Asking>,
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
            asking: None,
        }
    }

    pub(super) fn client_input(&mut self, data: &[u8], now: Instant) -> usize {
        self.maybe_ask();
        let used = client::input(self, data, now);
        self.maybe_ask();
        used
    }

    pub(super) fn server_input(&mut self, data: &[u8], now: Instant) -> usize {
        let used = server::input(self, data, now);
        self.maybe_ask();
        used
    }

    /// Sends a rule's own commands when it has some and nothing of the client's is in
    /// flight or half read: the backend's answers to them cannot be taken for the
    /// client's, and no client command is judged until they are in.
    fn maybe_ask(&mut self) {
        let quiet = self.asking.is_none()
            && self.tags.len() == 0
            && self.stop.is_none()
            && self.client.at_rest()
            && self.rules.wants_to_ask();
        if !quiet {
            return;
        }
        let Some((rule, asks)) = self.rules.asks() else { return };
        let mut tags = Vec::new();
        for ask in asks {
            let tag = self.tags.fresh();
            let encoded = command::encode(&tag, &ask.name, &ask.args);
            let mut from = 0;
            for &point in &encoded.sync_points {
                self.push_backend(&encoded.bytes[from..point]);
                let kind = AwaitKind::Literal;
                self.to_backend.push_item(Item::Await(Await { tag: tag.clone(), kind }));
                from = point;
            }
            self.push_backend(&encoded.bytes[from..]);
            tags.push(tag);
        }
        self.asking = Some(Asking { rule, tags, ok: true });
    }

    /// An answer to one of the rule's own commands, or untagged data for them: the
    /// client never sees it. Returns false for a response that is the client's.
    pub(super) fn ask_answer(&mut self, resp: &Response) -> bool {
        let Some(asking) = &mut self.asking else { return false };
        match response::kind(&resp.raw) {
            Kind::Tagged(tag) => {
                let Some(at) = asking.tags.iter().position(|t| t.as_bytes() == tag) else {
                    return false;
                };
                let tag = asking.tags.remove(at);
                asking.ok &= response::status(&resp.raw).is_some_and(|s| s.status == "OK");
                self.to_backend.drop_rest_of(&tag);
                if asking.tags.is_empty() {
                    let Asking { rule, ok, .. } = self.asking.take().expect("checked above");
                    self.rules.answered(rule, ok);
                }
                true
            }
            // With no client command in flight, listings and annotations answer the rule.
            Kind::Untagged if self.tags.len() == 0 && is_ask_data(&resp.raw) => {
                let rule = asking.rule;
                self.rules.on_answer(rule, resp);
                true
            }
            _ => false,
        }
    }

    /// True while client bytes may be read: the queues toward both peers have room, and
    /// no rule is waiting to ask the backend something (a command half read is read on:
    /// only a complete one waits).
    pub(super) fn wants_client_input(&self) -> bool {
        let rule_waits = self.asking.is_some() || self.rules.wants_to_ask();
        !(rule_waits && self.client.at_rest())
            && self.stop.is_none()
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

/// A rule's own commands in flight.
struct Asking {
    /// The rule (its index in the engine).
    rule: usize,
    /// Backend tags not answered yet.
    tags: Vec<String>,
    /// Every answer so far was OK.
    ok: bool,
}

/// Untagged data that answers a rule's LIST or GETMETADATA.
fn is_ask_data(raw: &[u8]) -> bool {
    ["* LIST ", "* LSUB ", "* METADATA "]
        .iter()
        .any(|p| raw.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p.as_bytes())))
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
