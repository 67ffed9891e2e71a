//! The client side of the judged exchange: from client bytes to judged commands on the
//! backend queue.
//!
//! A command is assembled whole (its lines and literals of up to `INSPECT_LITERAL`, which
//! imapgate invites itself with `+` after the rules had a look at what came before), then
//! tokenized, judged and sent in imapgate's serialization. Only APPEND message data may
//! be larger: it streams, after the backend's own `+`, and the rest of the command is
//! assembled and judged again before any of it is sent.

use std::time::Instant;

use crate::imap::capability;
use crate::imap::command::{self, Arg, Effect, Encoded, ParseError};
use crate::imap::framer::{Event, Framer, Literal, Side};
use crate::rules::{Command, Verdict};

use super::{Judged, INSPECT_LITERAL, INSPECT_MAX};
use crate::session::exchange::queue::{Await, AwaitKind, Item};
use crate::session::exchange::Stop;

/// Literals one command may carry: each one costs a look at the command so far.
pub const MAX_LITERALS: usize = 256;

/// What may follow UID (RFC 9051, RFC 6851 MOVE, RFC 5256 SORT/THREAD, RFC 4315
/// EXPUNGE, RFC 8508 REPLACE). Anything else is refused: a server that reads `UID SELECT`
/// as SELECT would run a command the rules judged as something else.
const UID_COMMANDS: &[&str] = &[
    "UID FETCH",
    "UID STORE",
    "UID SEARCH",
    "UID COPY",
    "UID MOVE",
    "UID EXPUNGE",
    "UID SORT",
    "UID THREAD",
    "UID REPLACE",
];

/// Commands without arguments (RFC 9051 and extensions): one carrying any is refused, as
/// a server that does not read them might take what follows for the next command.
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

pub(super) struct Client {
    framer: Framer,
    state: State,
    cmd: Assembly,
    /// The backend tag of the IDLE command in progress, until its tagged answer.
    idle: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading a command.
    Command,
    /// Dropping the rest of a command that was refused.
    Discard,
    /// A streamed literal was announced and the command so far sent: waiting for the
    /// backend's `+` (or its answer). `sync`: the client waits for a `+` too.
    AwaitGrant { sync: bool },
    /// Passing a streamed literal's bytes to the backend.
    Streaming,
    /// IDLE went to the backend: waiting for its `+` (or its answer).
    AwaitIdle,
    /// In IDLE: the next line is `DONE`, or ends the IDLE and is read as a command.
    Idling,
}

/// The command being read.
#[derive(Debug, Default)]
struct Assembly {
    /// Its bytes, without the data of streamed literals.
    buf: Vec<u8>,
    /// Offsets in `buf` right after the announcements of streamed literals.
    elided: Vec<usize>,
    literals: usize,
    /// Set once part of the command went to the backend (it streams).
    sent: Option<Sent>,
}

#[derive(Debug)]
struct Sent {
    /// The command's tag on the backend.
    tag: String,
    /// The client's tag, for answers.
    client_tag: String,
    /// imapgate's serialization of the part sent so far: the next part must extend it.
    bytes: Vec<u8>,
    /// The backend answered the command while the client was still sending it.
    answered: bool,
}

impl Client {
    pub(super) fn new() -> Client {
        Client {
            framer: Framer::new(Side::Client),
            state: State::Command,
            cmd: Assembly::default(),
            idle: None,
        }
    }

    /// True between commands: nothing of a command is read, queued or waited for.
    pub(super) fn at_rest(&self) -> bool {
        self.state == State::Command && self.cmd.buf.is_empty() && self.cmd.sent.is_none()
    }

    /// True while client bytes may be consumed: the exchange does not wait for the
    /// backend's decision on what the client is sending.
    fn may_consume(&self) -> bool {
        !matches!(self.state, State::AwaitGrant { .. } | State::AwaitIdle)
    }
}

