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

use crate::imap::framer::{AfterContinuation, Event, Framer, Side, Step};
use crate::imap::response::{self, Kind};
use crate::imap::{capability, command};
use crate::net::transport::Transport;
use crate::session::exchange::{Exchange, Stop};
use crate::session::{End, Host};

/// Size of each direction's buffer while data flows; released when the pipe is empty.
const BUF_SIZE: usize = 64 * 1024;

/// How long an empty pipe keeps its buffer before giving it back.
const BUFFER_LINGER: Duration = Duration::from_secs(1);

/// Commands that would change the byte stream under the framer (RFC 4978 COMPRESS; a
/// second TLS layer): refused after login, since the relay could no longer frame it.
const STREAM_CHANGING: &[&str] = &["COMPRESS", "STARTTLS"];

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
    /// The last read filled all the free space: a bulk transfer is under way.
    bulk: bool,
    /// Where the message being framed began in `buf` (fast path head checks).
    msg_start: usize,
    /// Fast path: the first line of a command from here on is held back until its head
    /// (tag and name) is known, so a refused command is never partly forwarded.
    hold_from: Option<usize>,
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
            bulk: false,
            msg_start: 0,
            hold_from: None,
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

    /// Bytes that may be written now.
    fn pending(&self) -> usize {
        self.hold_from.unwrap_or(self.framed).max(self.start) - self.start
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
            self.msg_start = self.msg_start.saturating_sub(self.start);
            self.hold_from = self.hold_from.map(|h| h - self.start);
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
        self.bulk = n == room;
        Ok(n)
    }

    /// Writes as much of the framed bytes as the destination takes.
    fn flush(&mut self, dst: &mut Transport) -> io::Result<usize> {
        let mut total = 0;
        let limit = self.hold_from.unwrap_or(self.framed);
        while self.start < limit {
            match dst.write(&self.buf[self.start..limit]) {
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

    /// Fast path: frames the next piece, noting where each message starts and holding its
    /// first line back until it is looked at. Returns the step and whether it began in
    /// the first line of a message.
    fn fast_step(&mut self) -> (Step, bool) {
        if self.framer.at_message_start() {
            self.msg_start = self.framed;
            self.hold_from = Some(self.framed);
        }
        let was_first = self.framer.in_first_line();
        let step = self.framer.advance(&self.buf[self.framed..self.end]);
        self.framed += step.consumed;
        (step, was_first)
    }

    /// Judged mode: everything framed was handed to the exchange.
    fn consumed(&mut self) {
        self.start = self.framed;
        if self.start == self.end {
            self.start = 0;
            self.framed = 0;
            self.end = 0;
        }
    }

    /// Replaces `msg_start..framed` with `new` (a rewritten first line).
    fn replace_current(&mut self, new: &[u8]) {
        let tail = self.buf[self.framed..self.end].to_vec();
        self.buf.truncate(self.msg_start);
        self.buf.extend_from_slice(new);
        self.framed = self.buf.len();
        self.buf.extend_from_slice(&tail);
        self.end = self.buf.len();
        if self.buf.len() < BUF_SIZE {
            self.buf.resize(BUF_SIZE, 0);
        }
    }

    /// Cuts `msg_start..framed` out of the buffer: a refused message is never forwarded.
    fn cut_current_message(&mut self) {
        let (from, to) = (self.msg_start, self.framed);
        self.buf.copy_within(to..self.end, from);
        self.end -= to - from;
        self.framed = from;
    }

    /// True while the pipe keeps an empty buffer because a bulk transfer may go on.
    fn idle_buffer(&self) -> bool {
        self.end == 0 && !self.buf.is_empty() && self.bulk
    }

    /// Gives the memory back while the pipe is empty, unless a bulk transfer is under way
    /// (then `wait` gives it back after `BUFFER_LINGER` of quiet).
    fn release_unless_bulk(&mut self) {
        if !self.bulk {
            self.release_if_empty();
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
    /// The client sent LOGOUT: a close is the expected end.
    closing: bool,
    /// The server said BYE: it closes next, and the client was told why.
    server_bye: bool,
    /// The judged exchange, when the session has rules.
    exchange: Option<Exchange>,
    /// imapgate's own answers in the fast path, sent at the next server message boundary.
    inject: Vec<u8>,
    /// The capabilities the client was shown after login: every capability list the
    /// backend sends is replaced by it, and commands needing others are refused.
    shown: Vec<String>,
}

impl Relay {
    /// A relay over two connected sockets, starting with bytes each side already sent.
    pub fn new(
        client: Transport,
        backend: Transport,
        from_client: Vec<u8>,
        from_backend: Vec<u8>,
        idle_timeout: Duration,
        exchange: Option<Exchange>,
        shown: Vec<String>,
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
            server_bye: false,
            exchange,
            inject: Vec::new(),
            shown,
        })
    }

    /// Relays until one side ends the session; returns how it ended and the byte counts.
    pub fn run(mut self, host: &dyn Host) -> (End, Counters) {
        let end = self.run_loop(host);
        if let Some(exchange) = self.exchange.as_mut() {
            exchange.finish();
        }
        match &end {
            End::BackendClosed(why) => {
                self.say_bye(&format!("* BYE [UNAVAILABLE] Backend server {why}.\r\n"));
            }
            End::IdleTimeout => self.say_bye("* BYE Autologout; idle for too long.\r\n"),
            End::Shutdown => self.say_bye("* BYE [UNAVAILABLE] Server shutting down.\r\n"),
            _ => {}
        }
        self.client.close();
        self.backend.close();
        (end, self.counters)
    }

    fn run_loop(&mut self, host: &dyn Host) -> End {
        let mut last_activity = Instant::now();
        loop {
            self.frame();
            if let Some(exchange) = self.exchange.as_mut() {
                exchange.on_time(Instant::now());
            }
            if let Err(end) = self.write_out() {
                return end;
            }
            if let Some(end) = self.finished() {
                return end;
            }
            self.c2s.release_unless_bulk();
            self.s2c.release_unless_bulk();
            let (client_ev, backend_ev) = match self.wait(last_activity, host) {
                Ok(Some(_)) if host.stopping() => return End::Shutdown,
                Ok(Some(events)) => events,
                Ok(None) => return End::IdleTimeout,
                Err(e) => return End::ClientError(format!("poll: {e}")),
            };
            last_activity = Instant::now();
            if (readable(client_ev) || self.c2s.maybe_more) && self.client_room() {
                match self.c2s.fill(&mut self.client) {
                    Ok(n) => self.counters.from_client += n as u64,
                    Err(e) if retry(&e) => {}
                    Err(e) => return End::ClientError(e.to_string()),
                }
            }
            if (readable(backend_ev) || self.s2c.maybe_more) && self.backend_room() {
                match self.s2c.fill(&mut self.backend) {
                    Ok(_) => {}
                    Err(e) if retry(&e) => {}
                    Err(e) => return End::BackendClosed(format!("read failed: {e}")),
                }
            }
        }
    }

    /// Writes what is ready in both directions, without blocking.
    fn write_out(&mut self) -> Result<(), End> {
        let Some(exchange) = self.exchange.as_mut() else {
            match self.s2c.flush(&mut self.client) {
                Ok(n) => self.counters.to_client += n as u64,
                Err(e) => return Err(End::ClientError(e.to_string())),
            }
            self.write_injected()?;
            return self
                .c2s
                .flush(&mut self.backend)
                .map(drop)
                .map_err(|e| End::BackendClosed(format!("write failed: {e}")));
        };
        self.c2s.consumed();
        self.s2c.consumed();
        while !exchange.to_client().is_empty() {
            match self.client.write(exchange.to_client()) {
                Ok(0) => return Err(End::ClientError("write returned 0".into())),
                Ok(n) => {
                    exchange.client_wrote(n);
                    self.counters.to_client += n as u64;
                }
                Err(e) if retry(&e) => break,
                Err(e) => return Err(End::ClientError(e.to_string())),
            }
        }
        while let Some(bytes) = exchange.to_backend() {
            match self.backend.write(bytes) {
                Ok(0) => return Err(End::BackendClosed("write returned 0".into())),
                Ok(n) => exchange.backend_wrote(n),
                Err(e) if retry(&e) => break,
                Err(e) => return Err(End::BackendClosed(format!("write failed: {e}"))),
            }
        }
        match self.client.flush_tls() {
            Err(e) if !retry(&e) => return Err(End::ClientError(e.to_string())),
            _ => {}
        }
        match self.backend.flush_tls() {
            Err(e) if !retry(&e) => Err(End::BackendClosed(format!("write failed: {e}"))),
            _ => Ok(()),
        }
    }

    /// Fast path: imapgate's own answers go out once the server stream is between messages.
    fn write_injected(&mut self) -> Result<(), End> {
        if self.inject.is_empty() || self.s2c.pending() > 0 || !self.s2c.framer.at_message_start() {
            return Ok(());
        }
        match self.client.write(&self.inject) {
            Ok(n) => {
                self.inject.drain(..n);
                self.counters.to_client += n as u64;
                Ok(())
            }
            Err(e) if retry(&e) => Ok(()),
            Err(e) => Err(End::ClientError(e.to_string())),
        }
    }

    fn client_pending(&self) -> bool {
        match &self.exchange {
            Some(ex) => !ex.to_client().is_empty(),
            None => self.s2c.pending() > 0 || !self.inject.is_empty(),
        }
    }

    fn backend_pending(&mut self) -> bool {
        match self.exchange.as_mut() {
            Some(ex) => ex.to_backend().is_some(),
            None => self.c2s.pending() > 0,
        }
    }

    /// Room to read from the client: buffer space, and in judged mode short queues.
    fn client_room(&self) -> bool {
        self.c2s.has_room() && self.exchange.as_ref().is_none_or(Exchange::wants_client_input)
    }

    fn backend_room(&self) -> bool {
        self.s2c.has_room() && self.exchange.as_ref().is_none_or(Exchange::wants_server_input)
    }

    /// Decides whether the session is over, once everything framed was written.
    fn finished(&self) -> Option<End> {
        if let Some(ex) = &self.exchange {
            if let Some(stop) = ex.stop() {
                return ex.to_client().is_empty().then(|| match stop {
                    Stop::Limit(limit) => End::Limit(limit.clone()),
                    Stop::Aborted => End::Aborted,
                    Stop::Backend(why) => End::BackendClosed(why.clone()),
                });
            }
        }
        let closing = self.closing || self.exchange.as_ref().is_some_and(Exchange::closing);
        if self.s2c.eof && self.s2c.pending() == 0 && !self.client_pending() {
            if closing {
                return Some(End::Logout);
            }
            if self.server_bye || self.exchange.as_ref().is_some_and(Exchange::server_bye) {
                return Some(End::BackendBye);
            }
            return Some(End::BackendClosed("closed the connection".into()));
        }
        if self.c2s.eof && self.c2s.pending() == 0 {
            return Some(if closing { End::Logout } else { End::ClientClosed });
        }
        None
    }

    /// Polls both sockets; `Ok(None)` when the idle timeout passed with no event.
    fn wait(
        &mut self,
        last_activity: Instant,
        host: &dyn Host,
    ) -> io::Result<Option<(PollFlags, PollFlags)>> {
        let mut client_want = PollFlags::empty();
        let mut backend_want = PollFlags::empty();
        if self.client_room() {
            client_want |= PollFlags::POLLIN;
        }
        if self.client_pending() || self.client.wants_write() {
            client_want |= PollFlags::POLLOUT;
        }
        if self.backend_room() {
            backend_want |= PollFlags::POLLIN;
        }
        if self.backend_pending() || self.backend.wants_write() {
            backend_want |= PollFlags::POLLOUT;
        }
        // Data poll cannot see is read at once, without waiting.
        let ready_now = (self.c2s.maybe_more && self.client_room())
            || (self.s2c.maybe_more && self.backend_room());
        let rule_deadline = self.exchange.as_ref().and_then(Exchange::deadline);
        loop {
            let left = self.idle_timeout.saturating_sub(last_activity.elapsed());
            if left.is_zero() {
                return Ok(None);
            }
            let left = match rule_deadline {
                Some(d) => left
                    .min(d.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))),
                None => left,
            };
            // Buffers stay while bulk data flows (no free, malloc and zero-fill per chunk)
            // and are given back after a second of quiet; after small, interactive reads
            // they go at once, so sessions that go idle stay small.
            let holding = self.c2s.idle_buffer() || self.s2c.idle_buffer();
            let left = if holding { left.min(BUFFER_LINGER) } else { left };
            let ms = if ready_now { 0 } else { left.as_millis().min(i32::MAX as u128) as i32 };
            // The third descriptor wakes the loop when imapgate is stopping (without
            // one, the client socket is listed again with no events asked for).
            let shutdown = host.stop_fd();
            let client_fd = self.client.socket().as_fd();
            let mut fds = [
                PollFd::new(client_fd, client_want),
                PollFd::new(self.backend.socket().as_fd(), backend_want),
                match shutdown {
                    Some(fd) => PollFd::new(fd, PollFlags::POLLIN),
                    None => PollFd::new(client_fd, PollFlags::empty()),
                },
            ];
            match poll(&mut fds, PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)) {
                Ok(0) if holding && !ready_now => {
                    for pipe in [&mut self.c2s, &mut self.s2c] {
                        pipe.bulk = false;
                        pipe.release_if_empty();
                    }
                    continue;
                }
                Ok(0) if ready_now || rule_deadline.is_some() => {
                    return Ok(Some((PollFlags::empty(), PollFlags::empty())))
                }
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
        let before = self.c2s.framed;
        if let Some(exchange) = self.exchange.as_mut() {
            let pipe = &mut self.c2s;
            pipe.framed += exchange.client_input(&pipe.buf[pipe.framed..pipe.end], Instant::now());
            return pipe.framed != before;
        }
        while self.c2s.framed < self.c2s.end {
            let pipe = &mut self.c2s;
            let (step, was_first) = pipe.fast_step();
            if was_first && matches!(step.event, Some(Event::LineEnd(_) | Event::LongLine)) {
                pipe.hold_from = None;
                if step.event == Some(Event::LineEnd(None)) {
                    self.on_command_head();
                }
            }
            if step.consumed == 0 && step.event.is_none() {
                break; // waiting for the server's decision
            }
        }
        self.c2s.framed != before
    }

    /// Fast path: looks at each one-line command as its line completes.
    fn on_command_head(&mut self) {
        let pipe = &mut self.c2s;
        let Some((tag, name)) = command::tag_and_name(pipe.framer.head()) else { return };
        let refusal = if STREAM_CHANGING.contains(&name.as_str()) {
            Some(format!("NO [CANNOT] {name} is not available through this proxy."))
        } else {
            capability::refusal(pipe.framer.head(), &self.shown)
        };
        if let Some(text) = refusal {
            let tag = String::from_utf8_lossy(tag).into_owned();
            pipe.cut_current_message();
            self.inject.extend_from_slice(format!("{tag} {text}\r\n").as_bytes());
            return;
        }
        match name.as_str() {
            "IDLE" => pipe.framer.wait_for_continuation(AfterContinuation::Command),
            "AUTHENTICATE" => pipe.framer.wait_for_continuation(AfterContinuation::Wait),
            "LOGOUT" => self.closing = true,
            _ => {}
        }
    }

    fn frame_server(&mut self) -> bool {
        let before = self.s2c.framed;
        if let Some(exchange) = self.exchange.as_mut() {
            let pipe = &mut self.s2c;
            pipe.framed += exchange.server_input(&pipe.buf[pipe.framed..pipe.end], Instant::now());
            return pipe.framed != before;
        }
        while self.s2c.framed < self.s2c.end {
            let pipe = &mut self.s2c;
            let (step, was_first) = pipe.fast_step();
            if was_first && pipe.hold_from.is_some() {
                let line_done = matches!(step.event, Some(Event::LineEnd(_)));
                if line_done {
                    rewrite_capabilities(pipe, &self.shown);
                }
                // A first line longer than any capability list is not one: let it go.
                if line_done || pipe.framed - pipe.msg_start > CAPABILITY_LINE_MAX {
                    pipe.hold_from = None;
                }
            }
            let head_ready = matches!(step.event, Some(Event::LineEnd(_) | Event::LongLine));
            if was_first && head_ready && !pipe.head_seen {
                pipe.head_seen = true;
                self.on_response_head();
            }
            if self.s2c.framer.at_message_start() {
                self.s2c.head_seen = false;
                if !self.inject.is_empty() {
                    break; // let imapgate's answer out at this boundary first
                }
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
                    self.server_bye = true;
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

/// Longest response line the fast path holds back to look for a capability list.
const CAPABILITY_LINE_MAX: usize = 8 * 1024;

/// Fast path: a response line carrying a capability list (`* CAPABILITY`, or a
/// `[CAPABILITY ...]` code) gets the list the client was shown instead.
fn rewrite_capabilities(pipe: &mut Pipe, shown: &[String]) {
    let line = &pipe.buf[pipe.msg_start..pipe.framed];
    if shown.is_empty() || response::capabilities(line).is_none() {
        return;
    }
    if let Some(new) = response::replace_capabilities(line, shown) {
        pipe.replace_current(&new);
    }
}

fn readable(ev: PollFlags) -> bool {
    ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
}

fn retry(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
}
