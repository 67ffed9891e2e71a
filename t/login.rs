//! Pre-auth commands and login through the proxy (LOGIN in all string forms,
//! AUTHENTICATE PLAIN, ID), the log lines of a session, and the harness's own
//! sanity check against Dovecot directly.

use crate::common::client::{last_line, quote};
use crate::common::dovecot::TRICKY_PASSWORD;
use crate::common::*;

fn setup() -> (Dovecot, Proxy) {
    let dv = Dovecot::start();
    let px = Proxy::start(&minimal_config(dv.port));
    (dv, px)
}

fn sasl_plain(user: &str, pass: &str) -> String {
    base64(format!("\0{user}\0{pass}").as_bytes())
}

#[test]
fn direct_dovecot_login_works() {
    let dv = Dovecot::start();
    let mut c = Client::connect(dv.port);
    assert!(text(&c.greeting).starts_with("* OK"), "greeting: {}", text(&c.greeting));
    c.login("alice", "secret");
    c.cmd_ok("S", "SELECT INBOX");
    c.logout();

    let mut c = Client::connect(dv.port);
    c.login("tricky", TRICKY_PASSWORD);
    c.logout();

    let mut c = Client::connect(dv.port);
    let r = c.try_login("alice", "wrong");
    assert!(text(&r).contains("NO [AUTHENTICATIONFAILED]"), "{}", text(&r));
    let r = c.try_login("tricky", "secret");
    assert!(text(&r).contains("NO"), "static passdb must not accept tricky/secret: {}", text(&r));
    let user = unique_user("direct");
    c.login(&user, "secret");
    dv.append_message(&user, "INBOX", &text_message("direct-marker", "hello"));
    let r = c.cmd_ok("S", "SELECT INBOX");
    assert!(text(&r).contains("* 1 EXISTS"), "{}", text(&r));
    c.logout();
}

#[test]
fn greeting_advertises_imap4rev1_auth_plain_sasl_ir_id_and_literal_plus() {
    let (_dv, px) = setup();
    let c = Client::connect(px.port);
    let g = text(&c.greeting);
    assert!(g.starts_with("* OK [CAPABILITY "), "greeting: {g}");
    for cap in ["IMAP4rev1", "AUTH=PLAIN", "SASL-IR", "ID", "LITERAL+"] {
        assert!(g.split([' ', ']']).any(|w| w == cap), "greeting lacks {cap}: {g}");
    }
}

#[test]
fn capability_noop_and_logout_work_before_login() {
    let (_dv, px) = setup();
    let mut c = Client::connect(px.port);
    let r = text(&c.cmd_ok("C", "CAPABILITY"));
    assert!(r.starts_with("* CAPABILITY ") && r.contains("AUTH=PLAIN"), "{r}");
    c.cmd_ok("N", "NOOP");
    c.logout();
}

