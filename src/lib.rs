//! imapgate: an IMAP proxy and session filter. See README.md and ARCHITECTURE.md.
//!
//! The tree shows the architecture; dependencies run one way, top to bottom:
//! `daemon` (process model, start-up, signals, privileges, logging) runs `session`s (one
//! client from greeting to close: pre-login, backend login, the judged exchange, the
//! relay), which use `backend` (connecting and logging in, up/down state, routing),
//! `rules`, `net` (transports, TLS, PROXY protocol) and `imap` (the protocol, sans-I/O);
//! everything reads its settings from `config`.

// Modules are the crate's own; only what the integration tests (`t/`) and the fuzz
// targets (`fuzz/`) call is public.
pub(crate) mod backend;
pub(crate) mod config;
pub(crate) mod daemon;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
pub(crate) mod imap;
pub(crate) mod lookup;
pub(crate) mod metrics;
pub mod net;
pub(crate) mod rules;
pub(crate) mod session;

#[cfg(test)]
mod documented;

/// Runs imapgate with the process's arguments; returns the exit code.
pub fn main() -> i32 {
    daemon::main()
}
