//! The sans-I/O IMAP stream framer.
//!
//! One `Framer` follows one direction of an IMAP conversation and tells where its messages
//! begin and end: a message is a line, or a line that ends in a literal announcement
//! (`{n}`, `{n+}`, `~{n}`, `~{n+}`), the n raw bytes of the literal, and the rest of the
//! message, which may announce further literals (RFC 9051 §4.3, RFC 7888, RFC 3516).
//!
//! It never copies or owns the stream: it scans the bytes it is shown and keeps only a
//! bounded amount of state (the head of the current message and the last bytes of the
//! current line), so the relay can forward the very buffer it read and literal payloads
//! cost one subtraction per chunk. No I/O happens here.
//!
//! A client's synchronizing literal is sent only after the server's `+`; if the server
//! answers the command instead, the literal never comes (RFC 9051 §7.5). The client-side
//! framer therefore stops at such an announcement (`Framer::is_waiting`) and takes no
//! further bytes until it is told the server's decision (`grant` or `refuse`). The same
//! wait serves commands whose next line belongs to the server's continuation (IDLE's
//! `DONE`, AUTHENTICATE responses): see `wait_for_continuation`.

/// Bytes of each message's first line kept for inspection (tag, command or status).
pub const HEAD_MAX: usize = 128;

/// Enough for `~{` + 20 digits + `+}` + CRLF and the byte before the announcement.
const TAIL_MAX: usize = 32;

/// The largest literal the framer accepts; larger announcements are not literals to it (no
/// real server accepts them either).
pub const LITERAL_MAX: u64 = 1 << 48;

/// Which peer produces the stream being framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Client to server: commands; synchronizing literals wait for the server's `+`.
    Client,
    /// Server to client: responses; every literal follows at once.
    Server,
}

/// A literal announced at the end of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Literal {
    /// Number of raw bytes that follow.
    pub size: u64,
    /// `{n}`: the client must wait for the server's continuation request.
    pub sync: bool,
    /// `~{n}`: BINARY literal (RFC 3516); may contain NUL.
    pub binary: bool,
}

/// What the framer found at the end of the bytes it consumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A line ended. With `Some(literal)`, the message continues with that literal; with
    /// `None`, the message is complete.
    LineEnd(Option<Literal>),
    /// The first line of the message is longer than `HEAD_MAX`; the head is complete.
    LongLine,
    /// The current literal's last byte was consumed; the message goes on with a line.
    LiteralEnd,
}

/// Result of one `Framer::advance` call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// Bytes of the input that were framed (a prefix of it).
    pub consumed: usize,
    /// What happened at the end of the consumed bytes, if anything.
    pub event: Option<Event>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Line,
    Literal {
        remaining: u64,
    },
    /// Waiting for the server: `Some(literal)` after a synchronizing literal announcement,
    /// `None` after a command whose continuation line needs the server's `+` first.
    Waiting {
        literal: Option<Literal>,
    },
}

/// What follows a granted continuation line (IDLE's `DONE`, an AUTHENTICATE response).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterContinuation {
    /// One line, then commands again (IDLE: RFC 2177 allows only `DONE`).
    Command,
    /// One line, then wait for the server again (AUTHENTICATE: RFC 9051 §6.2.2).
    Wait,
}

/// Frames one direction of an IMAP stream. See the module documentation.
#[derive(Clone, Debug)]
pub struct Framer {
    side: Side,
    state: State,
    /// The current line is the first line of a message (holds a tag).
    first_line: bool,
    line_len: u64,
    head: [u8; HEAD_MAX],
    head_len: usize,
    tail: [u8; TAIL_MAX],
    tail_len: usize,
    /// Set while the current line is a granted continuation line.
    continuation: Option<AfterContinuation>,
    /// What a pending `wait_for_continuation` leads to once granted.
    pending_continuation: AfterContinuation,
}

