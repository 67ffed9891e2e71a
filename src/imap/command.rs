//! Client commands: a complete tokenizer (atoms, quoted strings, literals, lists, FETCH
//! sections) and the canonical serialization imapgate sends to backends.
//!
//! imap-proto parses responses only, so commands are tokenized here. Command names are
//! compared ASCII-case-insensitively: `login`, `Login` and `LOGIN` are one command.
//!
//! The serialization is the other half of one security decision: in a session with rules,
//! a backend receives only what `encode` makes of what `parse` read and the rules judged,
//! never the client's bytes. `encode` writes one form for each token: single spaces,
//! quoted strings re-escaped, every literal synchronizing (`{n}`, `~{n}`), lines ending in
//! CRLF, so no backend can find a command boundary, a literal or an argument the
//! tokenizer did not (see SECURITY.md).

use std::fmt;

use zeroize::Zeroize;

/// One argument of a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    /// An atom, in canonical form (`NIL` is an atom too; callers decide what it means).
    /// A FETCH section (`BODY.PEEK[HEADER.FIELDS (From To)]<0.100>`) is one atom.
    Atom(Vec<u8>),
    /// A string sent as a quoted string, or built by imapgate: sent quoted when it is short
    /// printable ASCII, else as a literal.
    String(Vec<u8>),
    /// A string the client sent as a literal (`binary`: `~{n}`, RFC 3516); sent as a
    /// synchronizing literal of the same kind again, since some grammar positions (APPEND
    /// message data) take only literals.
    Literal {
        /// The literal's bytes.
        data: Vec<u8>,
        /// `~{n}`.
        binary: bool,
    },
    /// A literal too large to hold, streamed from client to backend; only its size is known.
    Streamed {
        /// Announced size.
        size: u64,
        /// `~{n}`.
        binary: bool,
    },
    /// A parenthesised list.
    List(Vec<Arg>),
}

impl Arg {
    /// The bytes of an atom or a string (an astring, RFC 9051 §9), none for a list or a
    /// streamed literal.
    pub fn astring(&self) -> Option<&[u8]> {
        match self {
            Arg::Atom(b) | Arg::String(b) | Arg::Literal { data: b, .. } => Some(b),
            Arg::List(_) | Arg::Streamed { .. } => None,
        }
    }

    /// The bytes of a string (quoted or literal), none for atoms and lists.
    pub fn string(&self) -> Option<&[u8]> {
        match self {
            Arg::String(b) | Arg::Literal { data: b, .. } => Some(b),
            _ => None,
        }
    }

    /// True for the atom `NIL` in any case.
    pub fn is_nil(&self) -> bool {
        matches!(self, Arg::Atom(a) if a.eq_ignore_ascii_case(b"NIL"))
    }

    /// True for an atom equal to `word`, in any case.
    pub fn is_atom(&self, word: &str) -> bool {
        matches!(self, Arg::Atom(a) if a.eq_ignore_ascii_case(word.as_bytes()))
    }

    /// The size of a literal (held or streamed).
    pub fn literal_size(&self) -> Option<u64> {
        match self {
            Arg::Literal { data, .. } => Some(data.len() as u64),
            Arg::Streamed { size, .. } => Some(*size),
            _ => None,
        }
    }
}

/// A tokenized command: tag, upper-cased name and arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The client's tag, as sent.
    pub tag: String,
    /// The command name in upper case (`UID` is a name; its sub-command is an argument).
    pub name: String,
    /// The arguments after the name.
    pub args: Vec<Arg>,
    /// For a prefix (`parse_prefix`): how many lists are still open at its end.
    pub open_lists: usize,
}

impl Command {
    /// Zeroes every argument's bytes: a LOGIN or AUTHENTICATE carries credentials, which
    /// must not stay in freed memory.
    pub fn wipe(&mut self) {
        fn wipe_args(args: &mut [Arg]) {
            for arg in args {
                match arg {
                    Arg::Atom(b) | Arg::String(b) | Arg::Literal { data: b, .. } => b.zeroize(),
                    Arg::List(items) => wipe_args(items),
                    Arg::Streamed { .. } => {}
                }
            }
        }
        wipe_args(&mut self.args);
    }
}

