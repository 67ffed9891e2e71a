//! The smuggling property in-process, for the unit tests and the `smuggling` fuzz target:
//! a client byte stream goes through a judged exchange (deny DELETE and EXPUNGE, hide
//! Calendar) to a model of a lenient backend, and the backend must never execute a denied
//! command or touch the hidden folder.
//!
//! The model reads the way Dovecot 2.3 does where it matters, not the way the RFC says:
//! it takes a literal announcement after a quote or a parenthesis too, answers an unknown
//! command BAD as soon as it has its line and reads on at the next byte (inside a literal
//! that was never invited, were one sent), and ends IDLE on any line. So whatever
//! imapgate forwards that is not exactly what it judged shows up as an executed command.

use std::sync::Arc;
use std::time::Instant;

use super::{Exchange, Out, Toward};
use crate::rules::registry::{build, Settings};
use crate::rules::{Conditions, Context, Engine, RuleDef};

/// Runs the property on `input` (first byte: how client bytes are chunked; the rest: the
/// client's stream). Panics when the backend model executes what the rules refuse.
pub fn check(input: &[u8]) {
    let Some((&chunking, stream)) = input.split_first() else { return };
    let mut wire = Wire::new(Exchange::judged(engine()));
    let mut backend = Backend::default();
    let chunk = usize::from(chunking % 64) + 1;
    let mut chunks = stream.chunks(chunk);
    let now = Instant::now();
    for _ in 0..stream.len() + 1000 {
        let fed = match chunks.next() {
            Some(c) => {
                wire.client_sends(c);
                true
            }
            None => false,
        };
        let (to_backend, _) = wire.pump(now);
        backend.receive(&to_backend);
        let answers = std::mem::take(&mut backend.output);
        if !answers.is_empty() {
            wire.server_sends(&answers);
            let (to_backend, _) = wire.pump(now);
            backend.receive(&to_backend);
        }
        let quiet = !fed && backend.output.is_empty() && answers.is_empty();
        if wire.ex.stop().is_some() || quiet {
            break;
        }
    }
    let received = String::from_utf8_lossy(&backend.received);
    for (name, args) in &backend.executed {
        // COPY and MOVE name their target second (a sequence set comes first).
        let args_of_mailbox = match name.as_str() {
            "COPY" | "MOVE" => args_after(args, 1),
            _ => args.clone(),
        };
        let mailbox = first_astring(&args_of_mailbox);
        let renamed_to =
            if name == "RENAME" { first_astring(&args_after(args, 1)) } else { Vec::new() };
        let denied = matches!(name.as_str(), "DELETE" | "EXPUNGE");
        let hidden = MAILBOX_COMMANDS.contains(&name.as_str())
            && (is_hidden(&mailbox) || is_hidden(&renamed_to));
        assert!(
            !denied && !hidden,
            "executed {name} {:?}; the backend received {received:?}",
            String::from_utf8_lossy(args)
        );
    }
}

/// An exchange between two in-memory peers, pumped the way the relay pumps it: input
/// kept until the exchange has written or skipped it, `Out::Input` written from there.
pub struct Wire {
    /// The exchange.
    pub ex: Exchange,
    client: Vec<u8>,
    client_framed: usize,
    server: Vec<u8>,
    server_framed: usize,
}

impl Wire {
    /// A wire around `ex`.
    pub fn new(ex: Exchange) -> Wire {
        Wire { ex, client: Vec::new(), client_framed: 0, server: Vec::new(), server_framed: 0 }
    }

    /// The client sent these bytes.
    pub fn client_sends(&mut self, bytes: &[u8]) {
        self.client.extend_from_slice(bytes);
    }

    /// The backend sent these bytes.
    pub fn server_sends(&mut self, bytes: &[u8]) {
        self.server.extend_from_slice(bytes);
    }

    /// Frames what can be framed and writes what can be written: returns the bytes that
    /// went to the backend and to the client.
    pub fn pump(&mut self, now: Instant) -> (Vec<u8>, Vec<u8>) {
        let (mut to_backend, mut to_client) = (Vec::new(), Vec::new());
        loop {
            let c = self.ex.client_input(&self.client[self.client_framed..], now);
            self.client_framed += c;
            // In memory the client's compressed bytes are their plaintext: nothing to move.
            let switched = self.ex.take_client_inflate();
            let s = self.ex.server_input(&self.server[self.server_framed..], now);
            self.server_framed += s;
            let b = drain(&mut self.ex, Toward::Backend, &mut self.client, &mut self.client_framed);
            let k = drain(&mut self.ex, Toward::Client, &mut self.server, &mut self.server_framed);
            let moved = switched || c + s + b.len() + k.len() > 0;
            to_backend.extend(b);
            to_client.extend(k);
            if !moved {
                return (to_backend, to_client);
            }
        }
    }
}

