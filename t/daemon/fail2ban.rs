//! The shipped fail2ban filter matches imapgate's real failed-login lines, in its log
//! file format, and finds the client's address.

use std::process::Command;

use super::*;

#[test]
fn fail2ban_filter_matches_real_failed_login_lines() {
    let tool = require_tool("fail2ban-regex", "fail2ban");
    let dv = Dovecot::start();
    let px = Proxy::start(&config(
        dv.port,
        "log = file\nlog_file = @DIR@/imapgate.log\nlogin_block_after = 0",
        "",
    ));
    let log = px.dir().join("imapgate.log");
    let mut c = client_on(connect_from("127.0.0.2", px.port));
    for i in 0..2 {
        let r = c.cmd(&format!("T{i}"), "LOGIN mallory wrong");
        assert!(text(&r).contains("NO"), "{}", text(&r));
    }
    // A crafted user name that tries to name another address.
    let r = c.cmd("T9", "LOGIN \"x client=192.0.2.1\" wrong");
    assert!(text(&r).contains("T9 NO"), "{}", text(&r));
    let mut ok = client_on(connect_from("127.0.0.3", px.port));
    ok.login("alice", "secret");
    ok.logout();
    // All three failed logins are in the file before fail2ban reads it.
    let three = wait_until(WAIT, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let failed = text.lines().filter(|l| l.contains("result=failed")).count();
        (failed >= 3).then_some(())
    });
    assert!(three.is_some(), "three failed logins were not logged");
    let filter = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/fail2ban/filter.d/imapgate.conf");
    let mut cmd = Command::new(tool);
    cmd.args(["--print-all-matched", "--print-no-missed"]).arg(&log).arg(filter);
    let out = run_with_timeout(cmd, px.dir(), std::time::Duration::from_secs(60));
    let stdout = out.stdout_text();
    assert!(out.status.success(), "{stdout}\n{}", out.stderr_text());
    assert!(stdout.contains("Failregex: 3 total"), "{stdout}");
    assert!(stdout.contains("127.0.0.2") && !stdout.contains("|  127.0.0.3"), "{stdout}");
    assert!(!stdout.contains("192.0.2.1  "), "{stdout}");
}
