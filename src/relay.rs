//! The post-login relay: one poll loop over the client and backend sockets.
//!
//! Each direction is a `Pipe`: a bounded buffer that is read into, framed in place by a
//! `Framer`, and written from, so payload bytes are copied once (kernel to buffer to
//! kernel) and literals are forwarded in bulk. Both sockets are non-blocking and the
//! thread blocks only in `poll`, asking to read a peer only while the buffer toward the
//! other peer has room: a server streaming a huge FETCH while the client streams a huge
//! APPEND can fill both buffers but never deadlock, because each direction drains on its
//! own.
//!
//! Only framed bytes are forwarded. The client framer stops at a synchronizing literal,
//! at IDLE and at AUTHENTICATE until the server grants the continuation (`+`) or answers
//! the command; what the client sent meanwhile stays unframed in the buffer and is read
//! as the server's answer says it must be. So the framer's view of the client stream is
//! always the server's.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::imap::command;
use crate::imap::framer::{AfterContinuation, Event, Framer, Side};
use crate::imap::response::{self, Kind};
use crate::transport::Transport;

/// Size of each direction's buffer while data flows; released when the pipe is empty.
const BUF_SIZE: usize = 64 * 1024;

/// How the relay ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The client logged out (or closed after the server's BYE).
    Logout,
    /// The client closed the connection.
    ClientClosed,
    /// The backend closed or failed; the client was told with `* BYE`.
    BackendClosed(String),
    /// Nothing moved for the idle timeout.
    IdleTimeout,
    /// A socket error on the client side.
    ClientError(String),
}

impl End {
    /// Short, stable reason for the SESSION-END line.
    pub fn reason(&self) -> String {
        match self {
            End::Logout => "logout".into(),
            End::ClientClosed => "client-closed".into(),
            End::BackendClosed(why) => format!("backend-closed ({why})"),
            End::IdleTimeout => "idle-timeout".into(),
            End::ClientError(why) => format!("client-error ({why})"),
        }
    }
}

/// Byte counts of a relay, for the session log.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// Bytes read from the client.
    pub from_client: u64,
    /// Bytes written to the client.
    pub to_client: u64,
}

/// One direction: a buffer that is filled from one socket and drained into the other.
/// Invariant: `start <= framed <= end <= buf.len()`; `start..framed` may be written,
/// `framed..end` was read but not yet framed.
struct Pipe {
    buf: Vec<u8>,
    start: usize,
    framed: usize,
    end: usize,
    framer: Framer,
    /// The source reached end of file.
    eof: bool,
    /// The head of the current message was already inspected.
    head_seen: bool,
    /// The source may hold data that poll cannot see: TLS plaintext rustls already
    /// decrypted, or more socket data after a read that filled the buffer.
    maybe_more: bool,
}

impl Pipe {
    fn new(side: Side, initial: Vec<u8>) -> Pipe {
        let mut pipe = Pipe {
            buf: Vec::new(),
            start: 0,
            framed: 0,
            end: 0,
            framer: Framer::new(side),
            eof: false,
            head_seen: false,
            maybe_more: false,
        };
        if !initial.is_empty() {
            pipe.buf = initial;
            pipe.end = pipe.buf.len();
            if pipe.buf.len() < BUF_SIZE {
                pipe.buf.resize(BUF_SIZE, 0);
            }
        }
        pipe
    }

    fn pending(&self) -> usize {
        self.framed - self.start
    }

    fn has_room(&self) -> bool {
        !self.eof && (self.buf.is_empty() || self.end < self.buf.len() || self.start > 0)
    }

    /// Reads what the source has, up to the free space. Returns bytes read (0 at EOF).
    fn fill(&mut self, src: &mut Transport) -> io::Result<usize> {
        if self.buf.is_empty() {
            self.buf = vec![0; BUF_SIZE];
        }
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.framed -= self.start;
            self.end -= self.start;
            self.start = 0;
        }
        let room = self.buf.len() - self.end;
        let n = match src.read(&mut self.buf[self.end..]) {
            Ok(n) => n,
            Err(e) => {
                self.maybe_more = false;
                return Err(e);
            }
        };
        self.end += n;
        self.eof |= n == 0;
        self.maybe_more = n > 0 && (n == room || src.is_tls());
        Ok(n)
    }

    /// Writes as much of the framed bytes as the destination takes.
    fn flush(&mut self, dst: &mut Transport) -> io::Result<usize> {
        let mut total = 0;
        while self.start < self.framed {
            match dst.write(&self.buf[self.start..self.framed]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.start += n;
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.start == self.end {
            self.start = 0;
            self.framed = 0;
            self.end = 0;
        }
        match dst.flush_tls() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(total),
        }
    }

    /// Gives the memory back while the pipe is empty, so idle sessions stay small.
    fn release_if_empty(&mut self) {
        if self.end == 0 && !self.buf.is_empty() {
            self.buf = Vec::new();
        }
    }
}

