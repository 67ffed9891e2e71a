//! One side of a session: a TCP socket, plain or wrapped in TLS, and above TLS, once
//! COMPRESS=DEFLATE (RFC 4978) is on, raw deflate in either direction. Every rustls and
//! flate2 call lives here. It works in blocking mode (pre-login dialogue, backend login:
//! socket timeouts bound each call) and in non-blocking mode (the relay: `WouldBlock`
//! means try after `poll`).
//!
//! Compression stacks in the one right order on each side: IMAP bytes are deflated,
//! then encrypted; received records are decrypted, then inflated. Each write is
//! deflated with a sync flush, so whatever the relay hands over reaches the peer at
//! once (interactive use never waits for a window to fill), and the compressed bytes
//! not yet taken by the socket are bounded by what one write can produce.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

/// Plaintext rustls buffers for us at most; beyond it writes report `WouldBlock`, so TLS
/// adds no unbounded buffering to the relay's bounded pipes.
const TLS_BUFFER_LIMIT: usize = 64 * 1024;

/// A plain or TLS connection to a peer.
pub struct Transport {
    sock: TcpStream,
    tls: Option<Box<Connection>>,
    /// Incoming bytes are deflate (the peer compresses).
    inflate: Option<Box<Inflating>>,
    /// Outgoing bytes are deflated.
    deflate: Option<Box<Deflating>>,
}

/// The inflating side: compressed input read from below and not inflated yet.
struct Inflating {
    stream: Decompress,
    input: Vec<u8>,
    start: usize,
}

/// The deflating side: compressed output not yet taken by the layer below.
struct Deflating {
    stream: Compress,
    output: Vec<u8>,
    start: usize,
}

/// Compressed input read from below at a time.
const INFLATE_INPUT: usize = 16 * 1024;

/// Builds flate2's state on a short-lived thread of its own: miniz_oxide builds it on the
/// stack before boxing it (over 64 KiB for the compressor), which would overflow a session
/// thread's small stack, or leave those pages resident for the session's life.
fn off_stack<T: Send + 'static>(make: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    std::thread::Builder::new()
        .name("deflate-init".into())
        .stack_size(1 << 20)
        .spawn(make)?
        .join()
        .map_err(|_| io::Error::other("building the compression state failed"))
}

impl Transport {
    /// A plaintext transport.
    pub fn plain(sock: TcpStream) -> Transport {
        Transport { sock, tls: None, inflate: None, deflate: None }
    }

    /// From now on the peer's bytes are deflate; `already_read` holds those read past the
    /// point where compression began (they are inflated first).
    pub fn start_inflate(&mut self, already_read: &[u8]) -> io::Result<()> {
        let mut input = Vec::with_capacity(INFLATE_INPUT.max(already_read.len()));
        input.extend_from_slice(already_read);
        let stream = off_stack(|| Decompress::new(false))?;
        self.inflate = Some(Box::new(Inflating { stream, input, start: 0 }));
        Ok(())
    }

    /// True once incoming bytes are inflated (the inflater may hold bytes poll cannot see).
    pub fn is_inflating(&self) -> bool {
        self.inflate.is_some()
    }

