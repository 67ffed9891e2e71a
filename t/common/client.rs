//! A tiny synchronous IMAP test client over TcpStream (or any Read+Write).
//! It knows just enough syntax to find response boundaries: lines, `{n}`
//! literals inside responses, and tagged completions. Every read has a timeout,
//! and failures panic with the recent transcript.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::{tail, text, WAIT};

/// Reader and writer halves of a connection.
pub trait Conn: Read + Write + Send {
    fn try_clone_box(&self) -> io::Result<Box<dyn Conn>>;
    fn set_timeout(&self, t: Option<Duration>) -> io::Result<()>;
}

impl Conn for TcpStream {
    fn try_clone_box(&self) -> io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)?;
        self.set_write_timeout(t)
    }
}

impl Conn for std::os::unix::net::UnixStream {
    fn try_clone_box(&self) -> io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn set_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)?;
        self.set_write_timeout(t)
    }
}

pub struct Client {
    reader: BufReader<Box<dyn Conn>>,
    writer: Box<dyn Conn>,
    /// The greeting line read by `connect`.
    pub greeting: Vec<u8>,
    /// Everything received so far (capped), for failure messages.
    seen: Vec<u8>,
    /// Our TCP port (to find this session in the proxy's log).
    pub local_port: Option<u16>,
}

impl Client {
    /// Connects to `127.0.0.1:port` and reads the greeting.
    pub fn connect(port: u16) -> Client {
        let mut c = Client::connect_raw(port);
        c.greeting = c.read_line();
        c
    }

    /// Connects without reading the greeting.
    pub fn connect_raw(port: u16) -> Client {
        let sa = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let s = TcpStream::connect_timeout(&sa, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
        s.set_nodelay(true).ok();
        let local = s.local_addr().map(|a| a.port()).ok();
        let mut c = Client::from_conn(Box::new(s));
        c.local_port = local;
        c
    }

    /// Connects from the loopback address `from` (to tell sessions apart in a server's
    /// record) and reads the greeting.
    pub fn connect_from(from: [u8; 4], port: u16) -> Client {
        use nix::sys::socket::{
            bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn,
        };
        use std::os::fd::AsRawFd;
        let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
            .expect("socket");
        let [a, b, c, d] = from;
        bind(fd.as_raw_fd(), &SockaddrIn::new(a, b, c, d, 0)).expect("bind the client address");
        connect(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, port)).expect("connect");
        let s = TcpStream::from(fd);
        s.set_nodelay(true).ok();
        let mut c = Client::from_conn(Box::new(s));
        c.greeting = c.read_line();
        c
    }

    pub fn from_conn(conn: Box<dyn Conn>) -> Client {
        conn.set_timeout(Some(WAIT)).expect("set timeout");
        let writer = conn.try_clone_box().expect("clone stream");
        Client {
            reader: BufReader::with_capacity(1 << 16, conn),
            writer,
            greeting: Vec::new(),
            seen: Vec::new(),
            local_port: None,
        }
    }

    /// A second handle on the same connection for writing from another thread.
    pub fn writer(&self) -> Box<dyn Conn> {
        self.writer.try_clone_box().expect("clone stream")
    }

    pub fn set_timeout(&self, t: Duration) {
        self.writer.set_timeout(Some(t)).expect("set timeout");
    }

    fn note(&mut self, b: &[u8]) {
        if self.seen.len() > 64 * 1024 {
            let cut = self.seen.len() - 16 * 1024;
            self.seen.drain(..cut);
        }
        self.seen.extend_from_slice(&b[..b.len().min(4096)]);
    }

    /// Recent transcript of received bytes.
    pub fn transcript(&self) -> String {
        tail(&self.seen, 4096)
    }

    /// Writes raw bytes. Panics on error.
    pub fn send(&mut self, b: &[u8]) {
        if let Err(e) = self.try_send(b) {
            panic!("write failed: {e}\nreceived so far:\n{}", self.transcript());
        }
    }

    pub fn try_send(&mut self, b: &[u8]) -> io::Result<()> {
        self.writer.write_all(b)?;
        self.writer.flush()
    }

    /// Writes `line` followed by CRLF.
    pub fn send_line(&mut self, line: &str) {
        self.send(format!("{line}\r\n").as_bytes());
    }

