//! TLS on both sides (issue 3): implicit TLS and STARTTLS toward clients (curl
//! and a rustls client) and toward backends (a TLS-only Dovecot, a fake
//! backend), certificate checks, SNI, client certificates, the STARTTLS
//! injection defence on both sides, and `imapgate -t` on bad TLS files.
//! Certificates are made per test by `openssl` (see `common::certs`).

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::common::certs::{first_cert_der, Certs, CLIENT_SUBJECT, SNI_NAME};
use crate::common::client::quote;
use crate::common::fake_backend::{FakeBackend, StartTls, FAKE_PASSWORD, INJECTED_OK};
use crate::common::proxy::run_imapgate;
use crate::common::tls_client::{
    accept_any_config, client_config, read_plain_line, server_name, TlsConn,
};
use crate::common::tls_dovecot::{DovecotTls, TlsDovecot};
use crate::common::*;

const TOOL_WAIT: Duration = Duration::from_secs(60);
const EX_CONFIG: i32 = 78;

/// A one-backend, one-listener config; `backend` and `listener` are extra key
/// lines for those sections.
fn config(backend: &str, listener: &str) -> String {
    format!(
        "[global]\nlogin_failure_delay = 0s\n\n\
         [backend dovecot]\nhost = 127.0.0.1\n{backend}\n\n\
         [map users]\ntype = static\ndefault = dovecot\n\n\
         [listener imap]\nlisten = 127.0.0.1:@PORT@\nmap = users\n{listener}\n"
    )
}

fn p(path: &std::path::Path) -> String {
    path.display().to_string()
}

/// Listener keys for TLS with the default certificate.
fn listener_tls(mode: &str, certs: &Certs) -> String {
    format!("tls = {mode}\ncert = {}\nkey = {}\n", p(&certs.server_cert), p(&certs.server_key))
}

/// Runs curl against the proxy and returns its stdout (asserting success).
fn curl(certs: &Certs, port: u16, url_scheme: &str, extra: &[&str], user: &str) -> String {
    let curl = require_tool("curl", "curl");
    let dir = TempDir::new("curl-tls");
    let mut cmd = Command::new(curl);
    cmd.args(["-sS", "--max-time", "30", "--cacert"])
        .arg(&certs.ca)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["--user", &format!("{user}:secret")])
        .args(extra)
        .arg(format!("{url_scheme}://localhost:{port}/INBOX"))
        .args(["-X", "EXAMINE INBOX"]);
    let out = run_with_timeout(cmd, &dir, TOOL_WAIT);
    assert!(
        out.status.success(),
        "curl failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout_text(),
        out.stderr_text()
    );
    out.stdout_text()
}

/// Plaintext connect, greeting, `S STARTTLS`, its OK, then the handshake.
/// Returns the plaintext greeting and a client speaking over TLS.
fn starttls_client(port: u16, certs: &Certs) -> (String, Client) {
    let sa = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut sock = TcpStream::connect_timeout(&sa, Duration::from_secs(10)).expect("connect");
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let local = sock.local_addr().ok().map(|a| a.port());
    let greeting = text(&read_plain_line(&mut sock));
    use std::io::Write;
    sock.write_all(b"S STARTTLS\r\n").unwrap();
    let ok = text(&read_plain_line(&mut sock));
    assert!(ok.starts_with("S OK "), "STARTTLS answer: {ok}");
    let tls = TlsConn::handshake(sock, client_config(&certs.ca, None), server_name("localhost"))
        .expect("TLS handshake after STARTTLS");
    let mut c = Client::from_conn(Box::new(tls));
    c.local_port = local;
    (greeting, c)
}

fn assert_tls_field(line: &str, key: &str) {
    let re = regex::Regex::new(&format!(r" {key}=TLSv1_[23]/TLS(13)?_\S+")).unwrap();
    assert!(re.is_match(line), "no {key}=VERSION/SUITE in: {line}");
}

fn words(s: &str) -> Vec<&str> {
    s.split([' ', '[', ']', '\r', '\n']).filter(|w| !w.is_empty()).collect()
}

// 1 ------------------------------------------------------------------------

