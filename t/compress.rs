//! COMPRESS=DEFLATE (issue 14): toward clients, imapgate answers COMPRESS itself and the
//! client's stream is deflate from there on, with rules still reading every command in
//! clear; toward a backend that offers it (and whose section says `compress = yes`),
//! imapgate compresses its own link. A client script (SELECT, APPEND, FETCH, IDLE) runs
//! compressed through imapgate and directly against a Dovecot that compresses itself:
//! the results are the same bytes.

use crate::common::client::{assert_ok, Conn};
use crate::common::deflate::{CountingRelay, DeflateConn};
use crate::common::*;

/// Dovecot with its own COMPRESS support (the zlib plugins).
const DOVECOT_ZLIB: &str = "mail_plugins = $mail_plugins zlib\n\
                            protocol imap {\n  mail_plugins = $mail_plugins imap_zlib\n}\n";

/// A session logged in as `user`, then compressed: both directions deflate.
fn compressed(port: u16, user: &str) -> Client {
    let (conn, on): (Box<dyn Conn>, _) = DeflateConn::connect(port);
    let mut c = Client::from_conn(conn);
    c.greeting = c.read_line();
    c.login(user, "secret");
    let caps = text(&c.cmd_ok("C", "CAPABILITY"));
    assert!(caps.contains("COMPRESS=DEFLATE"), "{caps}");
    c.send_line("Z COMPRESS DEFLATE");
    let ok = text(&c.read_line());
    assert!(ok.starts_with("Z OK"), "{ok}");
    on.store(true, std::sync::atomic::Ordering::SeqCst);
    c
}

