//! The rule engine through the real imapgate against real Dovecot: one test per rule
//! kind and scenario, the Kolab showcase, and the no-rule fast path. The helpers are
//! shared with `rules_bypass.rs`.

use std::process::Command;
use std::time::Duration;

use crate::common::client::{last_line, quote};
use crate::common::*;

/// The groupware folders of the Kolab showcase.
pub const GROUPWARE: &[&str] =
    &["Calendar", "Contacts", "Tasks", "Notes", "Journal", "Configuration"];

/// The hide rule of the Kolab showcase (its condition lets Kolab-aware clients through).
pub const KOLAB_RULE: &str = "[rule hide-groupware]\ntype = hide_folders\n\
     folders = Calendar Contacts Tasks Notes Journal Configuration\n\
     not_id.name = (?i)^(kontact|roundcube)\n";

/// The standard config with `rules = LIST` on the listener and the rule sections.
pub fn rules_config(backend_port: u16, rules: &str, sections: &str) -> String {
    format!("{}rules = {rules}\n\n{sections}", minimal_config(backend_port))
}

/// Dovecot, a fresh user owning `folders` (created directly), and imapgate with `sections`.
pub struct World {
    pub dv: Dovecot,
    pub px: Proxy,
    pub user: String,
}

impl World {
    pub fn new(prefix: &str, folders: &[&str], rules: &str, sections: &str) -> World {
        let dv = Dovecot::start();
        let user = unique_user(prefix);
        let mut d = dv.connect_as(&user);
        for f in folders {
            d.cmd_ok("C", &format!("CREATE {}", quote(f)));
        }
        d.logout();
        let config = if rules.is_empty() {
            minimal_config(dv.port)
        } else {
            rules_config(dv.port, rules, sections)
        };
        let px = Proxy::start(&config);
        World { dv, px, user }
    }

    /// A logged-in client through imapgate.
    pub fn client(&self) -> Client {
        let mut c = Client::connect(self.px.port);
        c.login(&self.user, "secret");
        c
    }

    /// A logged-in direct connection to Dovecot.
    pub fn direct(&self) -> Client {
        self.dv.connect_as(&self.user)
    }

    /// Every mailbox name, as Dovecot itself lists them.
    pub fn direct_mailboxes(&self) -> Vec<String> {
        let mut d = self.direct();
        let names = list_names(&d.cmd_ok("L", "LIST \"\" \"*\""));
        d.logout();
        names
    }

    /// MESSAGES of `mailbox`, read directly; None when Dovecot refuses the STATUS.
    pub fn direct_messages(&self, mailbox: &str) -> Option<u32> {
        let mut d = self.direct();
        let r = d.cmd("S", &format!("STATUS {} (MESSAGES)", quote(mailbox)));
        d.logout();
        status_messages(&r)
    }

    pub fn append_direct(&self, mailbox: &str, subject: &str) {
        self.dv.append_message(&self.user, mailbox, &text_message(subject, "body"));
    }
}

/// The mailbox names of the `* LIST` / `* LSUB` lines of a response block.
pub fn list_names(block: &[u8]) -> Vec<String> {
    let t = text(block);
    let mut names = Vec::new();
    let mut lines = t.split("\r\n").peekable();
    while let Some(line) = lines.next() {
        if !(line.starts_with("* LIST ") || line.starts_with("* LSUB ")) {
            continue;
        }
        // `* LIST (flags) DELIM NAME [extended data]`
        let Some(after_flags) = line.find(") ").map(|i| &line[i + 2..]) else { continue };
        let after_delim = if let Some(rest) = after_flags.strip_prefix("NIL ") {
            rest
        } else {
            after_flags.get(4..).unwrap_or("")
        };
        let name = if let Some(q) = after_delim.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next()),
                    '"' => break,
                    c => out.push(c),
                }
            }
            out
        } else if after_delim.starts_with('{') {
            lines.peek().map(|l| l.to_string()).unwrap_or_default()
        } else {
            after_delim.split(' ').next().unwrap_or("").to_string()
        };
        names.push(name);
    }
    names
}