/// The relay of one logged-in session.
pub struct Relay {
    client: Transport,
    backend: Transport,
    c2s: Pipe,
    s2c: Pipe,
    idle_timeout: Duration,
    counters: Counters,
    /// The client sent LOGOUT or the server said BYE: a close is the expected end.
    closing: bool,
}

impl Relay {
    /// A relay over two connected sockets, starting with bytes each side already sent.
    pub fn new(
        client: Transport,
        backend: Transport,
        from_client: Vec<u8>,
        from_backend: Vec<u8>,
        idle_timeout: Duration,
    ) -> io::Result<Relay> {
        client.set_nonblocking(true)?;
        backend.set_nonblocking(true)?;
        Ok(Relay {
            client,
            backend,
            c2s: Pipe::new(Side::Client, from_client),
            s2c: Pipe::new(Side::Server, from_backend),
            idle_timeout,
            counters: Counters::default(),
            closing: false,
        })
    }

    /// Relays until one side ends the session; returns how it ended and the byte counts.
    pub fn run(mut self) -> (End, Counters) {
        let end = self.run_loop();
        match &end {
            End::BackendClosed(why) => {
                self.say_bye(&format!("* BYE [UNAVAILABLE] Backend server {why}.\r\n"));
            }
            End::IdleTimeout => self.say_bye("* BYE Autologout; idle for too long.\r\n"),
            _ => {}
        }
        self.client.close();
        self.backend.close();
        (end, self.counters)
    }

    fn run_loop(&mut self) -> End {
        let mut last_activity = Instant::now();
        loop {
            self.frame();
            match self.s2c.flush(&mut self.client) {
                Ok(n) => self.counters.to_client += n as u64,
                Err(e) => return End::ClientError(e.to_string()),
            }
            if let Err(e) = self.c2s.flush(&mut self.backend) {
                return End::BackendClosed(format!("write failed: {e}"));
            }
            if let Some(end) = self.finished() {
                return end;
            }
            self.c2s.release_if_empty();
            self.s2c.release_if_empty();
            let (client_ev, backend_ev) = match self.wait(last_activity) {
                Ok(Some(events)) => events,
                Ok(None) => return End::IdleTimeout,
                Err(e) => return End::ClientError(format!("poll: {e}")),
            };
            last_activity = Instant::now();
            if (readable(client_ev) || self.c2s.maybe_more) && self.c2s.has_room() {
                match self.c2s.fill(&mut self.client) {
                    Ok(n) => self.counters.from_client += n as u64,
                    Err(e) if retry(&e) => {}
                    Err(e) => return End::ClientError(e.to_string()),
                }
            }
            if (readable(backend_ev) || self.s2c.maybe_more) && self.s2c.has_room() {
                match self.s2c.fill(&mut self.backend) {
                    Ok(_) => {}
                    Err(e) if retry(&e) => {}
                    Err(e) => return End::BackendClosed(format!("read failed: {e}")),
                }
            }
        }
    }

    /// Decides whether the session is over, once everything framed was written.
    fn finished(&self) -> Option<End> {
        if self.s2c.eof && self.s2c.pending() == 0 {
            if self.closing {
                return Some(End::Logout);
            }
            return Some(End::BackendClosed("closed the connection".into()));
        }
        if self.c2s.eof && self.c2s.pending() == 0 {
            return Some(if self.closing { End::Logout } else { End::ClientClosed });
        }
        None
    }