impl Framer {
    /// A framer at the start of a stream.
    pub fn new(side: Side) -> Framer {
        Framer {
            side,
            state: State::Line,
            first_line: true,
            line_len: 0,
            head: [0; HEAD_MAX],
            head_len: 0,
            tail: [0; TAIL_MAX],
            tail_len: 0,
            continuation: None,
            pending_continuation: AfterContinuation::Command,
        }
    }

    /// Frames a prefix of `data` and reports the first event in it. Call again with the
    /// rest; `consumed == 0` with no event means the framer is waiting for the server.
    pub fn advance(&mut self, data: &[u8]) -> Step {
        match self.state {
            State::Waiting { .. } => Step { consumed: 0, event: None },
            State::Literal { remaining } => {
                let take = remaining.min(data.len() as u64);
                let remaining = remaining - take;
                if remaining == 0 {
                    self.state = State::Line;
                    return step(take as usize, Some(Event::LiteralEnd));
                }
                self.state = State::Literal { remaining };
                step(take as usize, None)
            }
            State::Line => self.advance_line(data),
        }
    }

    fn advance_line(&mut self, data: &[u8]) -> Step {
        if self.first_line && self.line_len == 0 && !data.is_empty() {
            self.head_len = 0;
        }
        let newline = data.iter().position(|&b| b == b'\n');
        let segment = &data[..newline.map_or(data.len(), |i| i + 1)];
        let head_was_full = self.head_len == HEAD_MAX;
        if self.first_line {
            let room = HEAD_MAX - self.head_len;
            let n = room.min(segment.len());
            self.head[self.head_len..self.head_len + n].copy_from_slice(&segment[..n]);
            self.head_len += n;
        }
        self.push_tail(segment);
        self.line_len += segment.len() as u64;
        if newline.is_none() {
            let long = self.first_line && !head_was_full && self.head_len == HEAD_MAX;
            return step(segment.len(), long.then_some(Event::LongLine));
        }
        let literal = self.announced_literal();
        self.line_len = 0;
        self.tail_len = 0;
        match literal {
            Some(lit) => {
                self.first_line = false;
                self.state = if lit.sync && self.side == Side::Client {
                    State::Waiting { literal: Some(lit) }
                } else {
                    State::Literal { remaining: lit.size }
                };
            }
            None => match self.continuation.take() {
                Some(AfterContinuation::Wait) => self.state = State::Waiting { literal: None },
                Some(AfterContinuation::Command) | None => self.first_line = true,
            },
        }
        step(segment.len(), Some(Event::LineEnd(literal)))
    }

    fn push_tail(&mut self, segment: &[u8]) {
        if segment.len() >= TAIL_MAX {
            self.tail.copy_from_slice(&segment[segment.len() - TAIL_MAX..]);
            self.tail_len = TAIL_MAX;
            return;
        }
        let keep = (TAIL_MAX - segment.len()).min(self.tail_len);
        self.tail.copy_within(self.tail_len - keep..self.tail_len, 0);
        self.tail[keep..keep + segment.len()].copy_from_slice(segment);
        self.tail_len = keep + segment.len();
    }

    /// Parses `[SP|(]["~"]{digits[+]}CRLF` at the end of the line just completed.
    fn announced_literal(&self) -> Option<Literal> {
        let line = &self.tail[..self.tail_len];
        let line = line.strip_suffix(b"\n")?;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let eol_len = self.tail_len - line.len();
        let line = line.strip_suffix(b"}")?;
        let (line, sync) = match line.strip_suffix(b"+") {
            Some(rest) => (rest, false),
            None => (line, true),
        };
        let digits_start = line.iter().rposition(|b| !b.is_ascii_digit())?;
        let digits = &line[digits_start + 1..];
        if line[digits_start] != b'{' || digits.is_empty() || digits.len() > 15 {
            return None;
        }
        let size = digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if size > LITERAL_MAX {
            return None;
        }
        let before = &line[..digits_start];
        let (before, binary) = match before.strip_suffix(b"~") {
            Some(rest) => (rest, true),
            None => (before, false),
        };
        // A literal is an argument: it follows a space or an opening parenthesis, or opens
        // a line segment that follows another literal. `x{5}` is not an announcement.
        let announcement_len = usize::from(binary) + digits.len() + usize::from(!sync) + 2;
        let starts_segment =
            !self.first_line && self.line_len == (announcement_len + eol_len) as u64;
        let separated = matches!(before.last(), Some(b' ' | b'(')) || starts_segment;
        separated.then_some(Literal { size, sync, binary })
    }

