//! The fast path: a session no rule needs to see. Both streams are framed in place and
//! forwarded as they are (`Queue::forward`: the pump writes from its own buffer), so a
//! bulk FETCH or APPEND costs one framer step per chunk and no copy. imapgate looks at
//! each message's first line only: a client command is held until its tag and name are
//! known (a command refused there is never partly forwarded); a response line carrying a
//! capability list gets the list the client was shown instead.
//!
//! The client framer reads the client stream the way the server does: it stops at a
//! synchronizing literal, after IDLE and after AUTHENTICATE until the server grants the
//! continuation (`+`) or answers the command; what the client sent meanwhile stays
//! unframed in the pump's buffer and is read as the server's answer says it must be.

use super::queue::Queue;
use crate::imap::capability;
use crate::imap::command::{self, Effect};
use crate::imap::framer::{AfterContinuation, Event, Framer, Side};
use crate::imap::response::{self, Kind};

/// Longest response line the fast path holds back to look for a capability list.
const CAPABILITY_LINE_MAX: usize = 8 * 1024;

pub(super) struct Fast {
    client: Framer,
    server: Framer,
    /// The capabilities the client was shown after login.
    shown: Vec<String>,
    /// Client bytes of the current command's first line, held until its head is known.
    client_held: Option<usize>,
    /// Server bytes of the current response's first line, held (and kept in
    /// `server_line`) while it may carry a capability list.
    server_held: Option<usize>,
    server_line: Vec<u8>,
    /// The head of the current response was looked at.
    head_seen: bool,
    pub(super) to_backend: Queue,
    pub(super) to_client: Queue,
    /// imapgate's own answers, waiting for a server message boundary.
    answers: Vec<u8>,
    pub(super) closing: bool,
    pub(super) server_bye: bool,
    pub(super) compress: super::Compress,
    /// imapgate's COMPRESS answer is among `answers`: deflate starts right after them.
    deflate_after_answers: bool,
}

impl Fast {
    pub(super) fn new(shown: Vec<String>) -> Fast {
        Fast {
            client: Framer::new(Side::Client),
            server: Framer::new(Side::Server),
            shown,
            client_held: None,
            server_held: None,
            server_line: Vec::new(),
            head_seen: false,
            to_backend: Queue::default(),
            to_client: Queue::default(),
            answers: Vec::new(),
            closing: false,
            server_bye: false,
            compress: super::Compress::Off,
            deflate_after_answers: false,
        }
    }

    /// Frames client bytes; returns how many were framed.
    pub(super) fn client_input(&mut self, data: &[u8]) -> usize {
        let mut used = 0;
        while used < data.len() && self.compress != super::Compress::Switching {
            if self.client.at_message_start() {
                self.client_held = Some(0);
            }
            let first = self.client.in_first_line();
            let step = self.client.advance(&data[used..]);
            if step.consumed == 0 && step.event.is_none() {
                break; // waiting for the server's decision
            }
            used += step.consumed;
            let Some(held) = self.client_held.as_mut() else {
                self.to_backend.forward(step.consumed);
                continue;
            };
            *held += step.consumed;
            let head_known = matches!(step.event, Some(Event::LineEnd(_) | Event::LongLine));
            if first && head_known {
                let held = self.client_held.take().unwrap_or(0);
                if step.event == Some(Event::LineEnd(None)) {
                    self.command_head(held);
                } else {
                    self.to_backend.forward(held);
                }
            }
        }
        used
    }

    /// A one-line command's head is known: forward it, or refuse it without a byte sent.
    fn command_head(&mut self, held: usize) {
        let head = self.client.head();
        let Some((tag, name)) = command::tag_and_name(head) else {
            return self.to_backend.forward(held);
        };
        let effect = Effect::of(&name);
        let refusal = match effect {
            Effect::ChangesStream => Some(command::stream_change_refusal(&name)),
            _ => capability::refusal(head, &self.shown),
        };
        if effect == Effect::Compress && refusal.is_none() {
            let mechanism = head.split(|&b| b == b' ').nth(2).map(|m| m.trim_ascii_end());
            let tag = String::from_utf8_lossy(tag).into_owned();
            self.to_backend.drop_input(held);
            match command::compress_answer(mechanism, self.compress != super::Compress::Off) {
                Ok(ok) => {
                    self.answers.extend_from_slice(format!("{tag} {ok}\r\n").as_bytes());
                    self.deflate_after_answers = true;
                    self.compress = super::Compress::Switching;
                }
                Err(no) => self.answers.extend_from_slice(format!("{tag} {no}\r\n").as_bytes()),
            }
            return self.flush_answers();
        }
        if let Some(text) = refusal {
            let answer = format!("{} {text}\r\n", String::from_utf8_lossy(tag));
            self.to_backend.drop_input(held);
            self.answers.extend_from_slice(answer.as_bytes());
            return self.flush_answers();
        }
        self.to_backend.forward(held);
        match effect {
            Effect::Idle => self.client.wait_for_continuation(AfterContinuation::Command),
            Effect::Authenticate => self.client.wait_for_continuation(AfterContinuation::Wait),
            Effect::Logout => self.closing = true,
            Effect::ChangesStream | Effect::Compress | Effect::None => {}
        }
    }

