//! A test client's connection that can turn to COMPRESS=DEFLATE (RFC 4978) mid-stream:
//! plain until `on` is set (right after reading the `OK` to COMPRESS), then raw deflate
//! both ways, each write sync-flushed. The reading and the writing half (see
//! `Conn::try_clone_box`) each keep their own direction's state.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

use super::client::Conn;

pub struct DeflateConn {
    sock: TcpStream,
    on: Arc<AtomicBool>,
    inflate: Option<(Decompress, Vec<u8>, usize)>,
    deflate: Option<Compress>,
}

impl DeflateConn {
    /// A plain connection to `127.0.0.1:port`, and the switch that turns it to deflate.
    pub fn connect(port: u16) -> (Box<dyn Conn>, Arc<AtomicBool>) {
        let sa = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let sock = TcpStream::connect_timeout(&sa, Duration::from_secs(10)).expect("connect");
        let on = Arc::new(AtomicBool::new(false));
        (Box::new(DeflateConn { sock, on: Arc::clone(&on), inflate: None, deflate: None }), on)
    }
}

impl Read for DeflateConn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.on.load(Ordering::SeqCst) {
            return self.sock.read(buf);
        }
        let (z, input, start) =
            self.inflate.get_or_insert_with(|| (Decompress::new(false), Vec::new(), 0));
        loop {
            let (i0, o0) = (z.total_in(), z.total_out());
            z.decompress(&input[*start..], buf, FlushDecompress::Sync)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            *start += (z.total_in() - i0) as usize;
            let made = (z.total_out() - o0) as usize;
            if made > 0 {
                return Ok(made);
            }
            input.drain(..*start);
            *start = 0;
            let mut chunk = [0u8; 16384];
            let n = self.sock.read(&mut chunk)?;
            if n == 0 {
                return Ok(0);
            }
            input.extend_from_slice(&chunk[..n]);
        }
    }
}

impl Write for DeflateConn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.on.load(Ordering::SeqCst) {
            return self.sock.write(buf);
        }
        let z = self.deflate.get_or_insert_with(|| Compress::new(Compression::default(), false));
        let mut out = Vec::with_capacity(buf.len() + 1024);
        let mut taken = 0;
        loop {
            let i0 = z.total_in();
            z.compress_vec(&buf[taken..], &mut out, FlushCompress::Sync)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            taken += (z.total_in() - i0) as usize;
            if taken == buf.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(64 * 1024);
        }
        self.sock.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

impl Conn for DeflateConn {
    fn try_clone_box(&self) -> io::Result<Box<dyn Conn>> {
        Ok(Box::new(DeflateConn {
            sock: self.sock.try_clone()?,
            on: Arc::clone(&self.on),
            inflate: None,
            deflate: None,
        }))
    }

    fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(t)?;
        self.sock.set_write_timeout(t)
    }
}

/// A relay between two loopback ports that counts the bytes each way: what crosses the
/// wire between imapgate and a backend.
pub struct CountingRelay {
    pub port: u16,
    /// Bytes from the backend, bytes to the backend.
    pub counts: Arc<(std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64)>,
}

impl CountingRelay {
    pub fn start(backend_port: u16) -> CountingRelay {
        use std::sync::atomic::AtomicU64;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().unwrap().port();
        let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let c = Arc::clone(&counts);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", backend_port)) else { continue };
                for (mut from, mut to, down) in [
                    (server.try_clone().unwrap(), client.try_clone().unwrap(), true),
                    (client, server, false),
                ] {
                    let c = Arc::clone(&c);
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            let counter = if down { &c.0 } else { &c.1 };
                            counter.fetch_add(n as u64, Ordering::SeqCst);
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        CountingRelay { port, counts }
    }

    pub fn backend_sent(&self) -> u64 {
        self.counts.0.load(Ordering::SeqCst)
    }
}
