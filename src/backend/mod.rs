//! Backends: connecting and logging in (`connect`), and what the process knows of each
//! (`state`: up or down, capabilities, the capability set of a listener; the daemon's
//! discovery thread keeps it fresh). Which backend a login goes to is `lookup`'s.

pub mod connect;
pub mod state;

pub use connect::{greet, login, ClientInfo, LoginError, Session};