/// `MESSAGES n` of the first `* STATUS` line of a response block.
pub fn status_messages(block: &[u8]) -> Option<u32> {
    let t = text(block);
    let line = t.lines().find(|l| l.starts_with("* STATUS "))?;
    let at = line.find("MESSAGES ")? + "MESSAGES ".len();
    line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The tagged completion line of a block, as text without CRLF.
pub fn tagged(block: &[u8]) -> String {
    text(last_line(block)).trim_end().to_string()
}

/// Asserts the tagged completion of `block` starts with `TAG WANT`.
#[track_caller]
pub fn assert_tagged(block: &[u8], tag: &str, want: &str) {
    let line = tagged(block);
    assert!(
        line.starts_with(&format!("{tag} {want}")),
        "expected `{tag} {want}...`, got:\n{}",
        text(block)
    );
}

/// APPEND of a small message with a synchronizing literal; sends the body only when
/// invited. Returns everything received.
pub fn append(c: &mut Client, tag: &str, mailbox_wire: &str, msg: &[u8]) -> Vec<u8> {
    c.send_line(&format!("{tag} APPEND {mailbox_wire} {{{}}}", msg.len()));
    let first = c.read_response();
    if !first.starts_with(b"+") {
        let mut all = first.clone();
        if !first.starts_with(format!("{tag} ").as_bytes()) {
            all.extend(c.read_until_tagged(tag));
        }
        return all;
    }
    c.send(msg);
    c.send(b"\r\n");
    c.read_until_tagged(tag)
}

fn words_of(line: &[u8]) -> Vec<String> {
    text(line)
        .split(|c: char| c.is_whitespace() || c == '[' || c == ']')
        .map(str::to_string)
        .collect()
}

const NOPERM_DELETE: &str = "NO [NOPERM] DELETE is not permitted here.";
const NONEXISTENT: &str = "NO [NONEXISTENT] Mailbox doesn't exist.";

// ---------------------------------------------------------------------------------
// commands

#[test]
fn commands_deny_list_refuses_delete_and_expunge_and_passes_the_rest() {
    let w = World::new(
        "rdeny",
        &["Doomed"],
        "no-delete",
        "[rule no-delete]\ntype = commands\ndeny = DELETE EXPUNGE\n",
    );
    w.append_direct("INBOX", "keep-me");
    let mut c = w.client();
    let r = c.cmd("d", "DELETE Doomed");
    assert_eq!(tagged(&r), format!("d {NOPERM_DELETE}"), "{}", text(&r));
    c.cmd_ok("s", "SELECT INBOX");
    c.cmd_ok("f", "STORE 1 +FLAGS (\\Deleted)");
    let r = c.cmd("x", "EXPUNGE");
    assert_eq!(tagged(&r), "x NO [NOPERM] EXPUNGE is not permitted here.", "{}", text(&r));
    c.cmd_ok("c", "CREATE Fresh");
    c.cmd_ok("n", "NOOP");
    c.logout();
    let names = w.direct_mailboxes();
    assert!(names.contains(&"Doomed".to_string()), "Doomed was deleted: {names:?}");
    assert!(names.contains(&"Fresh".to_string()), "CREATE did not pass: {names:?}");
    assert_eq!(w.direct_messages("INBOX"), Some(1), "EXPUNGE reached Dovecot");
}

#[test]
fn commands_allow_list_permits_only_listed_commands_and_always_logout() {
    let w = World::new(
        "rallow",
        &[],
        "only-read",
        "[rule only-read]\ntype = commands\nallow = SELECT FETCH NOOP CAPABILITY\n",
    );
    w.append_direct("INBOX", "allowed-read");
    let mut c = w.client();
    c.cmd_ok("s", "SELECT INBOX");
    let r = c.cmd_ok("f", "UID FETCH 1:* (FLAGS)");
    assert!(text(&r).contains("FETCH"), "{}", text(&r));
    let r = c.cmd("l", "LIST \"\" \"*\"");
    assert_eq!(tagged(&r), "l NO [NOPERM] LIST is not permitted here.", "{}", text(&r));
    let r = c.cmd("c", "CREATE Sneaky");
    assert_tagged(&r, "c", "NO [NOPERM]");
    let r = c.cmd("st", "STORE 1 +FLAGS (\\Deleted)");
    assert_tagged(&r, "st", "NO [NOPERM]");
    c.cmd_ok("n", "NOOP");
    c.logout();
    assert!(!w.direct_mailboxes().contains(&"Sneaky".to_string()));
}

// ---------------------------------------------------------------------------------
// capabilities

#[test]
fn capabilities_rule_hides_move_from_login_and_capability_and_refuses_move() {
    let w = World::new(
        "rcaps",
        &["Target"],
        "caps",
        "[rule caps]\ntype = capabilities\nremove = MOVE\n",
    );
    w.append_direct("INBOX", "stay-here");
    let mut d = w.direct();
    let direct_caps = d.cmd_ok("C", "CAPABILITY");
    assert!(words_of(&direct_caps).contains(&"MOVE".into()), "Dovecot offers MOVE");
    d.logout();

    let mut c = Client::connect(w.px.port);
    let login = c.try_login(&w.user, "secret");
    assert!(login.starts_with(b"L1 OK [CAPABILITY "), "{}", text(&login));
    assert!(!words_of(&login).contains(&"MOVE".into()), "MOVE in LOGIN OK: {}", text(&login));
    assert!(words_of(&login).contains(&"IDLE".into()), "other caps kept: {}", text(&login));
    let caps = c.cmd_ok("C", "CAPABILITY");
    assert!(!words_of(&caps).contains(&"MOVE".into()), "MOVE in CAPABILITY: {}", text(&caps));
    assert!(words_of(&caps).contains(&"UIDPLUS".into()), "{}", text(&caps));
    c.cmd_ok("s", "SELECT INBOX");
    let r = c.cmd("m", "MOVE 1 Target");
    assert_eq!(tagged(&r), "m NO [CANNOT] MOVE is not available here.", "{}", text(&r));
    let r = c.cmd("u", "UID MOVE 1:* Target");
    assert_eq!(tagged(&r), "u NO [CANNOT] UID MOVE is not available here.", "{}", text(&r));
    c.logout();
    assert_eq!(w.direct_messages("INBOX"), Some(1));
    assert_eq!(w.direct_messages("Target"), Some(0));
}

// ---------------------------------------------------------------------------------
// hide_folders

fn hide_world(prefix: &str) -> World {
    let mut folders: Vec<&str> = GROUPWARE.to_vec();
    folders.extend(["Calendar.Personal", "Work", "Calendars"]);
    let w = World::new(
        prefix,
        &folders,
        "hide",
        "[rule hide]\ntype = hide_folders\n\
         folders = Calendar Contacts Tasks Notes Journal Configuration\n",
    );
    w.append_direct("Work", "w1");
    w.append_direct("Work", "w2");
    w.append_direct("INBOX", "i1");
    w.append_direct("Calendar", "c1");
    let mut d = w.direct();
    for f in GROUPWARE.iter().chain(&["Calendar.Personal", "Work"]) {
        d.cmd_ok("S", &format!("SUBSCRIBE {}", quote(f)));
    }
    d.logout();
    w
}

fn is_hidden(name: &str) -> bool {
    GROUPWARE.iter().any(|g| name == *g || name.starts_with(&format!("{g}.")))
}

#[test]
fn hide_folders_removes_groupware_folders_from_list_lsub_and_list_status() {
    let w = hide_world("rhidel");
    let mut d = w.direct();
    let d_delim = d.cmd_ok("L", "LIST \"\" \"\"");
    assert!(text(&d_delim).contains("\".\""), "Dovecot's delimiter is '.': {}", text(&d_delim));
    let direct_list = list_names(&d.cmd_ok("L", "LIST \"\" \"*\""));
    let direct_lsub = list_names(&d.cmd_ok("L", "LSUB \"\" \"*\""));
    let direct_ls = d.cmd_ok("L", "LIST \"\" \"*\" RETURN (STATUS (MESSAGES))");
    d.logout();
    assert!(direct_list.iter().any(|n| is_hidden(n)), "setup: {direct_list:?}");

    let mut c = w.client();
    // Before any LIST (delimiter not yet learned) and after it.
    let lsub = list_names(&c.cmd_ok("b", "LSUB \"\" \"*\""));
    let list = list_names(&c.cmd_ok("a", "LIST \"\" \"*\""));
    let mut want: Vec<String> = direct_list.iter().filter(|n| !is_hidden(n)).cloned().collect();
    let mut got = list.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "LIST through imapgate");
    assert!(got.contains(&"Calendars".to_string()), "a sibling with a longer name stays");
    let mut want: Vec<String> = direct_lsub.iter().filter(|n| !is_hidden(n)).cloned().collect();
    let mut got = lsub;
    want.sort();
    got.sort();
    assert_eq!(got, want, "LSUB through imapgate");
    for pattern in ["%", "Cal*", "Calendar", "Calendar.*", "*endar*"] {
        let r = c.cmd_ok("p", &format!("LIST \"\" {}", quote(pattern)));
        let names = list_names(&r);
        assert!(!names.iter().any(|n| is_hidden(n)), "LIST {pattern}: {}", text(&r));
    }
    let ls = c.cmd_ok("c", "LIST \"\" \"*\" RETURN (STATUS (MESSAGES))");
    let t = text(&ls);
    for line in t.lines().filter(|l| l.starts_with("* ")) {
        for g in GROUPWARE {
            assert!(!line.contains(g) || line.contains("Calendars"), "hidden folder shown: {line}");
        }
        // Every visible line is byte-identical to Dovecot's.
        assert!(text(&direct_ls).contains(line), "line not from Dovecot: {line}");
    }
    assert_eq!(status_messages(&c.cmd_ok("s", "STATUS Work (MESSAGES)")), Some(2));
    assert_eq!(status_messages(&c.cmd_ok("s", "STATUS INBOX (MESSAGES)")), Some(1));
    assert!(t.contains("* STATUS Work (MESSAGES 2)"), "{t}");
    assert!(t.contains("* STATUS INBOX (MESSAGES 1)"), "{t}");
    c.logout();
    assert_eq!(w.direct_messages("Work"), Some(2));
}

