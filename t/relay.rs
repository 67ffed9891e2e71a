//! Traffic after login: large literals both ways, APPEND, IDLE, pipelining,
//! and what the client sees when the backend dies.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::common::client::{assert_ok, last_line};
use crate::common::*;

const MB: usize = 1024 * 1024;

fn setup() -> (Dovecot, Proxy) {
    let dv = Dovecot::start();
    let px = Proxy::start(&minimal_config(dv.port));
    (dv, px)
}

/// Untagged part of a FETCH exchange (the tagged line carries timings).
fn fetch_body(c: &mut Client, what: &str) -> Vec<u8> {
    let r = c.cmd_ok("F", what);
    let last = last_line(&r).len();
    r[..r.len() - last].to_vec()
}

fn assert_same(direct: &[u8], proxied: &[u8], what: &str) {
    if direct != proxied {
        let at = direct
            .iter()
            .zip(proxied)
            .position(|(a, b)| a != b)
            .unwrap_or(direct.len().min(proxied.len()));
        panic!(
            "{what}: proxied bytes differ from direct ones (direct {} bytes, proxied {} bytes, first difference at {at})",
            direct.len(),
            proxied.len()
        );
    }
}

/// Message 1 of the user's INBOX, read directly from Dovecot, is `msg`.
fn assert_stored(dv: &Dovecot, user: &str, msg: &[u8]) {
    let mut d = login_select(dv.port, user);
    let stored = fetch_body(&mut d, "FETCH 1 BODY.PEEK[]");
    let mut want = format!("* 1 FETCH (BODY[] {{{}}}\r\n", msg.len()).into_bytes();
    // Dovecot sends a stored NUL as 0x80 in FETCH BODY[] (IMAP4rev1
    // literals cannot carry NULs).
    want.extend(msg.iter().map(|&b| if b == 0 { 0x80 } else { b }));
    want.extend_from_slice(b")\r\n");
    assert_same(&want, &stored, "stored message");
    d.logout();
}

fn login_select(port: u16, user: &str) -> Client {
    let mut c = Client::connect(port);
    c.login(user, "secret");
    c.cmd_ok("S", "SELECT INBOX");
    c
}

#[test]
fn large_binary_message_fetch_is_byte_identical_to_direct_dovecot() {
    let (dv, px) = setup();
    let user = unique_user("big");
    let msg = binary_message(20 * MB + 4321, "big-binary");
    dv.append_message(&user, "INBOX", &msg);

    let mut direct = login_select(dv.port, &user);
    let want = fetch_body(&mut direct, "FETCH 1 (BODY.PEEK[] RFC822.SIZE)");
    direct.logout();
    assert!(want.len() > 20 * MB, "direct FETCH too short: {} bytes", want.len());

    let mut c = login_select(px.port, &user);
    let got = fetch_body(&mut c, "FETCH 1 (BODY.PEEK[] RFC822.SIZE)");
    assert_same(&want, &got, "FETCH BODY[]");
    // And the same through a partial fetch at an odd offset.
    let want_part = {
        let mut d = login_select(dv.port, &user);
        let b = fetch_body(&mut d, "FETCH 1 BODY.PEEK[]<1000001.3000000>");
        d.logout();
        b
    };
    let got_part = fetch_body(&mut c, "FETCH 1 BODY.PEEK[]<1000001.3000000>");
    assert_same(&want_part, &got_part, "FETCH BODY[]<partial>");
    c.logout();
}

#[test]
fn append_with_synchronizing_literal_waits_for_continuation() {
    let (dv, px) = setup();
    let user = unique_user("append-sync");
    let msg = binary_message(300 * 1024, "append-sync");
    let mut c = login_select(px.port, &user);
    c.send_line(&format!("A APPEND INBOX (\\Seen) {{{}}}", msg.len()));
    let cont = c.read_line();
    assert!(cont.starts_with(b"+"), "expected continuation, got {}", text(&cont));
    c.send(&msg);
    c.send(b"\r\n");
    let r = c.read_until_tagged("A");
    assert_ok(&r, "A", "APPEND {n}");
    c.logout();

    assert_stored(&dv, &user, &msg);
}

#[test]
fn append_with_non_synchronizing_literal_works() {
    let (dv, px) = setup();
    let user = unique_user("append-plus");
    let msg = binary_message(300 * 1024, "append-plus");
    let mut c = login_select(px.port, &user);
    let mut all = format!("A APPEND INBOX {{{}+}}\r\n", msg.len()).into_bytes();
    all.extend_from_slice(&msg);
    all.extend_from_slice(b"\r\n");
    c.send(&all);
    let r = c.read_until_tagged("A");
    assert!(!r.starts_with(b"+"), "no continuation expected for {{n+}}: {}", tail(&r, 300));
    assert_ok(&r, "A", "APPEND {n+}");
    c.logout();

    assert_stored(&dv, &user, &msg);
}

