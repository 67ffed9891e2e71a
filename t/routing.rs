//! Routing: users mapped to different Dovecot instances. Each instance holds
//! marker messages appended directly, so reading INBOX through the proxy
//! proves which backend (and which backend user) a login reached.

use crate::common::client::last_line;
use crate::common::*;

/// Subject of message 1 in INBOX, read through the proxy.
fn first_subject(port: u16, login: &str) -> String {
    let mut c = Client::connect(port);
    c.login(login, "secret");
    c.cmd_ok("S", "SELECT INBOX");
    let r = text(&c.cmd_ok("F", "FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])"));
    c.logout();
    r.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or_else(|| panic!("no subject in {r}"))
        .to_owned()
}

fn mark(dv: &Dovecot, user: &str, marker: &str) {
    dv.append_message(user, "INBOX", &text_message(marker, marker));
}

fn two_backends() -> (Dovecot, Dovecot) {
    let d1 = Dovecot::start();
    let d2 = Dovecot::start();
    mark(&d1, "alice", "alice-on-d1");
    mark(&d1, "bob", "bob-on-d1");
    mark(&d2, "alice", "alice-on-d2");
    mark(&d2, "bob", "bob-on-d2");
    (d1, d2)
}

fn backends(d1: &Dovecot, d2: &Dovecot) -> String {
    format!(
        "[global]\nlogin_failure_delay = 0s\n\n\
         [backend d1]\nhost = 127.0.0.1\nport = {}\n\n\
         [backend d2]\nhost = 127.0.0.1\nport = {}\n\n",
        d1.port, d2.port
    )
}

const LISTENER: &str = "[listener imap]\nlisten = 127.0.0.1:@PORT@\nmap = users\n";

#[test]
fn regex_map_routes_two_users_to_two_different_backends() {
    let (d1, d2) = two_backends();
    let conf = format!(
        "{}[map users]\ntype = regex\nroute = ^alice$ d1\nroute = ^bob$ d2\n\n{LISTENER}",
        backends(&d1, &d2)
    );
    let px = Proxy::start(&conf);
    assert_eq!(first_subject(px.port, "alice"), "alice-on-d1");
    assert_eq!(first_subject(px.port, "bob"), "bob-on-d2");
    px.wait_for_log(r"LOGIN id=\d+ user=alice backend=d1 result=ok");
    px.wait_for_log(r"LOGIN id=\d+ user=bob backend=d2 result=ok");
}

#[test]
fn regex_route_rewrites_the_backend_user_from_a_capture_group() {
    let (d1, d2) = two_backends();
    let conf = format!(
        "{}[map users]\ntype = regex\nroute = ^(.*)\\+b$ d2 $1\nroute = ^alice$ d1\n\n{LISTENER}",
        backends(&d1, &d2)
    );
    let px = Proxy::start(&conf);
    assert_eq!(first_subject(px.port, "alice+b"), "alice-on-d2");
    assert_eq!(first_subject(px.port, "bob+b"), "bob-on-d2");
    assert_eq!(first_subject(px.port, "alice"), "alice-on-d1");
}

#[test]
fn regex_map_refuses_a_user_that_matches_no_route() {
    let (d1, d2) = two_backends();
    let conf = format!(
        "{}[map users]\ntype = regex\nroute = ^alice$ d1\n\n{LISTENER}",
        backends(&d1, &d2)
    );
    let mut px = Proxy::start(&conf);
    let mut c = Client::connect(px.port);
    let r = text(&c.try_login("bob", "secret"));
    assert!(r.starts_with("L1 NO"), "unrouted user: {r}");
    c.login("alice", "secret");
    c.logout();
    assert!(px.is_running());
}

#[test]
fn static_map_sends_listed_users_to_their_backend_and_others_to_the_default() {
    let (d1, d2) = two_backends();
    let conf = format!(
        "{}[map users]\ntype = static\ndefault = d1\nuser = bob d2\n\n{LISTENER}",
        backends(&d1, &d2)
    );
    let px = Proxy::start(&conf);
    assert_eq!(first_subject(px.port, "bob"), "bob-on-d2");
    assert_eq!(first_subject(px.port, "alice"), "alice-on-d1");
    // Sanity: the same mailboxes read directly.
    let mut c = d2.connect_as("bob");
    c.cmd_ok("S", "SELECT INBOX");
    let r = c.cmd_ok("F", "FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    assert!(text(&r).contains("bob-on-d2"), "{}", text(last_line(&r)));
    c.logout();
}