#[test]
fn hide_folders_refuses_every_command_naming_a_hidden_folder_with_nonexistent() {
    let w = hide_world("rhidec");
    let before = w.direct_mailboxes();
    let mut c = w.client();
    c.cmd_ok("s0", "SELECT INBOX");
    for (tag, cmd) in [
        ("s1", "SELECT Calendar"),
        ("s2", "EXAMINE Contacts"),
        ("s3", "STATUS Tasks (MESSAGES)"),
        ("s4", "SELECT Calendar.Personal"),
        ("s5", "COPY 1 Journal"),
        ("s6", "UID COPY 1:* Journal"),
        ("s7", "MOVE 1 Configuration"),
        ("s8", "UID MOVE 1:* Calendar.Personal"),
        ("s9", "RENAME Calendar Stolen"),
        ("sa", "RENAME Work Calendar.Work"),
        ("sb", "DELETE Calendar.Personal"),
        ("sc", "DELETE Notes"),
        ("sd", "SUBSCRIBE Contacts"),
        ("se", "UNSUBSCRIBE Calendar"),
        ("sf", "CREATE Calendar.New"),
    ] {
        let r = c.cmd(tag, cmd);
        assert_eq!(tagged(&r), format!("{tag} {NONEXISTENT}"), "{cmd}:\n{}", text(&r));
        assert!(!text(&r).contains("* "), "{cmd} leaked untagged data: {}", text(&r));
    }
    let r = append(&mut c, "ap", "Notes", &text_message("into-notes", "x"));
    assert_eq!(tagged(&r), format!("ap {NONEXISTENT}"), "{}", text(&r));
    c.cmd_ok("ok", "STATUS Work (MESSAGES)");
    c.cmd_ok("ok2", "SELECT Calendars");
    c.logout();
    assert_eq!(w.direct_mailboxes(), before, "a mailbox changed on Dovecot");
    assert_eq!(w.direct_messages("INBOX"), Some(1));
    assert_eq!(w.direct_messages("Calendar"), Some(1));
    for f in ["Journal", "Configuration", "Notes", "Calendar.Personal"] {
        assert_eq!(w.direct_messages(f), Some(0), "{f}");
    }
    let mut d = w.direct();
    let lsub = list_names(&d.cmd_ok("L", "LSUB \"\" \"*\""));
    d.logout();
    assert!(lsub.contains(&"Calendar".to_string()), "UNSUBSCRIBE reached Dovecot: {lsub:?}");
}