pub(super) fn input(ex: &mut Judged, data: &[u8], now: Instant) -> usize {
    let mut used = 0;
    while used < data.len() && ex.client.may_consume() && ex.wants_client_input() {
        let step = ex.client.framer.advance(&data[used..]);
        if step.consumed == 0 && step.event.is_none() {
            break; // a synchronizing literal waits for imapgate's decision
        }
        let chunk = &data[used..used + step.consumed];
        used += step.consumed;
        ex.rules.cx.bytes_from_client += chunk.len() as u64;
        // Judged input is copied where it is needed: the pump may free it at once.
        ex.to_backend.drop_input(chunk.len());
        match ex.client.state {
            State::Discard => discard(ex, step.event),
            State::Streaming => stream(ex, chunk, step.event),
            _ => collect(ex, chunk, step.event, now),
        }
    }
    used
}

fn discard(ex: &mut Judged, event: Option<Event>) {
    match event {
        // RFC 9051 §7.5: a literal not invited never comes; what follows is a command.
        Some(Event::LineEnd(Some(lit))) if lit.sync => {
            ex.client.framer.refuse();
            next_command(ex);
        }
        Some(Event::LineEnd(None)) => next_command(ex),
        _ => {}
    }
}

fn stream(ex: &mut Judged, chunk: &[u8], event: Option<Event>) {
    ex.push_backend(chunk);
    if event == Some(Event::LiteralEnd) {
        ex.client.state = State::Command;
        if ex.client.cmd.sent.as_ref().is_some_and(|s| s.answered) {
            end_answered_line(ex);
        }
    }
}

fn next_command(ex: &mut Judged) {
    ex.client.cmd = Assembly::default();
    ex.client.state = State::Command;
}

fn collect(ex: &mut Judged, chunk: &[u8], event: Option<Event>, now: Instant) {
    if ex.client.cmd.buf.is_empty() && ex.client.cmd.sent.is_none() {
        ex.rules.cx.last_activity = Some(now);
    }
    ex.client.cmd.buf.extend_from_slice(chunk);
    if ex.client.state == State::Idling && event.is_some() {
        if event == Some(Event::LineEnd(None)) && is_done(&ex.client.cmd.buf) {
            ex.push_backend(b"DONE\r\n");
            return next_command(ex);
        }
        // RFC 2177 allows only DONE: anything else ends the IDLE here and is a command,
        // judged like any other. The backend sees imapgate's DONE, never the line.
        ex.push_backend(b"DONE\r\n");
        ex.client.state = State::Command;
    }
    if ex.client.cmd.buf.len() > INSPECT_MAX {
        let pending = match event {
            Some(Event::LineEnd(lit)) => lit,
            _ => None,
        };
        let complete = event == Some(Event::LineEnd(None));
        let tag = current_tag(&ex.client.cmd.buf);
        let verdict = Verdict::Reply("NO [TOOBIG] Command too long.".into());
        return refuse(ex, &tag, "-", verdict, pending, complete);
    }
    match event {
        Some(Event::LineEnd(Some(lit))) if ex.client.state == State::Command => {
            literal_announced(ex, lit)
        }
        Some(Event::LineEnd(None)) if ex.client.state == State::Command => command_end(ex),
        _ => {}
    }
}

fn is_done(message: &[u8]) -> bool {
    let line = message.strip_suffix(b"\n").unwrap_or(message);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.eq_ignore_ascii_case(b"DONE")
}

/// The tag of a message that could not be assembled, for its answer.
fn current_tag(buf: &[u8]) -> String {
    match command::tag_and_name(buf) {
        Some((tag, _)) if tag.iter().all(|&b| b.is_ascii_graphic()) => {
            String::from_utf8_lossy(tag).into_owned()
        }
        _ => "*".to_string(),
    }
}