    /// The first line of the current (or just completed) message, up to `HEAD_MAX` bytes,
    /// without its line ending.
    pub fn head(&self) -> &[u8] {
        let head = &self.head[..self.head_len];
        let head = head.strip_suffix(b"\n").unwrap_or(head);
        head.strip_suffix(b"\r").unwrap_or(head)
    }

    /// True between messages: the next byte starts a new message.
    pub fn at_message_start(&self) -> bool {
        self.state == State::Line && self.first_line && self.line_len == 0
    }

    /// True while the current line is the first line of its message.
    pub fn in_first_line(&self) -> bool {
        self.state == State::Line && self.first_line
    }

    /// True while the framer waits for the server to grant or refuse a continuation.
    pub fn is_waiting(&self) -> bool {
        matches!(self.state, State::Waiting { .. })
    }

    /// Client side: the command just framed continues with a line that the client sends
    /// only after the server's `+` (IDLE's `DONE`, AUTHENTICATE's responses). Call right
    /// after the command's `LineEnd(None)`.
    pub fn wait_for_continuation(&mut self, then: AfterContinuation) {
        if self.at_message_start() {
            self.pending_continuation = then;
            self.state = State::Waiting { literal: None };
        }
    }

    /// The server sent a continuation request: the awaited literal or line may come.
    pub fn grant(&mut self) {
        if let State::Waiting { literal } = self.state {
            self.state = match literal {
                Some(lit) => State::Literal { remaining: lit.size },
                None => {
                    self.first_line = false;
                    self.continuation = Some(self.pending_continuation);
                    State::Line
                }
            };
        }
    }

    /// The server answered the waiting command: no literal or continuation comes, and the
    /// next byte starts a new command.
    pub fn refuse(&mut self) {
        if self.is_waiting() {
            self.state = State::Line;
            self.first_line = true;
            self.line_len = 0;
            self.continuation = None;
        }
    }
}