#[test]
fn curl_with_imaps_through_an_implicit_tls_listener_reaches_a_plaintext_dovecot() {
    let certs = Certs::generate();
    let dv = Dovecot::start();
    let user = unique_user("imaps");
    dv.append_message(&user, "INBOX", &text_message("imaps-subject", "imaps-body"));
    let port_line = format!("port = {}", dv.port);
    let px = Proxy::start(&config(&port_line, &listener_tls("implicit", &certs)));
    let out = curl(&certs, px.port, "imaps", &[], &user);
    assert!(out.contains("1 EXISTS"), "EXAMINE through imaps: {out}");
    let line = px.wait_for_log(&format!(r"LOGIN id=\d+ user={user} backend=dovecot result=ok"));
    assert_tls_field(&line, "tls");
    assert!(!line.contains("backend_tls="), "plaintext backend, yet: {line}");
}

// 2 ------------------------------------------------------------------------

#[test]
fn curl_with_starttls_required_through_a_starttls_listener_reaches_a_plaintext_dovecot() {
    let certs = Certs::generate();
    let dv = Dovecot::start();
    let user = unique_user("starttls");
    dv.append_message(&user, "INBOX", &text_message("starttls-subject", "starttls-body"));
    let port_line = format!("port = {}", dv.port);
    let px = Proxy::start(&config(&port_line, &listener_tls("starttls", &certs)));
    let out = curl(&certs, px.port, "imap", &["--ssl-reqd"], &user);
    assert!(out.contains("1 EXISTS"), "EXAMINE after STARTTLS: {out}");
    let line = px.wait_for_log(&format!(r"LOGIN id=\d+ user={user} backend=dovecot result=ok"));
    assert_tls_field(&line, "tls");
}

// 3 ------------------------------------------------------------------------

/// A plaintext client through imapgate to a Dovecot that speaks only TLS.
fn plaintext_client_reaches_tls_only_dovecot(mode: DovecotTls, backend_keys: &str) {
    let certs = Certs::generate();
    let dv = TlsDovecot::start(mode, &certs.server_cert, &certs.server_key);
    if mode == DovecotTls::Starttls {
        // The premise: this Dovecot refuses logins before TLS.
        let mut direct = Client::connect(dv.port);
        let g = text(&direct.greeting);
        assert!(g.contains("STARTTLS"), "dovecot greeting: {g}");
        let r = direct.try_login("alice", "secret");
        assert!(text(&r).starts_with("L1 NO"), "dovecot accepted a plaintext login: {}", text(&r));
    }
    let backend = format!("port = {}\nca = {}\n{backend_keys}", dv.port, p(&certs.ca));
    let px = Proxy::start(&config(&backend, ""));
    let user = "bob";
    let mut c = Client::connect(px.port);
    c.login(user, "secret");
    let r = text(&c.cmd_ok("S", "SELECT INBOX"));
    assert!(r.contains("EXISTS"), "SELECT: {r}");
    c.logout();
    let line = px.wait_for_log(&format!(r"LOGIN id=\d+ user={user} backend=dovecot result=ok"));
    assert_tls_field(&line, "backend_tls");
    assert!(!line.contains(" tls="), "plaintext client, yet: {line}");
    let re = regex::Regex::new(&format!(r"Login: user=<{user}>.*, TLS[,:]")).unwrap();
    let found = wait_until(WAIT, || re.is_match(&dv.log()).then_some(()));
    assert!(found.is_some(), "dovecot did not log a TLS login of {user}:\n{}", dv.log());
}

#[test]
fn a_plaintext_client_reaches_an_implicit_tls_only_dovecot_verified_by_the_test_ca() {
    plaintext_client_reaches_tls_only_dovecot(DovecotTls::Implicit, "tls = implicit\n");
}

#[test]
fn a_plaintext_client_reaches_a_starttls_only_dovecot_verified_by_the_test_ca() {
    // tls_name: the certificate is checked for a DNS name while connecting by IP.
    plaintext_client_reaches_tls_only_dovecot(
        DovecotTls::Starttls,
        "tls = starttls\ntls_name = localhost\n",
    );
}

// 4 ------------------------------------------------------------------------