/// A literal was announced: the rules look at the command so far (the literal a
/// placeholder of its size) before imapgate invites it, or before it streams.
fn literal_announced(ex: &mut Judged, lit: Literal) {
    let cmd = &mut ex.client.cmd;
    cmd.literals += 1;
    if cmd.literals > MAX_LITERALS {
        let tag = current_tag(&cmd.buf);
        let verdict = Verdict::Reply("NO [LIMIT] Too many literals in one command.".into());
        return refuse(ex, &tag, "-", verdict, Some(lit), false);
    }
    let pending_at = cmd.buf.len();
    let mut elided = cmd.elided.clone();
    elided.push(pending_at);
    let parsed = match command::parse_prefix(&cmd.buf, &elided, true) {
        Ok(parsed) => parsed,
        Err(e) => return refuse_unreadable(ex, e, Some(lit), false),
    };
    let open_lists = parsed.open_lists;
    let stream = lit.size > INSPECT_LITERAL || cmd.buf.len() as u64 + lit.size > INSPECT_MAX as u64;
    let mut look = Command::new(parsed, false);
    look.preview = !stream;
    look.continued = cmd.sent.is_some();
    if stream && !streamable(&look) {
        let verdict = Verdict::Reply(format!(
            "NO [TOOBIG] Literal too large (only APPEND message data may exceed {INSPECT_LITERAL} bytes)."
        ));
        return refuse(ex, &look.tag, &look.name, verdict, Some(lit), false);
    }
    let verdict = judge(ex, &mut look);
    if verdict != Verdict::Pass {
        return refuse(ex, &look.tag, &look.name, verdict, Some(lit), false);
    }
    if !stream {
        if lit.sync {
            ex.answer(b"+ Ready for literal data\r\n");
            ex.client.framer.grant();
        }
        return;
    }
    let encoded = command::encode_prefix("", &look.name, &look.args, open_lists);
    if send(ex, &look.tag, encoded, None).is_err() {
        return;
    }
    ex.client.cmd.elided.push(pending_at);
    ex.client.state = State::AwaitGrant { sync: lit.sync };
}

/// Only APPEND message data may stream (RFC 9051 §6.3.12, RFC 3502, RFC 4469 CATENATE
/// TEXT, RFC 6855 UTF8): never a mailbox name, a search key or a URL, which rules read.
fn streamable(look: &Command) -> bool {
    if look.name != "APPEND" || look.args.len() < 2 {
        return false;
    }
    match look.args.last() {
        Some(Arg::Streamed { .. }) => true,
        Some(Arg::List(parts)) => {
            let before = &look.args[look.args.len() - 2];
            match parts.as_slice() {
                [.., text, Arg::Streamed { .. }] => {
                    before.is_atom("CATENATE") && text.is_atom("TEXT")
                }
                [Arg::Streamed { .. }] => before.is_atom("UTF8"),
                _ => false,
            }
        }
        _ => false,
    }
}

/// The command is complete: judged whole, then sent (or the rest of it, when it streamed).
fn command_end(ex: &mut Judged) {
    let parsed = match command::parse_prefix(&ex.client.cmd.buf, &ex.client.cmd.elided, false) {
        Ok(parsed) => parsed,
        Err(e) => return refuse_unreadable(ex, e, None, true),
    };
    let mut look = Command::new(parsed, true);
    look.continued = ex.client.cmd.sent.is_some();
    let verdict = judge(ex, &mut look);
    if verdict != Verdict::Pass {
        return refuse(ex, &look.tag, &look.name, verdict, None, true);
    }
    if look.name == "COMPRESS" {
        return compress(ex, &look);
    }
    let encoded = command::encode("", &look.name, &look.args);
    let then = (look.name == "IDLE").then_some(AwaitKind::Idle);
    let Ok(tag) = send(ex, &look.tag, encoded, Some(then)) else { return };
    match look.name.as_str() {
        "IDLE" => {
            ex.client.idle = Some(tag);
            ex.client.state = State::AwaitIdle;
            ex.client.cmd = Assembly::default();
            return;
        }
        "LOGOUT" => ex.closing = true,
        _ => {}
    }
    next_command(ex);
}

/// COMPRESS, which the rules let through: imapgate answers it itself, and the client's
/// stream is deflate after this line (the backend link has its own compression).
fn compress(ex: &mut Judged, look: &Command) {
    let mechanism = match look.args.as_slice() {
        [arg] => arg.astring(),
        _ => None,
    };
    match command::compress_answer(mechanism, ex.compress != super::super::Compress::Off) {
        Ok(ok) => ex.answer_then_deflate(format!("{} {ok}\r\n", look.tag).as_bytes()),
        Err(no) => ex.answer(format!("{} {no}\r\n", look.tag).as_bytes()),
    }
    next_command(ex);
}

