//! Client commands: the tag and name of a command head, and a tokenizer for complete
//! pre-login commands (atoms, quoted strings with escapes, literals, parenthesised lists).
//!
//! imap-proto parses responses only, so commands are tokenized here. Command names are
//! compared ASCII-case-insensitively: `login`, `Login` and `LOGIN` are one command.

use std::fmt;

/// One argument of a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    /// An atom (`NIL` is an atom too; callers decide what it means).
    Atom(Vec<u8>),
    /// A quoted string (unescaped) or a literal's bytes.
    String(Vec<u8>),
    /// A parenthesised list.
    List(Vec<Arg>),
}

impl Arg {
    /// The bytes of an atom or a string (an astring, RFC 9051 §9), none for a list.
    pub fn astring(&self) -> Option<&[u8]> {
        match self {
            Arg::Atom(b) | Arg::String(b) => Some(b),
            Arg::List(_) => None,
        }
    }

    /// True for the atom `NIL` in any case.
    pub fn is_nil(&self) -> bool {
        matches!(self, Arg::Atom(a) if a.eq_ignore_ascii_case(b"NIL"))
    }
}

/// A complete command: tag, upper-cased name and arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The client's tag, as sent.
    pub tag: String,
    /// The command name in upper case (`UID FETCH` keeps its two words).
    pub name: String,
    /// The arguments after the name.
    pub args: Vec<Arg>,
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

/// True for bytes that may appear in a tag or atom (RFC 9051 ATOM-CHAR, plus `]` which
/// ASTRING-CHAR allows, plus 8-bit bytes that real clients put into user names).
fn is_atom_byte(b: u8) -> bool {
    b > b' ' && b != 0x7f && !matches!(b, b'(' | b')' | b'{' | b'"' | b'\\' | b'%' | b'*')
}

/// Tokenizes a complete command message: its lines and the raw bytes of its literals, as
/// the framer delimited them. The final CRLF (or LF) may be present or not.
pub fn parse(message: &[u8]) -> Result<Command, ParseError> {
    parse_with(message, false, false)
}

/// Like `parse`, for the head of a command whose last literal has not arrived (it is too
/// large to inspect): with `partial`, the arguments before that literal are returned.
pub fn parse_prefix(message: &[u8], partial: bool) -> Result<Command, ParseError> {
    parse_with(message, partial, false)
}

/// Tokenizes untagged server data (`* LIST (\\HasNoChildren) "/" INBOX`): the tag is `*`
/// and the name is the first word after it.
pub fn parse_untagged(message: &[u8]) -> Result<Command, ParseError> {
    parse_with(message, false, true)
}

/// Marks the end of the input inside an announced literal, in partial mode.
const INCOMPLETE: &str = "Incomplete literal";

