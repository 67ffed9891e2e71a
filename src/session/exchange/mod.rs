//! The post-login exchange, sans-I/O: everything imapgate decides between a logged-in
//! client and its backend. The relay (`session/relay.rs`) is only a pump: it hands the
//! exchange the bytes it read from either side (`client_input`, `server_input`, which
//! return how many were framed) and writes what the exchange says, toward each side
//! (`to_backend`, `to_client`): the next bytes of the other side's input forwarded in
//! place, input bytes skipped, or bytes imapgate wrote (`queue::Out`).
//!
//! Two modes, fixed at login:
//! - **fast** (`fast.rs`), for sessions no rule needs to see: both streams are framed in
//!   place and forwarded as they are; only stream-changing commands and commands needing
//!   a capability the client was not shown are refused, and capability lists replaced;
//! - **judged** (`judged/`), for sessions with rules: the backend executes only commands
//!   the rules judged, in imapgate's serialization (see `judged/mod.rs`, SECURITY.md).

mod fast;
mod judged;
#[cfg(any(test, fuzzing))]
pub mod model;
mod queue;

use std::time::Instant;

use crate::rules::Engine;

use fast::Fast;
use judged::Judged;
pub use queue::Out;

/// Which way bytes go: toward the backend (from the client's input) or toward the
/// client (from the backend's input).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toward {
    /// Client input and imapgate's commands, to the backend.
    Backend,
    /// Backend input and imapgate's answers, to the client.
    Client,
}

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

/// Where the client's COMPRESS (RFC 4978) stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Compress {
    #[default]
    Off,
    /// Accepted: no client byte past the COMPRESS line is framed until the pump has
    /// switched the transport's input to inflate (`take_client_inflate`).
    Switching,
    On,
}

/// The exchange of one logged-in session. See the module documentation.
pub struct Exchange {
    mode: Mode,
}

// The fast path stays inline: the exchange lives in the relay on the session thread's
// stack, whose pages are touched anyway, so an idle fast session holds no heap for it
// (boxing it cost 1.2 KiB of PSS per idle session in the bench's idle scenario).
#[allow(clippy::large_enum_variant)]
enum Mode {
    Fast(Fast),
    Judged(Box<Judged>),
}

impl Exchange {
    /// The fast path: no rules; `shown` is the capability set the client was shown.
    pub fn fast(shown: Vec<String>) -> Exchange {
        Exchange { mode: Mode::Fast(Fast::new(shown)) }
    }

    /// A judged session with these rules.
    pub fn judged(rules: Engine) -> Exchange {
        Exchange { mode: Mode::Judged(Box::new(Judged::new(rules))) }
    }

    /// True once, right after the client's COMPRESS DEFLATE was accepted: the client's
    /// bytes after its line are deflate. The pump hands the bytes it read past
    /// `client_input`'s count to the transport's inflater, then input goes on.
    pub fn take_client_inflate(&mut self) -> bool {
        let switching = match &mut self.mode {
            Mode::Fast(f) => &mut f.compress,
            Mode::Judged(j) => &mut j.compress,
        };
        let now = *switching == Compress::Switching;
        if now {
            *switching = Compress::On;
        }
        now
    }

    /// The rules, in a judged session.
    pub fn rules(&mut self) -> Option<&mut Engine> {
        match &mut self.mode {
            Mode::Judged(j) => Some(&mut j.rules),
            Mode::Fast(_) => None,
        }
    }

    /// Frames bytes the client sent (the part of the pump's buffer not framed yet);
    /// returns how many were framed. The rest is offered again later (the exchange holds
    /// client bytes while the backend decides on a literal, or while queues are full).
    pub fn client_input(&mut self, data: &[u8], now: Instant) -> usize {
        match &mut self.mode {
            Mode::Fast(f) => f.client_input(data),
            Mode::Judged(j) => j.client_input(data, now),
        }
    }

    /// Frames bytes the backend sent; returns how many were framed.
    pub fn server_input(&mut self, data: &[u8], now: Instant) -> usize {
        match &mut self.mode {
            Mode::Fast(f) => f.server_input(data),
            Mode::Judged(j) => j.server_input(data, now),
        }
    }

    /// True while client bytes may be read: the queues toward both peers have room.
    pub fn wants_client_input(&self) -> bool {
        match &self.mode {
            Mode::Fast(f) => f.wants_client_input(),
            Mode::Judged(j) => j.wants_client_input(),
        }
    }

    /// True while backend bytes may be read: the queue toward the client has room.
    pub fn wants_server_input(&self) -> bool {
        match &self.mode {
            Mode::Fast(_) => true,
            Mode::Judged(j) => j.wants_server_input(),
        }
    }

    fn queue(&mut self, to: Toward) -> &mut queue::Queue {
        match (&mut self.mode, to) {
            (Mode::Fast(f), Toward::Backend) => &mut f.to_backend,
            (Mode::Fast(f), Toward::Client) => &mut f.to_client,
            (Mode::Judged(j), Toward::Backend) => &mut j.to_backend,
            (Mode::Judged(j), Toward::Client) => &mut j.to_client,
        }
    }

    /// What to write toward `to` next: the other side's input forwarded or skipped, or
    /// imapgate's own bytes.
    pub fn out(&mut self, to: Toward) -> Out<'_> {
        self.queue(to).front()
    }

    /// `n` bytes of what `out(to)` gave were written (or skipped).
    pub fn wrote(&mut self, to: Toward, n: usize) {
        self.queue(to).wrote(n);
    }

    /// Input bytes of the side opposite `to` that the pump may free at once from the
    /// front of its buffer (the exchange copied them, or drops them).
    pub fn dropped(&mut self, to: Toward) -> usize {
        self.queue(to).take_dropped()
    }

    /// True when something may be written toward `to` now.
    pub fn writable(&mut self, to: Toward) -> bool {
        !matches!(self.out(to), Out::Nothing)
    }

    /// True when nothing waits to go toward `to`.
    pub fn flushed(&mut self, to: Toward) -> bool {
        self.queue(to).is_empty()
    }

    /// True when the client stream is between two messages and nothing waits to go to
    /// the client: a `* BYE` may be said now without corrupting a response.
    pub fn at_client_boundary(&self) -> bool {
        match &self.mode {
            Mode::Fast(f) => f.at_client_boundary(),
            Mode::Judged(j) => j.at_client_boundary(),
        }
    }

    /// Set when the session must end (once what waits for the client is written).
    pub fn stop(&self) -> Option<&Stop> {
        match &self.mode {
            Mode::Fast(_) => None,
            Mode::Judged(j) => j.stop.as_ref(),
        }
    }

    /// The client sent LOGOUT: a close is the expected end.
    pub fn closing(&self) -> bool {
        match &self.mode {
            Mode::Fast(f) => f.closing,
            Mode::Judged(j) => j.closing,
        }
    }

    /// The backend said BYE.
    pub fn server_bye(&self) -> bool {
        match &self.mode {
            Mode::Fast(f) => f.server_bye,
            Mode::Judged(j) => j.server_bye,
        }
    }

    /// The next moment `on_time` must be called.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.mode {
            Mode::Fast(_) => None,
            Mode::Judged(j) => j.rules.deadline(),
        }
    }

    /// Lets rules act on time (session and idle limits).
    pub fn on_time(&mut self, now: Instant) {
        if let Mode::Judged(j) = &mut self.mode {
            j.on_time(now);
        }
    }

    /// The session is over: logs what was left to say (refusals counted, not logged).
    pub fn finish(&mut self) {
        if let Mode::Judged(j) = &mut self.mode {
            j.finish();
        }
    }
}

#[cfg(test)]
mod tests;
