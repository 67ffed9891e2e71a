//! Transcripts of the judged exchange: what the client sends, what the backend receives,
//! what the backend answers and what the client sees.

use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::rules::registry::{build, Settings};
use crate::rules::{Conditions, Context, RuleDef};

/// Rules as `(type, [(key, value)])`, all applying.
fn engine(rules: &[(&str, &[(&str, &str)])]) -> Engine {
    let defs: Vec<Arc<RuleDef>> = rules
        .iter()
        .enumerate()
        .map(|(i, (kind, keys))| {
            let entries = keys.iter().map(|(k, v)| (k.to_string(), v.to_string(), 2)).collect();
            let mut settings = Settings::new(entries, 1);
            let kind = build(kind, &mut settings).unwrap().unwrap();
            Arc::new(RuleDef {
                name: format!("r{i}"),
                line: 1,
                conditions: Conditions::default(),
                kind,
            })
        })
        .collect();
    let caps = ["IMAP4rev1", "IDLE", "LITERAL+", "MOVE", "UNSELECT", "CATENATE", "MULTIAPPEND"];
    let cx = Context {
        capabilities: caps.iter().map(|c| c.to_string()).collect(),
        delimiter: Some('/'),
        ..Context::default()
    };
    Engine::new(&defs, cx)
}

const DENY: (&str, &[(&str, &str)]) = ("commands", &[("deny", "DELETE EXPUNGE")]);
const HIDE: (&str, &[(&str, &str)]) = ("hide_folders", &[("folders", "Calendar Contacts")]);

/// An exchange with everything it wrote, as the two peers would have read it.
struct Peers {
    ex: Exchange,
    backend: Vec<u8>,
    client: Vec<u8>,
    /// Client bytes not consumed yet (held while the exchange waits).
    held: Vec<u8>,
}

impl Peers {
    fn new(rules: &[(&str, &[(&str, &str)])]) -> Peers {
        Peers {
            ex: Exchange::new(engine(rules)),
            backend: Vec::new(),
            client: Vec::new(),
            held: Vec::new(),
        }
    }

    fn pump(&mut self) {
        loop {
            let mut moved = false;
            if !self.held.is_empty() {
                let n = self.ex.client_input(&self.held, Instant::now());
                self.held.drain(..n);
                moved |= n > 0;
            }
            while let Some(bytes) = self.ex.to_backend() {
                let bytes = bytes.to_vec();
                self.backend.extend_from_slice(&bytes);
                self.ex.backend_wrote(bytes.len());
                moved = true;
            }
            let out = self.ex.to_client().to_vec();
            self.ex.client_wrote(out.len());
            self.client.extend_from_slice(&out);
            if !moved {
                return;
            }
        }
    }

    fn client_sends(&mut self, bytes: &[u8]) {
        self.held.extend_from_slice(bytes);
        self.pump();
    }

    fn server_sends(&mut self, bytes: &[u8]) {
        let n = self.ex.server_input(bytes, Instant::now());
        assert_eq!(n, bytes.len());
        self.pump();
    }

    /// Plays a backend that grants every literal it is offered.
    fn grant_all(&mut self) {
        while matches!(self.ex.to_backend.front(), Some(Out::Await(_))) {
            self.server_sends(b"+ OK\r\n");
        }
    }

    fn backend_text(&self) -> String {
        String::from_utf8_lossy(&self.backend).into_owned()
    }

    fn client_text(&self) -> String {
        String::from_utf8_lossy(&self.client).into_owned()
    }
}

#[test]
fn commands_go_in_imapgate_serialization_under_its_own_tags() {
    let mut p = Peers::new(&[DENY]);
    p.client_sends(
        b"A1 select \"INBOX\"\r\nA2 uid fetch 1:* (flags BODY.PEEK[HEADER.FIELDS (From)])\r\n",
    );
    assert_eq!(
        p.backend_text(),
        "g1 SELECT \"INBOX\"\r\ng2 UID FETCH 1:* (flags BODY.PEEK[HEADER.FIELDS (From)])\r\n"
    );
    p.server_sends(b"* 1 EXISTS\r\ng1 OK [READ-WRITE] done\r\ng2 OK done\r\n");
    assert_eq!(p.client_text(), "* 1 EXISTS\r\nA1 OK [READ-WRITE] done\r\nA2 OK done\r\n");
}

#[test]
fn a_denied_command_and_its_literals_never_reach_the_backend() {
    let mut p = Peers::new(&[DENY]);
    p.client_sends(b"a DELETE {6}\r\n");
    assert_eq!(p.client_text(), "a NO [NOPERM] DELETE is not permitted here.\r\n");
    // The literal was not invited: what follows is a command.
    p.client_sends(b"b DELETE Victim\r\nc DELETE {6+}\r\nVictim\r\nd NOOP\r\n");
    assert_eq!(p.backend_text(), "g1 NOOP\r\n");
}