#[test]
fn login_before_starttls_is_refused_with_privacyrequired_and_works_after_it() {
    let certs = Certs::generate();
    let dv = Dovecot::start();
    let port_line = format!("port = {}", dv.port);
    let px = Proxy::start(&config(&port_line, &listener_tls("starttls", &certs)));

    let mut c = Client::connect(px.port);
    let g = text(&c.greeting);
    let caps = words(&g);
    assert!(caps.contains(&"STARTTLS") && caps.contains(&"LOGINDISABLED"), "greeting: {g}");
    assert!(!g.contains("AUTH="), "AUTH= offered before TLS: {g}");
    let r = text(&c.cmd("C", "CAPABILITY"));
    assert!(r.contains("LOGINDISABLED") && !r.contains("AUTH="), "CAPABILITY before TLS: {r}");
    let r = text(&c.try_login("alice", "secret"));
    assert!(r.starts_with("L1 NO [PRIVACYREQUIRED]"), "LOGIN before TLS: {r}");
    let ir = base64(b"\0alice\0secret");
    let r = text(&c.cmd("A1", &format!("AUTHENTICATE PLAIN {ir}")));
    assert!(r.starts_with("A1 NO [PRIVACYREQUIRED]"), "AUTHENTICATE before TLS: {r}");
    drop(c);

    let (greeting, mut c) = starttls_client(px.port, &certs);
    assert!(greeting.contains("STARTTLS"), "greeting: {greeting}");
    let r = text(&c.cmd_ok("C", "CAPABILITY"));
    let caps = words(&r);
    assert!(!caps.contains(&"STARTTLS"), "STARTTLS still offered after TLS: {r}");
    assert!(!caps.contains(&"LOGINDISABLED"), "LOGINDISABLED after TLS: {r}");
    assert!(caps.contains(&"AUTH=PLAIN"), "no AUTH=PLAIN after TLS: {r}");
    let r = text(&c.cmd("S2", "STARTTLS"));
    assert!(!r.starts_with("S2 OK"), "a second STARTTLS was accepted: {r}");
    c.login("alice", "secret");
    c.cmd_ok("S", "SELECT INBOX");
    c.logout();
    let line = px.wait_for_log(r"LOGIN id=\d+ user=alice backend=dovecot result=ok");
    assert_tls_field(&line, "tls");
}

#[test]
fn mechanisms_are_listed_only_after_starttls_and_bearer_ones_only_when_the_backend_takes_them() {
    let certs = Certs::generate();
    let idp = crate::common::oauth::Introspection::start(&[("tok-erin-1", "erin")]);
    let dv = Dovecot::start_oauth(&idp.url());
    let listener = listener_tls("starttls", &certs) + "oauth_mechanisms = XOAUTH2 OAUTHBEARER\n";
    let px = Proxy::start(&config(&format!("port = {}", dv.port), &listener));
    let direct = text(&Client::connect(dv.port).cmd_ok("C", "CAPABILITY"));
    assert!(direct.contains("AUTH=XOAUTH2 AUTH=OAUTHBEARER"), "the test's Dovecot: {direct}");

    // After TLS, once discovery has seen the backend: every mechanism, each once.
    let after = wait_until(WAIT, || {
        let (_, mut c) = starttls_client(px.port, &certs);
        let r = text(&c.cmd_ok("C", "CAPABILITY"));
        r.contains("XOAUTH2").then_some(r)
    })
    .expect("XOAUTH2 never offered after STARTTLS");
    let auth: Vec<&str> = words(&after).into_iter().filter(|w| w.starts_with("AUTH=")).collect();
    assert_eq!(auth, ["AUTH=PLAIN", "AUTH=LOGIN", "AUTH=XOAUTH2", "AUTH=OAUTHBEARER"], "{after}");
    // Before TLS: none of them, in the greeting or in CAPABILITY.
    let mut c = Client::connect(px.port);
    let before = text(&c.greeting) + &text(&c.cmd_ok("C", "CAPABILITY"));
    assert!(!before.contains("AUTH=") && before.contains("LOGINDISABLED"), "{before}");
    let ir = base64(b"user=erin\x01auth=Bearer tok-erin-1\x01\x01");
    let r = text(&c.cmd("X", &format!("AUTHENTICATE XOAUTH2 {ir}")));
    assert!(r.starts_with("X NO [PRIVACYREQUIRED]"), "{r}");
    assert!(idp.asked().is_empty(), "a token was checked before TLS: {:?}", idp.asked());
    // After TLS the token logs in.
    let (_, mut c) = starttls_client(px.port, &certs);
    c.cmd_ok("X", &format!("AUTHENTICATE XOAUTH2 {ir}"));
    c.cmd_ok("S", "SELECT INBOX");
    c.logout();
}

