//! `--inetd`: one session on fd 0 (a socketpair here, as inetd/systemd pass
//! a socket), logging to a file and never to stderr, which inetd connects to
//! the client.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::dovecot::TRICKY_PASSWORD;
use crate::common::proxy::{fill, wait_for_log_in, BIN};
use crate::common::*;

/// Runs `imapgate ARGS` with one end of a socketpair as fds 0 and 1 (as inetd passes the
/// client's socket) and stderr in `stderr_path`; returns the other end and the child.
fn spawn_on_socketpair(args: &[&str], stderr_path: &Path) -> (UnixStream, Child) {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let fd0 = OwnedFd::from(theirs);
    let fd1 = fd0.try_clone().expect("dup");
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::from(fd0))
        .stdout(Stdio::from(fd1))
        .stderr(std::fs::File::create(stderr_path).expect("stderr file"));
    let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
    // `cmd` drops here, closing our copies of the child's end.
    (ours, child)
}

#[test]
fn inetd_mode_serves_one_session_on_stdin_and_logs_to_a_file_not_stderr() {
    let dv = Dovecot::start();
    let dir = TempDir::new("inetd");
    let body = minimal_config(dv.port).replacen(
        "[global]\n",
        "[global]\nlog = file\nlog_file = @DIR@/inetd.log\nlog_level = debug\n",
        1,
    );
    let config = dir.join("imapgate.ini");
    std::fs::write(&config, fill(&body, free_port(), &dir)).expect("write config");
    let stderr_path = dir.join("stderr");

    let config = config.display().to_string();
    let (ours, mut child) = spawn_on_socketpair(&["--inetd", "-f", &config], &stderr_path);

    let mut c = Client::from_conn(Box::new(ours));
    c.greeting = c.read_line();
    assert!(text(&c.greeting).starts_with("* OK [CAPABILITY "), "greeting: {}", text(&c.greeting));
    c.login("tricky", TRICKY_PASSWORD);
    c.cmd_ok("S", "SELECT INBOX");
    c.logout();
    drop(c);

    let status = wait_child(&mut child, Duration::from_secs(10));
    if status.is_none() {
        stop_child(&mut child, Duration::from_secs(2));
        panic!("imapgate --inetd did not exit after LOGOUT");
    }
    let log_path = dir.join("inetd.log");
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_for_log_in(r"SESSION-START id=\d+ ", read_log);
    wait_for_log_in(r"LOGIN id=\d+ user=tricky backend=dovecot result=ok", read_log);
    wait_for_log_in(r"SESSION-END id=\d+ user=tricky ", read_log);
    assert!(!read_log().contains(TRICKY_PASSWORD), "password in log");
    let stderr = std::fs::read(&stderr_path).unwrap_or_default();
    assert!(stderr.is_empty(), "--inetd wrote to stderr: {}", text(&stderr));
    assert!(status.is_some_and(|s| s.success()), "exit status {status:?}");
}

/// Under `--inetd` fds 0 to 2 are the client's connection, also for a command line
/// mistake: the client gets a BYE that says imapgate cannot serve it (the reason goes to
/// syslog), never the usage text.
#[test]
fn a_command_line_mistake_under_inetd_is_a_bye_and_not_written_to_stderr() {
    let dir = TempDir::new("inetd-usage");
    let stderr_path = dir.join("stderr");
    let (ours, mut child) = spawn_on_socketpair(&["--inetd", "--no-such-option"], &stderr_path);
    let status = wait_child(&mut child, Duration::from_secs(10));
    if status.is_none() {
        stop_child(&mut child, Duration::from_secs(2));
        panic!("imapgate --inetd with a bad option did not exit");
    }
    assert_eq!(status.and_then(|s| s.code()), Some(64), "exit status {status:?}");
    let mut c = Client::from_conn(Box::new(ours));
    let bye = text(&c.read_line());
    assert_eq!(bye, "* BYE [UNAVAILABLE] imapgate is misconfigured, see its log.\r\n");
    let stderr = std::fs::read(&stderr_path).unwrap_or_default();
    assert!(stderr.is_empty(), "--inetd wrote to stderr: {}", text(&stderr));
}