#[test]
fn id_command_is_answered_before_login() {
    let (_dv, px) = setup();
    let mut c = Client::connect(px.port);
    let r = text(&c.cmd_ok("I1", r#"ID ("name" "imapgate-test" "version" "1")"#));
    assert!(r.starts_with("* ID "), "no untagged ID response: {r}");
    let r = text(&c.cmd_ok("I2", "ID NIL"));
    assert!(r.starts_with("* ID "), "no untagged ID response: {r}");
    c.login("alice", "secret");
    c.logout();
}

#[test]
fn login_with_correct_password_succeeds_and_returns_backend_capabilities() {
    let (_dv, px) = setup();
    let mut c = Client::connect(px.port);
    let r = c.cmd("L", "LOGIN alice secret");
    let ok = text(last_line(&r));
    assert!(ok.starts_with("L OK [CAPABILITY IMAP4rev1"), "{}", text(&r));
    // MOVE and UIDPLUS are Dovecot post-login capabilities.
    assert!(
        ok.contains(" MOVE") && ok.contains(" UIDPLUS"),
        "not the backend's capabilities: {ok}"
    );
    let r = text(&c.cmd_ok("S", "SELECT INBOX"));
    assert!(r.contains("* 0 EXISTS"), "{r}");
    c.logout();
}

#[test]
fn login_with_wrong_password_fails_with_authenticationfailed_and_may_be_retried() {
    let (_dv, px) = setup();
    let mut c = Client::connect(px.port);
    let r = c.try_login("alice", "wrong");
    assert!(text(&r).starts_with("L1 NO [AUTHENTICATIONFAILED]"), "{}", text(&r));
    let r = c.try_login("nobody-such", "wrong");
    assert!(text(&r).starts_with("L1 NO [AUTHENTICATIONFAILED]"), "{}", text(&r));
    c.login("alice", "secret");
    c.logout();
}

#[test]
fn password_with_spaces_quotes_backslashes_and_8bit_bytes_works_as_quoted_string() {
    let (_dv, px) = setup();
    let mut c = Client::connect(px.port);
    let r = c.cmd("Q", &format!("LOGIN tricky {}", quote(TRICKY_PASSWORD)));
    assert!(text(last_line(&r)).starts_with("Q OK"), "{}", text(&r));
    c.cmd_ok("S", "SELECT INBOX");
    c.logout();
}

#[test]
fn password_with_special_characters_works_as_synchronizing_literal() {
    let (_dv, px) = setup();
    let mut c = Client::connect(px.port);
    let pw = TRICKY_PASSWORD.as_bytes();
    c.send(format!("Y LOGIN tricky {{{}}}\r\n", pw.len()).as_bytes());
    let cont = c.read_line();
    assert!(cont.starts_with(b"+"), "expected continuation, got {}", text(&cont));
    c.send(pw);
    c.send(b"\r\n");
    let r = c.read_until_tagged("Y");
    assert!(text(last_line(&r)).starts_with("Y OK"), "{}", text(&r));
    c.logout();
}

#[test]
fn password_with_special_characters_works_as_non_synchronizing_literal() {
    let (_dv, px) = setup();
    let mut c = Client::connect(px.port);
    let pw = TRICKY_PASSWORD.as_bytes();
    // User name as a literal too; everything in one write.
    let mut cmd = b"Z LOGIN {6+}\r\ntricky ".to_vec();
    cmd.extend_from_slice(format!("{{{}+}}\r\n", pw.len()).as_bytes());
    cmd.extend_from_slice(pw);
    cmd.extend_from_slice(b"\r\n");
    c.send(&cmd);
    let r = c.read_until_tagged("Z");
    assert!(!r.starts_with(b"+"), "no continuation expected for LITERAL+: {}", text(&r));
    assert!(text(last_line(&r)).starts_with("Z OK"), "{}", text(&r));
    c.logout();
}

#[test]
fn authenticate_plain_with_sasl_ir_succeeds_and_wrong_password_fails() {
    let (_dv, px) = setup();
    let mut c = Client::connect(px.port);
    let r = c.cmd("A1", &format!("AUTHENTICATE PLAIN {}", sasl_plain("tricky", "wrong")));
    assert!(text(last_line(&r)).starts_with("A1 NO [AUTHENTICATIONFAILED]"), "{}", text(&r));
    let r = c.cmd("A2", &format!("AUTHENTICATE PLAIN {}", sasl_plain("tricky", TRICKY_PASSWORD)));
    let ok = text(last_line(&r));
    assert!(ok.starts_with("A2 OK [CAPABILITY "), "{}", text(&r));
    c.cmd_ok("S", "SELECT INBOX");
    c.logout();
}

#[test]
fn authenticate_plain_without_initial_response_succeeds() {
    let (_dv, px) = setup();
    let mut c = Client::connect(px.port);
    c.send_line("A1 AUTHENTICATE PLAIN");
    let cont = c.read_line();
    assert!(cont.starts_with(b"+"), "expected continuation, got {}", text(&cont));
    c.send_line(&sasl_plain("alice", "secret"));
    let r = c.read_until_tagged("A1");
    assert!(text(last_line(&r)).starts_with("A1 OK"), "{}", text(&r));
    c.cmd_ok("S", "SELECT INBOX");
    c.logout();
}

#[test]
fn authenticate_cancelled_with_star_gets_tagged_bad_and_session_continues() {
    let (_dv, px) = setup();
    let mut c = Client::connect(px.port);
    c.send_line("A1 AUTHENTICATE PLAIN");
    let cont = c.read_line();
    assert!(cont.starts_with(b"+"), "expected continuation, got {}", text(&cont));
    c.send_line("*");
    let r = c.read_until_tagged("A1");
    assert!(text(last_line(&r)).starts_with("A1 BAD"), "{}", text(&r));
    c.login("alice", "secret");
    c.logout();
}

#[test]
fn log_records_session_start_login_and_session_end_with_byte_counts() {
    let (_dv, px) = setup();
    let mut c = Client::connect(px.port);
    let r = c.try_login("alice", "wrong");
    assert!(text(&r).contains("NO"), "{}", text(&r));
    c.login("alice", "secret");
    c.cmd_ok("S", "SELECT INBOX");
    c.logout();
    let me = c.local_port.expect("local port");
    let start =
        px.wait_for_log(&format!(r"SESSION-START id=\d+ client=127\.0\.0\.1:{me} listener=imap\b"));
    let id = regex::Regex::new(r"id=(\d+)").unwrap().captures(&start).unwrap()[1].to_string();
    px.wait_for_log(&format!(r"LOGIN id={id} user=alice backend=dovecot result=failed reason=\S"));
    px.wait_for_log(&format!(r"LOGIN id={id} user=alice backend=dovecot result=ok\b"));
    let end = px.wait_for_log(&format!(
        r"SESSION-END id={id} user=alice duration=[0-9.]+s from_client=\d+ to_client=\d+ reason=\S"
    ));
    let num = |k: &str| -> u64 {
        let re = regex::Regex::new(&format!(r"{k}=(\d+)")).unwrap();
        re.captures(&end).unwrap()[1].parse().unwrap()
    };
    assert!(num("from_client") > 0 && num("to_client") > 0, "byte counts: {end}");
}

#[test]
fn passwords_never_appear_in_the_log_even_at_trace_level() {
    let dv = Dovecot::start();
    let px = Proxy::start_with(&minimal_config(dv.port), &["-d", "trace"]);
    let wrong = format!("Wr0ng-Pa55-{}", unique());
    let mut c = Client::connect(px.port);
    let r = c.try_login("tricky", &wrong);
    assert!(text(&r).contains("NO"), "{}", text(&r));
    c.login("tricky", TRICKY_PASSWORD);
    c.logout();

    let mut c = Client::connect(px.port);
    let pw = TRICKY_PASSWORD.as_bytes();
    let mut cmd = format!("Z LOGIN tricky {{{}+}}\r\n", pw.len()).into_bytes();
    cmd.extend_from_slice(pw);
    cmd.extend_from_slice(b"\r\n");
    c.send(&cmd);
    let r = c.read_until_tagged("Z");
    assert!(text(last_line(&r)).starts_with("Z OK"), "{}", text(&r));
    c.logout();

    let blob = sasl_plain("tricky", TRICKY_PASSWORD);
    let mut c = Client::connect(px.port);
    c.cmd_ok("A", &format!("AUTHENTICATE PLAIN {blob}"));
    c.logout();
    let wrong_blob = sasl_plain("alice", &wrong);
    let mut c = Client::connect(px.port);
    c.send_line("B AUTHENTICATE PLAIN");
    c.read_line();
    c.send_line(&wrong_blob);
    c.read_until_tagged("B");
    c.login("tricky", TRICKY_PASSWORD);
    c.logout();

    // All four sessions have ended, so their log lines are written.
    let ended = regex::Regex::new(r"SESSION-END id=\d+ user=tricky ").unwrap();
    wait_until(WAIT, || (ended.find_iter(&px.log()).count() >= 4).then_some(()))
        .unwrap_or_else(|| panic!("expected 4 SESSION-END lines for tricky:\n{}", px.log()));
    let log = px.log();
    assert!(log.contains("LOGIN "), "trace log looks empty:\n{log}");
    for secret in [TRICKY_PASSWORD, r#"p a\"s\\s"#, "p a\"s", &wrong, &blob, &wrong_blob] {
        assert!(!log.contains(secret), "log contains the secret {secret:?}:\n{log}");
    }
}
