//! Backends: connecting and logging in (`connect`), what the process knows of each
//! (`state`: up or down, capabilities, the capability set of a listener), the discovery
//! thread that keeps that knowledge fresh, and routing a login name to a backend (`route`).

pub mod connect;
pub mod discovery;
pub mod route;
pub mod state;

pub use connect::{greet, login, ClientInfo, LoginError, Session};