// ---------------------------------------------------------------------------------
// limits

#[test]
fn limits_append_over_max_append_size_gets_toobig_without_a_continuation() {
    let w = World::new("rtoobig", &[], "lim", "[rule lim]\ntype = limits\nmax_append_size = 1k\n");
    let mut c = w.client();
    c.send_line("a APPEND INBOX {2000}");
    let first = c.read_line();
    assert!(
        first.starts_with(b"a NO [TOOBIG]"),
        "expected `a NO [TOOBIG]` instead of an invitation to send 2000 bytes, got: {}",
        text(&first)
    );
    c.cmd_ok("n", "NOOP");
    c.logout();
    assert_eq!(w.direct_messages("INBOX"), Some(0));
}

#[test]
fn limits_append_over_max_append_size_with_a_large_literal_gets_toobig_at_once() {
    let w = World::new("rtoobig2", &[], "lim", "[rule lim]\ntype = limits\nmax_append_size = 1k\n");
    let mut c = w.client();
    c.send_line("a APPEND INBOX {200000}");
    let first = c.read_line();
    assert!(first.starts_with(b"a NO [TOOBIG]"), "got: {}", text(&first));
    c.cmd_ok("n", "NOOP");
    c.logout();
    assert_eq!(w.direct_messages("INBOX"), Some(0));
}