/// Why a command could not be tokenized; `tag` is set when the tag was readable, so the
/// answer can be a tagged BAD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// The tag, when it could be read.
    pub tag: Option<String>,
    /// What is wrong, for the client.
    pub reason: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason)
    }
}

/// The tag and upper-cased command name of a command head (`A1 uid fetch ...` gives
/// `("A1", "UID FETCH")`), or `None` when the head holds no name.
pub fn tag_and_name(head: &[u8]) -> Option<(&[u8], String)> {
    let line_end = head.iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(head.len());
    let mut words = head[..line_end].split(|&b| b == b' ');
    let tag = words.next().filter(|t| !t.is_empty())?;
    let name = words.next().filter(|n| !n.is_empty())?;
    let mut upper = String::from_utf8_lossy(name).to_ascii_uppercase();
    if upper == "UID" {
        if let Some(sub) = words.next() {
            upper.push(' ');
            upper.push_str(&String::from_utf8_lossy(sub).to_ascii_uppercase());
        }
    }
    Some((tag, upper))
}

/// What a command does to the byte stream after it, beyond its own bytes: the one place
/// both relay modes learn it from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// IDLE (RFC 2177): after the server's `+`, one line (DONE) ends it.
    Idle,
    /// AUTHENTICATE: response lines follow, each after the server's `+`.
    Authenticate,
    /// LOGOUT: the connection closes after the answer.
    Logout,
    /// STARTTLS: the stream would change under the framer; refused after login
    /// (`stream_change_refusal`).
    ChangesStream,
    /// COMPRESS (RFC 4978): imapgate answers it itself (`compress_answer`), and the
    /// client's stream is deflate from the end of this line on.
    Compress,
    /// Nothing beyond the command.
    None,
}

impl Effect {
    /// The effect of the command with this upper-case name.
    pub fn of(name: &str) -> Effect {
        match name {
            "IDLE" => Effect::Idle,
            "AUTHENTICATE" => Effect::Authenticate,
            "LOGOUT" => Effect::Logout,
            "STARTTLS" => Effect::ChangesStream,
            "COMPRESS" => Effect::Compress,
            _ => Effect::None,
        }
    }
}

/// The answer to a command that would change the stream after login.
pub fn stream_change_refusal(name: &str) -> String {
    format!("NO [CANNOT] {name} is not available after login.")
}

/// imapgate's answer to `COMPRESS mechanism` from a client that was shown COMPRESS=DEFLATE:
/// `Ok` (the answer text after the tag) when the client's stream is deflate from here
/// on, `Err` with the refusal. `active`: compression is already on.
pub fn compress_answer(
    mechanism: Option<&[u8]>,
    active: bool,
) -> Result<&'static str, &'static str> {
    match mechanism {
        _ if active => Err("NO [COMPRESSIONACTIVE] DEFLATE is already active."),
        Some(m) if m.eq_ignore_ascii_case(b"DEFLATE") => Ok("OK DEFLATE active."),
        _ => Err("BAD Unknown compression mechanism (DEFLATE is the one)."),
    }
}

/// True for bytes that may appear in a tag or atom: RFC 9051 ATOM-CHAR, plus `]` which
/// ASTRING-CHAR allows. No 8-bit byte: Dovecot's lexer refuses them in atoms, and a
/// lexical error inside APPEND makes Dovecot 2.3 run the rest of the line as a command.
fn is_atom_byte(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !matches!(b, b'(' | b')' | b'{' | b'"' | b'\\' | b'%' | b'*')
}

/// Atom bytes of a pre-login command: 8-bit bytes too, which real clients put into user
/// names (imapgate reads those commands itself and never forwards them).
fn is_login_atom_byte(b: u8) -> bool {
    is_atom_byte(b) || b >= 0x80
}

/// Bytes of an argument atom: atom bytes and the LIST wildcards.
fn is_arg_atom_byte(b: u8) -> bool {
    is_atom_byte(b) || b == b'%' || b == b'*'
}

/// Atoms that take a FETCH section (`BODY[...]`), whose brackets may hold spaces and a
/// list of header names (RFC 9051 §6.4.5, RFC 3516).
const SECTION_ATOMS: &[&[u8]] = &[b"BODY", b"BODY.PEEK", b"BINARY", b"BINARY.PEEK", b"BINARY.SIZE"];

