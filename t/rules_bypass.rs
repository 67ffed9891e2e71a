//! Attempts to get past the rules that must all fail. Each is checked on Dovecot
//! directly afterwards: nothing was deleted, expunged, moved or stored.

use std::collections::HashMap;

use crate::common::*;
use crate::rules::{append, assert_tagged, list_names, tagged, World, GROUPWARE};

const NOPERM_DELETE: &str = "NO [NOPERM] DELETE is not permitted here.";
const NONEXISTENT: &str = "NO [NONEXISTENT] Mailbox doesn't exist.";

const DENY: &str = "[rule no-delete]\ntype = commands\ndeny = DELETE EXPUNGE\n";

/// `Victim` must survive DELETE; INBOX holds one message flagged \Deleted that must
/// survive EXPUNGE.
fn deny_world(prefix: &str, rules: &str, sections: &str) -> World {
    let w = World::new(prefix, &["Victim"], rules, sections);
    w.append_direct("INBOX", "survivor");
    let mut d = w.direct();
    d.cmd_ok("S", "SELECT INBOX");
    d.cmd_ok("F", "STORE 1 +FLAGS (\\Deleted)");
    d.logout();
    w
}

/// Reads responses until each of `tags` had its tagged completion, in whatever order
/// they come (imapgate's own answers may overtake the backend's); returns tag -> line.
fn read_tags(c: &mut Client, tags: &[&str]) -> HashMap<String, String> {
    let mut seen = HashMap::new();
    while tags.iter().any(|t| !seen.contains_key(*t)) {
        let r = c.read_response();
        let line = text(&r).trim_end().to_string();
        if let Some((tag, _)) = line.split_once(' ') {
            if tag != "*" && tag != "+" {
                seen.insert(tag.to_string(), line.clone());
            }
        }
    }
    seen
}

#[track_caller]
fn assert_seen(seen: &HashMap<String, String>, tag: &str, want: &str) {
    let line = seen.get(tag).map(String::as_str).unwrap_or("");
    assert!(line.starts_with(&format!("{tag} {want}")), "{tag}: want {want}, got {seen:#?}");
}

/// Nothing happened on Dovecot: Victim exists, the INBOX message is still there.
#[track_caller]
fn assert_untouched(w: &World) {
    let names = w.direct_mailboxes();
    assert!(names.contains(&"Victim".to_string()), "Victim was deleted: {names:?}");
    assert_eq!(w.direct_messages("INBOX"), Some(1), "the INBOX message was expunged");
}

#[test]
fn rules_bypass_denied_command_after_a_synchronizing_literal_the_server_refused() {
    let w = deny_world("bsync1", "no-delete", DENY);
    let mut c = w.client();
    c.send_line("a APPEND Nonexistent {99999999}");
    let first = c.read_line();
    assert!(first.starts_with(b"a NO"), "the server refuses the APPEND: {}", text(&first));
    // What would have been the literal is a new command for the server.
    c.send(b"b DELETE Victim\r\n");
    let r = c.read_until_tagged("b");
    assert_eq!(tagged(&r), format!("b {NOPERM_DELETE}"), "{}", text(&r));
    c.cmd_ok("n", "NOOP");
    c.logout();
    assert_untouched(&w);
}

#[test]
fn rules_bypass_denied_command_after_a_synchronizing_literal_a_limit_refused() {
    let sections = format!("{DENY}[rule lim]\ntype = limits\nmax_append_size = 1k\n");
    let w = deny_world("bsync2", "no-delete, lim", &sections);
    let mut c = w.client();
    c.send_line("a APPEND INBOX {99999999}");
    let first = c.read_line();
    assert!(first.starts_with(b"a NO [TOOBIG]"), "got: {}", text(&first));
    c.send(b"b DELETE Victim\r\n");
    let r = c.read_until_tagged("b");
    assert_eq!(tagged(&r), format!("b {NOPERM_DELETE}"), "{}", text(&r));
    c.cmd_ok("n", "NOOP");
    c.logout();
    assert_untouched(&w);
    assert_eq!(w.direct_messages("INBOX"), Some(1));
}