/// Writes what the exchange says toward `to`, from `src` (whose first `framed` bytes
/// were framed) or from its own bytes.
fn drain(ex: &mut Exchange, to: Toward, src: &mut Vec<u8>, framed: &mut usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut free = |src: &mut Vec<u8>, n: usize| {
        src.drain(..n);
        *framed -= n;
    };
    loop {
        let dropped = ex.dropped(to);
        free(src, dropped);
        match ex.out(to) {
            Out::Nothing => return out,
            Out::Skip(n) => {
                free(src, n);
                ex.wrote(to, n);
            }
            Out::Input(n) => {
                out.extend_from_slice(&src[..n]);
                free(src, n);
                ex.wrote(to, n);
            }
            Out::Bytes(b) => {
                let n = b.len();
                out.extend_from_slice(b);
                ex.wrote(to, n);
            }
            // A transcript shows where the stream turns to deflate.
            Out::StartDeflate => {
                out.extend_from_slice(b"<deflate>");
                ex.wrote(to, 0);
            }
        }
    }
}

/// The rules of the property: deny DELETE and EXPUNGE, hide Calendar.
pub fn engine() -> Engine {
    let rules: [(&str, &str, &str); 2] =
        [("commands", "deny", "DELETE EXPUNGE"), ("hide_folders", "folders", "Calendar")];
    let defs: Vec<Arc<RuleDef>> = rules
        .iter()
        .map(|(kind, key, value)| {
            let mut settings = Settings::new(vec![(key.to_string(), value.to_string(), 2)], 1);
            let kind = build(kind, &mut settings).ok().flatten().expect("rule builds");
            Arc::new(RuleDef { name: "r".into(), line: 1, conditions: Conditions::default(), kind })
        })
        .collect();
    let cx = Context {
        capabilities: ["IMAP4rev1", "IDLE", "LITERAL+", "UNSELECT"].map(String::from).to_vec(),
        delimiter: Some('/'),
        ..Context::default()
    };
    Engine::new(&defs, cx)
}

const MAILBOX_COMMANDS: &[&str] =
    &["SELECT", "EXAMINE", "STATUS", "CREATE", "RENAME", "SUBSCRIBE", "APPEND", "COPY", "MOVE"];

const KNOWN: &[&str] = &[
    "NOOP",
    "SEARCH",
    "SELECT",
    "EXAMINE",
    "STATUS",
    "FETCH",
    "UID",
    "LIST",
    "LSUB",
    "CHECK",
    "ID",
    "IDLE",
    "APPEND",
    "DELETE",
    "EXPUNGE",
    "CREATE",
    "RENAME",
    "SUBSCRIBE",
    "COPY",
    "MOVE",
    "CAPABILITY",
    "LOGOUT",
    "UNSELECT",
    "ENABLE",
    "NAMESPACE",
    "CLOSE",
];

fn is_hidden(name: &[u8]) -> bool {
    let name = name.strip_suffix(b"/").unwrap_or(name);
    name == b"Calendar" || name.starts_with(b"Calendar/")
}

/// A lenient backend, Dovecot's quirks included. Commands are executed when their last
/// line arrives.
#[derive(Default)]
struct Backend {
    /// Everything received, for the report when the property breaks.
    received: Vec<u8>,
    input: Vec<u8>,
    /// The command being read: its bytes so far, and a literal still to come.
    command: Vec<u8>,
    literal: usize,
    idling: Option<Vec<u8>>,
    output: Vec<u8>,
    executed: Vec<(String, Vec<u8>)>,
}

impl Backend {
    fn receive(&mut self, bytes: &[u8]) {
        self.received.extend_from_slice(bytes);
        self.input.extend_from_slice(bytes);
        loop {
            if self.literal > 0 {
                let n = self.literal.min(self.input.len());
                self.command.extend(self.input.drain(..n));
                self.literal -= n;
                if self.literal > 0 {
                    return;
                }
            }
            let Some(end) = self.input.iter().position(|&b| b == b'\n') else { return };
            let line: Vec<u8> = self.input.drain(..=end).collect();
            self.line(line);
        }
    }

    fn line(&mut self, line: Vec<u8>) {
        if let Some(tag) = self.idling.take() {
            // Dovecot ends IDLE on any line; DONE is only the polite one.
            let text = line.trim_ascii_end();
            let status = if text.eq_ignore_ascii_case(b"DONE") { "OK" } else { "BAD" };
            self.answer(&tag, status);
            return;
        }
        let first = self.command.is_empty();
        self.command.extend_from_slice(&line);
        let (tag, name) = words(&self.command);
        if first && !KNOWN.contains(&name.as_str()) {
            // BAD before the arguments; reading resumes right after this line.
            self.answer(&tag, "BAD");
            self.command.clear();
            return;
        }
        if let Some((size, sync)) = announced(&line) {
            if sync {
                self.output.extend_from_slice(b"+ OK\r\n");
            }
            self.literal = size;
            return;
        }
        let command = std::mem::take(&mut self.command);
        if name == "IDLE" {
            self.output.extend_from_slice(b"+ idling\r\n");
            self.idling = Some(tag);
            return;
        }
        let name = if name == "UID" { words_after(&command, 2) } else { name };
        let args = args_after(&command, if words(&command).1 == "UID" { 3 } else { 2 });
        self.executed.push((name, args));
        self.answer(&tag, "OK");
    }