/// What imapgate and the rules say about a command (or its beginning).
fn judge(ex: &mut Judged, look: &mut Command) -> Verdict {
    let name = look.name.as_str();
    let builtin = match name {
        "LOGIN" | "AUTHENTICATE" => Some("BAD [CLIENTBUG] Already authenticated.".to_string()),
        _ if Effect::of(name) == Effect::ChangesStream => {
            Some(command::stream_change_refusal(name))
        }
        _ if name.starts_with("UID") && !UID_COMMANDS.contains(&name) => {
            Some("BAD Unknown UID command.".to_string())
        }
        _ if TAKES_NO_ARGUMENTS.contains(&name) && !look.args.is_empty() => {
            Some(format!("BAD {name} takes no arguments."))
        }
        _ => {
            let enabled: Vec<String> = if name == "ENABLE" {
                look.args
                    .iter()
                    .map(|a| String::from_utf8_lossy(a.astring().unwrap_or(b"-")).into_owned())
                    .collect()
            } else {
                Vec::new()
            };
            let enabled: Vec<&str> = enabled.iter().map(String::as_str).collect();
            capability::refusal_for(name, &enabled, &ex.rules.cx.capabilities)
        }
    };
    match builtin {
        Some(text) => Verdict::Reply(text),
        None => ex.rules.command(look),
    }
}

/// Sends the part of a command the client side has judged: imapgate's serialization
/// (`encoded`, written for an empty tag, given the backend's here), from where the last
/// part ended. Each literal waits for the backend's `+`. `then`: the command is complete,
/// and what the backend's next `+` means after it, if anything. Returns the backend tag.
fn send(
    ex: &mut Judged,
    client_tag: &str,
    encoded: Encoded,
    then: Option<Option<AwaitKind>>,
) -> Result<String, ()> {
    let tag = match &ex.client.cmd.sent {
        Some(sent) => sent.tag.clone(),
        None => ex.tags.open(client_tag),
    };
    let encoded = retag(encoded, &tag);
    let sent = ex.client.cmd.sent.get_or_insert_with(|| Sent {
        tag: tag.clone(),
        client_tag: client_tag.to_string(),
        bytes: Vec::new(),
        answered: false,
    });
    if !encoded.bytes.starts_with(&sent.bytes) {
        // A rule rewrote a part that already went out: the backend cannot be told.
        abort(ex, "NO [CANNOT] The command changed while it was being sent.");
        return Err(());
    }
    let already = sent.bytes.len();
    let mut from = already;
    sent.bytes = encoded.bytes.clone();
    for &point in encoded.sync_points.iter().filter(|&&p| p > already) {
        ex.push_backend(&encoded.bytes[from..point]);
        let streamed = then.is_none() && point == encoded.bytes.len();
        let kind = if streamed { AwaitKind::Streamed } else { AwaitKind::Literal };
        ex.to_backend.push_item(Item::Await(Await { tag: tag.clone(), kind }));
        from = point;
    }
    ex.push_backend(&encoded.bytes[from..]);
    if let Some(then) = then {
        if let Some(kind) = then {
            ex.to_backend.push_item(Item::Await(Await { tag: tag.clone(), kind }));
        }
        ex.to_backend.push_item(Item::EndOfCommand(tag.clone()));
        ex.client.cmd.sent = None;
    }
    Ok(tag)
}

/// `encoded` was written with an empty tag (`" NAME ..."`): puts `tag` in front.
fn retag(encoded: Encoded, tag: &str) -> Encoded {
    let mut bytes = tag.as_bytes().to_vec();
    bytes.extend_from_slice(&encoded.bytes);
    let shift = tag.len();
    Encoded { bytes, sync_points: encoded.sync_points.iter().map(|p| p + shift).collect() }
}

fn refuse_unreadable(ex: &mut Judged, e: ParseError, pending: Option<Literal>, complete: bool) {
    let tag = e.tag.as_deref().filter(|t| t.bytes().all(|b| b.is_ascii_graphic())).unwrap_or("*");
    let verdict = Verdict::Reply(format!("BAD {}", e.reason));
    refuse(ex, tag, "-", verdict, pending, complete);
}