/// A message with every byte value in its body lines (but CR and LF only as line ends).
fn message(n: usize) -> Vec<u8> {
    let mut m = format!("Subject: compressed {n}\r\nFrom: a@example.org\r\n\r\n").into_bytes();
    for i in 0..(2000 * n) {
        let line: Vec<u8> = (0..64)
            .map(|j| ((i * 7 + j) % 256) as u8)
            .filter(|b| !matches!(b, 0 | b'\r' | b'\n')) // Dovecot turns NUL into 0x80
            .collect();
        m.extend_from_slice(&line);
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// SELECT, APPEND (a literal), FETCH every message back, and IDLE while another session
/// appends: returns the bodies fetched and the IDLE news, for comparing.
fn script(c: &mut Client, dv: &Dovecot, user: &str) -> (Vec<Vec<u8>>, String) {
    c.cmd_ok("S", "SELECT INBOX");
    for n in 1..=2 {
        let m = message(n);
        c.send_line(&format!("A{n} APPEND INBOX {{{}}}", m.len()));
        let cont = text(&c.read_line());
        assert!(cont.starts_with('+'), "{cont}");
        c.send(&m);
        c.send(b"\r\n");
        assert_ok(&c.read_until_tagged(&format!("A{n}")), &format!("A{n}"), "APPEND");
    }
    c.send_line("F FETCH 1:* (BODY.PEEK[])");
    let mut bodies = Vec::new();
    loop {
        let r = c.read_response();
        if r.starts_with(b"F ") {
            assert_ok(&r, "F", "FETCH");
            break;
        }
        let open = r.iter().position(|&b| b == b'{').expect("a literal");
        let close = open + r[open..].iter().position(|&b| b == b'}').unwrap();
        let len: usize = text(&r[open + 1..close]).parse().unwrap();
        bodies.push(r[close + 3..close + 3 + len].to_vec());
    }
    c.send_line("I IDLE");
    assert!(text(&c.read_line()).starts_with('+'));
    dv.append_message(user, "INBOX", &text_message("while-idle", "x"));
    let news = text(&c.read_line());
    c.send_line("DONE");
    assert_ok(&c.read_until_tagged("I"), "I", "IDLE");
    c.logout();
    (bodies, news.trim_end().to_string())
}

fn check_through_proxy(rules: &str) {
    let dv = Dovecot::start_with(DOVECOT_ZLIB);
    let px = Proxy::start(&(minimal_config(dv.port) + rules));
    let direct_user = unique_user("zdirect");
    let proxied_user = unique_user("zproxy");
    let mut direct = compressed(dv.port, &direct_user);
    let (direct_bodies, direct_news) = script(&mut direct, &dv, &direct_user);
    let mut proxied = compressed(px.port, &proxied_user);
    let (bodies, news) = script(&mut proxied, &dv, &proxied_user);
    let same =
        |a: &[Vec<u8>], b: &[Vec<u8>]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y);
    let lens = |v: &[Vec<u8>]| {
        v.iter()
            .zip(&[message(1), message(2)])
            .map(|(x, y)| {
                let at = x.iter().zip(y).position(|(a, b)| a != b);
                (
                    x.len(),
                    at.map(|i| {
                        (i, x[i..x.len().min(i + 8)].to_vec(), y[i..y.len().min(i + 8)].to_vec())
                    }),
                )
            })
            .collect::<Vec<_>>()
    };
    let sent = [message(1), message(2)];
    assert!(
        same(&direct_bodies, &sent),
        "Dovecot itself: {:?} vs {:?}",
        lens(&direct_bodies),
        lens(&sent)
    );
    assert!(
        same(&bodies, &direct_bodies),
        "through imapgate: {:?} vs {:?}",
        lens(&bodies),
        lens(&direct_bodies)
    );
    assert_eq!((direct_news.as_str(), news.as_str()), ("* 3 EXISTS", "* 3 EXISTS"));
}

#[test]
fn a_compressed_client_gets_the_bytes_a_direct_one_gets_on_the_fast_path() {
    check_through_proxy("");
}

#[test]
fn a_compressed_client_gets_the_bytes_a_direct_one_gets_with_rules_reading_in_clear() {
    check_through_proxy("rules = no-delete\n\n[rule no-delete]\ntype = commands\ndeny = DELETE\n");
    // The rules still read every command in clear, after COMPRESS.
    let dv = Dovecot::start();
    let px = Proxy::start(
        &(minimal_config(dv.port)
            + "rules = no-delete\n\n[rule no-delete]\ntype = commands\ndeny = DELETE\n"),
    );
    let mut c = compressed(px.port, &unique_user("zrules"));
    c.cmd_ok("K", "CREATE Keep");
    let r = text(&c.cmd("D", "DELETE Keep"));
    assert!(r.starts_with("D NO [NOPERM]"), "{r}");
    let r = text(&c.cmd("Z2", "COMPRESS DEFLATE"));
    assert!(r.starts_with("Z2 NO [COMPRESSIONACTIVE]"), "{r}");
    c.logout();
}

#[test]
fn a_listener_can_keep_compression_off() {
    let dv = Dovecot::start();
    let px = Proxy::start(&(minimal_config(dv.port) + "compress = no\n"));
    let mut c = Client::connect(px.port);
    c.login("alice", "secret");
    let caps = text(&c.cmd_ok("C", "CAPABILITY"));
    assert!(!caps.contains("COMPRESS"), "{caps}");
    let r = text(&c.cmd("Z", "COMPRESS DEFLATE"));
    assert!(r.starts_with("Z NO [CANNOT]"), "{r}");
    c.cmd_ok("N", "NOOP");
}

#[test]
fn imapgate_compresses_its_own_link_to_a_backend_that_offers_it() {
    let dv = Dovecot::start_with(DOVECOT_ZLIB);
    let relay = CountingRelay::start(dv.port);
    let config = minimal_config(relay.port).replace("port = ", "compress = yes\nport = ");
    let px = Proxy::start(&config);
    let user = unique_user("zlink");
    // 2 MB of very compressible text.
    let body = "All work and no play makes Jack a dull boy.\r\n".repeat(46_000);
    dv.append_message(&user, "INBOX", &text_message("big", &body));
    let mut c = Client::connect(px.port);
    c.login(&user, "secret");
    c.cmd_ok("S", "SELECT INBOX");
    let before = relay.backend_sent();
    let r = c.cmd_ok("F", "FETCH 1 (BODY.PEEK[TEXT])");
    let fetched = r.len();
    let wire = relay.backend_sent() - before;
    assert!(fetched > 2_000_000, "{fetched}");
    assert!(wire < fetched as u64 / 20, "{wire} bytes on the wire for {fetched} fetched");
    c.logout();
    px.wait_for_log(r"LOGIN id=\d+ user=\S+ backend=dovecot result=ok backend_compress=deflate");
}
