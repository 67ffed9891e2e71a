//! The server side of the judged exchange: from backend responses to client bytes.
//!
//! Each response is assembled whole (up to `INSPECT_MAX`, literals up to
//! `INSPECT_LITERAL`) before the rules see it; a larger one (a big FETCH) is decided on
//! from its head and streams. Continuation requests are matched against what imapgate
//! asked for; tagged answers get the client's tag back.

use std::time::Instant;

use crate::imap::capability;
use crate::imap::command::{self, push_quoted};
use crate::imap::framer::{Event, Framer, Side};
use crate::imap::response::{self, Kind};
use crate::rules::{Response, Verdict};

use super::{client, Judged, INSPECT_LITERAL, INSPECT_MAX};
use crate::session::exchange::queue::AwaitKind;
use crate::session::exchange::Stop;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Mode {
    /// Assembling a response for the rules.
    #[default]
    Collect,
    /// Passing the rest of a decided response to the client.
    Stream,
    /// Dropping the rest of a response the rules dropped.
    Discard,
}

pub(super) struct Server {
    framer: Framer,
    mode: Mode,
    buf: Vec<u8>,
    literal_sizes: Vec<u64>,
}

impl Server {
    pub(super) fn new() -> Server {
        Server {
            framer: Framer::new(Side::Server),
            mode: Mode::Collect,
            buf: Vec::new(),
            literal_sizes: Vec::new(),
        }
    }

    /// True when nothing of a response was passed on yet: imapgate's own answers may go
    /// to the client without splitting one.
    pub(super) fn at_boundary(&self) -> bool {
        self.mode == Mode::Collect
    }
}

pub(super) fn input(ex: &mut Judged, data: &[u8], now: Instant) -> usize {
    let mut used = 0;
    while used < data.len() {
        let step = ex.server.framer.advance(&data[used..]);
        let chunk = &data[used..used + step.consumed];
        used += step.consumed;
        match ex.server.mode {
            Mode::Stream | Mode::Discard => {
                // A decided response goes on in place; a dropped one is skipped.
                if ex.server.mode == Mode::Stream {
                    ex.rules.cx.bytes_to_client += chunk.len() as u64;
                    ex.to_client.forward(chunk.len());
                } else {
                    ex.to_client.drop_input(chunk.len());
                }
                if step.event == Some(Event::LineEnd(None)) {
                    ex.server.mode = Mode::Collect;
                    ex.flush_answers();
                }
            }
            Mode::Collect => {
                // Copied into the response being assembled.
                ex.to_client.drop_input(chunk.len());
                collect(ex, chunk, step.event, now)
            }
        }
        if step.consumed == 0 && step.event.is_none() {
            break;
        }
    }
    used
}

fn collect(ex: &mut Judged, chunk: &[u8], event: Option<Event>, now: Instant) {
    if ex.server.buf.is_empty() {
        ex.rules.cx.last_activity = Some(now);
    }
    ex.server.buf.extend_from_slice(chunk);
    match event {
        Some(Event::LineEnd(Some(lit))) => {
            ex.server.literal_sizes.push(lit.size);
            if lit.size > INSPECT_LITERAL
                || ex.server.buf.len() as u64 + lit.size > INSPECT_MAX as u64
            {
                decide(ex, false);
            }
        }
        Some(Event::LineEnd(None)) => decide(ex, true),
        _ if ex.server.buf.len() > INSPECT_MAX => decide(ex, false),
        _ => {}
    }
}