#[test]
fn idle_receives_exists_from_another_session_and_done_completes_it() {
    let (dv, px) = setup();
    let user = unique_user("idle");
    let mut c = login_select(px.port, &user);
    c.send_line("I IDLE");
    let cont = c.read_line();
    assert!(cont.starts_with(b"+"), "expected IDLE continuation, got {}", text(&cont));

    // Another session (also through the proxy) appends a message.
    let mut other = Client::connect(px.port);
    other.login(&user, "secret");
    let msg = text_message("idle-wakeup", "ping");
    let mut cmd = format!("A APPEND INBOX {{{}+}}\r\n", msg.len()).into_bytes();
    cmd.extend_from_slice(&msg);
    cmd.extend_from_slice(b"\r\n");
    other.send(&cmd);
    assert_ok(&other.read_until_tagged("A"), "A", "APPEND");
    other.logout();

    let deadline = Instant::now() + WAIT;
    loop {
        let r = c.read_response();
        if r == b"* 1 EXISTS\r\n" {
            break;
        }
        assert!(Instant::now() < deadline, "no EXISTS during IDLE: {}", c.transcript());
    }
    c.send_line("DONE");
    let r = c.read_until_tagged("I");
    assert_ok(&r, "I", "IDLE/DONE");
    c.cmd_ok("N", "NOOP");
    c.logout();
    drop(dv);
}

#[test]
fn pipelined_50mb_fetch_and_50mb_append_complete_without_deadlock() {
    let (dv, px) = setup();
    let user = unique_user("pipe");
    let big = binary_message(50 * MB, "pipe-fetch");
    dv.append_message(&user, "INBOX", &big);
    let big_len = big.len();
    drop(big);
    let up = binary_message(50 * MB + 7, "pipe-append");

    let mut c = login_select(px.port, &user);
    c.set_timeout(Duration::from_secs(60));
    let mut w = c.writer();
    let up_len = up.len();
    let started = Instant::now();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buf =
            format!("F FETCH 1 BODY.PEEK[]\r\nA APPEND INBOX {{{up_len}+}}\r\n").into_bytes();
        buf.extend_from_slice(&up);
        buf.extend_from_slice(b"\r\nN NOOP\r\n");
        w.write_all(&buf)?;
        w.flush()
    });
    let mut fetched = 0usize;
    let mut tags = Vec::new();
    while tags.len() < 3 {
        let r = c.read_response();
        if r.starts_with(b"* 1 FETCH") {
            fetched = r.len();
        }
        for t in ["F", "A", "N"] {
            if r.starts_with(format!("{t} ").as_bytes()) {
                assert!(r.starts_with(format!("{t} OK").as_bytes()), "{}", text(&r));
                tags.push(t);
            }
        }
        assert!(started.elapsed() < Duration::from_secs(180), "too slow: {:?}", started.elapsed());
    }
    writer.join().expect("writer thread").expect("writing the pipelined commands");
    assert_eq!(tags, ["F", "A", "N"], "completions out of order");
    assert!(fetched > big_len, "FETCH returned only {fetched} bytes");
    let r = text(&c.cmd_ok("Z", "FETCH 2 RFC822.SIZE"));
    assert!(r.contains(&format!("RFC822.SIZE {up_len}")), "appended size: {r}");
    c.logout();
}

#[test]
fn backend_killed_mid_session_sends_bye_then_eof() {
    let (dv, mut px) = setup();
    let user = unique_user("kill");
    let mut c = login_select(px.port, &user);
    c.cmd_ok("N", "NOOP");
    // SIGKILL the Dovecot process serving this session (its PID is in our
    // Dovecot's login log line): the backend connection just drops, with no
    // BYE from Dovecot, so any BYE the client sees comes from the proxy.
    let pid = dv.session_pid(&user);
    send_signal(pid, "KILL");
    let rest = text(&c.read_to_eof());
    assert!(
        rest.lines().any(|l| l.starts_with("* BYE ")),
        "expected * BYE before EOF, got: {rest:?}"
    );
    assert!(px.is_running(), "proxy exited after a backend connection died");
    let mut c = login_select(px.port, &user);
    c.logout();
}

#[test]
fn backend_shutdown_ends_sessions_and_later_logins_get_unavailable() {
    let (mut dv, mut px) = setup();
    let user = unique_user("stop");
    let mut c = login_select(px.port, &user);
    dv.kill();
    let rest = text(&c.read_to_eof());
    assert!(
        rest.lines().any(|l| l.starts_with("* BYE ")),
        "expected * BYE before EOF, got: {rest:?}"
    );
    assert!(px.is_running(), "proxy exited after its backend stopped");
    let mut c = Client::connect(px.port);
    let r = text(&c.try_login(&user, "secret"));
    assert!(r.starts_with("L1 NO [UNAVAILABLE]"), "{r}");
}