#[test]
fn rules_bypass_denied_command_inside_a_small_literal_of_a_refused_append_is_not_run() {
    let w = deny_world("bsync3", "no-delete", DENY);
    let mut c = w.client();
    let inner = b"b DELETE Victim\r\n";
    let r = append(&mut c, "a", "Nonexistent", inner);
    assert_tagged(&r, "a", "NO");
    assert!(!text(&r).contains("b OK"), "{}", text(&r));
    c.cmd_ok("n", "NOOP");
    c.logout();
    assert_untouched(&w);
}

#[test]
fn rules_bypass_denied_command_hidden_in_a_literal_plus_of_an_allowed_command() {
    let w = deny_world("bliteral", "no-delete", DENY);
    let mut c = w.client();
    let inner = b"b DELETE Victim\r\n";
    for (tag, name) in [("a", "NOOP"), ("c", "CHECK"), ("d", "CAPABILITY")] {
        let mut cmd = format!("{tag} {name} {{{}+}}\r\n", inner.len()).into_bytes();
        cmd.extend_from_slice(inner);
        cmd.extend_from_slice(b"\r\n");
        c.send(&cmd);
        // A barrier: everything the command caused arrives before z's answer.
        c.send(b"z NOOP\r\n");
        let r = c.read_until_tagged("z");
        let t = text(&r);
        assert!(!t.contains("b OK"), "{name}: literal content ran as a command:\n{t}");
        assert!(w.direct_mailboxes().contains(&"Victim".to_string()), "{name}: Victim deleted");
    }
    let r = c.cmd("y", "DELETE Victim");
    assert_eq!(tagged(&r), format!("y {NOPERM_DELETE}"));
    c.logout();
    assert_untouched(&w);
}

#[test]
fn rules_bypass_denied_command_hidden_in_a_synchronizing_literal_of_an_allowed_command() {
    let w = deny_world("bliteral2", "no-delete", DENY);
    let mut c = w.client();
    let inner = b"b DELETE Victim\r\n";
    c.send_line(&format!("a NOOP {{{}}}", inner.len()));
    let first = c.read_response();
    if first.starts_with(b"+") {
        c.send(inner);
        c.send(b"\r\n");
    }
    c.cmd_ok("n", "NOOP");
    c.logout();
    assert_untouched(&w);
}

#[test]
fn rules_bypass_denied_command_after_idle_done_in_the_same_write() {
    let w = deny_world("bidle", "no-delete", DENY);
    let mut c = w.client();
    c.cmd_ok("s", "SELECT INBOX");
    c.send_line("i IDLE");
    let plus = c.read_line();
    assert!(plus.starts_with(b"+"), "{}", text(&plus));
    c.send(b"DONE\r\nb DELETE Victim\r\nx EXPUNGE\r\n");
    let seen = read_tags(&mut c, &["i", "b", "x"]);
    assert_seen(&seen, "i", "OK");
    assert_seen(&seen, "b", NOPERM_DELETE);
    assert_seen(&seen, "x", "NO [NOPERM]");
    // All at once, before the server's `+`.
    c.send(b"j IDLE\r\nDONE\r\nk DELETE Victim\r\n");
    let seen = read_tags(&mut c, &["j", "k"]);
    assert_seen(&seen, "j", "OK");
    assert_seen(&seen, "k", NOPERM_DELETE);
    c.logout();
    assert_untouched(&w);
}

#[test]
fn rules_bypass_pipelined_denied_commands_in_one_write() {
    let w = deny_world("bpipe", "no-delete", DENY);
    let mut c = w.client();
    c.send(
        b"p0 SELECT INBOX\r\np1 DELETE Victim\r\np2 NOOP\r\np3 EXPUNGE\r\n\
          p4 DELETE Victim\r\np5 UID EXPUNGE 1:*\r\np6 NOOP\r\n",
    );
    let want = [
        ("p0", "OK"),
        ("p1", "NO [NOPERM]"),
        ("p2", "OK"),
        ("p3", "NO [NOPERM]"),
        ("p4", "NO [NOPERM]"),
        ("p5", "NO [NOPERM]"),
        ("p6", "OK"),
    ];
    let tags: Vec<&str> = want.iter().map(|(t, _)| *t).collect();
    let seen = read_tags(&mut c, &tags);
    for (tag, status) in want {
        assert_seen(&seen, tag, status);
    }
    c.logout();
    assert_untouched(&w);
}