    /// Polls both sockets; `Ok(None)` when the idle timeout passed with no event.
    fn wait(&self, last_activity: Instant) -> io::Result<Option<(PollFlags, PollFlags)>> {
        let mut client_want = PollFlags::empty();
        let mut backend_want = PollFlags::empty();
        if self.c2s.has_room() {
            client_want |= PollFlags::POLLIN;
        }
        if self.s2c.pending() > 0 || self.client.wants_write() {
            client_want |= PollFlags::POLLOUT;
        }
        if self.s2c.has_room() {
            backend_want |= PollFlags::POLLIN;
        }
        if self.c2s.pending() > 0 || self.backend.wants_write() {
            backend_want |= PollFlags::POLLOUT;
        }
        // Data poll cannot see is read at once, without waiting.
        let ready_now = (self.c2s.maybe_more && self.c2s.has_room())
            || (self.s2c.maybe_more && self.s2c.has_room());
        loop {
            let left = self.idle_timeout.saturating_sub(last_activity.elapsed());
            if left.is_zero() {
                return Ok(None);
            }
            let ms = if ready_now { 0 } else { left.as_millis().min(i32::MAX as u128) as i32 };
            let mut fds = [
                PollFd::new(self.client.socket().as_fd(), client_want),
                PollFd::new(self.backend.socket().as_fd(), backend_want),
            ];
            match poll(&mut fds, PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)) {
                Ok(0) if ready_now => return Ok(Some((PollFlags::empty(), PollFlags::empty()))),
                Ok(0) => continue,
                Ok(_) => {
                    let ev = |fd: &PollFd| fd.revents().unwrap_or(PollFlags::empty());
                    return Ok(Some((ev(&fds[0]), ev(&fds[1]))));
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Frames new bytes in both directions. A server response can release held client
    /// bytes (a `+` or a tagged answer), so this repeats until neither side moves.
    fn frame(&mut self) {
        loop {
            let client_moved = self.frame_client();
            let server_moved = self.frame_server();
            if !client_moved && !server_moved {
                return;
            }
        }
    }

    fn frame_client(&mut self) -> bool {
        let pipe = &mut self.c2s;
        let before = pipe.framed;
        while pipe.framed < pipe.end {
            let was_first = pipe.framer.in_first_line();
            let step = pipe.framer.advance(&pipe.buf[pipe.framed..pipe.end]);
            pipe.framed += step.consumed;
            if step.event == Some(Event::LineEnd(None)) && was_first {
                if let Some((_, name)) = command::tag_and_name(pipe.framer.head()) {
                    match name.as_str() {
                        "IDLE" => pipe.framer.wait_for_continuation(AfterContinuation::Command),
                        "AUTHENTICATE" => {
                            pipe.framer.wait_for_continuation(AfterContinuation::Wait)
                        }
                        "LOGOUT" => self.closing = true,
                        _ => {}
                    }
                }
            }
            if step.consumed == 0 && step.event.is_none() {
                break; // waiting for the server's decision
            }
        }
        pipe.framed != before
    }

    fn frame_server(&mut self) -> bool {
        let before = self.s2c.framed;
        while self.s2c.framed < self.s2c.end {
            let pipe = &mut self.s2c;
            let was_first = pipe.framer.in_first_line();
            let step = pipe.framer.advance(&pipe.buf[pipe.framed..pipe.end]);
            pipe.framed += step.consumed;
            let head_ready = matches!(step.event, Some(Event::LineEnd(_) | Event::LongLine));
            if was_first && head_ready && !pipe.head_seen {
                pipe.head_seen = true;
                self.on_response_head();
            }
            if self.s2c.framer.at_message_start() {
                self.s2c.head_seen = false;
            }
        }
        self.s2c.framed != before
    }

    /// Couples the client framer to the server's answers (see the module documentation).
    fn on_response_head(&mut self) {
        let head = self.s2c.framer.head();
        let client = &mut self.c2s.framer;
        match response::kind(head) {
            Kind::Continuation => client.grant(),
            Kind::Tagged(tag) => {
                let waiting_tag = command::tag_and_name(client.head()).map(|(t, _)| t);
                if client.is_waiting() && waiting_tag == Some(tag) {
                    client.refuse();
                }
            }
            Kind::Untagged => {
                if response::status(head).is_some_and(|s| s.status == "BYE") {
                    self.closing = true;
                }
            }
        }
    }

    /// Best effort `* BYE` to the client, only at a message boundary (inside a literal it
    /// would corrupt the stream; then closing is the only honest signal).
    fn say_bye(&mut self, bye: &str) {
        if !self.s2c.framer.at_message_start() || self.s2c.pending() > 0 {
            return;
        }
        let _ = self.client.set_nonblocking(false);
        let _ = self.client.set_write_timeout(Some(Duration::from_secs(5)));
        if self.client.write_all(bye.as_bytes()).and_then(|()| self.client.flush()).is_ok() {
            self.counters.to_client += bye.len() as u64;
        }
    }
}

fn readable(ev: PollFlags) -> bool {
    ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
}

fn retry(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
}