/// Nested lists deeper than this are refused, so a hostile client cannot recurse us deep.
const MAX_DEPTH: usize = 8;

/// Arguments (at any depth) one command may hold: bounds the memory one command costs.
pub const MAX_ARGS: usize = 4096;

/// Tokenizes a complete command message: its lines and the raw bytes of its literals, as
/// the framer delimited them. The final CRLF (or LF) may be present or not.
#[cfg(any(test, fuzzing))]
pub fn parse(message: &[u8]) -> Result<Command, ParseError> {
    parse_with(message, &[], false, false)
}

/// Like `parse`, for a command imapgate answers itself before login: atoms may hold 8-bit
/// bytes (user names).
pub fn parse_pre_login(message: &[u8]) -> Result<Command, ParseError> {
    let mut p = Parser::new(message, &[], false);
    p.eight_bit_atoms = true;
    p.command(false)
}

/// Tokenizes a command whose streamed literals are absent from `message`: `elided` lists
/// the offsets right after the announcements (`{n}CRLF`) of those literals. With
/// `partial`, `message` is a prefix that may end after any argument, inside open lists
/// (`Command::open_lists` says how many).
pub fn parse_prefix(
    message: &[u8],
    elided: &[usize],
    partial: bool,
) -> Result<Command, ParseError> {
    parse_with(message, elided, partial, false)
}

/// Tokenizes untagged server data (`* LIST (\\HasNoChildren) "/" INBOX`): the tag is `*`
/// and the name is the first word after it.
pub fn parse_untagged(message: &[u8]) -> Result<Command, ParseError> {
    parse_with(message, &[], false, true)
}

fn parse_with(
    message: &[u8],
    elided: &[usize],
    partial: bool,
    untagged: bool,
) -> Result<Command, ParseError> {
    Parser::new(message, elided, partial).command(untagged)
}

impl<'a> Parser<'a> {
    fn new(input: &'a [u8], elided: &'a [usize], partial: bool) -> Parser<'a> {
        Parser { input, pos: 0, elided, partial, args: 0, open: 0, eight_bit_atoms: false }
    }

    fn command(mut self, untagged: bool) -> Result<Command, ParseError> {
        let p = &mut self;
        let message = p.input;
        let tag = if untagged && message.starts_with(b"* ") {
            p.pos = 1;
            Some(&b"*"[..])
        } else {
            let eight = p.eight_bit_atoms;
            p.atom_with(|b| {
                (if eight { is_login_atom_byte(b) } else { is_atom_byte(b) }) && b != b'+'
            })
        };
        let Some(tag) = tag else {
            return Err(ParseError { tag: None, reason: "Missing or invalid tag" });
        };
        let tag = String::from_utf8_lossy(tag).into_owned();
        let fail = |reason| ParseError { tag: Some(tag.clone()), reason };
        if !p.eat(b' ') {
            return Err(fail("Missing command name"));
        }
        let name =
            p.atom_with(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        let Some(name) = name else {
            return Err(fail("Invalid command name"));
        };
        let name = String::from_utf8_lossy(name).to_ascii_uppercase();
        let mut args = Vec::new();
        while p.eat(b' ') {
            match p.arg(0) {
                Ok(Parsed::Done(arg)) => args.push(arg),
                Ok(Parsed::Open(arg)) => {
                    args.push(arg);
                    return Ok(Command { tag, name, args, open_lists: p.open });
                }
                Err(reason) => return Err(fail(reason)),
            }
            if p.partial && p.at_end() {
                return Ok(Command { tag, name, args, open_lists: 0 });
            }
        }
        p.eat(b'\r');
        if !p.eat(b'\n') && !p.at_end() {
            return Err(fail("Unexpected characters after the arguments"));
        }
        if !p.at_end() {
            return Err(fail("Unexpected data after the command"));
        }
        Ok(Command { tag, name, args, open_lists: 0 })
    }
}

/// An argument read, or one that a prefix ended inside (a list left open).
enum Parsed {
    Done(Arg),
    Open(Arg),
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    /// Offsets right after the announcements of literals whose bytes are not in `input`.
    elided: &'a [usize],
    /// The input may end after any argument.
    partial: bool,
    /// Arguments read so far, against `MAX_ARGS`.
    args: usize,
    /// Lists open where a partial input ended.
    open: usize,
    /// Pre-login: 8-bit bytes are atom bytes.
    eight_bit_atoms: bool,
}