#[test]
fn limits_append_over_max_append_size_with_literal_plus_is_swallowed_and_the_next_command_works() {
    let w = World::new("rtoobig3", &[], "lim", "[rule lim]\ntype = limits\nmax_append_size = 1k\n");
    let mut c = w.client();
    let mut msg = text_message("too-big", &"x".repeat(3000));
    let head = format!("b APPEND INBOX {{{}+}}\r\n", msg.len());
    msg.splice(0..0, head.into_bytes());
    msg.extend_from_slice(b"\r\n");
    c.send(&msg);
    let r = c.read_until_tagged("b");
    assert_tagged(&r, "b", "NO [TOOBIG]");
    c.cmd_ok("c", "NOOP");
    let small = text_message("small-ok", "fits");
    let r = append(&mut c, "d", "INBOX", &small);
    assert_tagged(&r, "d", "OK");
    c.logout();
    assert_eq!(w.direct_messages("INBOX"), Some(1));
}

#[test]
fn limits_max_commands_ends_the_session_with_bye_and_names_the_limit() {
    let w = World::new("rmaxcmd", &[], "lim", "[rule lim]\ntype = limits\nmax_commands = 3\n");
    let mut c = w.client();
    for t in ["n1", "n2", "n3"] {
        c.cmd_ok(t, "NOOP");
    }
    c.send_line("n4 NOOP");
    let rest = c.read_to_eof();
    let t = text(&rest);
    assert!(t.starts_with("* BYE [LIMIT] "), "got: {t}");
    assert!(!t.contains("n4 OK"), "the fourth command ran: {t}");
    w.px.wait_for_log(&format!(
        r"SESSION-END id=\d+ user={} .*reason=limit detail=max_commands$",
        regex::escape(&w.user)
    ));
}

// ---------------------------------------------------------------------------------
// audit

/// Runs the audited commands; returns the body marker that must not be logged.
fn audited_session(w: &World) -> &'static str {
    let mut c = w.client();
    c.cmd_ok("t1", "SELECT INBOX");
    c.cmd_ok("t2", "CREATE Entw&APw-rfe");
    let r = append(&mut c, "t3", "Work", &text_message("subj", "top-secret-body-marker"));
    assert_tagged(&r, "t3", "OK");
    c.cmd_ok("t4", "LIST \"\" \"*\"");
    c.cmd_ok("t5", "RENAME Work Play");
    c.logout();
    "top-secret-body-marker"
}