    /// From now on what is written is deflated.
    pub fn start_deflate(&mut self) -> io::Result<()> {
        let stream = off_stack(|| Compress::new(Compression::new(6), false))?;
        self.deflate = Some(Box::new(Deflating { stream, output: Vec::new(), start: 0 }));
        Ok(())
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

    /// True when compressed bytes or TLS records wait to be written (poll for POLLOUT).
    pub fn wants_write(&self) -> bool {
        self.deflate.as_ref().is_some_and(|d| d.start < d.output.len())
            || self.tls.as_ref().is_some_and(|c| c.wants_write())
    }

    /// Writes pending compressed bytes and TLS records; `WouldBlock` when the socket is
    /// full.
    pub fn flush_tls(&mut self) -> io::Result<()> {
        self.flush_deflated()?;
        self.flush_records()
    }

    fn flush_records(&mut self) -> io::Result<()> {
        if let Some(conn) = self.tls.as_mut() {
            while conn.wants_write() {
                conn.write_tls(&mut self.sock)?;
            }
        }
        Ok(())
    }

    /// Hands compressed bytes waiting to the layer below.
    fn flush_deflated(&mut self) -> io::Result<()> {
        let Some(mut d) = self.deflate.take() else { return Ok(()) };
        let mut result = Ok(());
        while d.start < d.output.len() {
            match self.write_below(&d.output[d.start..]) {
                Ok(0) => {
                    result = Err(io::ErrorKind::WriteZero.into());
                    break;
                }
                Ok(n) => d.start += n,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if d.start == d.output.len() {
            d.start = 0;
            d.output.clear();
            // Idle sessions stay small: a bulk transfer's buffer is not kept.
            if d.output.capacity() > 64 * 1024 {
                d.output = Vec::new();
            }
        }
        self.deflate = Some(d);
        result
    }

    /// Reads from below the compression: TLS plaintext, or the socket.
    fn read_below(&mut self, buf: &mut [u8]) -> io::Result<usize> {
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

    /// Writes below the compression: into TLS, or to the socket.
    fn write_below(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.tls.is_none() {
            return self.sock.write(buf);
        }
        // Move earlier records out first, so the buffer limit applies to fresh data only.
        match self.flush_records() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
            _ => {}
        }
        let conn = self.tls.as_mut().expect("checked above");
        let n = conn.writer().write(buf)?;
        match self.flush_records() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
            _ => {}
        }
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Inflates into `buf`, reading compressed bytes from below as needed.
    fn read_inflated(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(mut z) = self.inflate.take() else { return self.read_below(buf) };
        let result = loop {
            // Also with no input left: the stream may hold output a short `buf` left.
            let (before_in, before_out) = (z.stream.total_in(), z.stream.total_out());
            let status = z.stream.decompress(&z.input[z.start..], buf, FlushDecompress::Sync);
            let used = (z.stream.total_in() - before_in) as usize;
            let made = (z.stream.total_out() - before_out) as usize;
            z.start += used;
            match status {
                Err(e) => break Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                Ok(Status::StreamEnd) => break Ok(made),
                Ok(_) if made > 0 || buf.is_empty() => break Ok(made),
                Ok(_) if used > 0 => continue,
                Ok(_) => {} // needs more input than it has
            }
            // All input used (or a partial block left): read more compressed bytes.
            if z.start > 0 {
                z.input.drain(..z.start);
                z.start = 0;
            }
            let len = z.input.len();
            z.input.resize(len + INFLATE_INPUT, 0);
            match self.read_below(&mut z.input[len..]) {
                Ok(0) => {
                    z.input.truncate(len);
                    break Ok(0);
                }
                Ok(n) => z.input.truncate(len + n),
                Err(e) => {
                    z.input.truncate(len);
                    break Err(e);
                }
            }
        };
        if z.start == z.input.len() && z.input.capacity() > INFLATE_INPUT * 2 {
            z.input = Vec::new();
            z.start = 0;
        }
        self.inflate = Some(z);
        result
    }

    /// Deflates `buf` (with a sync flush) and hands it below; all of `buf` is taken
    /// once earlier compressed bytes are gone, else `WouldBlock`.
    fn write_deflated(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.flush_deflated() {
            Ok(()) => {}
            Err(e) => return Err(e),
        }
        let Some(d) = self.deflate.as_mut() else { return self.write_below(buf) };
        // A sync flush of n bytes takes at most n + n/1000 + a few bytes per block.
        d.output.reserve(buf.len() + buf.len() / 8 + 64);
        let mut taken = 0;
        loop {
            let before_in = d.stream.total_in();
            let status = d
                .stream
                .compress_vec(&buf[taken..], &mut d.output, FlushCompress::Sync)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            taken += (d.stream.total_in() - before_in) as usize;
            let full = d.output.len() == d.output.capacity();
            if taken == buf.len() && !full {
                break;
            }
            if status == Status::BufError && !full {
                break;
            }
            d.output.reserve(64 * 1024);
        }
        match self.flush_deflated() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
            _ => {}
        }
        Ok(buf.len())
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
    /// Reads plaintext (inflated once compression is on). 0 means the peer closed (for
    /// TLS: close_notify, or a TCP close, which ends an IMAP session just as well since
    /// IMAP frames its own messages).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_inflated(buf)
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.deflate.is_some() {
            self.write_deflated(buf)
        } else {
            self.write_below(buf)
        }
    }

    /// In blocking mode, waits until every compressed byte and record is on the socket.
    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls()?;
        self.sock.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (Transport, Transport) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (Transport::plain(a), Transport::plain(b))
    }

    #[test]
    fn deflate_round_trips_small_and_large_writes_and_leftover_input() {
        let (mut a, mut b) = pair();
        a.start_deflate().unwrap();
        // b read part of the compressed stream before it knew (the bytes past COMPRESS).
        a.write_all(b"x OK DEFLATE active\r\n").unwrap();
        a.flush().unwrap();
        let mut early = vec![0u8; 4];
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        b.sock.read_exact(&mut early).unwrap();
        b.start_inflate(&early).unwrap();
        let mut line = vec![0u8; b"x OK DEFLATE active\r\n".len()];
        b.read_exact(&mut line).unwrap();
        assert_eq!(line, b"x OK DEFLATE active\r\n");
        // A large, compressible write arrives whole, read through a small buffer.
        let big: Vec<u8> = (0..300_000u32).map(|i| b"abcdefgh"[(i % 7) as usize]).collect();
        let writer = std::thread::spawn(move || {
            a.write_all(&big).unwrap();
            a.flush().unwrap();
            (a, big)
        });
        let mut got = Vec::new();
        let mut chunk = [0u8; 1000];
        while got.len() < 300_000 {
            let n = b.read(&mut chunk).unwrap_or_else(|e| panic!("after {} bytes: {e}", got.len()));
            assert!(n > 0);
            got.extend_from_slice(&chunk[..n]);
        }
        let (_a, big) = writer.join().unwrap();
        assert_eq!(got, big);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let (mut a, mut b) = pair();
        a.write_all(&[0xff; 64]).unwrap();
        b.start_inflate(&[]).unwrap();
        let mut buf = [0u8; 64];
        assert!(b.read(&mut buf).is_err());
    }
}
