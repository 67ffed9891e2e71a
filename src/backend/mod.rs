//! Backends: connecting and logging in (`connect`), what the process knows of each
//! (`state`: up or down, capabilities, the capability set of a listener; the daemon's
//! discovery thread keeps it fresh), and routing a login name to a backend (`route`).

pub mod connect;
pub mod route;
pub mod state;

pub use connect::{greet, login, ClientInfo, LoginError, Session};