    /// Reads one line including CRLF; Ok(None) on clean EOF before any byte.
    pub fn try_read_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut line = Vec::new();
        let n = self.reader.read_until(b'\n', &mut line)?;
        self.note(&line);
        if n == 0 {
            return Ok(None);
        }
        if !line.ends_with(b"\n") {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("EOF inside line {:?}", text(&line)),
            ));
        }
        Ok(Some(line))
    }

    /// Reads one line including CRLF; panics on EOF or timeout.
    pub fn read_line(&mut self) -> Vec<u8> {
        match self.try_read_line() {
            Ok(Some(l)) => l,
            Ok(None) => panic!("unexpected EOF\nreceived so far:\n{}", self.transcript()),
            Err(e) => panic!("read failed: {e}\nreceived so far:\n{}", self.transcript()),
        }
    }

    /// Reads one complete response: a line plus any `{n}` literals it
    /// announces and the lines that continue it. Ok(None) on EOF at a boundary.
    pub fn try_read_response(&mut self) -> io::Result<Option<Vec<u8>>> {
        let Some(mut resp) = self.try_read_line()? else {
            return Ok(None);
        };
        while let Some(n) = literal_len(&resp) {
            let start = resp.len();
            resp.resize(start + n, 0);
            self.reader.read_exact(&mut resp[start..])?;
            let lit_note = format!("<{n} literal bytes>");
            self.note(lit_note.as_bytes());
            match self.try_read_line()? {
                Some(l) => resp.extend_from_slice(&l),
                None => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF after literal"))
                }
            }
        }
        Ok(Some(resp))
    }

    pub fn read_response(&mut self) -> Vec<u8> {
        match self.try_read_response() {
            Ok(Some(r)) => r,
            Ok(None) => panic!("unexpected EOF\nreceived so far:\n{}", self.transcript()),
            Err(e) => panic!("read failed: {e}\nreceived so far:\n{}", self.transcript()),
        }
    }

    /// Reads responses until the one tagged `tag`; returns all of them,
    /// the tagged completion last.
    pub fn read_until_tagged(&mut self, tag: &str) -> Vec<u8> {
        let prefix = format!("{tag} ");
        let mut all = Vec::new();
        loop {
            let r = self.read_response();
            let done = r.starts_with(prefix.as_bytes());
            all.extend_from_slice(&r);
            if done {
                return all;
            }
        }
    }

    /// Sends `TAG COMMAND` and returns everything up to its completion.
    pub fn cmd(&mut self, tag: &str, command: &str) -> Vec<u8> {
        self.send_line(&format!("{tag} {command}"));
        self.read_until_tagged(tag)
    }

    /// Like `cmd` but asserts the tagged result is OK.
    pub fn cmd_ok(&mut self, tag: &str, command: &str) -> Vec<u8> {
        let r = self.cmd(tag, command);
        assert_ok(&r, tag, command);
        r
    }

    /// LOGIN with quoted strings; returns the tagged completion line.
    pub fn try_login(&mut self, user: &str, pass: &str) -> Vec<u8> {
        let r = self.cmd("L1", &format!("LOGIN {} {}", quote(user), quote(pass)));
        last_line(&r).to_vec()
    }

    /// LOGIN that must succeed.
    pub fn login(&mut self, user: &str, pass: &str) {
        let r = self.cmd("L1", &format!("LOGIN {} {}", quote(user), quote(pass)));
        assert_ok(&r, "L1", &format!("LOGIN {user}"));
    }

    /// LOGOUT: expects `* BYE`, tagged OK, then EOF.
    pub fn logout(&mut self) {
        let r = self.cmd("LO", "LOGOUT");
        assert!(text(&r).contains("* BYE"), "no BYE on LOGOUT: {}", text(&r));
        assert_ok(&r, "LO", "LOGOUT");
        self.expect_eof();
    }

    /// Reads until EOF (or panics after the timeout); returns what came before.
    pub fn read_to_eof(&mut self) -> Vec<u8> {
        let mut rest = Vec::new();
        loop {
            match self.try_read_line() {
                Ok(Some(l)) => rest.extend_from_slice(&l),
                Ok(None) => return rest,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return rest,
                Err(e) => panic!("no EOF: {e}\nreceived so far:\n{}", self.transcript()),
            }
        }
    }

    pub fn expect_eof(&mut self) {
        let rest = self.read_to_eof();
        assert!(rest.is_empty(), "unexpected data before EOF: {}", text(&rest));
    }
}

/// `{n}` (or `~{n}`) at the end of a response line: the literal length.
pub fn literal_len(line: &[u8]) -> Option<usize> {
    let l = line.strip_suffix(b"\r\n").or_else(|| line.strip_suffix(b"\n"))?;
    let l = l.strip_suffix(b"}")?;
    let open = l.iter().rposition(|&b| b == b'{')?;
    let digits = &l[open + 1..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// IMAP quoted string (RFC 3501 §4.3): backslash-escape `"` and `\`.
pub fn quote(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// The last CRLF-terminated line of a response block.
pub fn last_line(r: &[u8]) -> &[u8] {
    let body = r.strip_suffix(b"\r\n").unwrap_or(r);
    let start = body.windows(2).rposition(|w| w == b"\r\n").map_or(0, |p| p + 2);
    &r[start..]
}

/// Asserts that the tagged completion in `r` is `TAG OK`.
pub fn assert_ok(r: &[u8], tag: &str, what: &str) {
    let last = last_line(r);
    assert!(
        last.starts_with(format!("{tag} OK").as_bytes()),
        "{what}: expected {tag} OK, got:\n{}",
        tail(r, 2000)
    );
}