#[test]
fn rules_bypass_lower_and_mixed_case_command_names() {
    let w = deny_world("bcase", "no-delete", DENY);
    let mut c = w.client();
    c.cmd_ok("s", "select INBOX");
    for (tag, cmd) in [
        ("a", "delete Victim"),
        ("b", "DeLeTe Victim"),
        ("c", "expunge"),
        ("d", "ExPuNgE"),
        ("e", "uid expunge 1:*"),
        ("f", "Uid ExPunge 1:*"),
    ] {
        let r = c.cmd(tag, cmd);
        assert_tagged(&r, tag, "NO [NOPERM]");
    }
    c.logout();
    assert_untouched(&w);
}

#[test]
fn rules_bypass_uid_prefix_of_a_denied_command() {
    let w = deny_world("buid", "no-delete", DENY);
    let mut c = w.client();
    c.cmd_ok("s", "SELECT INBOX");
    let r = c.cmd("u", "UID EXPUNGE 1:*");
    assert_eq!(tagged(&r), "u NO [NOPERM] UID EXPUNGE is not permitted here.", "{}", text(&r));
    c.logout();
    assert_untouched(&w);
}

// ---------------------------------------------------------------------------------
// hidden folders named another way

fn hidden_world(prefix: &str) -> World {
    let w = World::new(
        prefix,
        &["Calendar", "Calendar.Personal", "INBOX.Calendar", "Work"],
        "hide",
        "[rule hide]\ntype = hide_folders\nfolders = Calendar Contacts INBOX.Calendar\n",
    );
    w.append_direct("Calendar", "cal-secret");
    w.append_direct("INBOX.Calendar", "inbox-cal-secret");
    w.append_direct("INBOX", "inbox-msg");
    w
}

/// Nothing of the hidden folders changed on Dovecot.
#[track_caller]
fn assert_hidden_untouched(w: &World, before: &[String]) {
    assert_eq!(w.direct_mailboxes(), before, "mailboxes changed on Dovecot");
    assert_eq!(w.direct_messages("Calendar"), Some(1));
    assert_eq!(w.direct_messages("INBOX.Calendar"), Some(1));
    assert_eq!(w.direct_messages("Calendar.Personal"), Some(0));
    assert_eq!(w.direct_messages("INBOX"), Some(1));
}

/// Sends raw command bytes (answering `+` with `rest`), returns everything up to `tag`.
fn raw_cmd(c: &mut Client, tag: &str, head: &[u8], rest: &[u8]) -> Vec<u8> {
    c.send(head);
    if rest.is_empty() {
        return c.read_until_tagged(tag);
    }
    let first = c.read_response();
    if !first.starts_with(b"+") {
        return first;
    }
    c.send(rest);
    c.read_until_tagged(tag)
}

fn spellings(c: &mut Client, round: &str) {
    let cases: &[(&str, &[u8], &[u8])] = &[
        ("l1", b"l1 SELECT {8}\r\n", b"Calendar\r\n"),
        ("l2", b"l2 SELECT {8+}\r\nCalendar\r\n", b""),
        ("l3", b"l3 DELETE {17+}\r\nCalendar.Personal\r\n", b""),
        ("l4", b"l4 RENAME {8}\r\n", b"Calendar Stolen\r\n"),
        ("u1", b"u1 SELECT &AEM-alendar\r\n", b""),
        ("u2", b"u2 STATUS &AEM-alendar (MESSAGES)\r\n", b""),
        ("c1", b"c1 SELECT inbox.Calendar\r\n", b""),
        ("c2", b"c2 EXAMINE Inbox.Calendar\r\n", b""),
        ("c3", b"c3 RENAME iNbOx.Calendar Stolen2\r\n", b""),
        ("c4", b"c4 DELETE inbox.Calendar\r\n", b""),
        ("c5", b"c5 STATUS \"INBOX.Calendar\" (MESSAGES)\r\n", b""),
        ("t1", b"t1 SELECT \"Calendar.\"\r\n", b""),
        ("t2", b"t2 DELETE \"Calendar..\"\r\n", b""),
        ("t3", b"t3 SELECT \"inbox.Calendar.\"\r\n", b""),
        ("t4", b"t4 RENAME \"Calendar.\" Stolen3\r\n", b""),
    ];
    for (tag, head, rest) in cases {
        let r = raw_cmd(c, tag, head, rest);
        assert_eq!(
            tagged(&r),
            format!("{tag} {NONEXISTENT}"),
            "{round}: {}\n{}",
            text(head).trim_end(),
            text(&r)
        );
    }
}

