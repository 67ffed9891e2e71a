//! The `[global] metrics` listener: a minimal HTTP/1.0 responder, no framework. It
//! answers `GET /metrics` (and `HEAD`) with the registry in the Prometheus text format,
//! anything else with 404 or 405, and closes. Every connection is non-blocking and
//! bounded: a request head of at most [`HEAD_MAX`] bytes within [`HEAD_TIMEOUT`], the
//! answer written within [`WRITE_TIMEOUT`], at most [`MAX_SCRAPES`] at once, so a slow
//! scraper holds nothing. Thread mode polls it on a thread of its own; the fork-mode
//! listener process polls it in its own loop, beside its listening sockets.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

/// The longest request head read.
pub const HEAD_MAX: usize = 4096;
/// Time a scraper gets to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// Time a scraper gets to read the answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// Scrape connections served at once; more are closed at once.
pub const MAX_SCRAPES: usize = 8;

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Not complete yet.
    Incomplete,
    /// `GET /metrics` (`head`: `HEAD /metrics`, no body).
    Metrics { head: bool },
    /// Another path.
    NotFound,
    /// Another method.
    BadMethod,
    /// Not an HTTP request line, or a head over [`HEAD_MAX`].
    Bad,
}

/// Reads a request head (the request line is all that matters).
pub fn parse(head: &[u8]) -> Request {
    let end = head.windows(4).position(|w| w == b"\r\n\r\n").or_else(|| {
        // Bare LF line ends, as curl never sends but `printf | nc` might.
        head.windows(2).position(|w| w == b"\n\n")
    });
    if end.is_none() {
        return if head.len() >= HEAD_MAX { Request::Bad } else { Request::Incomplete };
    }
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else { return Request::Bad };
    let mut words = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Request::Bad;
    }
    let path = target.split('?').next().unwrap_or(target);
    match (method, path) {
        ("GET", "/metrics") => Request::Metrics { head: false },
        ("HEAD", "/metrics") => Request::Metrics { head: true },
        ("GET" | "HEAD", _) => Request::NotFound,
        _ => Request::BadMethod,
    }
}

/// The whole answer to a request; `body` renders the metrics.
pub fn answer(request: &Request, body: impl FnOnce() -> String) -> Vec<u8> {
    let (status, kind, text, head_only) = match request {
        Request::Metrics { head } => {
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body(), *head)
        }
        Request::NotFound => {
            ("404 Not Found", "text/plain", "Not found: try /metrics\n".into(), false)
        }
        Request::BadMethod => {
            ("405 Method Not Allowed", "text/plain", "Only GET and HEAD.\n".into(), false)
        }
        Request::Bad | Request::Incomplete => {
            ("400 Bad Request", "text/plain", "Bad request.\n".into(), false)
        }
    };
    let allow = if matches!(request, Request::BadMethod) { "Allow: GET, HEAD\r\n" } else { "" };
    let mut out = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        text.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(text.as_bytes());
    }
    out
}

/// One scrape connection.
struct Scrape {
    stream: TcpStream,
    head: Vec<u8>,
    /// The answer, once the head is read, and how much of it is written.
    out: Option<(Vec<u8>, usize)>,
    deadline: Instant,
}

