//! The post-login relay: a pump of poll, buffers and transports around the sans-I/O
//! `Exchange`, which decides everything else.
//!
//! Each direction is a `Pipe`: a bounded buffer that is read into, handed to the
//! exchange to frame, and written from, so payload bytes are copied once (kernel to
//! buffer to kernel) and literals go out in bulk. Both sockets are non-blocking and the
//! thread blocks only in `poll`, asking to read a peer only while its pipe has room and
//! the exchange wants its bytes: a server streaming a huge FETCH while the client streams
//! a huge APPEND can fill both buffers but never deadlock, because each direction drains
//! on its own.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::metrics::{self, Metric};
use crate::net::transport::Transport;
use crate::session::exchange::{Exchange, Out, Stop, Toward};
use crate::session::{End, Host};

/// Size of each direction's buffer while data flows; released when the pipe is empty.
const BUF_SIZE: usize = 64 * 1024;

/// How long an empty pipe keeps its buffer before giving it back.
const BUFFER_LINGER: Duration = Duration::from_secs(1);

/// How often a running session's byte counts go to the metrics (IMAP sessions last
/// hours: counting only at their end would hide the traffic of every open one).
const METER_EVERY: Duration = Duration::from_secs(5);

/// Byte counts of a relay, for the session log.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// Bytes read from the client.
    pub from_client: u64,
    /// Bytes written to the client.
    pub to_client: u64,
}

/// One direction's buffer, filled from one socket and drained into the other.
/// Invariant: `start <= framed <= end <= buf.len()`: `start..framed` was framed by the
/// exchange and waits to be written or skipped, `framed..end` was read but not framed.
struct Pipe {
    buf: Vec<u8>,
    start: usize,
    framed: usize,
    end: usize,
    /// The source reached end of file.
    eof: bool,
    /// The source may hold data that poll cannot see: TLS plaintext rustls already
    /// decrypted, or more socket data after a read that filled the buffer.
    maybe_more: bool,
    /// The last read filled all the free space: a bulk transfer is under way.
    bulk: bool,
}

impl Pipe {
    fn new(initial: Vec<u8>) -> Pipe {
        let mut pipe = Pipe {
            buf: Vec::new(),
            start: 0,
            framed: 0,
            end: 0,
            eof: false,
            maybe_more: false,
            bulk: false,
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
        // TLS and inflate hold bytes that poll cannot see: read again until they are out.
        self.maybe_more = n > 0 && (n == room || src.is_tls() || src.is_inflating());
        self.bulk = n == room;
        Ok(n)
    }

    /// The bytes read and not framed yet.
    fn unframed(&self) -> &[u8] {
        &self.buf[self.framed..self.end]
    }

    /// Takes the bytes read and not framed yet out of the buffer.
    fn take_unframed(&mut self) -> Vec<u8> {
        let rest = self.buf[self.framed..self.end].to_vec();
        self.end = self.framed;
        if self.start == self.end {
            self.start = 0;
            self.framed = 0;
            self.end = 0;
        }
        rest
    }

    /// `n` framed bytes at the front were written or dropped.
    fn free(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.framed = 0;
            self.end = 0;
        }
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
    exchange: Exchange,
    /// The client's compression could not be started.
    inflate_failed: Option<String>,
    /// The metrics' byte counters, when this relay feeds them (`Relay::metered`).
    meter: Option<Meter>,
}

/// What of a relay's byte counts the metrics have, and since when.
struct Meter {
    /// The listener label.
    listener: String,
    done: Counters,
    at: Instant,
}

impl Relay {
    /// A relay over two connected sockets, starting with bytes each side already sent.
    pub fn new(
        client: Transport,
        backend: Transport,
        from_client: Vec<u8>,
        from_backend: Vec<u8>,
        idle_timeout: Duration,
        exchange: Exchange,
    ) -> io::Result<Relay> {
        client.set_nonblocking(true)?;
        backend.set_nonblocking(true)?;
        Ok(Relay {
            client,
            backend,
            c2s: Pipe::new(from_client),
            s2c: Pipe::new(from_backend),
            idle_timeout,
            counters: Counters::default(),
            exchange,
            inflate_failed: None,
            meter: None,
        })
    }

    /// Adds the bytes relayed to the metrics of `listener` while the session runs (every
    /// [`METER_EVERY`] with traffic) and the rest at its end: all of `run`'s counts.
    pub fn metered(mut self, listener: &str) -> Relay {
        let meter =
            Meter { listener: listener.into(), done: Counters::default(), at: Instant::now() };
        self.meter = Some(meter);
        self
    }

    /// Adds what the metrics do not have yet, at most every [`METER_EVERY`] unless `now`.
    fn meter(&mut self, host: &dyn Host, now: bool) {
        let Some(m) = &mut self.meter else { return };
        if !now && m.at.elapsed() < METER_EVERY {
            return;
        }
        m.at = Instant::now();
        let from = self.counters.from_client.saturating_sub(m.done.from_client);
        let to = self.counters.to_client.saturating_sub(m.done.to_client);
        if from == 0 && to == 0 {
            return;
        }
        metrics::add(Metric::BytesFromClients, &[&m.listener], from);
        metrics::add(Metric::BytesToClients, &[&m.listener], to);
        m.done = self.counters;
        host.counted();
    }

    /// Relays until one side ends the session; returns how it ended and the byte counts.
    pub fn run(mut self, host: &dyn Host) -> (End, Counters) {
        let end = self.run_loop(host);
        self.exchange.finish();
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
        self.meter(host, true);
        (end, self.counters)
    }

