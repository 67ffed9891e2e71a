//! The differential smuggling test: a seeded generator of command streams that mutate
//! literal syntax (`{n}`, `{n+}`, `~{n}`, wrong sizes, right after quotes, parentheses
//! and atoms, inside IDLE, AUTHENTICATE and APPEND), command names and quoting, with
//! denied commands and hidden folders hidden in every corner. Sent through imapgate (a
//! deny rule, a hidden folder) to a recorded Dovecot; Dovecot's own record must never
//! show a denied command or a hidden folder, and nothing may change.
//!
//! `IMAPGATE_SMUGGLING_CASES` and `IMAPGATE_SMUGGLING_SEED` override the defaults (for
//! longer runs by hand); CI runs the fixed seed.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::smuggling::{Recorded, DENY_HIDE};

const DEFAULT_CASES: usize = 3000;
const DEFAULT_SEED: u64 = 0x1e5e_ed5a_f00d;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// What an attacker wants the backend to run: a denied command or a hidden folder.
const PAYLOADS: &[&str] = &[
    "p DELETE Victim",
    "p SELECT Calendar",
    "p EXPUNGE",
    "p STATUS Contacts (MESSAGES)",
    "p UID EXPUNGE 1:*",
    "DONE\r\np DELETE ScratchA",
    "p delete \"ScratchB\"",
    "p EXAMINE {8}\r\nCalendar",
    "p DELETE {6+}\r\nVictim",
];

/// Command names, allowed and not, known and not.
const NAMES: &[&str] = &[
    "NOOP",
    "SEARCH",
    "SELECT",
    "EXAMINE",
    "STATUS",
    "XYZZY",
    "FETCH",
    "UID FETCH",
    "LIST",
    "CHECK",
    "ID",
    "GETMETADATA",
    "select",
    "DELETE",
    "EXPUNGE",
    "LSUB",
    "ENABLE",
    "SORT",
    "NAMESPACE",
    "CAPABILITY",
    "UNSELECT",
    "X-FOO",
    "COPY",
    "SUBSCRIBE",
];

/// A literal announcement in one of its forms, possibly lying about its size.
fn announcement(rng: &mut Rng, size: usize) -> String {
    let size = match rng.below(6) {
        0 => size.saturating_sub(rng.below(4) + 1),
        1 => size + rng.below(4) + 1,
        _ => size,
    };
    let tilde = if rng.chance(15) { "~" } else { "" };
    let plus = if rng.chance(50) { "+" } else { "" };
    let eol = if rng.chance(10) { "\n" } else { "\r\n" };
    format!("{tilde}{{{size}{plus}}}{eol}")
}

/// The bytes before a literal announcement: a space, or what only Dovecot accepts.
fn before_literal(rng: &mut Rng) -> &'static str {
    const BEFORE: &[&str] = &[" ", " ", " \"x\"", " (x)", " x", " \"abc ", " (", " BODY[", ""];
    rng.pick(BEFORE)
}

/// A payload as literal data or as the rest of a line.
fn payload(rng: &mut Rng) -> String {
    let p = rng.pick(PAYLOADS);
    match rng.below(4) {
        0 => format!("\r\n{p}\r\n"),
        1 => format!("{p}\r\n"),
        2 => format!("x {p}\r\n"),
        _ => format!("\"{p}\"\r\n"),
    }
}

