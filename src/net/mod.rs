//! The byte transports under IMAP: a socket with or without TLS (`transport`), the
//! rustls configurations (`tls`) and the certificate reader they use (`x509`), and the
//! HAProxy PROXY protocol (`proxy_protocol`).

pub mod proxy_protocol;
pub(crate) mod tls;
pub(crate) mod transport;
pub(crate) mod x509;