#[test]
fn rules_bypass_hidden_folder_named_via_literal_utf7_inbox_case_or_trailing_delimiter() {
    let w = hidden_world("bspell");
    let before = w.direct_mailboxes();
    let mut c = w.client();
    // Before the delimiter is known (no LIST yet) and after a LIST taught it.
    spellings(&mut c, "before LIST");
    let names = list_names(&c.cmd_ok("l", "LIST \"\" \"*\""));
    assert!(!names.iter().any(|n| n.contains("Calendar")), "{names:?}");
    spellings(&mut c, "after LIST");
    c.cmd_ok("s", "SELECT INBOX");
    let r = append(&mut c, "ap", "{8+}\r\nCalendar", &text_message("x", "y"));
    assert!(!tagged(&r).starts_with("ap OK"), "{}", text(&r));
    let r = c.cmd("cp", "COPY 1 inbox.Calendar");
    assert_eq!(tagged(&r), format!("cp {NONEXISTENT}"));
    c.logout();
    assert_hidden_untouched(&w, &before);
}

#[test]
fn rules_bypass_hidden_folder_in_list_patterns_and_references() {
    let w = hidden_world("blist");
    let mut c = w.client();
    for (tag, cmd) in [
        ("a", "LIST \"\" \"*\""),
        ("b", "LIST \"\" \"%\""),
        ("c", "LIST \"\" \"inbox.*\""),
        ("d", "LIST \"Calendar.\" \"*\""),
        ("e", "LIST \"\" \"&AEM-alendar\""),
        ("f", "LIST \"\" {8+}\r\nCalendar"),
        ("g", "LIST \"\" \"*\" RETURN (STATUS (MESSAGES))"),
        ("h", "LIST (SUBSCRIBED) \"\" \"*\""),
        ("i", "LSUB \"\" \"*\""),
        ("j", "LIST \"\" \"*alendar\" RETURN (CHILDREN)"),
    ] {
        let r = c.cmd(tag, cmd);
        let t = text(&r);
        assert!(!t.contains("Calendar"), "{cmd}:\n{t}");
    }
    c.logout();
}

#[test]
fn rules_bypass_hidden_folder_read_through_a_catenate_url() {
    // Dovecot copies a message from another mailbox of the user into an APPEND
    // with CATENATE (URL "/MAILBOX/;UID=n"): a way to read a hidden folder.
    let w = hidden_world("bcatenate");
    let mut c = w.client();
    let r = c.cmd("a", "APPEND INBOX CATENATE (URL \"/Calendar/;UID=1\")");
    let answer = tagged(&r);
    c.logout();
    assert!(!answer.starts_with("a OK"), "CATENATE copied from a hidden folder: {answer}");
    assert_eq!(w.direct_messages("INBOX"), Some(1), "a hidden message was copied to INBOX");
}

#[test]
fn rules_bypass_groupware_folders_stay_hidden_from_a_client_lying_after_login() {
    // A client without a Kolab ID gets the rule; a denied DELETE in the same write as
    // ID cannot slip through before the re-evaluation.
    let mut folders: Vec<&str> = GROUPWARE.to_vec();
    folders.push("Victim");
    let sections = format!("{DENY}{}", crate::rules::KOLAB_RULE);
    let w = World::new("bid", &folders, "no-delete, hide-groupware", &sections);
    let mut c = w.client();
    c.send(b"i ID (\"name\" \"Thunderbird\")\r\ns SELECT Calendar\r\nd DELETE Victim\r\n");
    let seen = read_tags(&mut c, &["i", "s", "d"]);
    assert_seen(&seen, "i", "OK");
    assert_seen(&seen, "s", NONEXISTENT);
    assert_seen(&seen, "d", NOPERM_DELETE);
    c.logout();
    assert!(w.direct_mailboxes().contains(&"Victim".to_string()));
}