impl<'a> Parser<'a> {
    fn at_end(&self) -> bool {
        self.pos == self.input.len()
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        self.pos += usize::from(hit);
        hit
    }

    fn atom_with(&mut self, ok: impl Fn(u8) -> bool) -> Option<&'a [u8]> {
        let start = self.pos;
        while self.peek().is_some_and(&ok) {
            self.pos += 1;
        }
        (self.pos > start).then(|| &self.input[start..self.pos])
    }

    fn arg(&mut self, depth: usize) -> Result<Parsed, &'static str> {
        self.args += 1;
        if self.args > MAX_ARGS {
            return Err("Too many arguments");
        }
        let arg = match self.peek() {
            Some(b'"') => Arg::String(self.quoted()?),
            Some(b'{' | b'~') => self.literal()?,
            Some(b'(') => return self.list(depth),
            Some(b'\\') => {
                // A flag (`\Seen`, `\*`) or a mailbox attribute (`\HasNoChildren`).
                let start = self.pos;
                self.pos += 1;
                self.atom_with(|b| is_atom_byte(b) || b == b'*');
                Arg::Atom(self.input[start..self.pos].to_vec())
            }
            Some(b) if is_arg_atom_byte(b) || (self.eight_bit_atoms && b >= 0x80) => {
                let atom = self.atom()?;
                // Cyrus knows NIL only in upper case.
                if atom.eq_ignore_ascii_case(b"NIL") {
                    Arg::Atom(b"NIL".to_vec())
                } else {
                    Arg::Atom(atom)
                }
            }
            _ => return Err("Invalid argument"),
        };
        Ok(Parsed::Done(arg))
    }

    /// An atom, with a FETCH section in canonical form when it names one.
    fn atom(&mut self) -> Result<Vec<u8>, &'static str> {
        let start = self.pos;
        let eight = self.eight_bit_atoms;
        let byte = |b: u8| is_arg_atom_byte(b) || (eight && b >= 0x80);
        while self.peek().is_some_and(|b| byte(b) && b != b'[') {
            self.pos += 1;
        }
        let mut out = self.input[start..self.pos].to_vec();
        if self.peek() == Some(b'[') {
            if SECTION_ATOMS.iter().any(|s| out.eq_ignore_ascii_case(s)) {
                self.section(&mut out)?;
            }
            // Elsewhere `[` is an atom byte like any other (`[Gmail]/Sent`).
            let rest = self.atom_with(byte).unwrap_or_default();
            out.extend_from_slice(rest);
        }
        Ok(out)
    }

    /// `[section]` after BODY/BINARY: atoms, quoted strings and lists of them, separated
    /// by single spaces, written back canonically into `out`.
    fn section(&mut self, out: &mut Vec<u8>) -> Result<(), &'static str> {
        self.pos += 1;
        out.push(b'[');
        let mut first = true;
        while !self.eat(b']') {
            if !first && !self.eat(b' ') {
                return Err("Invalid section");
            }
            if !first {
                out.push(b' ');
            }
            first = false;
            match self.peek() {
                Some(b'(') => {
                    self.pos += 1;
                    out.push(b'(');
                    let mut first_item = true;
                    while !self.eat(b')') {
                        if !first_item && !self.eat(b' ') {
                            return Err("Invalid section");
                        }
                        if !first_item {
                            out.push(b' ');
                        }
                        first_item = false;
                        self.section_word(out)?;
                    }
                    out.push(b')');
                }
                _ => self.section_word(out)?,
            }
        }
        out.push(b']');
        Ok(())
    }

    fn section_word(&mut self, out: &mut Vec<u8>) -> Result<(), &'static str> {
        if self.peek() == Some(b'"') {
            let s = self.quoted()?;
            push_quoted(out, &s).then_some(()).ok_or("Invalid section")
        } else {
            let word = self
                .atom_with(|b| is_atom_byte(b) && b != b'[' && b != b']')
                .ok_or("Invalid section")?;
            out.extend_from_slice(word);
            Ok(())
        }
    }

    fn list(&mut self, depth: usize) -> Result<Parsed, &'static str> {
        if depth >= MAX_DEPTH {
            return Err("Lists nested too deep");
        }
        self.pos += 1;
        let mut items = Vec::new();
        if self.eat(b')') {
            return Ok(Parsed::Done(Arg::List(items)));
        }
        loop {
            match self.arg(depth + 1)? {
                Parsed::Done(arg) => items.push(arg),
                Parsed::Open(arg) => {
                    items.push(arg);
                    self.open += 1;
                    return Ok(Parsed::Open(Arg::List(items)));
                }
            }
            if self.partial && self.at_end() {
                self.open += 1;
                return Ok(Parsed::Open(Arg::List(items)));
            }
            if self.eat(b')') {
                return Ok(Parsed::Done(Arg::List(items)));
            }
            if !self.eat(b' ') {
                return Err("Missing ')' after a list");
            }
        }
    }

    fn quoted(&mut self) -> Result<Vec<u8>, &'static str> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\r' | b'\n' | 0) => return Err("Unterminated quoted string"),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => out.push(c),
                        _ => return Err("Invalid escape in quoted string"),
                    }
                }
                Some(c) => out.push(c),
            }
            self.pos += 1;
        }
    }

    fn literal(&mut self) -> Result<Arg, &'static str> {
        let binary = self.eat(b'~');
        if !self.eat(b'{') {
            return Err("Invalid literal");
        }
        let digits = self.atom_with(|b| b.is_ascii_digit()).ok_or("Invalid literal size")?;
        if digits.len() > 15 {
            return Err("Literal too large");
        }
        let size = digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        self.eat(b'+');
        if !self.eat(b'}') {
            return Err("Invalid literal");
        }
        self.eat(b'\r');
        if !self.eat(b'\n') {
            return Err("Literal announcement must end the line");
        }
        if self.elided.contains(&self.pos) {
            return Ok(Arg::Streamed { size, binary });
        }
        let end = usize::try_from(size)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|&e| e <= self.input.len())
            .ok_or("Literal shorter than announced")?;
        let data = self.input[self.pos..end].to_vec();
        self.pos = end;
        Ok(Arg::Literal { data, binary })
    }
}

