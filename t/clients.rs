//! Real IMAP clients through the proxy: Python's imaplib, curl and mbsync.
//! A missing tool fails the test with the Debian package to install.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

const TOOL_WAIT: Duration = Duration::from_secs(60);

/// Dovecot with a unique user holding one INBOX message and an `Archive`
/// mailbox with one more, plus a proxy in front.
fn setup(prefix: &str) -> (Dovecot, Proxy, String) {
    let dv = Dovecot::start();
    let user = unique_user(prefix);
    dv.append_message(&user, "INBOX", &text_message("inbox-subject", "inbox-marker-body"));
    dv.append_message(&user, "Archive", &text_message("archive-subject", "archive-marker-body"));
    let px = Proxy::start(&minimal_config(dv.port));
    (dv, px, user)
}

const PY: &str = r#"
import imaplib, sys
port, user, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3]
m = imaplib.IMAP4("127.0.0.1", port, timeout=30)
print("CAPS", " ".join(m.capabilities))
typ, _ = m.login(user, pw)
assert typ == "OK", typ
typ, boxes = m.list()
assert typ == "OK", typ
print("LIST", b" | ".join(boxes).decode())
typ, data = m.select("INBOX")
assert typ == "OK", typ
print("EXISTS", data[0].decode())
typ, data = m.fetch("1", "(RFC822)")
assert typ == "OK", typ
print("BODY", data[0][1].decode())
typ, data = m.uid("SEARCH", None, "ALL")
print("UIDS", data[0].decode())
m.logout()
print("DONE")
"#;

#[test]
fn python_imaplib_logs_in_lists_selects_and_fetches_through_the_proxy() {
    let python = require_tool("python3", "python3");
    let (_dv, px, user) = setup("py");
    let dir = TempDir::new("py");
    let script = dir.join("client.py");
    std::fs::write(&script, PY).expect("write script");
    let mut cmd = Command::new(python);
    cmd.arg(&script).arg(px.port.to_string()).arg(&user).arg("secret");
    let out = run_with_timeout(cmd, &dir, TOOL_WAIT);
    let so = out.stdout_text();
    assert!(
        out.status.success(),
        "imaplib failed: {}\nstdout:\n{so}\nstderr:\n{}",
        out.status,
        out.stderr_text()
    );
    assert!(so.contains("Archive") && so.contains("INBOX"), "LIST: {so}");
    assert!(so.contains("EXISTS 1"), "SELECT: {so}");
    assert!(so.contains("inbox-marker-body"), "FETCH: {so}");
    assert!(so.contains("DONE"), "{so}");
}

fn curl(dir: &TempDir, args: &[&str]) -> Output {
    let bin = require_tool("curl", "curl");
    let mut cmd = Command::new(bin);
    cmd.args(["-s", "-S", "--max-time", "30"]).args(args);
    run_with_timeout(cmd, dir, TOOL_WAIT)
}

#[test]
fn curl_examines_inbox_and_fetches_a_message_by_uid_through_the_proxy() {
    let (_dv, px, user) = setup("curl");
    let dir = TempDir::new("curl");
    let cred = format!("{user}:secret");
    let base = format!("imap://127.0.0.1:{}", px.port);

    let out = curl(&dir, &["--user", &cred, &format!("{base}/INBOX"), "-X", "EXAMINE INBOX"]);
    assert!(out.status.success(), "curl EXAMINE: {}\n{}", out.status, out.stderr_text());
    assert!(out.stdout_text().contains("* 1 EXISTS"), "EXAMINE output: {}", out.stdout_text());

    let out = curl(&dir, &["--user", &cred, &format!("{base}/INBOX;UID=1")]);
    assert!(out.status.success(), "curl fetch: {}\n{}", out.status, out.stderr_text());
    let so = out.stdout_text();
    assert!(
        so.contains("Subject: inbox-subject") && so.contains("inbox-marker-body"),
        "fetched: {so}"
    );

    let out = curl(&dir, &["--user", &format!("{user}:wrong"), &format!("{base}/INBOX;UID=1")]);
    assert!(!out.status.success(), "curl with a wrong password succeeded: {}", out.stdout_text());
}

#[test]
fn mbsync_syncs_mailboxes_through_the_proxy_to_a_local_maildir() {
    let mbsync = require_tool("mbsync", "isync");
    let (_dv, px, user) = setup("mbsync");
    let dir = TempDir::new("mbsync");
    let local = dir.join("local");
    std::fs::create_dir_all(&local).expect("mkdir");
    let rc = format!(
        "IMAPAccount proxy\nHost 127.0.0.1\nPort {port}\nUser {user}\nPass secret\nSSLType None\nAuthMechs PLAIN\n\n\
         IMAPStore remote\nAccount proxy\n\n\
         MaildirStore local\nPath {l}/\nInbox {l}/INBOX\nSubFolders Verbatim\n\n\
         Channel sync\nFar :remote:\nNear :local:\nPatterns *\nCreate Near\nSyncState *\n",
        port = px.port,
        l = local.display()
    );
    let rc_path = dir.join("mbsyncrc");
    std::fs::write(&rc_path, rc).expect("write mbsyncrc");
    let mut cmd = Command::new(mbsync);
    cmd.env("HOME", dir.path()).arg("-c").arg(&rc_path).arg("-a");
    let out = run_with_timeout(cmd, &dir, TOOL_WAIT);
    assert!(
        out.status.success(),
        "mbsync failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout_text(),
        out.stderr_text()
    );
    let bodies = |sub: &str| -> String {
        let mut all = String::new();
        for d in ["cur", "new"] {
            for e in std::fs::read_dir(local.join(sub).join(d)).into_iter().flatten().flatten() {
                all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        all
    };
    assert!(
        bodies("INBOX").contains("inbox-marker-body"),
        "INBOX not synced; stdout:\n{}",
        out.stdout_text()
    );
    assert!(
        bodies("Archive").contains("archive-marker-body"),
        "Archive not synced; stdout:\n{}",
        out.stdout_text()
    );
}
