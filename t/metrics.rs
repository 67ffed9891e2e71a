//! `[global] metrics`: the Prometheus listener, scraped with a plain TcpStream, in
//! thread and fork mode. Every number is checked exactly against what the test did.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::client::last_line;
use crate::common::*;

/// One HTTP request to the metrics port; the whole answer.
fn http(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    s.set_read_timeout(Some(WAIT)).ok();
    s.write_all(request.as_bytes()).expect("send request");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("read answer");
    String::from_utf8(answer).expect("UTF-8 answer")
}

/// `GET /metrics`: the body, after checking status and type.
pub fn scrape(port: u16) -> String {
    let answer = http(port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    body.to_string()
}

/// The value of one series (`name{labels}` exactly as rendered), if present.
pub fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .map(|v| v.parse().expect("a number"))
}

/// Scrapes until every `(series, value)` holds (fork mode: reports arrive
/// asynchronously); panics with the last scrape otherwise.
fn expect(port: u16, want: &[(&str, f64)]) -> String {
    let mut last = String::new();
    let ok = wait_until(WAIT, || {
        last = scrape(port);
        want.iter().all(|(s, v)| value(&last, s) == Some(*v)).then_some(())
    });
    if ok.is_none() {
        let wrong: Vec<_> = want
            .iter()
            .filter(|(s, v)| value(&last, s) != Some(*v))
            .map(|(s, v)| format!("{s}: want {v}, have {:?}", value(&last, s)))
            .collect();
        panic!("metrics never matched: {wrong:#?}\n{last}");
    }
    last
}

fn metrics_proxy(dv: &Dovecot, mode: &str) -> (Proxy, u16) {
    let port = free_port();
    let body = minimal_config(dv.port).replacen(
        "[global]\n",
        &format!("[global]\nmode = {mode}\nmetrics = {port}\n"),
        1,
    ) + "deny = 127.0.0.2/32\nrules = no-delete\n\n\
           [rule no-delete]\ntype = commands\ndeny = DELETE\n";
    (Proxy::start(&body), port)
}