/// Appends `value` to `out` as an IMAP quoted string when it is printable ASCII, else
/// returns false and appends nothing (the caller sends a literal instead).
pub fn push_quoted(out: &mut Vec<u8>, value: &[u8]) -> bool {
    if !value.iter().all(|&b| (b' '..=b'~').contains(&b)) {
        return false;
    }
    out.push(b'"');
    for &b in value {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
    true
}

/// Longest string `encode` writes as a quoted string; longer ones become literals, so no
/// line grows past what every server reads.
const QUOTED_MAX: usize = 1024;

/// A command in imapgate's serialization, ready for a backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoded {
    /// The bytes, without the data of streamed literals.
    pub bytes: Vec<u8>,
    /// Offsets right after each literal announcement: the backend's `+` must come before
    /// any byte from there on is sent.
    pub sync_points: Vec<usize>,
}

/// Writes a complete command in canonical form: `TAG NAME args CRLF`, single spaces,
/// quoted strings re-escaped, and every literal synchronizing.
pub fn encode(tag: &str, name: &str, args: &[Arg]) -> Encoded {
    encode_with(tag, name, args, None)
}

/// Writes the beginning of a command that goes on after its last argument (a streamed
/// literal): no CRLF, and its last `open_lists` lists left open.
pub fn encode_prefix(tag: &str, name: &str, args: &[Arg], open_lists: usize) -> Encoded {
    encode_with(tag, name, args, Some(open_lists))
}

fn encode_with(tag: &str, name: &str, args: &[Arg], prefix: Option<usize>) -> Encoded {
    let mut out = Encoded { bytes: format!("{tag} {name}").into_bytes(), sync_points: Vec::new() };
    if !args.is_empty() {
        out.bytes.push(b' ');
        encode_args(&mut out, args, prefix.unwrap_or(0));
    }
    if prefix.is_none() {
        out.bytes.extend_from_slice(b"\r\n");
    }
    out
}