// 5 ------------------------------------------------------------------------

#[test]
fn a_backend_with_a_certificate_for_the_wrong_name_is_refused_with_the_reason_logged() {
    let certs = Certs::generate();
    let dv = TlsDovecot::start(DovecotTls::Implicit, &certs.wrong_cert, &certs.wrong_key);
    let backend = format!("port = {}\ntls = implicit\nca = {}\n", dv.port, p(&certs.ca));
    let px = Proxy::start(&config(&backend, ""));
    let mut c = Client::connect(px.port);
    let r = text(&c.try_login("alice", "secret"));
    assert!(r.starts_with("L1 NO [UNAVAILABLE]"), "LOGIN to a wrongly named backend: {r}");
    let line = px.wait_for_log(r"no backend available for id=\d+: dovecot: TLS: ");
    assert!(
        line.contains("127.0.0.1") && line.to_lowercase().contains("not valid for name"),
        "the log does not say which name failed: {line}"
    );
    px.wait_for_log(
        r"LOGIN id=\d+ user=alice backend=\S+ result=failed reason=backend-unavailable",
    );
    assert!(!dv.log().contains("Login: user=<alice>"), "dovecot got a login:\n{}", dv.log());
}

// 6 ------------------------------------------------------------------------

#[test]
fn sni_picks_the_certificate_for_the_requested_name_and_the_default_otherwise() {
    let certs = Certs::generate();
    let dv = Dovecot::start();
    let listener = format!(
        "{}sni_cert = {SNI_NAME} {} {}\n",
        listener_tls("implicit", &certs),
        p(&certs.sni_cert),
        p(&certs.sni_key)
    );
    let px = Proxy::start(&config(&format!("port = {}", dv.port), &listener));
    let default_der = first_cert_der(&certs.server_cert);
    let sni_der = first_cert_der(&certs.sni_cert);

    // SNI mail.example.test, verified against the CA for that name.
    let tls = TlsConn::connect(px.port, client_config(&certs.ca, None), server_name(SNI_NAME))
        .expect("handshake with SNI");
    assert!(tls.peer_cert() == sni_der, "SNI {SNI_NAME}: not the SNI certificate");
    let mut c = Client::from_conn(Box::new(tls));
    c.greeting = c.read_line();
    assert!(text(&c.greeting).starts_with("* OK"), "greeting: {}", text(&c.greeting));
    c.login("alice", "secret");
    c.logout();

    // No SNI (rustls sends none for an IP address): the default certificate.
    let tls = TlsConn::connect(px.port, client_config(&certs.ca, None), server_name("127.0.0.1"))
        .expect("handshake without SNI");
    assert!(tls.peer_cert() == default_der, "no SNI: not the default certificate");

    // Another name: the default (which is not valid for it, so accept anything here).
    for name in ["other.example.test", "localhost"] {
        let tls = TlsConn::connect(px.port, accept_any_config(), server_name(name))
            .expect("handshake with another SNI name");
        assert!(tls.peer_cert() == default_der, "SNI {name}: not the default certificate");
    }
}

// 7 ------------------------------------------------------------------------