#[test]
fn a_literal_of_a_command_the_backend_rejects_is_never_sent() {
    // Dovecot answers an unknown command BAD before reading its arguments and resumes at
    // the next LF: inside the literal, were it sent.
    let mut p = Peers::new(&[DENY, HIDE]);
    p.client_sends(b"a XYZZY {19+}\r\nb SELECT Calendar\r\n\r\n");
    assert_eq!(p.backend_text(), "g1 XYZZY {19}\r\n");
    p.server_sends(b"g1 BAD Unknown command\r\n");
    p.client_sends(b"x NOOP\r\n");
    assert_eq!(p.backend_text(), "g1 XYZZY {19}\r\ng2 NOOP\r\n");
    assert_eq!(p.client_text(), "a BAD Unknown command\r\n");
    // Granted, the literal goes and stays a literal.
    p.client_sends(b"c SEARCH TEXT {17+}\r\nd DELETE Victim\r\n\r\n");
    p.server_sends(b"+ OK\r\n");
    assert!(p.backend_text().ends_with("g3 SEARCH TEXT {17}\r\nd DELETE Victim\r\n\r\n"));
}

#[test]
fn literal_announcements_the_grammar_does_not_allow_are_refused_whole() {
    let mut p = Peers::new(&[DENY]);
    // To Dovecot, `"x"{16+}` announces a literal; to imapgate the line is a BAD command,
    // and the next is a SEARCH whose literal holds the DELETE: data, never a command.
    p.client_sends(b"a SEARCH \"x\"{16+}\r\nb SEARCH {21+}\r\n\r\nd DELETE ScratchB\r\n\r\n");
    assert_eq!(p.backend_text(), "g1 SEARCH {21}\r\n");
    assert!(p.client_text().starts_with("a BAD "), "{}", p.client_text());
    p.server_sends(b"g1 BAD Error in IMAP command SEARCH\r\n");
    p.backend.clear();
    p.client_sends(b"x SEARCH \"abc {19+}\r\nd DELETE ScratchA\r\n\r\n");
    assert!(p.backend_text().is_empty(), "{}", p.backend_text());
    assert!(p.client_text().contains("x BAD Unterminated quoted string"), "{}", p.client_text());
    p.client_sends(b"y NOOP\r\n");
    assert_eq!(p.backend_text(), "g2 NOOP\r\n");
}

#[test]
fn idle_ends_only_with_done_and_anything_else_is_judged() {
    let mut p = Peers::new(&[DENY]);
    p.client_sends(b"a IDLE\r\nb DELETE Victim\r\n");
    assert_eq!(p.backend_text(), "g1 IDLE\r\n");
    assert!(!p.ex.rules.cx.idling);
    p.server_sends(b"+ idling\r\n");
    assert!(p.client_text().starts_with("+ idling\r\n"));
    assert_eq!(p.backend_text(), "g1 IDLE\r\nDONE\r\n", "the line ended the IDLE, unsent");
    assert!(p.client_text().ends_with("b NO [NOPERM] DELETE is not permitted here.\r\n"));
    p.server_sends(b"g1 OK Idle completed\r\n");
    p.client_sends(b"c IDLE\r\n");
    p.server_sends(b"+ idling\r\n");
    assert!(p.ex.rules.cx.idling);
    p.client_sends(b"done\r\n");
    assert!(p.backend_text().ends_with("g2 IDLE\r\nDONE\r\n"));
    p.server_sends(b"g2 OK Idle completed\r\n");
    assert!(!p.ex.rules.cx.idling);
    assert!(p.client_text().ends_with("c OK Idle completed\r\n"));
}

#[test]
fn idle_refused_by_the_backend_leaves_the_next_line_a_command() {
    let mut p = Peers::new(&[DENY]);
    p.client_sends(b"a IDLE\r\nDONE\r\n");
    p.server_sends(b"g1 NO no idle here\r\n");
    assert_eq!(p.backend_text(), "g1 IDLE\r\n");
    assert!(p.client_text().ends_with("DONE BAD Missing command name\r\n"), "{}", p.client_text());
}

#[test]
fn a_continuation_request_nobody_asked_for_ends_the_session() {
    let mut p = Peers::new(&[DENY]);
    p.client_sends(b"a XAUTH\r\n");
    p.server_sends(b"+ go on\r\n");
    assert!(matches!(p.ex.stop(), Some(Stop::Backend(_))));
    assert!(!p.client_text().contains("go on"));
}

#[test]
fn duplicate_client_tags_are_answered_each_under_its_own() {
    let mut p = Peers::new(&[DENY]);
    p.client_sends(b"a NOOP\r\na APPEND INBOX {5}\r\n");
    // imapgate invited the literal itself; the backend's + is awaited before sending it.
    assert_eq!(p.client_text(), "+ Ready for literal data\r\n");
    p.client_sends(b"hello\r\n");
    assert_eq!(p.backend_text(), "g1 NOOP\r\ng2 APPEND INBOX {5}\r\n");
    // The NOOP's answer under the same client tag does not end the APPEND.
    p.server_sends(b"g1 OK NOOP done\r\n");
    p.server_sends(b"+ OK\r\n");
    assert_eq!(p.backend_text(), "g1 NOOP\r\ng2 APPEND INBOX {5}\r\nhello\r\n");
}