    /// Frames backend bytes; returns how many were framed.
    pub(super) fn server_input(&mut self, data: &[u8]) -> usize {
        let mut used = 0;
        while used < data.len() {
            if self.server.at_message_start() {
                self.server_held = Some(0);
                // Idle sessions stay small: a long first line's buffer is not kept.
                if self.server_line.capacity() > 1024 {
                    self.server_line = Vec::new();
                }
                self.server_line.clear();
                self.head_seen = false;
            }
            let first = self.server.in_first_line();
            let step = self.server.advance(&data[used..]);
            let chunk = &data[used..used + step.consumed];
            used += step.consumed;
            match self.server_held.as_mut() {
                None => self.to_client.forward(step.consumed),
                Some(held) => {
                    *held += step.consumed;
                    self.server_line.extend_from_slice(chunk);
                }
            }
            let head_known = matches!(step.event, Some(Event::LineEnd(_) | Event::LongLine));
            if first && head_known && !self.head_seen {
                self.head_seen = true;
                self.response_head();
            }
            if self.server_held.is_some() {
                self.maybe_release_line(first, step.event);
            }
            if self.server.at_message_start() {
                self.flush_answers();
            }
            if step.consumed == 0 && step.event.is_none() {
                break;
            }
        }
        used
    }

    /// Ends the hold on a response's first line once it is known not to carry a
    /// capability list, or once it is complete (then a list in it is replaced).
    fn maybe_release_line(&mut self, first: bool, event: Option<Event>) {
        let Some(held) = self.server_held else { return };
        let line_done = first && matches!(event, Some(Event::LineEnd(_)));
        let candidate = capability::may_list(self.server.head());
        if line_done && candidate && !self.shown.is_empty() {
            if let Some(new) = capability::show(&self.server_line, &self.shown) {
                self.to_client.drop_input(held);
                self.to_client.push(&new);
                self.server_held = None;
                return;
            }
        }
        let head_known = self.head_seen && !candidate;
        if line_done || head_known || self.server_line.len() > CAPABILITY_LINE_MAX {
            self.to_client.forward(held);
            self.server_held = None;
        }
    }

    /// Couples the client framer to the server's answers (see the module documentation).
    fn response_head(&mut self) {
        let head = self.server.head();
        match response::kind(head) {
            Kind::Continuation => self.client.grant(),
            Kind::Tagged(tag) => {
                let waiting = command::tag_and_name(self.client.head()).map(|(t, _)| t);
                if self.client.is_waiting() && waiting == Some(tag) {
                    self.client.refuse();
                }
            }
            Kind::Untagged => self.server_bye |= response::is_bye(head),
        }
    }

    /// imapgate's own answers go out when the server stream is between messages.
    fn flush_answers(&mut self) {
        let between = self.server.at_message_start() && self.server_held.is_none();
        if between && !self.answers.is_empty() {
            let answers = std::mem::take(&mut self.answers);
            self.to_client.push(&answers);
            if std::mem::take(&mut self.deflate_after_answers) {
                self.to_client.push_item(super::queue::Item::StartDeflate);
            }
        }
    }

    /// True while client bytes may be read: imapgate's answers are not piling up.
    pub(super) fn wants_client_input(&self) -> bool {
        self.compress != super::Compress::Switching
            && self.answers.len() + self.to_client.own_bytes() < super::judged::QUEUE_HIGH_WATER
    }

    /// True when the client stream is between messages and nothing waits for it.
    pub(super) fn at_client_boundary(&self) -> bool {
        self.server.at_message_start() && self.server_held.is_none() && self.to_client.is_empty()
    }
}