#[test]
fn a_listener_requiring_client_certificates_rejects_a_client_without_one_and_logs_the_subject() {
    let certs = Certs::generate();
    let dv = Dovecot::start();
    let listener = format!(
        "{}client_cert = require\nclient_ca = {}\n",
        listener_tls("implicit", &certs),
        p(&certs.ca)
    );
    let px = Proxy::start(&config(&format!("port = {}", dv.port), &listener));

    // Without a certificate: no greeting (TLS 1.3 lets the client finish its
    // side of the handshake; the server's alert then ends the connection).
    match TlsConn::connect(px.port, client_config(&certs.ca, None), server_name("localhost")) {
        Err(_) => {}
        Ok(tls) => match tls.read_some(WAIT) {
            Ok(b) => assert!(b.is_empty(), "a client without a certificate got: {}", text(&b)),
            Err(e) => assert!(
                !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
                "connection neither greeted nor closed: {e}"
            ),
        },
    }
    px.wait_for_log(r"id=\d+ TLS handshake with the client failed");

    // With the CA-signed client certificate: greeting, login, subject logged.
    let config = client_config(&certs.ca, Some((&certs.client_cert, &certs.client_key)));
    let tls = TlsConn::connect(px.port, config, server_name("localhost")).expect("handshake");
    let mut c = Client::from_conn(Box::new(tls));
    c.greeting = c.read_line();
    assert!(text(&c.greeting).starts_with("* OK"), "greeting: {}", text(&c.greeting));
    c.login("bob", "secret");
    c.logout();
    let line = px.wait_for_log(r"LOGIN id=\d+ user=bob backend=dovecot result=ok");
    assert!(line.contains(&format!(" client_cert={CLIENT_SUBJECT}")), "no subject in: {line}");
    assert_tls_field(&line, "tls");
}

// 8 ------------------------------------------------------------------------

#[test]
fn a_command_pipelined_after_client_starttls_is_discarded_never_answered_and_logged() {
    let certs = Certs::generate();
    let dv = Dovecot::start();
    let port_line = format!("port = {}", dv.port);
    let px = Proxy::start(&config(&port_line, &listener_tls("starttls", &certs)));

    let sa = std::net::SocketAddr::from(([127, 0, 0, 1], px.port));
    let mut sock = TcpStream::connect_timeout(&sa, Duration::from_secs(10)).expect("connect");
    sock.set_nodelay(true).ok();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let greeting = text(&read_plain_line(&mut sock));
    assert!(greeting.contains("STARTTLS"), "greeting: {greeting}");
    use std::io::Write;
    let injected = "B CAPABILITY\r\n";
    sock.write_all(format!("A STARTTLS\r\n{injected}").as_bytes()).unwrap(); // one write
    let ok = text(&read_plain_line(&mut sock));
    assert!(ok.starts_with("A OK "), "STARTTLS answer: {ok}");

    let tls = TlsConn::handshake(sock, client_config(&certs.ca, None), server_name("localhost"))
        .expect("handshake after STARTTLS");
    match tls.read_some(Duration::from_millis(1500)) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("expected silence after the handshake, got {other:?}"),
    }
    let mut c = Client::from_conn(Box::new(tls));
    let r = text(&c.cmd_ok("C", "CAPABILITY"));
    assert!(!r.lines().any(|l| l.starts_with("B ")), "B was answered: {r}");
    assert!(!r.contains("STARTTLS"), "STARTTLS offered after TLS: {r}");
    c.login("alice", "secret");
    c.logout();
    px.wait_for_log(&format!(
        r"id=\d+ discarded {} bytes the client sent after STARTTLS before TLS",
        injected.len()
    ));
}

// 9 ------------------------------------------------------------------------

fn fake_backend_config(fake: &FakeBackend, certs: &Certs) -> String {
    let backend =
        format!("port = {}\ntls = starttls\nca = {}\ntimeout = 10s\n", fake.port, p(&certs.ca));
    config(&backend, "")
}

#[test]
fn bytes_a_backend_sends_after_its_starttls_ok_are_discarded_and_the_login_is_decided_after_tls() {
    let certs = Certs::generate();
    let fake = FakeBackend::start(&certs.server_cert, &certs.server_key, StartTls::OkWithInjection);
    let px = Proxy::start(&fake_backend_config(&fake, &certs));

    // Wrong password: the injected "ig1 OK" would have said OK; the real
    // answer after TLS says NO, and that is what the client gets.
    let mut c = Client::connect(px.port);
    let r = text(&c.try_login("mallory", "wrong-password"));
    assert!(r.starts_with("L1 NO "), "login with a wrong password: {r}");
    assert!(r.contains("fake: wrong password"), "the answer is not the post-TLS one: {r}");
    assert!(!r.contains("injected"), "injected text reached the client: {r}");
    let line = px.wait_for_log(r"backend \S+: discarded \d+ bytes sent after its STARTTLS OK");
    let injected = INJECTED_OK.len() - "ig3 OK Begin TLS\r\n".len();
    assert!(line.contains(&format!("discarded {injected} bytes")), "{line}");
    drop(c);

    // Right password: logged in by the post-TLS exchange.
    let mut c = Client::connect(px.port);
    let r = text(&c.cmd("L1", &format!("LOGIN mallory {}", quote(FAKE_PASSWORD))));
    assert!(r.starts_with("L1 OK ") && r.contains("fake: logged in after TLS"), "login: {r}");
    c.cmd_ok("N", "NOOP");
    c.logout();
    let line = px.wait_for_log(r"LOGIN id=\d+ user=mallory backend=dovecot result=ok");
    assert_tls_field(&line, "backend_tls");

    let events = fake.events();
    for e in &events {
        assert!(!e.starts_with("plain: ig1"), "a login was sent in plaintext: {events:?}");
    }
    assert!(
        events.iter().any(|e| e == "tls: ig1 LOGIN \"mallory\""),
        "no login after TLS: {events:?}"
    );
}