#[test]
fn imapgate_stops_reading_a_client_that_does_not_read_its_refusals() {
    let mut p = Peers::new(&[DENY]);
    let flood = b"a DELETE x\r\n".repeat(100_000);
    let used = p.ex.client_input(&flood, Instant::now());
    assert!(used < flood.len());
    assert!(p.ex.to_client().len() <= QUEUE_HIGH_WATER + 100);
    assert!(!p.ex.wants_client_input());
    let n = p.ex.to_client().len();
    p.ex.client_wrote(n);
    assert!(p.ex.wants_client_input());
}

#[test]
fn a_large_append_streams_after_the_backend_asks_and_later_parts_are_judged() {
    let mut p = Peers::new(&[DENY, HIDE]);
    let big = vec![b'x'; 100_000];
    p.client_sends(b"a APPEND INBOX {100000}\r\n");
    assert_eq!(p.backend_text(), "g1 APPEND INBOX {100000}\r\n");
    assert!(p.client_text().is_empty(), "the backend decides on a large literal");
    p.server_sends(b"+ OK\r\n");
    assert_eq!(p.client_text(), "+ OK\r\n");
    p.client_sends(&big);
    assert_eq!(p.backend.len(), 26 + 100_000);
    // MULTIAPPEND: the next message is judged before any of it is sent.
    p.client_sends(b" (\\Seen) {5+}\r\nhello\r\n");
    p.server_sends(b"+ OK\r\n");
    assert!(
        p.backend_text().ends_with("x (\\Seen) {5}\r\nhello\r\n"),
        "{}",
        &p.backend_text()[100_000..]
    );
}

#[test]
fn a_catenate_url_into_a_hidden_folder_after_a_streamed_part_aborts_the_command() {
    let mut p = Peers::new(&[DENY, HIDE]);
    p.client_sends(b"a APPEND INBOX CATENATE (TEXT {70000+}\r\n");
    p.server_sends(b"+ OK\r\n");
    p.client_sends(&vec![b'x'; 70_000]);
    let sent = p.backend.len();
    p.client_sends(b" URL \"/Calendar/;UID=1\")\r\n");
    assert_eq!(p.backend.len(), sent, "nothing of the refused part was sent");
    assert!(p.client_text().contains("a NO [NONEXISTENT]"), "{}", p.client_text());
    assert!(p.client_text().contains("* BYE"));
    assert!(matches!(p.ex.stop(), Some(Stop::Aborted)));
}

#[test]
fn literals_larger_than_held_outside_append_data_are_refused() {
    let mut p = Peers::new(&[DENY]);
    p.client_sends(b"a SEARCH TEXT {100000+}\r\n");
    p.client_sends(&vec![b'b'; 100_000]);
    p.client_sends(b"\r\nb NOOP\r\n");
    assert_eq!(p.backend_text(), "g1 NOOP\r\n");
    assert!(p.client_text().starts_with("a NO [TOOBIG]"), "{}", p.client_text());
}

#[test]
fn append_size_limits_count_per_message() {
    let mut p = Peers::new(&[("limits", &[("max_append_size", "1k")])]);
    let mut cmd = b"a APPEND INBOX CATENATE (".to_vec();
    for i in 0..3 {
        if i > 0 {
            cmd.push(b' ');
        }
        cmd.extend_from_slice(b"TEXT {500+}\r\n");
        cmd.extend_from_slice(&[b'y'; 500]);
    }
    cmd.extend_from_slice(b")\r\n");
    p.client_sends(&cmd);
    assert!(p.backend.is_empty());
    assert!(p.client_text().starts_with("a NO [TOOBIG]"), "{}", p.client_text());
}

/// A script of commands with literals, refusals and pipelining, fed in two pieces split at
/// every byte boundary: the backend and the client see the same bytes every time.
#[test]
fn splitting_client_input_anywhere_changes_nothing() {
    let script: &[u8] = b"a1 LIST \"\" *\r\na2 DELETE {3}\r\nb1 SELECT {8+}\r\nCalendar\r\n\
        b2 APPEND INBOX (\\Seen) {5}\r\nhello\r\nb3 X {2+}\r\nab CD\r\nb4 SEARCH \"x\"{1+}\r\nz\r\nb5 NOOP\r\n";
    let whole = {
        let mut p = Peers::new(&[DENY, HIDE]);
        p.client_sends(script);
        p.grant_all();
        (p.backend_text(), p.client_text())
    };
    assert!(whole.0.contains("g1 LIST \"\" *\r\n"), "{}", whole.0);
    assert!(whole.0.ends_with("g3 X {2}\r\nab CD\r\ng4 NOOP\r\n"), "{}", whole.0);
    assert!(!whole.0.contains("Calendar") && !whole.0.contains("DELETE"), "{}", whole.0);
    for cut in 0..=script.len() {
        let mut p = Peers::new(&[DENY, HIDE]);
        p.client_sends(&script[..cut]);
        p.grant_all();
        p.client_sends(&script[cut..]);
        p.grant_all();
        assert_eq!((p.backend_text(), p.client_text()), whole, "cut at {cut}");
    }
}