    fn run_loop(&mut self, host: &dyn Host) -> End {
        let mut last_activity = Instant::now();
        loop {
            self.frame();
            if let Some(why) = self.inflate_failed.take() {
                return End::ClientError(format!("COMPRESS: {why}"));
            }
            self.exchange.on_time(Instant::now());
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
            self.meter(host, false);
        }
    }

    /// Hands new bytes of both directions to the exchange. A server response can release
    /// held client bytes (a `+` or a tagged answer), so this repeats until neither moves.
    fn frame(&mut self) {
        loop {
            let now = Instant::now();
            let c = self.exchange.client_input(self.c2s.unframed(), now);
            self.c2s.framed += c;
            if self.exchange.take_client_inflate() {
                // The client's COMPRESS: what it sent past that line is deflate.
                let rest = self.c2s.take_unframed();
                if let Err(e) = self.client.start_inflate(&rest) {
                    self.inflate_failed = Some(e.to_string());
                }
            }
            let s = self.exchange.server_input(self.s2c.unframed(), now);
            self.s2c.framed += s;
            if c == 0 && s == 0 {
                return;
            }
        }
    }

    /// Writes what is ready in both directions, without blocking.
    fn write_out(&mut self) -> Result<(), End> {
        match pump(&mut self.exchange, Toward::Client, &mut self.s2c, &mut self.client) {
            Ok(n) => self.counters.to_client += n as u64,
            Err(e) => return Err(End::ClientError(e.to_string())),
        }
        pump(&mut self.exchange, Toward::Backend, &mut self.c2s, &mut self.backend)
            .map(drop)
            .map_err(|e| End::BackendClosed(format!("write failed: {e}")))
    }

    /// Room to read from the client: buffer space, and the exchange wants its bytes.
    fn client_room(&self) -> bool {
        self.c2s.has_room() && self.exchange.wants_client_input()
    }

    fn backend_room(&self) -> bool {
        self.s2c.has_room() && self.exchange.wants_server_input()
    }

    /// Decides whether the session is over, once what can be written was written.
    fn finished(&mut self) -> Option<End> {
        let client_flushed = self.exchange.flushed(Toward::Client);
        if let Some(stop) = self.exchange.stop() {
            return client_flushed.then(|| match stop {
                Stop::Limit(limit) => End::Limit(limit.clone()),
                Stop::Aborted => End::Aborted,
                Stop::Backend(why) => End::BackendClosed(why.clone()),
            });
        }
        let closing = self.exchange.closing();
        if self.s2c.eof && client_flushed {
            if closing {
                return Some(End::Logout);
            }
            if self.exchange.server_bye() {
                return Some(End::BackendBye);
            }
            return Some(End::BackendClosed("closed the connection".into()));
        }
        // What still waits for the backend may wait for it forever (a `+`): a client
        // that closed needs only what could be written.
        if self.c2s.eof && !self.exchange.writable(Toward::Backend) {
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
        if self.exchange.writable(Toward::Client) || self.client.wants_write() {
            client_want |= PollFlags::POLLOUT;
        }
        if self.backend_room() {
            backend_want |= PollFlags::POLLIN;
        }
        if self.exchange.writable(Toward::Backend) || self.backend.wants_write() {
            backend_want |= PollFlags::POLLOUT;
        }
        // Data poll cannot see is read at once, without waiting.
        let ready_now = (self.c2s.maybe_more && self.client_room())
            || (self.s2c.maybe_more && self.backend_room());
        let rule_deadline = self.exchange.deadline();
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

    /// Best effort `* BYE` to the client, only between two responses (inside one it
    /// would corrupt the stream; then closing is the only honest signal).
    fn say_bye(&mut self, bye: &str) {
        if !self.exchange.at_client_boundary() {
            return;
        }
        let _ = self.client.set_nonblocking(false);
        let _ = self.client.set_write_timeout(Some(Duration::from_secs(5)));
        if self.client.write_all(bye.as_bytes()).and_then(|()| self.client.flush()).is_ok() {
            self.counters.to_client += bye.len() as u64;
        }
    }
}

/// Writes what the exchange says toward `dst`: input bytes from `src`'s buffer, skips
/// over input bytes, imapgate's own bytes; until done or the socket is full. Returns the
/// bytes written.
fn pump(ex: &mut Exchange, to: Toward, src: &mut Pipe, dst: &mut Transport) -> io::Result<usize> {
    let mut total = 0;
    loop {
        let dropped = ex.dropped(to);
        src.free(dropped);
        let (written, from_input) = match ex.out(to) {
            Out::Nothing => break,
            Out::Skip(n) => {
                src.free(n);
                ex.wrote(to, n);
                continue;
            }
            Out::Input(n) => (dst.write(&src.buf[src.start..src.start + n]), true),
            Out::Bytes(bytes) => (dst.write(bytes), false),
            Out::StartDeflate => {
                // Everything written so far went out plain (the COMPRESS answer last).
                dst.flush_tls()?;
                dst.start_deflate()?;
                ex.wrote(to, 0);
                continue;
            }
        };
        match written {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                if from_input {
                    src.free(n);
                }
                ex.wrote(to, n);
                total += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    match dst.flush_tls() {
        Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
        _ => Ok(total),
    }
}

fn readable(ev: PollFlags) -> bool {
    ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
}

fn retry(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
}
