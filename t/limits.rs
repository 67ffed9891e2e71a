//! Limits and failure paths: many concurrent sessions, unreachable backends,
//! overlong pre-auth input, repeated login failures.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::client::last_line;
use crate::common::*;

fn with_global(extra: &str, backend_port: u16) -> String {
    minimal_config(backend_port).replacen("[global]\n", &format!("[global]\n{extra}\n"), 1)
}

/// A fresh connection still gets a greeting and can log in.
fn assert_still_serving(px: &mut Proxy) {
    assert!(px.is_running(), "imapgate exited");
    let mut c = Client::connect(px.port);
    assert!(c.greeting.starts_with(b"* OK"), "greeting: {}", text(&c.greeting));
    c.login("alice", "secret");
    c.logout();
}

/// Counts a session thread that ends by panicking.
struct FailGuard(Arc<AtomicUsize>);

impl Drop for FailGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[test]
fn two_hundred_concurrent_sessions_all_succeed() {
    const N: usize = 200;
    let dv = Dovecot::start();
    let px = Proxy::start(&minimal_config(dv.port));
    let prefix = unique_user("conc");
    let logged_in = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let port = px.port;
    let threads: Vec<_> = (0..N)
        .map(|i| {
            let logged_in = Arc::clone(&logged_in);
            let failed = Arc::clone(&failed);
            let user = format!("{prefix}-{}", i % 20);
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let _guard = FailGuard(Arc::clone(&failed));
                    let mut c = Client::connect(port);
                    c.set_timeout(Duration::from_secs(60));
                    c.login(&user, "secret");
                    logged_in.fetch_add(1, Ordering::SeqCst);
                    // Hold the session until all N are logged in at once
                    // (or give up early when another session failed).
                    let all = wait_until(Duration::from_secs(120), || {
                        (logged_in.load(Ordering::SeqCst) >= N || failed.load(Ordering::SeqCst) > 0)
                            .then_some(())
                    });
                    assert!(
                        all.is_some() && failed.load(Ordering::SeqCst) == 0,
                        "not all sessions logged in"
                    );
                    c.cmd_ok("S", "SELECT INBOX");
                    c.cmd_ok("N", "NOOP");
                    c.logout();
                })
                .expect("spawn")
        })
        .collect();
    let n_failed = threads.into_iter().map(|t| t.join()).filter(Result::is_err).count();
    assert_eq!(n_failed, 0, "{n_failed} of {N} sessions failed (see panics above)");
}

#[test]
fn backend_down_gives_no_unavailable_and_logs_the_failure() {
    let port = free_port(); // nothing listens here
    let mut px = Proxy::start(&minimal_config(port));
    let mut c = Client::connect(px.port);
    let started = Instant::now();
    let r = text(&c.try_login("alice", "secret"));
    assert!(r.starts_with("L1 NO [UNAVAILABLE]"), "{r}");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    px.wait_for_log(r"LOGIN id=\d+ user=alice backend=dovecot result=failed reason=\S");
    assert!(px.is_running(), "imapgate exited");
}

#[test]
fn overlong_preauth_line_is_rejected_clearly_and_the_proxy_stays_up() {
    let dv = Dovecot::start();
    let mut px = Proxy::start(&with_global("preauth_max_line = 1k", dv.port));
    // Just under the limit is fine.
    let mut c = Client::connect(px.port);
    c.cmd_ok("I", &format!("ID (\"x\" \"{}\")", "y".repeat(900)));
    c.login("alice", "secret");
    c.logout();

    let mut c = Client::connect(px.port);
    let mut line = b"a LOGIN alice ".to_vec();
    line.extend(std::iter::repeat_n(b'x', 64 * 1024));
    line.extend_from_slice(b"\r\n");
    let _ = c.try_send(&line); // the proxy may close before reading it all
    let mut got = Vec::new();
    while let Ok(Some(l)) = c.try_read_line() {
        let done = l.starts_with(b"a ") || l.starts_with(b"* BYE");
        got.extend_from_slice(&l);
        if done {
            break;
        }
    }
    let got = text(&got);
    let bad = got
        .lines()
        .find(|l| l.starts_with("a BAD ") || l.starts_with("* BAD ") || l.starts_with("* BYE "));
    let bad = bad.unwrap_or_else(|| panic!("no BAD/BYE for an overlong line, got {got:?}"));
    assert!(bad.len() > 8, "error without explanation: {bad:?}");
    assert_still_serving(&mut px);
}

#[test]
fn oversized_preauth_literal_is_refused_without_sending_it_and_the_proxy_stays_up() {
    let dv = Dovecot::start();
    let mut px = Proxy::start(&with_global("preauth_max_literal = 1k", dv.port));
    let mut c = Client::connect(px.port);
    c.send_line("a LOGIN alice {100000}");
    // The literal is never sent: the proxy must answer at once.
    let r = c.read_line();
    let r = text(&r);
    assert!(r.starts_with("a NO ") || r.starts_with("a BAD "), "expected tagged NO/BAD, got {r:?}");

    // A non-synchronizing one arrives with its data; it is refused too.
    let mut c = Client::connect(px.port);
    let mut cmd = b"b LOGIN alice {100000+}\r\n".to_vec();
    cmd.extend(std::iter::repeat_n(b's', 100_000));
    cmd.extend_from_slice(b"\r\n");
    let _ = c.try_send(&cmd);
    let mut got = Vec::new();
    while let Ok(Some(l)) = c.try_read_line() {
        got.extend_from_slice(&l);
        if l.starts_with(b"b ") {
            break;
        }
    }
    let got = text(&got);
    assert!(!got.contains("b OK"), "oversized literal accepted: {got:?}");
    assert!(got.contains("BAD") || got.contains("NO") || got.contains("BYE"), "no error: {got:?}");

    // A small literal still works.
    let mut c = Client::connect(px.port);
    c.send(b"c LOGIN alice {6+}\r\nsecret\r\n");
    let r = c.read_until_tagged("c");
    assert!(text(last_line(&r)).starts_with("c OK"), "{}", text(&r));
    c.logout();
    assert_still_serving(&mut px);
}

#[test]
fn max_login_failures_ends_the_session() {
    let dv = Dovecot::start();
    let mut px = Proxy::start(&with_global("max_login_failures = 2", dv.port));
    let mut c = Client::connect(px.port);
    let r = text(&c.try_login("alice", "wrong1"));
    assert!(r.starts_with("L1 NO"), "{r}");
    c.send_line("L2 LOGIN alice wrong2");
    let rest = text(&c.read_to_eof());
    assert!(rest.starts_with("L2 NO"), "second failure: {rest:?}");
    assert!(!rest.contains(" OK"), "{rest:?}");
    assert_still_serving(&mut px);
}