/// Decides on an assembled response (all of it, or its head when `complete` is false).
fn decide(ex: &mut Judged, complete: bool) {
    let raw = std::mem::take(&mut ex.server.buf);
    let literal_sizes = std::mem::take(&mut ex.server.literal_sizes);
    let resp = Response { raw, complete, literal_sizes };
    if ex.ask_answer(&resp) {
        // A rule's own command's answer: never the client's.
        return finish(ex, complete, false);
    }
    let Response { raw, literal_sizes, .. } = resp;
    let raw = match response::kind(&raw) {
        Kind::Continuation => return continuation(ex, &raw, complete),
        Kind::Tagged(tag) => match tagged(ex, tag, &raw) {
            Some(raw) => raw,
            None => return finish(ex, complete, false),
        },
        Kind::Untagged => untagged(ex, raw),
    };
    let tagged = !matches!(response::kind(&raw), Kind::Untagged);
    let raw = capability::show(&raw, &ex.rules.cx.capabilities).unwrap_or(raw);
    let mut resp = Response { raw, complete, literal_sizes };
    let passed = match ex.rules.response(&mut resp) {
        Verdict::Pass => true,
        // A tagged answer always goes: the client waits for it.
        Verdict::Reply(_) | Verdict::Drop => tagged,
        Verdict::Disconnect { bye, reason } => {
            ex.push_client(format!("* BYE {bye}\r\n").as_bytes());
            ex.stop = Some(Stop::Limit(reason));
            false
        }
    };
    if passed {
        ex.push_client(&resp.raw);
    }
    finish(ex, complete, passed);
}

/// After a response: the next one is collected; one that goes on streams or is dropped.
fn finish(ex: &mut Judged, complete: bool, passed: bool) {
    if complete {
        ex.flush_answers();
    } else {
        ex.server.mode = if passed { Mode::Stream } else { Mode::Discard };
    }
}

/// A continuation request is only followed when imapgate asked for it: the next thing on
/// the backend queue waits for exactly that. Any other would invite bytes imapgate never
/// judged as what the backend takes them for, so it ends the session.
fn continuation(ex: &mut Judged, raw: &[u8], complete: bool) {
    let awaited = match ex.to_backend.awaited() {
        Some(a) if complete => a.kind,
        _ => {
            ex.stop =
                Some(Stop::Backend("sent a continuation request imapgate did not ask for".into()));
            return finish(ex, complete, false);
        }
    };
    ex.to_backend.release();
    match awaited {
        AwaitKind::Literal => {}
        AwaitKind::Streamed => client::granted(ex, raw),
        AwaitKind::Idle => client::idling(ex, raw),
    }
    finish(ex, complete, false);
}

/// A tagged answer: the command is over on the backend; the client gets it under its own
/// tag. An answer to no command in flight is dropped.
fn tagged(ex: &mut Judged, tag: &[u8], raw: &[u8]) -> Option<Vec<u8>> {
    let Some((backend_tag, client_tag)) = ex.tags.close(tag) else {
        log::warn!(
            "id={} backend answered tag {} that no command has; dropped",
            ex.rules.cx.session,
            crate::session::printable(&String::from_utf8_lossy(tag))
        );
        return None;
    };
    client::answered(ex, &backend_tag);
    let mut out = client_tag.into_bytes();
    out.extend_from_slice(&raw[tag.len()..]);
    Some(out)
}

fn untagged(ex: &mut Judged, raw: Vec<u8>) -> Vec<u8> {
    ex.server_bye |= response::is_bye(&raw);
    learn_delimiter(ex, &raw);
    esearch_tag(ex, &raw).unwrap_or(raw)
}

/// RFC 4731: `* ESEARCH (TAG "g7") ...` names the command by its tag: the client's.
fn esearch_tag(ex: &Judged, raw: &[u8]) -> Option<Vec<u8>> {
    const PREFIX: &[u8] = b"* ESEARCH (TAG \"";
    let head = raw.get(..PREFIX.len())?;
    if !head.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let rest = &raw[PREFIX.len()..];
    let close = rest.iter().position(|&b| b == b'"')?;
    let client_tag = ex.tags.client_tag(&rest[..close])?;
    let mut out = raw[..PREFIX.len() - 1].to_vec();
    if !push_quoted(&mut out, client_tag.as_bytes()) {
        return None;
    }
    out.extend_from_slice(&rest[close + 1..]);
    Some(out)
}

/// `* LIST (...) "/" name` shows the hierarchy delimiter rules need.
fn learn_delimiter(ex: &mut Judged, raw: &[u8]) {
    if ex.rules.cx.delimiter.is_some()
        || !(raw.starts_with(b"* LIST ") || raw.starts_with(b"* LSUB "))
    {
        return;
    }
    if let Ok(c) = command::parse_untagged(raw) {
        let delim = c.args.get(1).and_then(|a| a.astring()).filter(|d| d.len() == 1);
        if let Some(d) = delim {
            ex.rules.cx.delimiter = Some(char::from(d[0]));
        }
    }
}
