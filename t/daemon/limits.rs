//! Session limits, the pre-auth deadline, the per-address login block and access lists,
//! in thread and fork mode.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use super::*;

fn bye_of(mut s: TcpStream) -> String {
    let mut got = String::new();
    let _ = s.read_to_string(&mut got);
    got
}

fn limits_refuse_with_bye(mode: &str) {
    let dv = Dovecot::start();
    let px = Proxy::start(&config(
        dv.port,
        &format!("mode = {mode}\nmax_sessions = 3\nmax_sessions_per_ip = 2"),
        "",
    ));
    let mut a = Client::connect(px.port);
    a.login("alice", "secret");
    let b = Client::connect(px.port);
    let refused = bye_of(connect_from("127.0.0.1", px.port));
    assert!(
        refused.starts_with("* BYE [UNAVAILABLE] Too many sessions from your address"),
        "{refused:?}"
    );
    let c = client_on(connect_from("127.0.0.2", px.port));
    assert!(text(&c.greeting).starts_with("* OK"), "{}", text(&c.greeting));
    let refused = bye_of(connect_from("127.0.0.3", px.port));
    assert!(refused.starts_with("* BYE [UNAVAILABLE] Too many sessions,"), "{refused:?}");
    px.wait_for_log(r"REFUSED client=127\.0\.0\.3 listener=imap reason=max-sessions$");
    drop((b, c));
    // Places are freed when sessions end.
    let mut d = wait_until(WAIT, || {
        let s = connect_from("127.0.0.1", px.port);
        let c = client_on(s);
        c.greeting.starts_with(b"* OK").then_some(c)
    })
    .expect("a place is free again");
    d.login("bob", "secret");
    d.logout();
    a.logout();
}

#[test]
fn max_sessions_and_per_address_limits_refuse_with_bye_in_thread_mode() {
    limits_refuse_with_bye("thread");
}

#[test]
fn max_sessions_and_per_address_limits_refuse_with_bye_in_fork_mode() {
    limits_refuse_with_bye("fork");
}

fn preauth_deadline(mode: &str) {
    let dv = Dovecot::start();
    let px = Proxy::start(&config(dv.port, &format!("mode = {mode}\npreauth_timeout = 2s"), ""));
    let started = Instant::now();
    let mut silent = Client::connect(px.port);
    let mut trickle = Client::connect(px.port);
    let mut w = trickle.writer();
    let t = std::thread::spawn(move || {
        for b in b"a LOGIN alice secret-but-very-slowly".iter() {
            if w.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let s = text(&silent.read_to_eof());
    let r = text(&trickle.read_to_eof());
    let took = started.elapsed();
    assert!(s.contains("* BYE"), "{s:?}");
    assert!(r.contains("* BYE"), "{r:?}");
    assert!(took < Duration::from_secs(5), "dropped after {took:?}");
    let _ = t.join();
    px.wait_for_log(r"SESSION-END id=\d+ user=- .*reason=preauth-timeout");
}

#[test]
fn silent_and_trickling_clients_are_dropped_at_the_preauth_deadline() {
    preauth_deadline("thread");
}

#[test]
fn silent_and_trickling_clients_are_dropped_at_the_preauth_deadline_in_fork_mode() {
    preauth_deadline("fork");
}

fn failed_logins_slow_down_then_block(mode: &str) {
    let dv = Dovecot::start();
    let global = format!(
        "mode = {mode}\nlogin_failure_delay = 200ms\nlogin_failure_delay_max = 1s\n\
         max_login_failures = 10\nlogin_block_after = 4\nlogin_block_time = 1m"
    );
    let px = Proxy::start(&config(dv.port, &global, "").replace("login_failure_delay = 0s\n", ""));
    let mut c = client_on(connect_from("127.0.0.1", px.port));
    let mut times = Vec::new();
    for i in 0..3 {
        let t = Instant::now();
        let r = text(&c.cmd(&format!("T{i}"), "LOGIN alice wrong"));
        assert!(r.contains(&format!("T{i} NO")), "{r}");
        times.push(t.elapsed());
    }
    assert!(times[0] >= Duration::from_millis(190), "{times:?}");
    assert!(times[1] >= Duration::from_millis(390), "{times:?}");
    assert!(times[2] >= Duration::from_millis(790), "{times:?}");
    c.send_line("T3 LOGIN alice wrong");
    let rest = text(&c.read_to_eof());
    assert!(rest.starts_with("T3 NO"), "{rest:?}");
    assert!(rest.contains("* BYE [UNAVAILABLE] Too many failed logins"), "{rest:?}");
    px.wait_for_log(
        r"LOGIN id=\d+ user=alice backend=\S+ result=failed reason=rejected client=127\.0\.0\.1$",
    );
    // A new connection from the blocked address is refused before the greeting...
    let refused = wait_until(WAIT, || {
        let got = bye_of(connect_from("127.0.0.1", px.port));
        got.contains("Too many failed logins").then_some(got)
    });
    assert!(refused.is_some(), "127.0.0.1 is not blocked");
    // ...while another address is unaffected, even with the right password.
    let mut other = client_on(connect_from("127.0.0.2", px.port));
    assert!(other.greeting.starts_with(b"* OK"), "{}", text(&other.greeting));
    other.login("alice", "secret");
    other.logout();
    // Unaffected means no record at all: a failure from there starts at the base delay
    // (checked from below only: a loaded machine may be slower, never faster) and ends
    // nothing.
    let mut other = client_on(connect_from("127.0.0.2", px.port));
    let t = Instant::now();
    let r = text(&other.cmd("U1", "LOGIN alice wrong"));
    assert!(r.contains("U1 NO") && !r.contains("BYE"), "{r}");
    assert!(t.elapsed() >= Duration::from_millis(190), "{:?}", t.elapsed());
    other.login("alice", "secret");
    other.logout();
}

#[test]
fn failed_logins_from_one_address_get_slower_then_blocked_in_thread_mode() {
    failed_logins_slow_down_then_block("thread");
}

#[test]
fn failed_logins_from_one_address_get_slower_then_blocked_in_fork_mode() {
    failed_logins_slow_down_then_block("fork");
}

#[test]
fn access_lists_refuse_before_the_greeting() {
    let dv = Dovecot::start();
    let px = Proxy::start(&config(dv.port, "", "allow = 127.0.0.0/30\ndeny = 127.0.0.2"));
    let ok = client_on(connect_from("127.0.0.1", px.port));
    assert!(ok.greeting.starts_with(b"* OK"));
    assert_eq!(
        bye_of(connect_from("127.0.0.2", px.port)),
        "* BYE [UNAVAILABLE] Access denied.\r\n"
    );
    assert_eq!(
        bye_of(connect_from("127.0.0.9", px.port)),
        "* BYE [UNAVAILABLE] Access denied.\r\n"
    );
    px.wait_for_log(r"REFUSED client=127\.0\.0\.9 listener=imap reason=access-denied");
    let mut s = connect_from("127.0.0.3", px.port);
    let mut g = [0u8; 4];
    s.read_exact(&mut g).unwrap();
    assert_eq!(&g, b"* OK");
}
