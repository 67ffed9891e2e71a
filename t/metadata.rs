//! The Kolab showcase again (issue 14), with groupware folders known by their
//! `/shared/vendor/kolab/folder-type` annotation (RFC 5464) rather than by name: German
//! names (`Kalender`, `Kontakte`, ...) on a Dovecot with `imap_metadata = yes`. imapgate
//! learns the types with commands of its own and hides the folders from a client without
//! a Kolab ID (Python's imaplib, and a raw client), and shows them to Kontact.

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use crate::rules::{list_names, tagged};

/// Dovecot keeping annotations (METADATA) per user.
const DOVECOT_METADATA: &str = "mail_attribute_dict = file:%h/dovecot-attributes\n\
                                protocol imap {\n  imap_metadata = yes\n}\n";

const TYPED_RULE: &str = "[rule hide-groupware]\ntype = hide_folders\n\
     metadata = /shared/vendor/kolab/folder-type\n\
     types = event contact task note journal configuration\n\
     not_id.name = (?i)^(kontact|roundcube)\n";

/// Folder, and its Kolab type (`None`: a mail folder).
const FOLDERS: &[(&str, Option<&str>)] = &[
    ("Kalender", Some("event.default")),
    ("Kontakte", Some("contact.default")),
    ("Aufgaben", Some("task")),
    ("Notizen", Some("note")),
    ("Privat", Some("mail")),
    ("Arbeit", None),
];

struct Kolab {
    dv: Dovecot,
    px: Proxy,
    user: String,
}

fn kolab(prefix: &str) -> Kolab {
    let dv = Dovecot::start_recorded(DOVECOT_METADATA);
    let user = unique_user(prefix);
    dv.record_user(&user);
    let mut d = dv.connect_as(&user);
    for (folder, kind) in FOLDERS {
        d.cmd_ok("C", &format!("CREATE {folder}"));
        if let Some(kind) = kind {
            d.cmd_ok(
                "M",
                &format!("SETMETADATA {folder} (/shared/vendor/kolab/folder-type \"{kind}\")"),
            );
        }
    }
    d.logout();
    dv.append_message(&user, "Kalender", &text_message("meeting", "event"));
    let px = Proxy::start(&(minimal_config(dv.port) + "rules = hide-groupware\n\n" + TYPED_RULE));
    Kolab { dv, px, user }
}

const HIDDEN: [&str; 4] = ["Kalender", "Kontakte", "Aufgaben", "Notizen"];

#[test]
fn folders_typed_by_annotation_are_hidden_whatever_their_names() {
    let k = kolab("ktyped");
    let mut c = Client::connect(k.px.port);
    c.login(&k.user, "secret");
    let names = list_names(&c.cmd_ok("l", "LIST \"\" \"*\""));
    for g in HIDDEN {
        assert!(!names.contains(&g.to_string()), "{g} listed: {names:?}");
        let r = c.cmd("s", &format!("SELECT {g}"));
        assert_eq!(tagged(&r), "s NO [NONEXISTENT] Mailbox doesn't exist.", "{}", text(&r));
    }
    for shown in ["INBOX", "Privat", "Arbeit"] {
        assert!(names.contains(&shown.to_string()), "{shown} missing: {names:?}");
    }
    // A folder typed during the session disappears from the next command on.
    c.cmd_ok("c", "CREATE Journal");
    c.cmd_ok("m", "SETMETADATA Journal (/shared/vendor/kolab/folder-type \"journal\")");
    let r = c.cmd("s", "SELECT Journal");
    assert_eq!(tagged(&r), "s NO [NONEXISTENT] Mailbox doesn't exist.", "{}", text(&r));
    let names = list_names(&c.cmd_ok("l", "LIST \"\" \"*\""));
    assert!(!names.contains(&"Journal".to_string()), "{names:?}");
    c.logout();
    // The backend's own record: it executed imapgate's LIST and GETMETADATA, and never
    // a client command naming a hidden folder.
    let executed = k.dv.executed(&k.user);
    assert!(
        executed.iter().any(|e| e.name == "GETMETADATA" && e.args.contains("Kalender")),
        "{executed:?}"
    );
    for e in executed.iter().filter(|e| e.name != "GETMETADATA") {
        assert!(
            !HIDDEN.iter().any(|h| e.args.contains(h)) && !e.args.contains("Journal\""),
            "executed {e:?}"
        );
    }
}

#[test]
fn kontact_with_its_id_sees_the_typed_folders() {
    let k = kolab("kkontact2");
    let mut c = Client::connect(k.px.port);
    c.cmd_ok("i", "ID (\"name\" \"Kontact\" \"version\" \"5.24\")");
    c.login(&k.user, "secret");
    let names = list_names(&c.cmd_ok("l", "LIST \"\" \"*\""));
    for g in HIDDEN {
        assert!(names.contains(&g.to_string()), "{g} missing for Kontact: {names:?}");
    }
    let r = c.cmd_ok("s", "SELECT Kalender");
    assert!(text(&r).contains("* 1 EXISTS"), "{}", text(&r));
    c.logout();
}

const PY: &str = r#"
import imaplib, sys
port, user, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3]
m = imaplib.IMAP4("127.0.0.1", port, timeout=30)
m.login(user, pw)
typ, boxes = m.list()
print("LIST", b" | ".join(boxes).decode())
for g in ["Kalender", "Kontakte", "Aufgaben", "Notizen", "Arbeit"]:
    typ, data = m.select(g)
    print("SELECT", g, typ)
m.logout()
print("DONE")
"#;

#[test]
fn python_imaplib_without_an_id_does_not_see_the_typed_folders() {
    let python = require_tool("python3", "python3");
    let k = kolab("kpy2");
    let dir = TempDir::new("py-typed");
    let script = dir.join("client.py");
    std::fs::write(&script, PY).expect("write script");
    let mut cmd = Command::new(python);
    cmd.arg(&script).arg(k.px.port.to_string()).arg(&k.user).arg("secret");
    let out = run_with_timeout(cmd, &dir, Duration::from_secs(60));
    let so = out.stdout_text();
    assert!(out.status.success(), "imaplib: {so}\n{}", out.stderr_text());
    let list = so.lines().find(|l| l.starts_with("LIST ")).unwrap_or_default();
    for g in HIDDEN {
        assert!(!list.contains(g), "{g} listed: {so}");
        assert!(so.contains(&format!("SELECT {g} NO")), "{g} selectable: {so}");
    }
    assert!(list.contains("Arbeit") && so.contains("SELECT Arbeit OK"), "{so}");
    assert!(so.contains("DONE"), "{so}");
}
