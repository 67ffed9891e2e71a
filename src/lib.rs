//! imapgate: an IMAP proxy and session filter. See README.md and ARCHITECTURE.md.
//!
//! The tree shows the architecture; dependencies run one way, top to bottom:
//! `daemon` (process model, start-up, signals, privileges, logging) runs `session`s (one
//! client from greeting to close: pre-login, backend login, the judged exchange, the
//! relay), which use `backend` (connecting and logging in, up/down state, routing),
//! `rules`, `net` (transports, TLS, PROXY protocol) and `imap` (the protocol, sans-I/O);
//! everything reads its settings from `config`.

pub mod backend;
pub mod config;
pub mod daemon;
pub mod imap;
pub mod net;
pub mod rules;
pub mod session;

/// Runs imapgate with the process's arguments; returns the exit code.
pub fn main() -> i32 {
    daemon::main()
}
