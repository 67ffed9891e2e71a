//! PROXY protocol v1 and v2 on a listener: the real client address from trusted load
//! balancers is logged and limited; untrusted sources are refused.

use std::io::{Read, Write};

use imapgate::net::proxy_protocol::encode_v2;

use super::*;

fn proxied(mode: &str) -> (Dovecot, Proxy) {
    let dv = Dovecot::start();
    let listener = "proxy_protocol = yes\nproxy_trusted = 127.0.0.1/32";
    let px = Proxy::start(&config(
        dv.port,
        &format!("mode = {mode}\nmax_sessions_per_ip = 1"),
        listener,
    ));
    (dv, px)
}

fn run(mode: &str) {
    let (_dv, px) = proxied(mode);
    // v1 from a trusted address.
    let mut s = connect_from("127.0.0.1", px.port);
    s.write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 40001 143\r\n").unwrap();
    let mut c = client_on(s);
    assert!(c.greeting.starts_with(b"* OK"), "{}", text(&c.greeting));
    c.login("alice", "secret");
    px.wait_for_log(r"SESSION-START id=\d+ client=192\.0\.2\.7:40001 listener=imap");
    // v2 from a trusted address, with the header and LOGIN in one write.
    let mut s = connect_from("127.0.0.1", px.port);
    let mut bytes =
        encode_v2("198.51.100.9:40002".parse().unwrap(), "127.0.0.1:143".parse().unwrap());
    bytes.extend_from_slice(b"x CAPABILITY\r\n");
    s.write_all(&bytes).unwrap();
    let mut c2 = client_on(s);
    assert!(c2.greeting.starts_with(b"* OK"), "{}", text(&c2.greeting));
    let r = c2.read_until_tagged("x");
    assert!(text(&r).contains("x OK"), "{}", text(&r));
    c2.login("bob", "secret");
    px.wait_for_log(r"SESSION-START id=\d+ client=198\.51\.100\.9:40002 listener=imap");
    // Limits count the real address: a second session "from" 192.0.2.7 is refused.
    let mut s = connect_from("127.0.0.1", px.port);
    s.write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 40003 143\r\n").unwrap();
    let mut got = String::new();
    let _ = s.read_to_string(&mut got);
    assert!(got.starts_with("* BYE [UNAVAILABLE] Too many sessions from your address"), "{got:?}");
    px.wait_for_log(r"REFUSED client=192\.0\.2\.7 listener=imap reason=max-sessions-per-ip");
    // From an untrusted address, with v1 or v2 or nothing: refused before any greeting.
    for header in [
        b"PROXY TCP4 192.0.2.8 127.0.0.1 1 143\r\n".to_vec(),
        encode_v2("192.0.2.8:1".parse().unwrap(), "127.0.0.1:143".parse().unwrap()),
        Vec::new(),
    ] {
        let mut s = connect_from("127.0.0.2", px.port);
        let _ = s.write_all(&header);
        let mut got = String::new();
        let _ = s.read_to_string(&mut got);
        assert_eq!(got, "* BYE [UNAVAILABLE] Access denied.\r\n");
    }
    px.wait_for_log(r"WARN: REFUSED client=127\.0\.0\.2 listener=imap reason=untrusted-proxy");
    // Garbage instead of a header from a trusted address: closed without a greeting.
    let mut s = connect_from("127.0.0.1", px.port);
    s.write_all(b"a LOGIN alice secret\r\n").unwrap();
    let mut got = String::new();
    let _ = s.read_to_string(&mut got);
    assert_eq!(got, "");
    px.wait_for_log(r"PROXY header from 127\.0\.0\.1:\d+: no PROXY protocol header");
    c.logout();
    c2.logout();
}

#[test]
fn proxy_v1_and_v2_from_trusted_and_untrusted_addresses() {
    run("thread");
}

#[test]
fn proxy_v1_and_v2_from_trusted_and_untrusted_addresses_in_fork_mode() {
    run("fork");
}