/// One command-like piece of a case.
fn piece(rng: &mut Rng, n: usize) -> Vec<u8> {
    const TAGS: &[&str] = &["a", "b1", "*", "+", "", "t t", "DONE", "g1"];
    let tag = rng.pick(TAGS).to_string();
    let tag = if tag.is_empty() { String::new() } else { format!("{tag}{n} ") };
    let mut out = tag.into_bytes();
    match rng.below(8) {
        // A command whose literal carries a payload.
        0..=3 => {
            out.extend_from_slice(rng.pick(NAMES).as_bytes());
            let data = payload(rng);
            out.extend_from_slice(before_literal(rng).as_bytes());
            out.extend_from_slice(announcement(rng, data.len()).as_bytes());
            out.extend_from_slice(data.as_bytes());
            if rng.chance(50) {
                out.extend_from_slice(b"\r\n");
            }
        }
        // IDLE, then whatever line comes next.
        4 => {
            out.extend_from_slice(b"IDLE\r\n");
            if rng.chance(30) {
                out.extend_from_slice(b"DONE\r\n");
            }
            out.extend_from_slice(payload(rng).as_bytes());
        }
        // AUTHENTICATE after login, with continuation lines.
        5 => {
            out.extend_from_slice(b"AUTHENTICATE PLAIN\r\n");
            out.extend_from_slice(b"AGFsaWNlAHNlY3JldA==\r\n");
            out.extend_from_slice(payload(rng).as_bytes());
        }
        // APPEND with message data holding payloads, then more after the literal.
        6 => {
            let data = format!("Subject: x\r\n\r\n{}", payload(rng));
            const TARGETS: &[&[u8]] = &[
                b"APPEND ScratchA",
                b"APPEND Calendar",
                b"APPEND Nope",
                b"append ScratchB (\\Seen)",
            ];
            out.extend_from_slice(rng.pick(TARGETS));
            out.extend_from_slice(before_literal(rng).as_bytes());
            out.extend_from_slice(announcement(rng, data.len()).as_bytes());
            out.extend_from_slice(data.as_bytes());
            const AFTER: &[&[u8]] = &[
                b"\r\n",
                b" CATENATE (URL \"/Calendar/;UID=1\")\r\n",
                b" {5+}\r\nhello\r\n",
                b" x DELETE Victim\r\n",
            ];
            out.extend_from_slice(rng.pick(AFTER));
        }
        // A plain line, quoted strings holding payloads.
        _ => {
            out.extend_from_slice(rng.pick(NAMES).as_bytes());
            out.extend_from_slice(b" \"");
            out.extend_from_slice(rng.pick(PAYLOADS).replace("\r\n", " ").as_bytes());
            const END: &[&[u8]] = &[b"\"\r\n", b"\r\n", b"\\\"\r\n"];
            out.extend_from_slice(rng.pick(END));
        }
    }
    out
}

fn case(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for n in 0..1 + rng.below(3) {
        out.extend_from_slice(&piece(rng, n));
    }
    out
}

/// Reads until the barrier's tagged answer; false when the session ended (or stalled).
fn reached(c: &mut Client, barrier: &str) -> bool {
    let prefix = format!("{barrier} ");
    loop {
        match c.try_read_response() {
            Ok(Some(r)) if r.starts_with(prefix.as_bytes()) => return true,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return false,
        }
    }
}

#[test]
fn smuggling_generated_streams_never_reach_dovecot_unjudged() {
    let cases = std::env::var("IMAPGATE_SMUGGLING_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let seed = std::env::var("IMAPGATE_SMUGGLING_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let w = Recorded::new("sm-gen", "no-delete, groupware", DENY_HIDE);
    let mut rng = Rng(seed);
    let mut c = w.client();
    c.set_timeout(Duration::from_secs(5));
    let (mut sessions, mut ended) = (1, 0);
    let started = Instant::now();
    for i in 0..cases {
        let bytes = case(&mut rng);
        let barrier = format!("z{i}");
        let mut sent = bytes.clone();
        // Completes any literal the case left open (sizes stay under 70), then a barrier.
        sent.extend_from_slice(b"\r\n");
        sent.extend_from_slice(&[b'x'; 70]);
        sent.extend_from_slice(format!("\r\n{barrier} NOOP\r\n").as_bytes());
        // Sent in one write, or in two pieces cut anywhere.
        let cut = rng.below(sent.len() + 1);
        let _ = c.try_send(&sent[..cut]);
        let _ = c.try_send(&sent[cut..]);
        if !reached(&mut c, &barrier) {
            ended += 1;
            sessions += 1;
            c = w.client();
            c.set_timeout(Duration::from_secs(5));
        }
    }
    c.logout();
    eprintln!(
        "{cases} generated cases (seed {seed}) in {:.1}s over {sessions} sessions, {ended} ended early",
        started.elapsed().as_secs_f64()
    );
    assert!(ended * 10 < cases, "{ended} of {cases} cases ended their session");
    let forwarded = w.forwarded_commands();
    assert!(forwarded.len() > cases, "Dovecot saw {} commands", forwarded.len());
    w.assert_untouched();
}