    fn answer(&mut self, tag: &[u8], status: &str) {
        self.output.extend_from_slice(tag);
        self.output.extend_from_slice(format!(" {status} done\r\n").as_bytes());
    }
}

/// Tag and upper-case name of a command.
fn words(command: &[u8]) -> (Vec<u8>, String) {
    let line = command.split(|&b| b == b'\n').next().unwrap_or_default().trim_ascii_end();
    let mut parts = line.splitn(3, |&b| b == b' ');
    let tag = parts.next().unwrap_or_default().to_vec();
    let name = String::from_utf8_lossy(parts.next().unwrap_or_default()).to_ascii_uppercase();
    (tag, name)
}

fn words_after(command: &[u8], index: usize) -> String {
    let line = command.split(|&b| b == b'\n').next().unwrap_or_default().trim_ascii_end();
    let word = line.split(|&b| b == b' ').nth(index).unwrap_or_default();
    String::from_utf8_lossy(word).to_ascii_uppercase()
}

/// The bytes after the first `skip` words.
fn args_after(command: &[u8], skip: usize) -> Vec<u8> {
    let mut rest = command;
    for _ in 0..skip {
        match rest.iter().position(|&b| b == b' ') {
            Some(i) => rest = &rest[i + 1..],
            None => return Vec::new(),
        }
    }
    rest.to_vec()
}

/// Dovecot's reading of a literal announcement at a line's end: `{n}` or `{n+}` after
/// anything (a space, a quote, a parenthesis).
fn announced(line: &[u8]) -> Option<(usize, bool)> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_suffix(b"}")?;
    let (line, sync) = match line.strip_suffix(b"+") {
        Some(l) => (l, false),
        None => (line, true),
    };
    let open = line.iter().rposition(|&b| b == b'{')?;
    let digits = &line[open + 1..];
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some((std::str::from_utf8(digits).ok()?.parse().ok()?, sync))
}

/// The first argument as a string: an atom, a quoted string or a literal's bytes.
fn first_astring(args: &[u8]) -> Vec<u8> {
    if let Some(rest) = args.strip_prefix(b"\"") {
        let mut out = Vec::new();
        let mut bytes = rest.iter();
        while let Some(&b) = bytes.next() {
            match b {
                b'"' => break,
                b'\\' => out.extend(bytes.next()),
                b => out.push(b),
            }
        }
        return out;
    }
    let line_end = args.iter().position(|&b| b == b'\n').map_or(args.len(), |i| i + 1);
    let first_is_literal = args.starts_with(b"{") || args.starts_with(b"~{");
    if let Some((size, _)) = announced(&args[..line_end]).filter(|_| first_is_literal) {
        return args[line_end..(line_end + size).min(args.len())].to_vec();
    }
    let end =
        args.iter().position(|&b| b == b' ' || b == b'\r' || b == b'\n').unwrap_or(args.len());
    args[..end].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "executed")]
    fn the_model_executes_what_a_raw_relay_would_let_through() {
        // Fed directly (no exchange), the issue's example runs the smuggled SELECT.
        let mut backend = Backend::default();
        backend.receive(b"a XYZZY {19+}\r\nb SELECT Calendar\r\n\r\n");
        let (name, args) = backend.executed.first().expect("something ran").clone();
        assert!(!(name == "SELECT" && is_hidden(&first_astring(&args))), "executed {name}");
    }

    #[test]
    fn the_issues_examples_hold() {
        for case in [
            &b"\x00a XYZZY {19+}\r\nb SELECT Calendar\r\n\r\n"[..],
            b"\x05x SEARCH \"abc {19+}\r\nd DELETE ScratchA\r\n\r\n",
            b"\x3fa SEARCH \"x\"{16+}\r\nb SEARCH {21+}\r\n\r\nd DELETE ScratchB\r\n\r\n",
            b"\x01a IDLE\r\nb DELETE x\r\n",
            b"\x02a NOOP {17+}\r\nb DELETE Victim\r\n\r\n",
        ] {
            check(case);
        }
    }

    /// Random streams of smuggling ingredients: the property holds for every one.
    #[test]
    fn random_streams_never_get_past_the_rules() {
        const PARTS: &[&[u8]] = &[
            b"a ",
            b"b DELETE Victim",
            b"c SELECT Calendar",
            b"XYZZY",
            b"SEARCH",
            b"NOOP",
            b"IDLE",
            b"DONE",
            b"APPEND INBOX",
            b" {19+}",
            b" {19}",
            b"\"x\"{16+}",
            b"(x){5}",
            b" ~{4}",
            b"\r\n",
            b"\r\n",
            b"\r\n",
            b" \"abc",
            b"\"",
            b" ",
            b"UID EXPUNGE 1",
            b"d DELETE {6+}\r\nVictim",
            b"e EXAMINE {8}\r\nCalendar",
            b"AUTHENTICATE PLAIN",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut input = vec![(seed % 256) as u8];
            for _ in 0..1 + seed % 24 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                input.extend_from_slice(PARTS[(seed % PARTS.len() as u64) as usize]);
            }
            if std::panic::catch_unwind(|| check(&input)).is_err() {
                panic!("property broken by {:?}", input.escape_ascii().to_string());
            }
        }
    }
}
