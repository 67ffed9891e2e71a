//! Transcripts of the judged exchange: what the client sends, what the backend receives,
//! what the backend answers and what the client sees.

use std::sync::Arc;
use std::time::Instant;

use super::model::Wire;
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
    let caps = [
        "IMAP4rev1",
        "IDLE",
        "LITERAL+",
        "MOVE",
        "UNSELECT",
        "CATENATE",
        "MULTIAPPEND",
        "COMPRESS=DEFLATE",
    ];
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
    wire: Wire,
    backend: Vec<u8>,
    client: Vec<u8>,
}

impl Peers {
    fn new(rules: &[(&str, &[(&str, &str)])]) -> Peers {
        Peers {
            wire: Wire::new(Exchange::judged(engine(rules))),
            backend: Vec::new(),
            client: Vec::new(),
        }
    }

    fn ex(&mut self) -> &mut Exchange {
        &mut self.wire.ex
    }

    fn pump(&mut self) {
        let (b, c) = self.wire.pump(Instant::now());
        self.backend.extend(b);
        self.client.extend(c);
    }

    fn client_sends(&mut self, bytes: &[u8]) {
        self.wire.client_sends(bytes);
        self.pump();
    }

    fn server_sends(&mut self, bytes: &[u8]) {
        self.wire.server_sends(bytes);
        self.pump();
    }

    /// Plays a backend that grants every literal it is offered.
    fn grant_all(&mut self) {
        while self.judged().to_backend.awaited().is_some() {
            self.server_sends(b"+ OK\r\n");
        }
    }

    fn judged(&mut self) -> &mut Judged {
        match &mut self.wire.ex.mode {
            Mode::Judged(j) => j,
            Mode::Fast(_) => panic!("a judged exchange"),
        }
    }

    fn idling(&mut self) -> bool {
        self.judged().rules.cx.idling
    }

    fn backend_text(&self) -> String {
        String::from_utf8_lossy(&self.backend).into_owned()
    }

    fn client_text(&self) -> String {
        String::from_utf8_lossy(&self.client).into_owned()
    }
}

const TYPED: (&str, &[(&str, &str)]) = (
    "hide_folders",
    &[("metadata", "/shared/vendor/kolab/folder-type"), ("types", "event contact")],
);

#[test]
fn folders_hidden_by_type_are_learned_by_imapgates_own_commands_before_any_client_command() {
    let mut p = Peers::new(&[TYPED]);
    // Nothing of the client's is read while the rule asks.
    p.client_sends(b"a LIST \"\" \"*\"\r\n");
    assert_eq!(p.backend_text(), "g1 LIST \"\" \"*\"\r\n");
    p.server_sends(
        b"* LIST (\\HasNoChildren) \"/\" INBOX\r\n* LIST (\\HasNoChildren) \"/\" Kalender\r\n\
          * 1 EXISTS\r\ng1 OK done\r\n",
    );
    assert_eq!(
        p.backend_text(),
        "g1 LIST \"\" \"*\"\r\n\
         g2 GETMETADATA \"INBOX\" \"/shared/vendor/kolab/folder-type\"\r\n\
         g3 GETMETADATA \"Kalender\" \"/shared/vendor/kolab/folder-type\"\r\n"
    );
    p.server_sends(
        b"* METADATA \"Kalender\" (\"/shared/vendor/kolab/folder-type\" \"event.default\")\r\n\
          g2 OK done\r\ng3 OK done\r\n",
    );
    // Only now the client's LIST goes, and it finds the calendar gone.
    assert!(p.backend_text().ends_with("g4 LIST \"\" \"*\"\r\n"), "{}", p.backend_text());
    p.server_sends(
        b"* LIST (\\HasNoChildren) \"/\" INBOX\r\n* LIST (\\HasNoChildren) \"/\" Kalender\r\ng4 OK done\r\n",
    );
    assert_eq!(
        p.client_text(),
        "* 1 EXISTS\r\n* LIST (\\HasNoChildren) \"/\" INBOX\r\na OK done\r\n",
        "unsolicited data goes to the client, the rule's answers never do"
    );
    p.client_sends(b"b SELECT Kalender\r\n");
    assert!(p.client_text().ends_with("b NO [NONEXISTENT] Mailbox doesn't exist.\r\n"));
    // A new folder typed by the client: learned again before the next command is read.
    p.client_sends(b"c CREATE Kontakte\r\nd SELECT Kontakte\r\n");
    assert!(
        p.backend_text().ends_with("g5 CREATE Kontakte\r\n"),
        "SELECT waits: {}",
        p.backend_text()
    );
    p.server_sends(b"g5 OK created\r\n");
    assert!(p.backend_text().ends_with("g6 LIST \"\" \"*\"\r\n"), "{}", p.backend_text());
    p.server_sends(
        b"* LIST () \"/\" INBOX\r\n* LIST () \"/\" Kalender\r\n* LIST () \"/\" Kontakte\r\ng6 OK done\r\n",
    );
    p.server_sends(
        b"* METADATA \"Kalender\" (\"/shared/vendor/kolab/folder-type\" \"event\")\r\n\
          * METADATA \"Kontakte\" (\"/shared/vendor/kolab/folder-type\" \"contact.default\")\r\n\
          g7 OK\r\ng8 OK\r\ng9 OK\r\n",
    );
    assert!(p
        .backend_text()
        .ends_with("g9 GETMETADATA \"Kontakte\" \"/shared/vendor/kolab/folder-type\"\r\n"));
    assert!(
        p.client_text().ends_with("c OK created\r\nd NO [NONEXISTENT] Mailbox doesn't exist.\r\n"),
        "{}",
        p.client_text()
    );
}