#[track_caller]
fn assert_audited(w: &World, log: &str, marker: &str) {
    let user = regex::escape(&w.user);
    for re in [
        format!(r"AUDIT id=\d+ user={user} tag=t1 command=SELECT mailbox=INBOX$"),
        format!(r#"AUDIT id=\d+ user={user} tag=t2 command=CREATE mailbox="Entw\\u\{{fc\}}rfe"$"#),
        format!(r"AUDIT id=\d+ user={user} tag=t3 command=APPEND mailbox=Work$"),
        format!(r"AUDIT id=\d+ user={user} tag=t4 command=LIST$"),
        format!(r"AUDIT id=\d+ user={user} tag=t5 command=RENAME mailbox=Work mailbox=Play$"),
    ] {
        let rx = regex::Regex::new(&re).unwrap();
        assert!(log.lines().any(|l| rx.is_match(l)), "no line /{re}/ in:\n{log}");
    }
    assert!(!log.contains(marker), "message content in the audit lines:\n{log}");
}

#[test]
fn audit_logs_each_command_with_mailbox_names_and_no_message_content() {
    let w = World::new("raudit", &["Work"], "aud", "[rule aud]\ntype = audit\n");
    let marker = audited_session(&w);
    w.px.wait_for_log(r"AUDIT .* tag=LO command=LOGOUT");
    assert_audited(&w, &w.px.log(), marker);
}

#[test]
fn audit_with_a_file_writes_its_lines_there() {
    let w = World::new(
        "rauditf",
        &["Work"],
        "aud",
        "[rule aud]\ntype = audit\nfile = @DIR@/audit.log\n",
    );
    let marker = audited_session(&w);
    let path = w.px.dir().join("audit.log");
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    crate::common::proxy::wait_for_log_in(r"tag=LO command=LOGOUT", read);
    assert_audited(&w, &read(), marker);
    assert!(!w.px.log().contains(marker), "message content in the log");
}

// ---------------------------------------------------------------------------------
// rewrite_folders

#[test]
fn rewrite_folders_shows_sent_items_as_sent_both_ways() {
    let w = World::new(
        "rrewrite",
        &["Sent Items"],
        "rw",
        "[rule rw]\ntype = rewrite_folders\nfolder = Sent \"Sent Items\"\n",
    );
    w.append_direct("Sent Items", "already-sent");
    let mut c = w.client();
    let names = list_names(&c.cmd_ok("l", "LIST \"\" \"*\""));
    assert!(names.contains(&"Sent".to_string()), "{names:?}");
    assert!(!names.contains(&"Sent Items".to_string()), "{names:?}");
    let r = c.cmd_ok("s", "SELECT Sent");
    assert!(text(&r).contains("* 1 EXISTS"), "{}", text(&r));
    let r = append(&mut c, "a", "Sent", &text_message("via-proxy", "x"));
    assert_tagged(&r, "a", "OK");
    let r = c.cmd_ok("st", "STATUS Sent (MESSAGES)");
    let rx = regex::Regex::new(r#"(?m)^\* STATUS "?Sent"? \(MESSAGES 2\)\r$"#).unwrap();
    assert!(rx.is_match(&text(&r)), "{}", text(&r));
    c.logout();
    assert_eq!(w.direct_messages("Sent Items"), Some(2));
    assert!(!w.direct_mailboxes().contains(&"Sent".to_string()), "a real `Sent` was created");
}

// ---------------------------------------------------------------------------------
// the Kolab showcase

fn kolab_world(prefix: &str) -> World {
    let mut folders: Vec<&str> = GROUPWARE.to_vec();
    folders.push("Work");
    let w = World::new(prefix, &folders, "hide-groupware", KOLAB_RULE);
    w.append_direct("Calendar", "event");
    w
}

fn id_then_login(w: &World, name: &str) -> Client {
    let mut c = Client::connect(w.px.port);
    c.cmd_ok("i", &format!("ID (\"name\" \"{name}\" \"version\" \"5.24\")"));
    c.login(&w.user, "secret");
    c
}

#[test]
fn kolab_showcase_kontact_with_id_before_login_sees_the_groupware_folders() {
    let w = kolab_world("kkontact");
    let mut c = id_then_login(&w, "Kontact");
    let names = list_names(&c.cmd_ok("l", "LIST \"\" \"*\""));
    for g in GROUPWARE {
        assert!(names.contains(&g.to_string()), "{g} missing for Kontact: {names:?}");
    }
    let r = c.cmd_ok("s", "SELECT Calendar");
    assert!(text(&r).contains("* 1 EXISTS"), "{}", text(&r));
    c.logout();
}

#[test]
fn kolab_showcase_thunderbird_id_does_not_see_or_select_groupware_folders() {
    let w = kolab_world("kthunder");
    let mut c = id_then_login(&w, "Thunderbird");
    let names = list_names(&c.cmd_ok("l", "LIST \"\" \"*\""));
    assert!(!names.iter().any(|n| is_hidden(n)), "{names:?}");
    assert!(names.contains(&"Work".to_string()), "{names:?}");
    for g in GROUPWARE {
        let r = c.cmd("s", &format!("SELECT {g}"));
        assert_eq!(tagged(&r), format!("s {NONEXISTENT}"), "{}", text(&r));
    }
    c.logout();
}

const PY_NO_ID: &str = r#"
import imaplib, sys
port, user, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3]
m = imaplib.IMAP4("127.0.0.1", port, timeout=30)
m.login(user, pw)
typ, boxes = m.list()
assert typ == "OK", typ
print("LIST", b" | ".join(boxes).decode())
for g in ["Calendar", "Contacts", "Tasks", "Notes", "Journal", "Configuration"]:
    typ, data = m.select(g)
    print("SELECT", g, typ, data[0].decode())
typ, data = m.status("Work", "(MESSAGES)")
print("STATUS", typ, data[0].decode())
m.logout()
print("DONE")
"#;

#[test]
fn kolab_showcase_python_imaplib_without_id_does_not_see_or_select_groupware_folders() {
    let python = require_tool("python3", "python3");
    let w = kolab_world("kpython");
    w.append_direct("Work", "w");
    let dir = TempDir::new("py-rules");
    let script = dir.join("client.py");
    std::fs::write(&script, PY_NO_ID).expect("write script");
    let mut cmd = Command::new(python);
    cmd.arg(&script).arg(w.px.port.to_string()).arg(&w.user).arg("secret");
    let out = run_with_timeout(cmd, &dir, Duration::from_secs(60));
    let so = out.stdout_text();
    assert!(out.status.success(), "imaplib failed:\n{so}\n{}", out.stderr_text());
    let list = so.lines().find(|l| l.starts_with("LIST ")).unwrap_or_default();
    assert!(list.contains("Work"), "{so}");
    for g in GROUPWARE {
        assert!(!list.contains(g), "{g} listed for imaplib: {so}");
        assert!(
            so.contains(&format!("SELECT {g} NO [NONEXISTENT] Mailbox doesn't exist.")),
            "{g} selectable by imaplib:\n{so}"
        );
    }
    assert!(so.contains("STATUS OK Work (MESSAGES 1)"), "{so}");
    assert!(so.contains("DONE"), "{so}");
}

#[test]
fn kolab_showcase_id_after_login_switches_the_rule_off_for_that_session() {
    let w = kolab_world("kafter");
    let mut c = w.client();
    let names = list_names(&c.cmd_ok("l1", "LIST \"\" \"*\""));
    assert!(!names.iter().any(|n| is_hidden(n)), "no ID yet: {names:?}");
    let r = c.cmd("s1", "SELECT Calendar");
    assert_eq!(tagged(&r), format!("s1 {NONEXISTENT}"));
    c.cmd_ok("i", "ID (\"name\" \"Kontact\")");
    let names = list_names(&c.cmd_ok("l2", "LIST \"\" \"*\""));
    for g in GROUPWARE {
        assert!(names.contains(&g.to_string()), "{g} still hidden after ID: {names:?}");
    }
    c.cmd_ok("s2", "SELECT Calendar");
    c.logout();
    // Another session without ID is not affected.
    let mut c = w.client();
    let r = c.cmd("s3", "SELECT Calendar");
    assert_eq!(tagged(&r), format!("s3 {NONEXISTENT}"));
    c.logout();
}

// ---------------------------------------------------------------------------------
// no rules, stream-changing commands

#[test]
fn rules_absent_session_relays_exactly_as_direct() {
    let w = World::new("rnone", &["Calendar", "Gone"], "", "");
    w.append_direct("INBOX", "plain");
    let mut c = w.client();
    let mut d = w.direct();
    for (tag, cmd) in [
        ("a", "LIST \"\" \"*\""),
        ("c", "STATUS Calendar (MESSAGES UIDNEXT)"),
        ("d", "EXAMINE Calendar"),
        ("e", "NAMESPACE"),
    ] {
        let via = c.cmd_ok(tag, cmd);
        let direct = d.cmd_ok(tag, cmd);
        let strip = |b: &[u8]| b[..b.len() - last_line(b).len()].to_vec();
        assert_eq!(text(&strip(&via)), text(&strip(&direct)), "{cmd}");
    }
    // CAPABILITY: Dovecot's list minus what the relay cannot pass on.
    let caps = |r: &[u8]| words_of(&r[..r.len() - last_line(r).len()]);
    let via = caps(&c.cmd_ok("b", "CAPABILITY"));
    let relayable = |w: &String| {
        let dropped = ["SASL-IR", "STARTTLS", "LOGINDISABLED"].contains(&w.as_str())
            || w.starts_with("AUTH=")
            || w.starts_with("COMPRESS=");
        !dropped
    };
    let mut direct: Vec<String> =
        caps(&d.cmd_ok("b", "CAPABILITY")).into_iter().filter(relayable).collect();
    // COMPRESS toward the client is imapgate's own.
    let end = direct.iter().position(String::is_empty).unwrap_or(direct.len());
    direct.insert(end, "COMPRESS=DEFLATE".into());
    assert_eq!(via, direct, "CAPABILITY");
    c.cmd_ok("e", "EXAMINE INBOX");
    d.cmd_ok("e", "EXAMINE INBOX");
    let via = c.cmd_ok("f", "FETCH 1 BODY.PEEK[]");
    let direct = d.cmd_ok("f", "FETCH 1 BODY.PEEK[]");
    let strip = |b: &[u8]| b[..b.len() - last_line(b).len()].to_vec();
    assert_eq!(strip(&via), strip(&direct), "FETCH");
    d.logout();
    c.cmd_ok("g", "DELETE Gone");
    c.logout();
    assert!(!w.direct_mailboxes().contains(&"Gone".to_string()));
}

#[test]
fn rules_absent_compress_is_refused_with_cannot_where_the_listener_keeps_it_off() {
    let dv = Dovecot::start();
    let px = Proxy::start(&(minimal_config(dv.port) + "compress = no\n"));
    let mut c = Client::connect(px.port);
    c.login("alice", "secret");
    let r = c.cmd("z", "COMPRESS DEFLATE");
    assert_tagged(&r, "z", "NO [CANNOT]");
    c.cmd_ok("n", "NOOP");
    c.logout();
}

#[test]
fn rules_active_compress_is_refused_with_cannot_where_the_listener_keeps_it_off() {
    // A stream-changing command never reaches the backend: imapgate answers COMPRESS
    // itself (t/compress.rs), or refuses it; STARTTLS is always refused.
    let dv = Dovecot::start();
    let config =
        minimal_config(dv.port) + "compress = no\nrules = aud\n\n[rule aud]\ntype = audit\n";
    let px = Proxy::start(&config);
    let mut c = Client::connect(px.port);
    c.login("alice", "secret");
    let r = c.cmd("z", "COMPRESS DEFLATE");
    assert_tagged(&r, "z", "NO [CANNOT]");
    let r = c.cmd("t", "STARTTLS");
    assert!(!tagged(&r).starts_with("t OK"), "{}", text(&r));
    c.cmd_ok("n", "NOOP");
    c.logout();
}
