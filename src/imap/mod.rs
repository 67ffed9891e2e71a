//! The IMAP protocol layer: pure code, no sockets. It frames streams, tokenizes commands,
//! classifies responses and edits capability lists; `relay`, `preauth` and `backend`
//! drive it with bytes.

pub mod bearer;
pub mod capability;
pub mod command;
pub mod framer;
pub mod mailbox;
pub mod preauth;
pub mod response;
pub mod sasl;