#[test]
fn a_backend_that_refuses_starttls_is_never_used_in_plaintext() {
    let certs = Certs::generate();
    let fake = FakeBackend::start(&certs.server_cert, &certs.server_key, StartTls::Refuse);
    let px = Proxy::start(&fake_backend_config(&fake, &certs));
    let mut c = Client::connect(px.port);
    let r = text(&c.try_login("mallory", FAKE_PASSWORD));
    assert!(r.starts_with("L1 NO [UNAVAILABLE]"), "login via a STARTTLS-refusing backend: {r}");
    px.wait_for_log(r"no backend available for id=\d+: dovecot: STARTTLS refused");
    let events = fake.events();
    assert!(events.iter().any(|e| e.ends_with("STARTTLS")), "no STARTTLS sent: {events:?}");
    assert!(
        !events.iter().any(|e| e.contains("LOGIN") || e.contains("AUTHENTICATE")),
        "credentials went to a plaintext backend: {events:?}"
    );
}

// 10 -----------------------------------------------------------------------

#[test]
fn check_mode_reports_an_expired_cert_a_mismatched_key_and_an_unreadable_file_at_their_lines() {
    let certs = Certs::generate();
    let dir = certs.dir();
    // Unreadable: mode 000; root reads anything, so for root a directory.
    let unreadable = dir.join("unreadable-ca.pem");
    if nix::unistd::geteuid().is_root() {
        std::fs::create_dir(&unreadable).expect("mkdir");
    } else {
        std::fs::copy(&certs.ca, &unreadable).expect("copy");
        set_mode(&unreadable, 0o000);
    }
    // Relative names: resolved against the config file's directory.
    let body = "\
[backend dovecot]
host = 127.0.0.1
tls = implicit
ca = unreadable-ca.pem

[map users]
type = static
default = dovecot

[listener expired]
listen = 127.0.0.1:1993
map = users
tls = implicit
cert = expired.pem
key = expired.key

[listener mismatch]
listen = 127.0.0.1:1994
map = users
tls = implicit
cert = server.pem
key = sni.key
";
    let path = dir.join("bad-tls-files.ini");
    std::fs::write(&path, body).expect("write config");
    let line_of = |needle: &str| body.lines().position(|l| l == needle).expect("needle") + 1;
    let out = run_imapgate(&["-t", "-f", path.to_str().unwrap()]);
    let err = out.stderr_text();
    assert_eq!(out.status.code(), Some(EX_CONFIG), "-t exit status; stderr:\n{err}");
    let cfg = path.display().to_string();
    for (needle, file, problem) in [
        ("ca = unreadable-ca.pem", "unreadable-ca.pem", "cannot read"),
        ("cert = expired.pem", "expired.pem", "expired"),
        ("key = sni.key", "sni.key", "does not fit"),
    ] {
        let at = format!("{cfg}:{}: ", line_of(needle));
        let hit = err.lines().find(|l| l.starts_with(&at));
        let hit = hit.unwrap_or_else(|| panic!("nothing reported at {at} ({needle}):\n{err}"));
        assert!(
            hit.contains(&p(&dir.join(file))) && hit.contains(problem),
            "line for {needle} should name {file} and say {problem:?}: {hit}"
        );
    }
    assert_eq!(err.lines().filter(|l| l.starts_with(&cfg)).count(), 3, "stderr:\n{err}");
}