fn parse_with(message: &[u8], partial: bool, untagged: bool) -> Result<Command, ParseError> {
    let mut p = Parser { input: message, pos: 0, partial };
    let tag = if untagged && message.starts_with(b"* ") {
        p.pos = 1;
        Some(&b"*"[..])
    } else {
        p.atom_with(|b| is_atom_byte(b) && b != b'+')
    };
    let Some(tag) = tag else {
        return Err(ParseError { tag: None, reason: "Missing or invalid tag" });
    };
    let tag = String::from_utf8_lossy(tag).into_owned();
    let fail = |reason| ParseError { tag: Some(tag.clone()), reason };
    if !p.eat(b' ') {
        return Err(fail("Missing command name"));
    }
    let name = p.atom_with(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let Some(name) = name else {
        return Err(fail("Invalid command name"));
    };
    let name = String::from_utf8_lossy(name).to_ascii_uppercase();
    let mut args = Vec::new();
    while p.eat(b' ') {
        match p.arg(0) {
            Ok(arg) => args.push(arg),
            Err(INCOMPLETE) => return Ok(Command { tag, name, args }),
            Err(reason) => return Err(fail(reason)),
        }
    }
    p.eat(b'\r');
    if !p.eat(b'\n') && !p.at_end() {
        return Err(fail("Unexpected characters after the arguments"));
    }
    if !p.at_end() {
        return Err(fail("Unexpected data after the command"));
    }
    Ok(Command { tag, name, args })
}

/// Nested lists deeper than this are refused, so a hostile client cannot recurse us deep.
const MAX_DEPTH: usize = 8;

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    /// The input ends inside an announced literal: stop there without an error.
    partial: bool,
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

    fn arg(&mut self, depth: usize) -> Result<Arg, &'static str> {
        match self.peek() {
            Some(b'"') => self.quoted().map(Arg::String),
            Some(b'{' | b'~') => self.literal().map(Arg::String),
            Some(b'(') => self.list(depth),
            Some(b'\\') => {
                // A flag (`\Seen`, `\*`) or a mailbox attribute (`\HasNoChildren`).
                let start = self.pos;
                self.pos += 1;
                self.atom_with(|b| is_atom_byte(b) || b == b'*');
                Ok(Arg::Atom(self.input[start..self.pos].to_vec()))
            }
            Some(b) if is_atom_byte(b) || b == b'%' || b == b'*' => {
                let atom = self.atom_with(|b| is_atom_byte(b) || b == b'%' || b == b'*');
                Ok(Arg::Atom(atom.unwrap_or_default().to_vec()))
            }
            _ => Err("Invalid argument"),
        }
    }

    fn list(&mut self, depth: usize) -> Result<Arg, &'static str> {
        if depth >= MAX_DEPTH {
            return Err("Lists nested too deep");
        }
        self.pos += 1;
        let mut items = Vec::new();
        if self.eat(b')') {
            return Ok(Arg::List(items));
        }
        loop {
            items.push(self.arg(depth + 1)?);
            if self.eat(b')') {
                return Ok(Arg::List(items));
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

    fn literal(&mut self) -> Result<Vec<u8>, &'static str> {
        self.eat(b'~');
        if !self.eat(b'{') {
            return Err("Invalid literal");
        }
        let digits = self.atom_with(|b| b.is_ascii_digit()).ok_or("Invalid literal size")?;
        if digits.len() > 15 {
            return Err("Literal too large");
        }
        let size = digits.iter().fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
        self.eat(b'+');
        if !self.eat(b'}') {
            return Err("Invalid literal");
        }
        self.eat(b'\r');
        if !self.eat(b'\n') {
            return Err("Literal announcement must end the line");
        }
        let end = self.pos.checked_add(size).filter(|&e| e <= self.input.len());
        if end.is_none() && self.partial && self.pos == self.input.len() {
            return Err(INCOMPLETE);
        }
        let end = end.ok_or("Literal shorter than announced")?;
        let bytes = self.input[self.pos..end].to_vec();
        self.pos = end;
        Ok(bytes)
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

/// Encodes arguments: atoms as they are, strings quoted when printable ASCII and as
/// synchronizing literals otherwise, lists in parentheses.
pub fn encode_args(out: &mut Vec<u8>, args: &[Arg]) {
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        match arg {
            Arg::Atom(a) => out.extend_from_slice(a),
            Arg::String(s) => {
                if !push_quoted(out, s) {
                    out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
                    out.extend_from_slice(s);
                }
            }
            Arg::List(items) => {
                out.push(b'(');
                encode_args(out, items);
                out.push(b')');
            }
        }
    }
}

/// Encodes a command (`name` may be two words, `UID MOVE`), ending in CRLF.
pub fn encode(tag: &str, name: &str, args: &[Arg]) -> Vec<u8> {
    let mut out = format!("{tag} {name}").into_bytes();
    if !args.is_empty() {
        out.push(b' ');
        encode_args(&mut out, args);
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Encodes untagged data, `* NAME args`, ending in CRLF.
pub fn encode_untagged(name: &str, args: &[Arg]) -> Vec<u8> {
    encode("*", name, args)
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

    #[test]
    fn login_with_atoms_quoted_strings_and_literals() {
        let c = parse(b"a1 login alice \"p a\\\"s\\\\s\"\r\n").unwrap();
        assert_eq!((c.tag.as_str(), c.name.as_str()), ("a1", "LOGIN"));
        assert_eq!(c.args, vec![a(b"alice"), s(b"p a\"s\\s")]);
        let c = parse(b"a2 LOGIN {5}\r\nalice {4+}\r\n\xc3\xa9\r\n\r\n").unwrap();
        assert_eq!(c.args, vec![s(b"alice"), s(b"\xc3\xa9\r\n")]);
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
        ];
        for (input, tag, reason) in cases {
            let e = parse(input).unwrap_err();
            assert_eq!((e.tag.as_deref(), e.reason), (*tag, *reason), "{}", input.escape_ascii());
        }
    }

    #[test]
    fn a_prefix_ending_in_an_announced_literal_gives_the_arguments_before_it() {
        let c = parse_prefix(b"a APPEND {5}\r\nINBOX (\\Seen) {999999}\r\n", true).unwrap();
        assert_eq!(c.args, vec![s(b"INBOX"), Arg::List(vec![a(b"\\Seen")])]);
        assert!(parse_prefix(b"a APPEND INBOX {9}\r\nab", true).is_err());
    }

    #[test]
    fn untagged_data_tokenizes() {
        let c = parse_untagged(b"* LIST (\\HasNoChildren) \"/\" {8}\r\nCalendar\r\n").unwrap();
        assert_eq!((c.tag.as_str(), c.name.as_str()), ("*", "LIST"));
        assert_eq!(c.args[2], s(b"Calendar"));
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
    fn encoding_round_trips_through_the_tokenizer() {
        let args =
            vec![s(b"Sent Items"), Arg::List(vec![a(b"\\Seen")]), s("é\r\n".as_bytes()), a(b"1:*")];
        let wire = encode("t1", "UID COPY", &args);
        assert_eq!(wire, b"t1 UID COPY \"Sent Items\" (\\Seen) {4}\r\n\xc3\xa9\r\n 1:*\r\n");
        let back = parse(&wire).unwrap();
        assert_eq!(back.args[1..], args[..]);
    }

    #[test]
    fn quoting_escapes_or_declines() {
        let mut out = Vec::new();
        assert!(push_quoted(&mut out, b"a\"b\\c d"));
        assert_eq!(out, b"\"a\\\"b\\\\c d\"");
        assert!(!push_quoted(&mut Vec::new(), "é".as_bytes()));
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let mut seed = 7u32;
        for _ in 0..5000 {
            let mut data = Vec::new();
            for _ in 0..40 {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let alphabet = b"a (){}~+0129\"\\\r\n";
                data.push(alphabet[seed as usize % alphabet.len()]);
            }
            let _ = parse(&data);
        }
    }
}