fn encode_args(out: &mut Encoded, args: &[Arg], open_lists: usize) {
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.bytes.push(b' ');
        }
        let last = i + 1 == args.len();
        match arg {
            Arg::Atom(a) => out.bytes.extend_from_slice(a),
            Arg::String(s) => {
                if s.len() > QUOTED_MAX || !push_quoted(&mut out.bytes, s) {
                    push_literal(out, s.len() as u64, false);
                    out.bytes.extend_from_slice(s);
                }
            }
            Arg::Literal { data, binary } => {
                push_literal(out, data.len() as u64, *binary);
                out.bytes.extend_from_slice(data);
            }
            Arg::Streamed { size, binary } => push_literal(out, *size, *binary),
            Arg::List(items) => {
                out.bytes.push(b'(');
                let open_here = last && open_lists > 0;
                encode_args(out, items, if open_here { open_lists - 1 } else { 0 });
                if !open_here {
                    out.bytes.push(b')');
                }
            }
        }
    }
}

fn push_literal(out: &mut Encoded, size: u64, binary: bool) {
    let tilde = if binary { "~" } else { "" };
    out.bytes.extend_from_slice(format!("{tilde}{{{size}}}\r\n").as_bytes());
    out.sync_points.push(out.bytes.len());
}

/// Encodes untagged data, `* NAME args`, ending in CRLF (literals are not awaited in
/// responses, so `sync_points` are not needed).
pub fn encode_untagged(name: &str, args: &[Arg]) -> Vec<u8> {
    encode("*", name, args).bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(b: &[u8]) -> Arg {
        Arg::String(b.to_vec())
    }

    fn a(b: &[u8]) -> Arg {
        Arg::Atom(b.to_vec())
    }

    fn lit(b: &[u8]) -> Arg {
        Arg::Literal { data: b.to_vec(), binary: false }
    }

    #[test]
    fn login_with_atoms_quoted_strings_and_literals() {
        let c = parse(b"a1 login alice \"p a\\\"s\\\\s\"\r\n").unwrap();
        assert_eq!((c.tag.as_str(), c.name.as_str()), ("a1", "LOGIN"));
        assert_eq!(c.args, vec![a(b"alice"), s(b"p a\"s\\s")]);
        let c = parse(b"a2 LOGIN {5}\r\nalice {4+}\r\n\xc3\xa9\r\n\r\n").unwrap();
        assert_eq!(c.args, vec![lit(b"alice"), lit(b"\xc3\xa9\r\n")]);
    }

    #[test]
    fn id_with_a_list_and_nil() {
        let c = parse(b"x ID (\"name\" \"Kontact\" \"version\" NIL)\r\n").unwrap();
        assert_eq!(
            c.args,
            vec![Arg::List(vec![s(b"name"), s(b"Kontact"), s(b"version"), a(b"NIL")])]
        );
        assert!(parse(b"x ID NIL").unwrap().args[0].is_nil());
    }

    #[test]
    fn malformed_commands_name_the_problem_and_keep_the_tag() {
        let cases: &[(&[u8], Option<&str>, &str)] = &[
            (b"\r\n", None, "Missing or invalid tag"),
            (b"a1\r\n", Some("a1"), "Missing command name"),
            (b"a1 LOGIN \"abc\r\n", Some("a1"), "Unterminated quoted string"),
            (b"a1 LOGIN \"a\\b\"\r\n", Some("a1"), "Invalid escape in quoted string"),
            (b"a1 LOGIN {9}\r\nabc\r\n", Some("a1"), "Literal shorter than announced"),
            (b"a1 ID ((((((((((x))))))))))\r\n", Some("a1"), "Lists nested too deep"),
            (b"a1 ID (x\r\n", Some("a1"), "Missing ')' after a list"),
            // Dovecot reads a literal right after a quote or a parenthesis; no grammar does.
            (
                b"a1 SEARCH \"x\"{3}\r\nabc\r\n",
                Some("a1"),
                "Unexpected characters after the arguments",
            ),
            (
                b"a1 SEARCH (x){3}\r\nabc\r\n",
                Some("a1"),
                "Unexpected characters after the arguments",
            ),
            (b"a1 SEARCH x{3}\r\nabc\r\n", Some("a1"), "Unexpected characters after the arguments"),
            (b"a1 FETCH 1 BODY[HEADER.FIELDS (A {1}\r\nB)]\r\n", Some("a1"), "Invalid section"),
        ];
        for (input, tag, reason) in cases {
            let e = parse(input).unwrap_err();
            assert_eq!((e.tag.as_deref(), e.reason), (*tag, *reason), "{}", input.escape_ascii());
        }
    }

    #[test]
    fn a_prefix_ending_in_a_streamed_literal_keeps_its_open_lists() {
        let head = b"a APPEND INBOX CATENATE (TEXT {5}\r\nhello TEXT {999999}\r\n";
        let c = parse_prefix(head, &[head.len()], true).unwrap();
        let parts = vec![
            a(b"TEXT"),
            lit(b"hello"),
            a(b"TEXT"),
            Arg::Streamed { size: 999999, binary: false },
        ];
        assert_eq!(c.args, vec![a(b"INBOX"), a(b"CATENATE"), Arg::List(parts)]);
        assert_eq!(c.open_lists, 1);
        let wire = encode_prefix("g1", &c.name, &c.args, c.open_lists);
        assert_eq!(
            wire.bytes,
            b"g1 APPEND INBOX CATENATE (TEXT {5}\r\nhello TEXT {999999}\r\n".to_vec()
        );
        assert_eq!(wire.sync_points, vec![36, wire.bytes.len()]);
        // The whole command, the streamed bytes absent: its encoding extends the prefix's.
        let mut whole = head.to_vec();
        let at = whole.len();
        whole.extend_from_slice(b" URL \"/INBOX/;UID=3\")\r\n");
        let c = parse_prefix(&whole, &[at], false).unwrap();
        let full = encode("g1", &c.name, &c.args);
        assert!(full.bytes.starts_with(&wire.bytes));
        assert!(full.bytes.ends_with(b"{999999}\r\n URL \"/INBOX/;UID=3\")\r\n"));
    }

    #[test]
    fn fetch_sections_are_one_canonical_atom() {
        let c = parse(b"a UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (From \"To\")]<0.100>)\r\n")
            .unwrap();
        assert_eq!(
            c.args,
            vec![
                a(b"FETCH"),
                a(b"1:*"),
                Arg::List(vec![a(b"UID"), a(b"BODY.PEEK[HEADER.FIELDS (From \"To\")]<0.100>")])
            ]
        );
        let c = parse(b"a SELECT [Gmail]/Sent\r\n").unwrap();
        assert_eq!(c.args, vec![a(b"[Gmail]/Sent")]);
        let c = parse(b"a SELECT [Gmail Sent]\r\n").unwrap();
        assert_eq!(
            c.args,
            vec![a(b"[Gmail"), a(b"Sent]")],
            "brackets hold spaces only in sections"
        );
        let c = parse(b"a FETCH 1 (BODY[] BINARY.SIZE[1] FLAGS)\r\n").unwrap();
        assert_eq!(c.args[1], Arg::List(vec![a(b"BODY[]"), a(b"BINARY.SIZE[1]"), a(b"FLAGS")]));
    }

    #[test]
    fn untagged_data_tokenizes() {
        let c = parse_untagged(b"* LIST (\\HasNoChildren) \"/\" {8}\r\nCalendar\r\n").unwrap();
        assert_eq!((c.tag.as_str(), c.name.as_str()), ("*", "LIST"));
        assert_eq!(c.args[2], lit(b"Calendar"));
        assert!(parse(b"* LIST () \"/\" x").is_err());
    }

    #[test]
    fn tag_and_name_folds_case_and_keeps_uid_subcommands() {
        assert_eq!(tag_and_name(b"A1 uid Fetch 1:* x"), Some((&b"A1"[..], "UID FETCH".into())));
        assert_eq!(tag_and_name(b"A1 idle"), Some((&b"A1"[..], "IDLE".into())));
        assert_eq!(tag_and_name(b"DONE"), None);
        assert_eq!(tag_and_name(b"l LOGOUT\r\n"), Some((&b"l"[..], "LOGOUT".into())));
    }

    #[test]
    fn encoding_is_canonical_and_round_trips() {
        let args =
            vec![s(b"Sent Items"), Arg::List(vec![a(b"\\Seen")]), s("é\r\n".as_bytes()), a(b"1:*")];
        let wire = encode("t1", "UID COPY", &args);
        assert_eq!(wire.bytes, b"t1 UID COPY \"Sent Items\" (\\Seen) {4}\r\n\xc3\xa9\r\n 1:*\r\n");
        assert_eq!(wire.sync_points, vec![38]);
        let back = parse(&wire.bytes).unwrap();
        assert_eq!(
            back.args[1..],
            [
                a(b"COPY"),
                s(b"Sent Items"),
                Arg::List(vec![a(b"\\Seen")]),
                lit("é\r\n".as_bytes()),
                a(b"1:*")
            ][1..]
        );
        // Client literals stay literals, synchronizing ones, whatever form they came in.
        let c = parse(b"a APPEND INBOX ~{3+}\r\nx\x00y\r\n").unwrap();
        assert_eq!(encode("g", &c.name, &c.args).bytes, b"g APPEND INBOX ~{3}\r\nx\x00y\r\n");
        let c = parse(b"a  SEARCH\r\n");
        assert!(c.is_err(), "a double space is not a name");
    }

    #[test]
    fn quoting_escapes_or_declines() {
        let mut out = Vec::new();
        assert!(push_quoted(&mut out, b"a\"b\\c d"));
        assert_eq!(out, b"\"a\\\"b\\\\c d\"");
        assert!(!push_quoted(&mut Vec::new(), "é".as_bytes()));
    }

    /// A random command made of tokens, some of them damaged.
    fn random_command(seed: &mut u32) -> Vec<u8> {
        let mut next = |n: usize| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 17;
            *seed ^= *seed << 5;
            *seed as usize % n
        };
        const TOKENS: &[&[u8]] = &[
            b"x",
            b"NIL",
            b"nil",
            b"1:*",
            b"\\Seen",
            b"\"a b\"",
            b"\"q\\\"\"",
            b"{3}\r\nabc",
            b"{2+}\r\n\r\n",
            b"~{1}\r\n\x00",
            b"(",
            b")",
            b"BODY[HEADER.FIELDS (A B)]<0.5>",
            b"BODY.PEEK[]",
            b"[Gm]/x",
            b"%",
            b"\"\xc3\xa9\"",
            b"\xc3",
            b"\"x\"{1}\r\na",
        ];
        let mut out = b"a CMD".to_vec();
        for _ in 0..next(8) {
            out.push(b' ');
            out.extend_from_slice(TOKENS[next(TOKENS.len())]);
            if next(10) == 0 {
                out.push(b"( ){}\"\r\n"[next(8)]);
            }
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// Random commands: whatever parses encodes to bytes that parse to the same command,
    /// and encode again to the same bytes; no 8-bit byte ever appears outside a literal.
    #[test]
    fn arbitrary_input_never_panics_and_what_parses_round_trips() {
        let mut seed = 7u32;
        let mut parsed = 0;
        for _ in 0..20000 {
            let data = random_command(&mut seed);
            let Ok(c) = parse(&data) else { continue };
            parsed += 1;
            let wire = encode(&c.tag, &c.name, &c.args);
            let again = parse(&wire.bytes).unwrap_or_else(|e| {
                panic!("{} -> {}: {e}", data.escape_ascii(), wire.bytes.escape_ascii())
            });
            assert_eq!(again.args.len(), c.args.len(), "{}", data.escape_ascii());
            assert_eq!(encode(&again.tag, &again.name, &again.args), wire);
            let mut rest = &wire.bytes[..];
            let points = wire.sync_points.iter();
            let mut at = 0;
            // Between literals, every byte is 7-bit and no line ends early.
            for &p in points {
                let line = &rest[..p - at];
                assert!(line.iter().all(|&b| b < 0x80), "{}", wire.bytes.escape_ascii());
                assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
                let size: usize = String::from_utf8_lossy(line)
                    .rsplit('{')
                    .next()
                    .and_then(|s| s.split('}').next())
                    .and_then(|s| s.parse().ok())
                    .unwrap();
                rest = &rest[p - at + size..];
                at = p + size;
            }
            assert!(rest.iter().all(|&b| b < 0x80));
            assert_eq!(rest.iter().filter(|&&b| b == b'\n').count(), 1);
        }
        assert!(parsed > 2000, "the generator must reach the encoder ({parsed})");
    }
}