#[test]
fn compress_in_a_judged_session_is_answered_by_imapgate_and_never_sent() {
    let mut p = Peers::new(&[DENY]);
    p.client_sends(b"a COMPRESS deflate\r\nb NOOP\r\n");
    assert_eq!(p.backend_text(), "g1 NOOP\r\n", "COMPRESS never reaches the backend");
    assert_eq!(p.client_text(), "a OK DEFLATE active.\r\n<deflate>");
    p.client_sends(b"c COMPRESS DEFLATE\r\nd COMPRESS\r\n");
    assert!(p.client_text().ends_with(
        "c NO [COMPRESSIONACTIVE] DEFLATE is already active.\r\n\
         d NO [COMPRESSIONACTIVE] DEFLATE is already active.\r\n"
    ));
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
    assert!(!p.idling());
    p.server_sends(b"+ idling\r\n");
    assert!(p.client_text().starts_with("+ idling\r\n"));
    assert_eq!(p.backend_text(), "g1 IDLE\r\nDONE\r\n", "the line ended the IDLE, unsent");
    assert!(p.client_text().ends_with("b NO [NOPERM] DELETE is not permitted here.\r\n"));
    p.server_sends(b"g1 OK Idle completed\r\n");
    p.client_sends(b"c IDLE\r\n");
    p.server_sends(b"+ idling\r\n");
    assert!(p.idling());
    p.client_sends(b"done\r\n");
    assert!(p.backend_text().ends_with("g2 IDLE\r\nDONE\r\n"));
    p.server_sends(b"g2 OK Idle completed\r\n");
    assert!(!p.idling());
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
    assert!(matches!(p.ex().stop(), Some(Stop::Backend(_))));
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
    let used = p.ex().client_input(&flood, Instant::now());
    assert!(used < flood.len());
    let queued = match p.ex().out(Toward::Client) {
        Out::Bytes(b) => b.len(),
        other => panic!("{other:?}"),
    };
    assert!(queued <= judged::QUEUE_HIGH_WATER + 100);
    assert!(!p.ex().wants_client_input());
    p.ex().wrote(Toward::Client, queued);
    assert!(p.ex().wants_client_input());
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
    assert!(matches!(p.ex().stop(), Some(Stop::Aborted)));
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

/// The fast path: the core with no rules.
mod fast_path {
    use super::*;

    fn wire() -> Wire {
        let shown = ["IMAP4rev1", "IDLE", "LITERAL+"].map(String::from).to_vec();
        Wire::new(Exchange::fast(shown))
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    #[test]
    fn bytes_go_through_in_place_and_untouched() {
        let mut w = wire();
        let input = b"A1 select \"INBOX\"\r\nA2 APPEND INBOX {5+}\r\nhello\r\n";
        w.client_sends(input);
        let (to_backend, _) = w.pump(Instant::now());
        assert_eq!(to_backend, input.to_vec(), "the client's own bytes, tags and all");
        assert!(matches!(w.ex.out(Toward::Backend), Out::Nothing));
        w.server_sends(b"* 1 FETCH (BODY[] {3}\r\nabc)\r\nA1 OK done\r\n");
        let (_, to_client) = w.pump(Instant::now());
        assert_eq!(text(&to_client), "* 1 FETCH (BODY[] {3}\r\nabc)\r\nA1 OK done\r\n");
    }

    #[test]
    fn a_synchronizing_literal_waits_for_the_servers_decision() {
        let mut w = wire();
        w.client_sends(b"a APPEND x {5}\r\nb DELETE y\r\n");
        let (to_backend, _) = w.pump(Instant::now());
        assert_eq!(text(&to_backend), "a APPEND x {5}\r\n");
        // The server refused: what followed is a command, not the literal.
        w.server_sends(b"a NO [TRYCREATE] no\r\n");
        let (to_backend, to_client) = w.pump(Instant::now());
        assert_eq!(text(&to_backend), "b DELETE y\r\n");
        assert_eq!(text(&to_client), "a NO [TRYCREATE] no\r\n");
    }

    #[test]
    fn stream_changing_and_unshown_commands_are_refused_unsent() {
        let mut w = wire();
        w.client_sends(b"a COMPRESS DEFLATE\r\nb MOVE 1 x\r\nc NOOP\r\n");
        let (to_backend, to_client) = w.pump(Instant::now());
        assert_eq!(text(&to_backend), "c NOOP\r\n");
        assert_eq!(
            text(&to_client),
            "a NO [CANNOT] COMPRESS is not available here.\r\n\
             b NO [CANNOT] MOVE is not available here.\r\n"
        );
    }

    #[test]
    fn compress_is_imapgates_and_the_client_stream_turns_right_after_its_line() {
        let shown = ["IMAP4rev1", "IDLE", "COMPRESS=DEFLATE"].map(String::from).to_vec();
        let mut ex = Exchange::fast(shown);
        let input = b"a COMPRESS DEFLATE\r\n\x78\x9c compressed bytes";
        let used = ex.client_input(input, Instant::now());
        assert_eq!(used, 20, "nothing past the COMPRESS line is framed as plaintext");
        assert_eq!(ex.client_input(&input[used..], Instant::now()), 0);
        assert!(ex.take_client_inflate());
        assert!(!ex.take_client_inflate(), "once");
        let shown = ["IMAP4rev1", "IDLE", "COMPRESS=DEFLATE"].map(String::from).to_vec();
        let mut w = Wire::new(Exchange::fast(shown));
        w.client_sends(b"a COMPRESS DEFLATE\r\n");
        w.server_sends(b"* 3 EXISTS\r\n");
        let (to_backend, to_client) = w.pump(Instant::now());
        assert_eq!(text(&to_backend), "");
        assert_eq!(text(&to_client), "a OK DEFLATE active.\r\n<deflate>* 3 EXISTS\r\n");
        w.client_sends(b"b COMPRESS DEFLATE\r\nc COMPRESS LZW\r\n");
        let (_, to_client) = w.pump(Instant::now());
        assert_eq!(
            text(&to_client),
            "b NO [COMPRESSIONACTIVE] DEFLATE is already active.\r\n\
             c NO [COMPRESSIONACTIVE] DEFLATE is already active.\r\n"
        );
    }

    #[test]
    fn compress_answers_wait_for_a_response_boundary() {
        let shown = ["IMAP4rev1", "COMPRESS=DEFLATE"].map(String::from).to_vec();
        let mut w = Wire::new(Exchange::fast(shown));
        w.client_sends(b"a FETCH 1 BODY[]\r\n");
        w.pump(Instant::now());
        w.server_sends(b"* 1 FETCH (BODY[] {10}\r\n01234");
        w.pump(Instant::now());
        w.client_sends(b"b COMPRESS DEFLATE\r\n");
        let (_, to_client) = w.pump(Instant::now());
        assert_eq!(text(&to_client), "", "not inside the literal");
        w.server_sends(b"56789)\r\na OK done\r\n");
        let (_, to_client) = w.pump(Instant::now());
        assert_eq!(text(&to_client), "56789)\r\nb OK DEFLATE active.\r\n<deflate>a OK done\r\n");
    }

    #[test]
    fn capability_lists_show_the_listeners_set() {
        let mut w = wire();
        w.client_sends(b"a CAPABILITY\r\n");
        w.pump(Instant::now());
        w.server_sends(b"* CAPABILITY IMAP4rev1 IDLE MOVE COMPRESS=DEFLATE\r\na OK [CAPABILITY IMAP4rev1 X] done\r\n");
        let (_, to_client) = w.pump(Instant::now());
        assert_eq!(
            text(&to_client),
            "* CAPABILITY IMAP4rev1 IDLE LITERAL+\r\na OK [CAPABILITY IMAP4rev1 IDLE LITERAL+] done\r\n"
        );
        // A tag may hold a `[` (tags are astrings): the code is still the one replaced.
        w.client_sends(b"b[1 CAPABILITY\r\n");
        w.pump(Instant::now());
        w.server_sends(b"b[1 OK [CAPABILITY IMAP4rev1 X] done\r\n");
        let (_, to_client) = w.pump(Instant::now());
        assert_eq!(text(&to_client), "b[1 OK [CAPABILITY IMAP4rev1 IDLE LITERAL+] done\r\n");
    }

    #[test]
    fn idle_holds_the_next_line_until_the_server_says() {
        let mut w = wire();
        w.client_sends(b"a IDLE\r\nDONE\r\nb NOOP\r\n");
        let (to_backend, _) = w.pump(Instant::now());
        assert_eq!(text(&to_backend), "a IDLE\r\n");
        w.server_sends(b"+ idling\r\n");
        let (to_backend, to_client) = w.pump(Instant::now());
        assert_eq!(text(&to_backend), "DONE\r\nb NOOP\r\n");
        assert_eq!(text(&to_client), "+ idling\r\n");
    }

    /// Client and server scripts, each fed in two pieces cut at every byte boundary (the
    /// client's first, so imapgate's answers keep their place): the same bytes come out.
    #[test]
    fn splitting_input_anywhere_changes_nothing() {
        let client: &[u8] =
            b"a1 SELECT INBOX\r\na2 APPEND INBOX {3+}\r\nabc\r\na3 STARTTLS\r\na4 NOOP\r\n";
        let server: &[u8] =
            b"* CAPABILITY IMAP4rev1 X\r\n* 2 FETCH (BODY[] {4}\r\nwxyz)\r\na1 OK done\r\n";
        let run = |cut_c: usize, cut_s: usize| {
            let mut w = wire();
            let (mut b, mut c) = (Vec::new(), Vec::new());
            for piece in [&client[..cut_c], &client[cut_c..]] {
                w.client_sends(piece);
                b.extend(w.pump(Instant::now()).0);
            }
            for piece in [&server[..cut_s], &server[cut_s..]] {
                w.server_sends(piece);
                let (x, y) = w.pump(Instant::now());
                b.extend(x);
                c.extend(y);
            }
            (text(&b), text(&c))
        };
        let whole = run(client.len(), server.len());
        assert!(whole.1.contains("* CAPABILITY IMAP4rev1 IDLE LITERAL+\r\n"), "{}", whole.1);
        assert!(!whole.0.contains("STARTTLS"));
        for cut in 0..=client.len() {
            assert_eq!(run(cut, server.len()), whole, "client cut {cut}");
        }
        for cut in 0..=server.len() {
            assert_eq!(run(client.len(), cut), whole, "server cut {cut}");
        }
    }
}

/// The fast path's cost per small response, for the eye (`cargo test --release -- --ignored`).
#[test]
#[ignore]
fn fast_path_cost_per_small_message() {
    let mut stream = Vec::new();
    for i in 1..=20_000 {
        stream.extend_from_slice(format!("* {i} FETCH (BODY[] {{4096}}\r\n").as_bytes());
        stream.extend_from_slice(&[b'x'; 4096]);
        stream.extend_from_slice(b")\r\n");
    }
    let mut ex = Exchange::fast(vec!["IMAP4rev1".into()]);
    let started = Instant::now();
    for chunk in stream.chunks(65536) {
        let mut used = 0;
        while used < chunk.len() {
            used += ex.server_input(&chunk[used..], started);
            loop {
                let _ = ex.dropped(Toward::Client);
                match ex.out(Toward::Client) {
                    Out::Nothing => break,
                    Out::Input(n) | Out::Skip(n) => ex.wrote(Toward::Client, n),
                    Out::Bytes(b) => {
                        let n = b.len();
                        ex.wrote(Toward::Client, n)
                    }
                    Out::StartDeflate => ex.wrote(Toward::Client, 0),
                }
            }
        }
    }
    let per = started.elapsed().as_nanos() / 20_000;
    eprintln!("{per} ns per 4 KiB message");
}