fn step(consumed: usize, event: Option<Event>) -> Step {
    Step { consumed, event }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames `input` fed in pieces of the given sizes and returns (offset, event) pairs.
    fn frame_in_pieces(side: Side, input: &[u8], cuts: &[usize]) -> Vec<(usize, Event)> {
        let mut framer = Framer::new(side);
        let mut events = Vec::new();
        let mut offset = 0;
        let mut bounds: Vec<usize> = cuts.to_vec();
        bounds.push(input.len());
        let mut start = 0;
        for end in bounds {
            let mut chunk = &input[start..end];
            while !chunk.is_empty() {
                let s = framer.advance(chunk);
                offset += s.consumed;
                chunk = &chunk[s.consumed..];
                if let Some(e) = s.event {
                    if e != Event::LongLine {
                        events.push((offset, e));
                    }
                }
                if s.consumed == 0 && s.event.is_none() {
                    framer.grant();
                }
            }
            start = end;
        }
        events
    }

    fn lit(size: u64, sync: bool, binary: bool) -> Event {
        Event::LineEnd(Some(Literal { size, sync, binary }))
    }

    const END: Event = Event::LineEnd(None);

    #[test]
    fn every_literal_form_is_recognised() {
        let cases: &[(&[u8], Event)] = &[
            (b"A LOGIN {3}\r\n", lit(3, true, false)),
            (b"A LOGIN {3+}\r\n", lit(3, false, false)),
            (b"A APPEND x ~{10}\r\n", lit(10, true, true)),
            (b"A APPEND x ~{10+}\r\n", lit(10, false, true)),
            (b"A APPEND x ({0}\r\n", lit(0, true, false)),
            (b"A LOGIN x{3}\r\n", END),
            (b"A LOGIN \"{3}\"\r\n", END),
            (b"A LOGIN {}\r\n", END),
            (b"A LOGIN {3a}\r\n", END),
            (b"A LOGIN {99999999999999999}\r\n", END),
        ];
        for (input, want) in cases {
            let events = frame_in_pieces(Side::Client, input, &[]);
            assert_eq!(events[0], (input.len(), *want), "{}", input.escape_ascii());
        }
    }

    #[test]
    fn server_literals_never_wait() {
        let input = b"* 1 FETCH (BODY[] {5}\r\nhello)\r\nA OK done\r\n";
        let events = frame_in_pieces(Side::Server, input, &[]);
        assert_eq!(
            events,
            vec![(23, lit(5, true, false)), (28, Event::LiteralEnd), (31, END), (input.len(), END)]
        );
    }

    const SCRIPT: &[u8] = b"a1 LOGIN {5}\r\nalice {6+}\r\nsec\r\nt\r\n\
        a2 APPEND INBOX ~{4}\r\n\x00\r\n\n ({3+}\r\nabc)\r\n\
        a3 NOOP\na4 SELECT \"x{2}\"\r\n";

    fn script_events() -> Vec<(usize, Event)> {
        frame_in_pieces(Side::Client, SCRIPT, &[])
    }

    #[test]
    fn a_script_frames_into_the_expected_messages() {
        let ends: Vec<usize> =
            script_events().iter().filter(|(_, e)| *e == END).map(|(o, _)| *o).collect();
        let a2 = SCRIPT.windows(3).position(|w| w == b"a2 ").unwrap();
        let a3 = SCRIPT.windows(3).position(|w| w == b"a3 ").unwrap();
        let a4 = SCRIPT.windows(3).position(|w| w == b"a4 ").unwrap();
        assert_eq!(ends, vec![a2, a3, a4, SCRIPT.len()]);
    }

    #[test]
    fn splitting_at_every_byte_boundary_gives_the_same_frames() {
        let whole = script_events();
        for cut in 0..=SCRIPT.len() {
            assert_eq!(frame_in_pieces(Side::Client, SCRIPT, &[cut]), whole, "cut {cut}");
        }
        for a in 0..=SCRIPT.len() {
            for b in a..=SCRIPT.len() {
                assert_eq!(frame_in_pieces(Side::Client, SCRIPT, &[a, b]), whole);
            }
        }
    }

    #[test]
    fn byte_at_a_time_gives_the_same_frames() {
        let cuts: Vec<usize> = (1..SCRIPT.len()).collect();
        assert_eq!(frame_in_pieces(Side::Client, SCRIPT, &cuts), script_events());
    }

    #[test]
    fn a_synchronizing_literal_waits_for_the_server() {
        let mut f = Framer::new(Side::Client);
        let input = b"A APPEND x {5}\r\nB DELETE y\r\n";
        let s = f.advance(input);
        assert_eq!(s, step(16, Some(lit(5, true, false))));
        assert!(matches!(f.state, State::Waiting { literal: Some(_) }));
        assert_eq!(f.advance(&input[16..]), step(0, None));
        // The server answered "A NO": no literal comes, B is a new command.
        f.refuse();
        assert!(f.at_message_start());
        assert_eq!(f.advance(&input[16..]), step(12, Some(END)));
        assert_eq!(f.head(), b"B DELETE y");
    }

    #[test]
    fn a_granted_literal_hides_its_bytes_from_command_framing() {
        let mut f = Framer::new(Side::Client);
        let input = b"A APPEND x {12}\r\nB DELETE y\r\n\r\n";
        let s = f.advance(input);
        f.grant();
        let s2 = f.advance(&input[s.consumed..]);
        assert_eq!(s2, step(12, Some(Event::LiteralEnd)));
        let s3 = f.advance(&input[s.consumed + 12..]);
        assert_eq!(s3, step(2, Some(END)));
        assert_eq!(f.head(), b"A APPEND x {12}");
    }

    #[test]
    fn idle_waits_then_done_is_a_continuation_line() {
        let mut f = Framer::new(Side::Client);
        let input = b"A IDLE\r\nDONE\r\nB NOOP\r\n";
        assert_eq!(f.advance(input), step(8, Some(END)));
        f.wait_for_continuation(AfterContinuation::Command);
        assert!(f.is_waiting());
        assert_eq!(f.advance(&input[8..]), step(0, None));
        f.grant();
        assert!(!f.in_first_line());
        assert_eq!(f.advance(&input[8..]), step(6, Some(END)));
        // The command pipelined after DONE is framed as a command, with its own head.
        assert!(f.at_message_start());
        assert_eq!(f.advance(&input[14..]), step(8, Some(END)));
        assert_eq!(f.head(), b"B NOOP");
    }

    #[test]
    fn authenticate_waits_for_the_server_before_every_response_line() {
        let mut f = Framer::new(Side::Client);
        let input = b"A AUTHENTICATE X\r\nAAAA\r\nBBBB\r\n";
        assert_eq!(f.advance(input), step(18, Some(END)));
        f.wait_for_continuation(AfterContinuation::Wait);
        f.grant();
        assert_eq!(f.advance(&input[18..]), step(6, Some(END)));
        assert_eq!(f.advance(&input[24..]), step(0, None));
        // The server's tagged answer ends the exchange: BBBB is a command line now.
        f.refuse();
        assert_eq!(f.advance(&input[24..]), step(6, Some(END)));
        assert_eq!(f.head(), b"BBBB");
    }

    #[test]
    fn a_long_first_line_reports_its_head_once() {
        let mut f = Framer::new(Side::Client);
        let mut line = b"A UID FETCH ".to_vec();
        line.extend(std::iter::repeat_n(b'1', 300));
        let s = f.advance(&line[..100]);
        assert_eq!(s, step(100, None));
        let s = f.advance(&line[100..]);
        assert_eq!(s, step(line.len() - 100, Some(Event::LongLine)));
        assert_eq!(f.head().len(), HEAD_MAX);
        assert_eq!(f.advance(b"\r\n"), step(2, Some(END)));
    }

    /// Random streams of literal syntax: consumed whole or byte by byte, the frames are
    /// the same, and the framer stalls only while it waits for the server.
    #[test]
    fn arbitrary_bytes_frame_the_same_whole_or_byte_by_byte() {
        let mut seed = 0x1234_5678u32;
        let mut events = 0;
        for _ in 0..2000 {
            let mut data = Vec::new();
            for _ in 0..64 {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let alphabet = b"{}~+0123\r\n A";
                data.push(alphabet[seed as usize % alphabet.len()]);
            }
            for side in [Side::Client, Side::Server] {
                let whole = frame_in_pieces(side, &data, &[]);
                let cuts: Vec<usize> = (1..data.len()).collect();
                assert_eq!(frame_in_pieces(side, &data, &cuts), whole, "{}", data.escape_ascii());
                events += whole.len();
            }
            let mut f = Framer::new(Side::Client);
            let mut rest = &data[..];
            while !rest.is_empty() {
                let s = f.advance(rest);
                assert!(s.consumed <= rest.len());
                if s.consumed == 0 && s.event.is_none() {
                    assert!(f.is_waiting(), "a stall is a wait for the server");
                    f.grant();
                }
                rest = &rest[s.consumed..];
            }
        }
        assert!(events > 10_000, "the generator must produce frames ({events})");
    }
}