/// Answers a refused command and makes sure none of it (nor its literals) goes on.
/// `pending`: the literal just announced; `complete`: the message ended here.
fn refuse(
    ex: &mut Judged,
    tag: &str,
    name: &str,
    verdict: Verdict,
    pending: Option<Literal>,
    complete: bool,
) {
    let answer = match verdict {
        Verdict::Pass => return,
        Verdict::Reply(text) => format!("{tag} {text}\r\n"),
        Verdict::Drop => format!("{tag} NO [CANNOT] Command refused.\r\n"),
        Verdict::Disconnect { bye, reason } => {
            ex.stop = Some(Stop::Limit(reason));
            format!("* BYE {bye}\r\n")
        }
    };
    let session = ex.rules.cx.session;
    let rule = ex.rules.decided_by();
    ex.refusals.refused(session, rule.as_deref(), tag, name, &answer);
    if ex.client.cmd.sent.is_some() {
        return abort(ex, answer.trim_end().split_once(' ').map_or("", |(_, t)| t));
    }
    ex.answer(answer.as_bytes());
    ex.client.cmd = Assembly::default();
    ex.client.state = match pending {
        Some(lit) if lit.sync => {
            ex.client.framer.refuse();
            State::Command
        }
        Some(_) => State::Discard,
        None if complete => State::Command,
        None => State::Discard,
    };
}

/// A command that already went partly to the backend (a streamed APPEND) cannot be
/// completed: the backend must not commit it, and only closing its connection in the
/// middle of the command guarantees that on every server. The client gets the answer,
/// then `* BYE`.
fn abort(ex: &mut Judged, text: &str) {
    let tag = ex.client.cmd.sent.as_ref().map_or("*".to_string(), |s| s.client_tag.clone());
    ex.answer(format!("{tag} {text}\r\n").as_bytes());
    ex.answer(b"* BYE [UNAVAILABLE] A refused command could not be withdrawn from the server.\r\n");
    ex.stop = Some(Stop::Aborted);
    // Nothing more of it goes out; the connection closes once the client has the answer.
    if let Some(sent) = &ex.client.cmd.sent {
        let tag = sent.tag.clone();
        ex.to_backend.forget(&tag);
    }
    ex.client.state = State::Discard;
}

/// The backend granted a literal: a streamed one now flows.
pub(super) fn granted(ex: &mut Judged, continuation: &[u8]) {
    if let State::AwaitGrant { sync } = ex.client.state {
        if sync {
            ex.push_client(continuation);
            ex.client.framer.grant();
        }
        ex.client.state = State::Streaming;
    }
}

/// The backend's `+` to IDLE: the client is shown it and may send DONE.
pub(super) fn idling(ex: &mut Judged, continuation: &[u8]) {
    if ex.client.state == State::AwaitIdle {
        ex.push_client(continuation);
        ex.client.state = State::Idling;
        ex.rules.cx.idling = true;
    }
}

/// The backend completed the command `tag`. Whatever of it still waited for a `+` never
/// goes out, and the client side follows.
pub(super) fn answered(ex: &mut Judged, tag: &str) {
    ex.to_backend.drop_rest_of(tag);
    if ex.client.idle.as_deref() == Some(tag) {
        ex.client.idle = None;
        ex.rules.cx.idling = false;
        if matches!(ex.client.state, State::AwaitIdle | State::Idling) {
            ex.client.state = State::Command;
        }
    }
    let Some(sent) = ex.client.cmd.sent.as_mut().filter(|s| s.tag == tag) else { return };
    match ex.client.state {
        // The backend refused the streamed literal: RFC 9051 §7.5, it never comes.
        State::AwaitGrant { sync } => {
            ex.client.cmd = Assembly::default();
            ex.client.state = if sync {
                ex.client.framer.refuse();
                State::Command
            } else {
                State::Discard
            };
        }
        // The backend asked for this literal and reads it; the rest of the line is not sent.
        State::Streaming => sent.answered = true,
        _ => end_answered_line(ex),
    }
}

/// The backend answered a command whose line imapgate was still sending: the line is
/// ended with CRLF (a server that skips the rest of a failed command's line stops there)
/// and the client's rest of the command is dropped.
fn end_answered_line(ex: &mut Judged) {
    ex.push_backend(b"\r\n");
    ex.client.cmd = Assembly::default();
    ex.client.state = State::Discard;
}