fn counts_add_up(mode: &str) {
    let dv = Dovecot::start();
    let (px, port) = metrics_proxy(&dv, mode);
    let start = scrape(port);
    assert!(start.contains("# TYPE imapgate_logins_total counter\n"), "{start}");
    assert_eq!(value(&start, r#"imapgate_backend_up{backend="dovecot"}"#), Some(1.0), "{start}");

    // One session stays open while the others come and go.
    let mut open = Client::connect(px.port);
    open.login(&unique_user("metrics"), "secret");
    // A rule's refusal.
    let r = open.cmd("D", "DELETE Nothing");
    assert!(text(last_line(&r)).starts_with("D NO"), "{}", text(&r));
    expect(
        port,
        &[
            (r#"imapgate_sessions_open{listener="imap"}"#, 1.0),
            (r#"imapgate_logins_total{listener="imap",result="ok",reason="none"}"#, 1.0),
        ],
    );
    const OK: usize = 3;
    for _ in 0..OK {
        let mut c = Client::connect(px.port);
        c.login(&unique_user("metrics"), "secret");
        c.cmd_ok("N", "NOOP");
        c.logout();
    }
    // Two failed logins in one session, then LOGOUT.
    let mut bad = Client::connect(px.port);
    for _ in 0..2 {
        let r = bad.try_login(&unique_user("metrics"), "wrong");
        assert!(text(&r).starts_with("L1 NO"), "{}", text(&r));
    }
    bad.logout();
    // A refusal before the greeting.
    let mut denied = Client::connect_from([127, 0, 0, 2], px.port);
    assert!(text(&denied.greeting).contains("BYE"), "{}", text(&denied.greeting));
    denied.expect_eof();
    open.logout();

    let sessions = (1 + OK + 1) as f64;
    let body = expect(
        port,
        &[
            (r#"imapgate_sessions_open{listener="imap"}"#, 0.0),
            // The harness's one connection that waited for the port is a session too.
            (r#"imapgate_sessions_total{listener="imap"}"#, sessions + 1.0),
            (r#"imapgate_sessions_ended_total{listener="imap",reason="logout"}"#, sessions),
            (
                r#"imapgate_logins_total{listener="imap",result="ok",reason="none"}"#,
                1.0 + OK as f64,
            ),
            (r#"imapgate_logins_total{listener="imap",result="failed",reason="rejected"}"#, 2.0),
            (r#"imapgate_lookups_total{map="users",result="found"}"#, 1.0 + OK as f64 + 2.0),
            (r#"imapgate_backend_login_seconds_count{backend="dovecot"}"#, 1.0 + OK as f64 + 2.0),
            (
                r#"imapgate_backend_login_seconds_bucket{backend="dovecot",le="+Inf"}"#,
                1.0 + OK as f64 + 2.0,
            ),
            (r#"imapgate_backend_up{backend="dovecot"}"#, 1.0),
            (r#"imapgate_rule_decisions_total{rule="no-delete",decision="refuse"}"#, 1.0),
            (r#"imapgate_refused_total{reason="access-denied"}"#, 1.0),
        ],
    );
    for series in [
        r#"imapgate_bytes_from_clients_total{listener="imap"}"#,
        r#"imapgate_bytes_to_clients_total{listener="imap"}"#,
        r#"imapgate_backend_login_seconds_sum{backend="dovecot"}"#,
    ] {
        assert!(value(&body, series).is_some_and(|v| v > 0.0), "{series}\n{body}");
    }
    assert!(!body.contains("metrics-"), "a user name in the metrics:\n{body}");
    assert!(!body.contains("127.0.0."), "an address in the metrics:\n{body}");

    // Only GET (and HEAD) of /metrics.
    assert!(http(port, "GET / HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 404 "));
    assert!(http(port, "POST /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 405 "));
    assert!(http(port, "nonsense\r\n\r\n").starts_with("HTTP/1.0 400 "));
    drop(px);
}

#[test]
fn metrics_count_sessions_logins_lookups_and_refusals_in_thread_mode() {
    counts_add_up("thread");
}

#[test]
fn metrics_count_sessions_logins_lookups_and_refusals_in_fork_mode() {
    counts_add_up("fork");
}

/// A scraper that connects and sends nothing neither blocks the accept loop nor the
/// other scrapes, and is dropped at its deadline.
#[test]
fn a_silent_scraper_holds_nothing() {
    let dv = Dovecot::start();
    for mode in ["thread", "fork"] {
        let (px, port) = metrics_proxy(&dv, mode);
        let mut silent = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let mut c = Client::connect(px.port);
        c.login(&unique_user("metrics"), "secret");
        assert!(scrape(port).contains("imapgate_sessions_open"), "{mode}");
        c.logout();
        silent.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        let _ = silent.read_to_end(&mut rest);
        assert!(started.elapsed() < Duration::from_secs(8), "{mode}: the silent scraper was kept");
    }
}

/// A backend that cannot be reached shows as down, in fork mode too (session processes
/// report it); a map's cache answers count as hits (thread mode: fork-mode sessions do
/// not share a cache).
#[test]
fn backend_down_and_cache_hits_show_in_both_modes() {
    let dv = Dovecot::start();
    let dead = free_port();
    let dir = TempDir::new("metrics-map");
    let map = dir.join("users.map");
    std::fs::write(&map, "lost gone\n* dovecot\n").expect("write the map");
    for mode in ["thread", "fork"] {
        let port = free_port();
        let body = minimal_config(dv.port)
            .replacen(
                "[global]\n",
                &format!("[global]\nmode = {mode}\nmetrics = 127.0.0.1:{port}\n"),
                1,
            )
            .replacen(
                "[map users]\ntype = static\ndefault = dovecot\n",
                &format!(
                    "[backend gone]\nhost = 127.0.0.1\nport = {dead}\n\n\
                     [map users]\ntype = file\npath = {}\ncache_ttl = 1m\n",
                    map.display()
                ),
                1,
            );
        let px = Proxy::start(&body);
        let mut c = Client::connect(px.port);
        let r = c.try_login("lost", "secret");
        assert!(text(&r).starts_with("L1 NO [UNAVAILABLE]"), "{mode}: {}", text(&r));
        c.logout();
        let user = unique_user("cached");
        for _ in 0..3 {
            let mut c = Client::connect(px.port);
            c.login(&user, "secret");
            c.logout();
        }
        expect(
            port,
            &[
                (r#"imapgate_backend_up{backend="gone"}"#, 0.0),
                (r#"imapgate_backend_up{backend="dovecot"}"#, 1.0),
                (
                    r#"imapgate_logins_total{listener="imap",result="failed",reason="backend-unavailable"}"#,
                    1.0,
                ),
                (r#"imapgate_logins_total{listener="imap",result="ok",reason="none"}"#, 3.0),
                (r#"imapgate_lookups_total{map="users",result="found"}"#, 4.0),
                (r#"imapgate_backend_login_seconds_count{backend="dovecot"}"#, 3.0),
            ],
        );
        let body = scrape(port);
        assert_eq!(value(&body, r#"imapgate_backend_login_seconds_count{backend="gone"}"#), None);
        // Thread mode shares the cache: the second and third login are hits. A fork-mode
        // session process starts with the listener's cache, which never looks up: no
        // hit across sessions, and the metric says so.
        let hits = value(&body, r#"imapgate_lookup_cache_hits_total{map="users"}"#);
        assert_eq!(hits, (mode == "thread").then_some(2.0), "{mode}\n{body}");
    }
}

/// Counters survive a SIGHUP reload, and the metrics address stays (with a warning).
#[test]
fn counters_survive_a_reload() {
    let dv = Dovecot::start();
    for mode in ["thread", "fork"] {
        let (px, port) = metrics_proxy(&dv, mode);
        let mut old = Client::connect(px.port);
        old.login(&unique_user("metrics"), "secret");
        let body = std::fs::read_to_string(&px.config).expect("read config");
        let moved =
            body.replace(&format!("metrics = {port}\n"), &format!("metrics = {}\n", free_port()));
        assert_ne!(moved, body);
        std::fs::write(&px.config, moved.replace("[global]\n", "[global]\ngreeting = again.\n"))
            .expect("write config");
        send_signal(px.pid(), "HUP");
        px.wait_for_log("reload: metrics cannot change while running");
        px.wait_for_log("reload: .* loaded; new sessions use it");
        let mut new = Client::connect(px.port);
        assert!(text(&new.greeting).ends_with("again.\r\n"), "{}", text(&new.greeting));
        new.login(&unique_user("metrics"), "secret");
        new.logout();
        old.logout();
        expect(
            port,
            &[
                (r#"imapgate_sessions_open{listener="imap"}"#, 0.0),
                (r#"imapgate_sessions_total{listener="imap"}"#, 3.0),
                (r#"imapgate_logins_total{listener="imap",result="ok",reason="none"}"#, 2.0),
                (r#"imapgate_backend_up{backend="dovecot"}"#, 1.0),
            ],
        );
    }
}

/// A long session's bytes reach the metrics while it runs (every few seconds with
/// traffic), not only at its end.
#[test]
fn bytes_of_a_running_session_are_counted_while_it_runs() {
    let dv = Dovecot::start();
    for mode in ["thread", "fork"] {
        let (px, port) = metrics_proxy(&dv, mode);
        let mut c = Client::connect(px.port);
        c.login(&unique_user("metrics"), "secret");
        c.cmd_ok("S", "SELECT INBOX");
        std::thread::sleep(Duration::from_millis(5500));
        c.cmd_ok("N", "NOOP");
        let from = r#"imapgate_bytes_from_clients_total{listener="imap"}"#;
        let to = r#"imapgate_bytes_to_clients_total{listener="imap"}"#;
        // Only the harness's probe has ended, and it sent nothing.
        let body = wait_until(WAIT, || {
            let body = scrape(port);
            value(&body, from).is_some_and(|v| v > 0.0).then_some(body)
        })
        .unwrap_or_else(|| panic!("{mode}: no bytes while the session runs\n{}", scrape(port)));
        assert_eq!(value(&body, r#"imapgate_sessions_open{listener="imap"}"#), Some(1.0));
        let during = (value(&body, from).unwrap(), value(&body, to).unwrap());
        c.logout();
        // At the end the rest is added: more than during, and nothing counted twice.
        let body = expect(port, &[(r#"imapgate_sessions_open{listener="imap"}"#, 0.0)]);
        let after = (value(&body, from).unwrap(), value(&body, to).unwrap());
        assert!(after.0 > during.0 && after.1 > during.1, "{mode}: {during:?} {after:?}");
        let logged = px.wait_for_log(r"SESSION-END id=2 .*from_client=\d+ to_client=\d+");
        let field = |name: &str| -> f64 {
            let start = logged.find(&format!("{name}=")).unwrap() + name.len() + 1;
            logged[start..].split(' ').next().unwrap().parse().unwrap()
        };
        let probe = px.wait_for_log(r"SESSION-END id=1 ");
        let probe_to: f64 = {
            let start = probe.find("to_client=").unwrap() + 10;
            probe[start..].split(' ').next().unwrap().parse().unwrap()
        };
        assert_eq!(after.0, field("from_client"), "{mode}: {logged}");
        assert_eq!(after.1, field("to_client") + probe_to, "{mode}: {logged}");
    }
}
