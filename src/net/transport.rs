//! One side of a session: a TCP socket, plain or wrapped in TLS. Every rustls call lives
//! here. It works in blocking mode (pre-login dialogue, backend login: socket timeouts
//! bound each call) and in non-blocking mode (the relay: `WouldBlock` means try after
//! `poll`).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

/// Plaintext rustls buffers for us at most; beyond it writes report `WouldBlock`, so TLS
/// adds no unbounded buffering to the relay's bounded pipes.
const TLS_BUFFER_LIMIT: usize = 64 * 1024;

/// A plain or TLS connection to a peer.
pub struct Transport {
    sock: TcpStream,
    tls: Option<Box<Connection>>,
}

impl Transport {
    /// A plaintext transport.
    pub fn plain(sock: TcpStream) -> Transport {
        Transport { sock, tls: None }
    }

    /// The socket, for poll and addresses.
    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// True once TLS is on.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The rustls state, for logging the protocol, cipher and peer certificate.
    pub fn tls_state(&self) -> Option<&rustls::CommonState> {
        self.tls.as_deref().map(|c| -> &rustls::CommonState {
            match c {
                Connection::Client(c) => c,
                Connection::Server(s) => s,
            }
        })
    }

    /// Runs the server side of a TLS handshake (implicit TLS or after STARTTLS).
    pub fn accept_tls(&mut self, config: Arc<ServerConfig>, deadline: Instant) -> io::Result<()> {
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        self.handshake(Connection::Server(conn), deadline)
    }

    /// Runs the client side of a TLS handshake toward a backend.
    pub fn connect_tls(
        &mut self,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
        deadline: Instant,
    ) -> io::Result<()> {
        let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        self.handshake(Connection::Client(conn), deadline)
    }

    fn handshake(&mut self, mut conn: Connection, deadline: Instant) -> io::Result<()> {
        conn.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
        while conn.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"));
            }
            let left = left.max(Duration::from_millis(1));
            self.sock.set_read_timeout(Some(left))?;
            self.sock.set_write_timeout(Some(left))?;
            match conn.complete_io(&mut self.sock) {
                Ok((0, 0)) if conn.is_handshaking() => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed during TLS handshake",
                    ))
                }
                Ok(_) => {}
                Err(e) => {
                    // Send the alert that explains the failure, if there is one.
                    let _ = conn.write_tls(&mut self.sock);
                    return Err(e);
                }
            }
        }
        self.tls = Some(Box::new(conn));
        Ok(())
    }

    /// True when TLS records wait to be written (poll for POLLOUT).
    pub fn wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|c| c.wants_write())
    }

    /// Writes pending TLS records; `WouldBlock` when the socket is full.
    pub fn flush_tls(&mut self) -> io::Result<()> {
        if let Some(conn) = self.tls.as_mut() {
            while conn.wants_write() {
                conn.write_tls(&mut self.sock)?;
            }
        }
        Ok(())
    }

    /// Sends a TLS close_notify (best effort) and shuts the socket down.
    pub fn close(&mut self) {
        if let Some(conn) = self.tls.as_mut() {
            conn.send_close_notify();
            let _ = self.flush_tls();
        }
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }

    /// Sets blocking or non-blocking mode.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.sock.set_nonblocking(on)
    }

    /// Bounds blocking reads.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(t)
    }

    /// Bounds blocking writes.
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.sock.set_write_timeout(t)
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").field("tls", &self.tls.is_some()).finish_non_exhaustive()
    }
}

impl Read for Transport {
    /// Reads plaintext. 0 means the peer closed (for TLS: close_notify, or a TCP close,
    /// which ends an IMAP session just as well since IMAP frames its own messages).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(conn) = self.tls.as_mut() else {
            return self.sock.read(buf);
        };
        loop {
            match conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if conn.read_tls(&mut self.sock)? == 0 {
                return Ok(0);
            }
            if let Err(e) = conn.process_new_packets() {
                let _ = conn.write_tls(&mut self.sock);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.tls.is_none() {
            return self.sock.write(buf);
        }
        // Move earlier records out first, so the buffer limit applies to fresh data only.
        match self.flush_tls() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
            _ => {}
        }
        let conn = self.tls.as_mut().expect("checked above");
        let n = conn.writer().write(buf)?;
        match self.flush_tls() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
            _ => {}
        }
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// In blocking mode, waits until every record is on the socket.
    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls()?;
        self.sock.flush()
    }
}
