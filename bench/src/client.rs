//! A minimal, fast IMAP client: plain TCP or rustls, one read buffer, responses
//! framed by lines and `{n}` literals; literal payloads are counted (or
//! captured for verification), never parsed.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// Where to connect and how.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// A rustls client configuration that trusts only the bench CA, with session
/// resumption off so every TLS login pays a full handshake.
pub fn tls_config(ca_pem: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).expect("read CA file") {
        roots.add(cert.expect("parse CA")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(b),
            Stream::Tls(s) => s.read(b),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(b),
            Stream::Tls(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

pub struct Conn {
    s: Stream,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    line: Vec<u8>,
    /// COMPRESS=DEFLATE, once on.
    z: Option<Box<Deflate>>,
}

struct Deflate {
    inflate: flate2::Decompress,
    deflate: flate2::Compress,
    raw: Vec<u8>,
    raw_pos: usize,
}

/// What a completed command returned.
#[derive(Default, Debug)]
pub struct Done {
    pub ok: bool,
    pub status: String,
    pub literal_bytes: u64,
    pub literals: u64,
    pub exists: Option<u64>,
}

pub fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim_end().to_string()
}

/// `n` of a line ending in `{n}\r\n` (or `{n+}`).
fn literal_len(line: &[u8]) -> Option<usize> {
    let l = line.strip_suffix(b"\r\n").unwrap_or(line);
    let l = l.strip_suffix(b"}")?;
    let open = l.iter().rposition(|&c| c == b'{')?;
    let digits = &l[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

impl Conn {
    /// Connects (and for TLS sets up the client; the handshake runs on first I/O).
    pub fn connect(ep: &Endpoint, bufsize: usize) -> io::Result<Conn> {
        let tcp = TcpStream::connect_timeout(&ep.addr, Duration::from_secs(10))?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
        tcp.set_write_timeout(Some(Duration::from_secs(60)))?;
        let s = match &ep.tls {
            None => Stream::Plain(tcp),
            Some(cfg) => {
                let name = ServerName::try_from("localhost").expect("server name");
                let c = rustls::ClientConnection::new(Arc::clone(cfg), name)
                    .map_err(|e| err(format!("tls: {e}")))?;
                Stream::Tls(Box::new(rustls::StreamOwned::new(c, tcp)))
            }
        };
        Ok(Conn {
            s,
            buf: vec![0; bufsize].into_boxed_slice(),
            pos: 0,
            end: 0,
            line: Vec::with_capacity(256),
            z: None,
        })
    }

    /// Connects and reads an OK greeting.
    pub fn open(ep: &Endpoint, bufsize: usize) -> io::Result<Conn> {
        let mut c = Conn::connect(ep, bufsize)?;
        c.read_line()?;
        if !c.line.starts_with(b"* OK") {
            return Err(err(format!("greeting: {}", text(&c.line))));
        }
        Ok(c)
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        let Some(z) = self.z.as_mut() else {
            let n = self.s.read(&mut self.buf[self.end..])?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
            }
            self.end += n;
            return Ok(());
        };
        loop {
            let (i0, o0) = (z.inflate.total_in(), z.inflate.total_out());
            z.inflate
                .decompress(&z.raw[z.raw_pos..], &mut self.buf[self.end..], flate2::FlushDecompress::Sync)
                .map_err(|e| err(format!("inflate: {e}")))?;
            z.raw_pos += (z.inflate.total_in() - i0) as usize;
            let made = (z.inflate.total_out() - o0) as usize;
            if made > 0 {
                self.end += made;
                return Ok(());
            }
            z.raw.drain(..z.raw_pos);
            z.raw_pos = 0;
            let len = z.raw.len();
            z.raw.resize(len + (64 << 10), 0);
            let n = self.s.read(&mut z.raw[len..])?;
            z.raw.truncate(len + n);
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
            }
        }
    }

    /// COMPRESS DEFLATE (RFC 4978); false when the server does not offer it.
    pub fn compress(&mut self) -> io::Result<bool> {
        if !self.capabilities()?.iter().any(|c| c.eq_ignore_ascii_case("COMPRESS=DEFLATE")) {
            return Ok(false);
        }
        self.cmd_ok("zc", "COMPRESS DEFLATE", None)?;
        let leftover = self.buf[self.pos..self.end].to_vec();
        self.pos = 0;
        self.end = 0;
        self.z = Some(Box::new(Deflate {
            inflate: flate2::Decompress::new(false),
            deflate: flate2::Compress::new(flate2::Compression::new(6), false),
            raw: leftover,
            raw_pos: 0,
        }));
        Ok(true)
    }

    /// Reads one line (with CRLF) into `self.line`.
    fn read_line(&mut self) -> io::Result<()> {
        self.line.clear();
        loop {
            let avail = &self.buf[self.pos..self.end];
            if let Some(i) = avail.iter().position(|&c| c == b'\n') {
                self.line.extend_from_slice(&avail[..=i]);
                self.pos += i + 1;
                return Ok(());
            }
            self.line.extend_from_slice(avail);
            self.pos = self.end;
            if self.line.len() > 1 << 20 {
                return Err(err("line longer than 1 MiB"));
            }
            self.fill()?;
        }
    }

    /// Consumes `n` literal bytes, appending them to `sink` when given.
    fn skip(&mut self, mut n: usize, mut sink: Option<&mut Vec<u8>>) -> io::Result<()> {
        loop {
            let take = n.min(self.end - self.pos);
            if let Some(v) = sink.as_deref_mut() {
                v.extend_from_slice(&self.buf[self.pos..self.pos + take]);
            }
            self.pos += take;
            n -= take;
            if n == 0 {
                return Ok(());
            }
            self.fill()?;
        }
    }

    pub fn send(&mut self, b: &[u8]) -> io::Result<()> {
        if let Some(z) = self.z.as_mut() {
            let mut out = Vec::with_capacity(b.len() + 1024);
            let mut taken = 0;
            loop {
                let i0 = z.deflate.total_in();
                z.deflate
                    .compress_vec(&b[taken..], &mut out, flate2::FlushCompress::Sync)
                    .map_err(|e| err(format!("deflate: {e}")))?;
                taken += (z.deflate.total_in() - i0) as usize;
                if taken == b.len() && out.len() < out.capacity() {
                    break;
                }
                out.reserve(64 << 10);
            }
            self.s.write_all(&out)?;
            return self.s.flush();
        }
        self.s.write_all(b)?;
        self.s.flush()
    }

    /// Sends `TAG CMD` and reads up to the tagged answer. Literals in the
    /// responses are counted, and captured into `capture` when given.
    pub fn cmd(&mut self, tag: &str, cmd: &str, capture: Option<&mut Vec<Vec<u8>>>) -> io::Result<Done> {
        self.send(format!("{tag} {cmd}\r\n").as_bytes())?;
        self.read_until(tag, capture)
    }

    pub fn read_until(&mut self, tag: &str, mut capture: Option<&mut Vec<Vec<u8>>>) -> io::Result<Done> {
        let mut done = Done::default();
        let prefix = format!("{tag} ");
        loop {
            self.read_line()?;
            while let Some(n) = literal_len(&self.line) {
                done.literal_bytes += n as u64;
                done.literals += 1;
                match capture.as_deref_mut() {
                    Some(c) => {
                        c.push(Vec::with_capacity(n));
                        let v = c.last_mut().unwrap();
                        self.skip(n, Some(v))?;
                    }
                    None => self.skip(n, None)?,
                }
                self.read_line()?;
            }
            if self.line.starts_with(prefix.as_bytes()) {
                let rest = &self.line[prefix.len()..];
                done.ok = rest.starts_with(b"OK");
                done.status = text(&self.line);
                return Ok(done);
            }
            if self.line.starts_with(b"* ") && self.line.ends_with(b" EXISTS\r\n") {
                done.exists = std::str::from_utf8(&self.line[2..self.line.len() - 9])
                    .ok()
                    .and_then(|n| n.parse().ok());
            }
        }
    }

    /// Reads up to the next tagged answer, whatever its tag (pipelined
    /// commands), skipping untagged responses and their literals. A
    /// continuation request is an error: a pipelining client only sends
    /// non-synchronizing literals, which must not be answered with `+`.
    pub fn next_tagged(&mut self) -> io::Result<Done> {
        loop {
            self.read_line()?;
            while let Some(n) = literal_len(&self.line) {
                self.skip(n, None)?;
                self.read_line()?;
            }
            if self.line.starts_with(b"+") {
                return Err(err(format!("unexpected continuation request: {}", text(&self.line))));
            }
            if !self.line.starts_with(b"* ") {
                let ok = self.line.split(|&c| c == b' ').nth(1) == Some(b"OK");
                return Ok(Done { ok, status: text(&self.line), ..Done::default() });
            }
        }
    }

    /// The capability names of the untagged answer to `CAPABILITY`.
    pub fn capabilities(&mut self) -> io::Result<Vec<String>> {
        self.send(b"c CAPABILITY\r\n")?;
        let mut caps = Vec::new();
        loop {
            self.read_line()?;
            if let Some(rest) = self.line.strip_prefix(b"* CAPABILITY ") {
                caps = text(rest).split(' ').map(str::to_string).collect();
            } else if self.line.starts_with(b"c ") {
                if !self.line.starts_with(b"c OK") {
                    return Err(err(format!("CAPABILITY: {}", text(&self.line))));
                }
                return Ok(caps);
            }
        }
    }

    /// Like `cmd`, but an answer other than OK is an error.
    pub fn cmd_ok(&mut self, tag: &str, cmd: &str, capture: Option<&mut Vec<Vec<u8>>>) -> io::Result<Done> {
        let d = self.cmd(tag, cmd, capture)?;
        if !d.ok {
            let shown = if cmd.starts_with("LOGIN") { "LOGIN ..." } else { cmd };
            return Err(err(format!("{shown}: {}", d.status)));
        }
        Ok(d)
    }

    pub fn login(&mut self, user: &str, pass: &str) -> io::Result<Done> {
        self.cmd_ok("a", &format!("LOGIN \"{user}\" \"{pass}\""), None)
    }
}