impl Scrape {
    /// Moves the connection on; true when it is finished (answered, closed or failed).
    fn advance(&mut self, body: &dyn Fn() -> String) -> bool {
        if self.out.is_none() {
            let mut buf = [0u8; 1024];
            loop {
                match self.stream.read(&mut buf) {
                    Ok(0) => return true,
                    Ok(n) => {
                        let room = HEAD_MAX.saturating_sub(self.head.len());
                        self.head.extend_from_slice(&buf[..n.min(room)]);
                        if parse(&self.head) != Request::Incomplete {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return true,
                }
            }
            let request = parse(&self.head);
            if request == Request::Incomplete {
                return false;
            }
            self.out = Some((answer(&request, body), 0));
            self.deadline = Instant::now() + WRITE_TIMEOUT;
        }
        let Some((out, written)) = &mut self.out else { return false };
        while *written < out.len() {
            match self.stream.write(&out[*written..]) {
                Ok(0) => return true,
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
        true
    }

    fn interest(&self) -> PollFlags {
        if self.out.is_some() {
            PollFlags::POLLOUT
        } else {
            PollFlags::POLLIN
        }
    }
}

/// The metrics listening socket and its scrape connections.
pub struct Server {
    socket: TcpListener,
    scrapes: Vec<Scrape>,
}

impl Server {
    /// Binds `addr` (before the privilege drop, like the listeners).
    pub fn bind(addr: SocketAddr) -> Result<Server, String> {
        let socket = TcpListener::bind(addr)
            .map_err(|e| format!("metrics: cannot listen on {addr}: {e}"))?;
        socket.set_nonblocking(true).map_err(|e| format!("metrics: {addr}: {e}"))?;
        Ok(Server { socket, scrapes: Vec::new() })
    }

    /// Its local address.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.socket.local_addr().ok()
    }

    /// The descriptors to poll: the socket, then each scrape.
    pub fn poll_fds(&self) -> Vec<PollFd<'_>> {
        let mut fds = vec![PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
        fds.extend(self.scrapes.iter().map(|s| PollFd::new(s.stream.as_fd(), s.interest())));
        fds
    }

    /// After a poll: `ready` says which of [`Server::poll_fds`] had events. Accepts,
    /// moves every ready scrape on, and drops the finished and the late ones.
    pub fn service(&mut self, ready: &[bool], body: &dyn Fn() -> String) {
        let now = Instant::now();
        let mut i = 0;
        self.scrapes.retain_mut(|s| {
            let was_ready = ready.get(1 + i).copied().unwrap_or(false);
            i += 1;
            let finished = was_ready && s.advance(body);
            !finished && now < s.deadline
        });
        if ready.first().copied().unwrap_or(false) {
            self.accept_all(body);
        }
    }

    fn accept_all(&mut self, body: &dyn Fn() -> String) {
        loop {
            match self.socket.accept() {
                Ok((stream, _)) => {
                    if self.scrapes.len() >= MAX_SCRAPES || stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let mut scrape = Scrape {
                        stream,
                        head: Vec::new(),
                        out: None,
                        deadline: Instant::now() + HEAD_TIMEOUT,
                    };
                    // The request usually came with the connection: answer it now.
                    if !scrape.advance(body) {
                        self.scrapes.push(scrape);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Thread mode: serves until the process exits.
    pub fn run(mut self, body: &dyn Fn() -> String) {
        loop {
            let ready: Vec<bool> = {
                let mut fds = self.poll_fds();
                if nix::poll::poll(&mut fds, PollTimeout::from(500u16)).is_err() {
                    vec![false; fds.len()]
                } else {
                    fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect()
                }
            };
            self.service(&ready, body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_parsed() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Metrics { head: false }
        );
        assert_eq!(parse(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Request::Metrics { head: false });
        assert_eq!(parse(b"HEAD /metrics HTTP/1.0\n\n"), Request::Metrics { head: true });
        assert_eq!(parse(b"GET / HTTP/1.0\r\n\r\n"), Request::NotFound);
        assert_eq!(parse(b"GET /metricsx HTTP/1.0\r\n\r\n"), Request::NotFound);
        assert_eq!(parse(b"POST /metrics HTTP/1.0\r\n\r\n"), Request::BadMethod);
        assert_eq!(parse(b"GET /metrics\r\n\r\n"), Request::Bad);
        assert_eq!(parse(b"GET metrics HTTP/1.0\r\n\r\n"), Request::Bad);
        assert_eq!(parse(b"\x01\x02 \r\n\r\n"), Request::Bad);
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), Request::Incomplete);
        assert_eq!(parse(b""), Request::Incomplete);
        // Bounded: a head that never ends is refused at HEAD_MAX.
        let long = [b"GET /metrics HTTP/1.1\r\nX: ".as_slice(), &[b'a'; HEAD_MAX]].concat();
        assert_eq!(parse(&long[..HEAD_MAX]), Request::Bad);
    }

    #[test]
    fn answers_have_status_type_and_length() {
        let ok = String::from_utf8(answer(&Request::Metrics { head: false }, || "a 1\n".into()))
            .unwrap();
        assert!(ok.starts_with("HTTP/1.0 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(ok.contains("Content-Length: 4\r\n"));
        assert!(ok.ends_with("\r\n\r\na 1\n"));
        let head =
            String::from_utf8(answer(&Request::Metrics { head: true }, || "a 1\n".into())).unwrap();
        assert!(head.ends_with("Content-Length: 4\r\nConnection: close\r\n\r\n"), "{head}");
        let nf = String::from_utf8(answer(&Request::NotFound, || unreachable!())).unwrap();
        assert!(nf.starts_with("HTTP/1.0 404 "));
        let bm = String::from_utf8(answer(&Request::BadMethod, || unreachable!())).unwrap();
        assert!(bm.starts_with("HTTP/1.0 405 ") && bm.contains("Allow: GET, HEAD\r\n"));
        let bad = String::from_utf8(answer(&Request::Bad, || unreachable!())).unwrap();
        assert!(bad.starts_with("HTTP/1.0 400 "));
    }

    /// A real socket: an answer to a whole request, a slow scraper dropped at its
    /// deadline without holding the others.
    #[test]
    fn serves_and_bounds_scrapes() {
        let mut server = Server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.addr().unwrap();
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(b"GET /metr").unwrap();
        let mut fast = TcpStream::connect(addr).unwrap();
        fast.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let body = || "x 1\n".to_string();
        let until = Instant::now() + Duration::from_secs(5);
        let mut answer = Vec::new();
        fast.set_nonblocking(true).unwrap();
        while Instant::now() < until {
            let ready: Vec<bool> = {
                let mut fds = server.poll_fds();
                nix::poll::poll(&mut fds, PollTimeout::from(50u16)).unwrap();
                fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect()
            };
            server.service(&ready, &body);
            let mut buf = [0u8; 512];
            match fast.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        assert!(String::from_utf8_lossy(&answer).ends_with("\r\n\r\nx 1\n"));
        assert_eq!(server.scrapes.len(), 1, "the slow one waits");
        std::thread::sleep(HEAD_TIMEOUT);
        server.service(&[false, false], &body);
        assert!(server.scrapes.is_empty(), "the slow one is dropped at its deadline");
        slow.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut rest = Vec::new();
        assert_eq!(slow.read_to_end(&mut rest).map(|_| rest.len()).unwrap_or(0), 0);
    }
}
