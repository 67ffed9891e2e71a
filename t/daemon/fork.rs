//! `mode = fork` gives the same IMAP behaviour as thread mode, and a crashed session
//! process leaves every other session working.

use std::time::Duration;

use crate::common::client::{assert_ok, last_line};

use super::*;

fn fork_proxy(dv: &Dovecot) -> Proxy {
    Proxy::start(&config(dv.port, "mode = fork", ""))
}

#[test]
fn fork_mode_login_fetch_append_and_logout_work() {
    let dv = Dovecot::start();
    let px = fork_proxy(&dv);
    let user = unique_user("fork");
    let msg = text_message("fork-big", &"0123456789abcdef\r\n".repeat(20_000));
    dv.append_message(&user, "INBOX", &msg);
    let mut c = Client::connect(px.port);
    assert!(text(&c.greeting).starts_with("* OK [CAPABILITY "), "{}", text(&c.greeting));
    assert!(text(last_line(&c.try_login(&user, "wrong"))).starts_with("L1 NO"));
    c.login(&user, "secret");
    c.cmd_ok("S", "SELECT INBOX");
    let r = c.cmd_ok("F", "FETCH 1 BODY.PEEK[]");
    assert!(r.windows(msg.len()).any(|w| w == msg.as_slice()), "FETCH lost bytes");
    c.send_line(&format!("A APPEND INBOX {{{}}}", msg.len()));
    assert!(c.read_line().starts_with(b"+"));
    c.send(&msg);
    c.send(b"\r\n");
    assert_ok(&c.read_until_tagged("A"), "A", "APPEND");
    c.logout();
    px.wait_for_log(r"SESSION-END id=\d+ user=fork-\S+ .*reason=logout");
}

#[test]
fn fork_mode_pipelined_commands_and_idle_work() {
    let dv = Dovecot::start();
    let px = fork_proxy(&dv);
    let user = unique_user("forkidle");
    let mut c = Client::connect(px.port);
    // LOGIN and two commands in one write.
    c.send(format!("L LOGIN {user} secret\r\nS SELECT INBOX\r\nN NOOP\r\n").as_bytes());
    assert_ok(&c.read_until_tagged("L"), "L", "LOGIN");
    assert_ok(&c.read_until_tagged("S"), "S", "SELECT");
    assert_ok(&c.read_until_tagged("N"), "N", "NOOP");
    c.send_line("I IDLE");
    assert!(c.read_line().starts_with(b"+"), "no IDLE continuation");
    dv.append_message(&user, "INBOX", &text_message("idle-wakeup", "x"));
    let exists = c.read_line();
    assert!(text(&exists).contains("EXISTS"), "{}", text(&exists));
    c.send_line("DONE");
    assert_ok(&c.read_until_tagged("I"), "I", "IDLE");
    c.logout();
}

#[test]
fn fork_mode_a_killed_session_process_leaves_the_others_working() {
    let dv = Dovecot::start();
    let mut px = fork_proxy(&dv);
    let pid = main_pid(&px);
    let mut a = Client::connect(px.port);
    a.login("alice", "secret");
    let first = wait_children(pid, 1);
    let mut b = Client::connect(px.port);
    b.login("bob", "secret");
    let both = wait_children(pid, 2);
    let victim = first[0];
    assert!(both.contains(&victim));
    send_signal(victim, "KILL");
    a.set_timeout(Duration::from_secs(10));
    let rest = a.read_to_eof();
    assert!(!text(&rest).contains("OK"), "{}", text(&rest));
    px.wait_for_log(&format!(r"session id=\d+ \(process {victim}\) was killed by SIGKILL"));
    b.cmd_ok("S", "SELECT INBOX");
    b.cmd_ok("N", "NOOP");
    let mut c = Client::connect(px.port);
    c.login("alice", "secret");
    c.logout();
    b.logout();
    assert!(px.is_running());
    wait_children(pid, 0);
}

#[test]
fn fork_mode_sigterm_to_one_session_process_ends_only_that_session() {
    let dv = Dovecot::start();
    let mut px = fork_proxy(&dv);
    let pid = main_pid(&px);
    let mut a = Client::connect(px.port);
    a.login("alice", "secret");
    let first = wait_children(pid, 1);
    let mut b = Client::connect(px.port);
    b.login("bob", "secret");
    wait_children(pid, 2);
    // The session process says BYE and ends; the listener, whose signal handlers the
    // session process inherited, must not take the signal for its own.
    send_signal(first[0], "TERM");
    a.set_timeout(Duration::from_secs(10));
    let rest = text(&a.read_to_eof());
    assert!(rest.contains("* BYE [UNAVAILABLE] Server shutting down."), "{rest}");
    b.cmd_ok("N", "NOOP");
    let mut c = Client::connect(px.port);
    c.login("carol", "secret");
    c.logout();
    b.logout();
    assert!(px.is_running(), "the listener stopped:\n{}", px.log());
    assert!(!px.log().contains("shutting down"), "{}", px.log());
}
