//! Logging in the way clients do (issue 12): AUTHENTICATE LOGIN with and without an
//! initial response, and XOAUTH2 / OAUTHBEARER passed through to a Dovecot whose oauth2
//! passdb asks a token introspection endpoint the test runs. Python's imaplib is the
//! real client; the raw client covers the forms imaplib does not send.

use std::process::Command;

use crate::common::client::{assert_ok, last_line};
use crate::common::dovecot::TRICKY_PASSWORD;
use crate::common::oauth::Introspection;
use crate::common::*;

const CAROL_TOKEN: &str = "tok-carol-5c1d8e0a";
const DAVE_TOKEN: &str = "tok-dave-93b27f44";
const BOGUS_TOKEN: &str = "tok-bogus-00000000";

/// The listener passes both bearer mechanisms through.
fn oauth_config(backend_port: u16) -> String {
    minimal_config(backend_port) + "oauth_mechanisms = XOAUTH2 OAUTHBEARER\n"
}

/// Waits until discovery has learned the backends' mechanisms and the proxy offers
/// `cap` before login.
fn wait_for_capability(port: u16, cap: &str) -> String {
    wait_until(WAIT, || {
        let mut c = Client::connect(port);
        let caps = text(&c.cmd_ok("C", "CAPABILITY"));
        caps.split_whitespace().any(|w| w == cap).then_some(caps)
    })
    .unwrap_or_else(|| panic!("the proxy never offered {cap}"))
}

fn xoauth2(user: &str, token: &str) -> String {
    base64(format!("user={user}\x01auth=Bearer {token}\x01\x01").as_bytes())
}

fn oauthbearer(user: &str, token: &str) -> String {
    base64(
        format!("n,a={user},\x01host=127.0.0.1\x01port=143\x01auth=Bearer {token}\x01\x01")
            .as_bytes(),
    )
}

/// AUTHENTICATE LOGIN in both forms, then SELECT: the tagged answers, for comparison.
fn login_mechanism(port: u16, user: &str, pass: &str) -> Vec<String> {
    let (u, p) = (base64(user.as_bytes()), base64(pass.as_bytes()));
    let mut seen = Vec::new();
    let mut c = Client::connect(port);
    c.send_line("a AUTHENTICATE LOGIN");
    seen.push(text(&c.read_line()));
    c.send_line(&u);
    seen.push(text(&c.read_line()));
    c.send_line(&p);
    let r = c.read_until_tagged("a");
    seen.push(text(last_line(&r)).split(' ').take(2).collect::<Vec<_>>().join(" "));
    let r = c.cmd("s", "SELECT INBOX");
    seen.push(text(last_line(&r)).split(' ').take(2).collect::<Vec<_>>().join(" "));
    c.logout();

    let mut c = Client::connect(port);
    c.send_line(&format!("b AUTHENTICATE LOGIN {u}"));
    seen.push(text(&c.read_line()));
    c.send_line(&p);
    let r = c.read_until_tagged("b");
    seen.push(text(last_line(&r)).split(' ').take(2).collect::<Vec<_>>().join(" "));
    c.logout();
    seen
}

#[test]
fn authenticate_login_with_and_without_initial_response_works_as_directly() {
    let dv = Dovecot::start();
    let px = Proxy::start(&minimal_config(dv.port));
    let direct = login_mechanism(dv.port, "tricky", TRICKY_PASSWORD);
    let proxied = login_mechanism(px.port, "tricky", TRICKY_PASSWORD);
    assert_eq!(
        direct,
        ["+ VXNlcm5hbWU6\r\n", "+ UGFzc3dvcmQ6\r\n", "a OK", "s OK", "+ UGFzc3dvcmQ6\r\n", "b OK"],
        "the harness's Dovecot"
    );
    assert_eq!(proxied, direct);
    px.wait_for_log(r"LOGIN id=\d+ user=tricky backend=dovecot result=ok mech=LOGIN");

    // Wrong password: the same failure answer as with LOGIN, and a failed LOGIN line.
    let mut c = Client::connect(px.port);
    c.send_line(&format!("c AUTHENTICATE LOGIN {}", base64(b"alice")));
    assert_eq!(text(&c.read_line()), "+ UGFzc3dvcmQ6\r\n");
    c.send_line(&base64(b"wrong"));
    let r = text(&c.read_until_tagged("c"));
    assert!(r.starts_with("c NO [AUTHENTICATIONFAILED]"), "{r}");
    px.wait_for_log(r"result=failed reason=rejected mech=LOGIN client=127\.0\.0\.1");
}

const PY_LOGIN: &str = r#"
import imaplib, sys
port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
m = imaplib.IMAP4("127.0.0.1", port)
print("CAPS", " ".join(m.capabilities))
answers = {b"Username:": user, b"Password:": password}
typ, _ = m.authenticate("LOGIN", lambda challenge: answers[challenge])
print("AUTH", typ)
typ, data = m.select("INBOX")
print("SELECT", typ)
m.logout()
"#;

#[test]
fn python_imaplib_logs_in_with_the_login_mechanism() {
    let python = require_tool("python3", "python3");
    let dv = Dovecot::start();
    let px = Proxy::start(&minimal_config(dv.port));
    let dir = TempDir::new("py-login");
    let script = dir.join("login.py");
    std::fs::write(&script, PY_LOGIN).expect("write script");
    let mut cmd = Command::new(python);
    cmd.arg(&script).arg(px.port.to_string()).arg("alice").arg("secret");
    let out = run_with_timeout(cmd, &dir, WAIT);
    let so = out.stdout_text();
    assert!(out.status.success(), "imaplib: {}\n{so}\n{}", out.status, out.stderr_text());
    assert!(so.contains("AUTH=LOGIN"), "{so}");
    assert!(so.contains("AUTH OK") && so.contains("SELECT OK"), "{so}");
}

const PY_BEARER: &str = r#"
import imaplib, sys
port, mech, user, token = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
if mech == "XOAUTH2":
    message, dummy = "user=%s\x01auth=Bearer %s\x01\x01" % (user, token), ""
else:
    message, dummy = "n,a=%s,\x01auth=Bearer %s\x01\x01" % (user, token), "\x01"
def answer(challenge):
    if challenge:
        print("CHALLENGE", challenge.decode())
        return dummy
    return message
m = imaplib.IMAP4("127.0.0.1", port)
try:
    typ, _ = m.authenticate(mech, answer)
    print("AUTH", typ)
    typ, data = m.select("INBOX")
    print("SELECT", typ, data[0].decode())
    m.logout()
except imaplib.IMAP4.error as e:
    print("FAILED", e)
"#;

fn python_bearer(port: u16, dir: &TempDir, mech: &str, user: &str, token: &str) -> String {
    let python = require_tool("python3", "python3");
    let script = dir.join("bearer.py");
    std::fs::write(&script, PY_BEARER).expect("write script");
    let mut cmd = Command::new(python);
    cmd.arg(&script).arg(port.to_string()).args([mech, user, token]);
    let out = run_with_timeout(cmd, dir, WAIT);
    let so = out.stdout_text();
    assert!(out.status.success(), "imaplib: {}\n{so}\n{}", out.status, out.stderr_text());
    so
}

#[test]
fn xoauth2_and_oauthbearer_are_passed_through_and_the_backend_decides() {
    let idp = Introspection::start(&[(CAROL_TOKEN, "carol"), (DAVE_TOKEN, "dave")]);
    let dv = Dovecot::start_oauth(&idp.url());
    let px = Proxy::start_with(&oauth_config(dv.port), &["-d", "trace"]);
    let caps = wait_for_capability(px.port, "AUTH=XOAUTH2");
    assert!(caps.contains("AUTH=OAUTHBEARER"), "{caps}");
    dv.append_message("carol", "INBOX", &text_message("for-carol", "hello"));
    let dir = TempDir::new("py-bearer");

    // A valid token logs in, in either mechanism, and the session works.
    let so = python_bearer(px.port, &dir, "XOAUTH2", "carol", CAROL_TOKEN);
    assert!(so.contains("AUTH OK") && so.contains("SELECT OK 1"), "{so}");
    let so = python_bearer(px.port, &dir, "OAUTHBEARER", "dave", DAVE_TOKEN);
    assert!(so.contains("AUTH OK") && so.contains("SELECT OK 0"), "{so}");
    px.wait_for_log(r"LOGIN id=\d+ user=carol backend=dovecot result=ok mech=XOAUTH2");
    px.wait_for_log(r"LOGIN id=\d+ user=dave backend=dovecot result=ok mech=OAUTHBEARER");

    // An invalid token: the backend's error challenge reaches the client as the backend
    // sent it, the client's dummy response reaches the backend, then the tagged NO.
    for mech in ["XOAUTH2", "OAUTHBEARER"] {
        let direct = python_bearer(dv.port, &dir, mech, "carol", BOGUS_TOKEN);
        let proxied = python_bearer(px.port, &dir, mech, "carol", BOGUS_TOKEN);
        let challenge =
            |so: &str| so.lines().find(|l| l.starts_with("CHALLENGE")).map(String::from);
        assert!(challenge(&direct).is_some_and(|c| c.contains("\"status\"")), "{direct}");
        assert_eq!(challenge(&proxied), challenge(&direct), "{mech}: {proxied}");
        assert!(proxied.contains("FAILED") && !proxied.contains("AUTH OK"), "{proxied}");
    }
    px.wait_for_log(r"user=carol backend=dovecot result=failed reason=rejected mech=OAUTHBEARER");

    // A token issued to carol does not open dave's mailbox: imapgate routes on the name
    // in the message and sends that name on, so the backend checks the token against it.
    let so = python_bearer(px.port, &dir, "XOAUTH2", "dave", CAROL_TOKEN);
    assert!(so.contains("FAILED") && !so.contains("SELECT"), "{so}");
    let so = python_bearer(px.port, &dir, "OAUTHBEARER", "dave", CAROL_TOKEN);
    assert!(so.contains("FAILED") && !so.contains("SELECT"), "{so}");
    assert!(idp.asked().iter().any(|t| t == CAROL_TOKEN), "{:?}", idp.asked());

    // The raw forms imaplib does not use: an initial response, and `*` after a challenge.
    let mut c = Client::connect(px.port);
    c.send_line(&format!("i AUTHENTICATE OAUTHBEARER {}", oauthbearer("carol", CAROL_TOKEN)));
    assert_ok(&c.read_until_tagged("i"), "i", "OAUTHBEARER with an initial response");
    c.logout();
    let mut c = Client::connect(px.port);
    c.send_line(&format!("j AUTHENTICATE XOAUTH2 {}", xoauth2("carol", BOGUS_TOKEN)));
    let challenge = text(&c.read_line());
    assert!(challenge.starts_with("+ ey"), "{challenge}");
    c.send_line("*");
    let r = text(&c.read_until_tagged("j"));
    assert!(r.starts_with("j BAD") || r.starts_with("j NO"), "{r}");
    c.cmd_ok("n", "NOOP");
    // A response that is not base64 is imapgate's to refuse; it never reaches the backend.
    c.send_line(&format!("k AUTHENTICATE XOAUTH2 {}", xoauth2("carol", BOGUS_TOKEN)));
    assert!(text(&c.read_line()).starts_with("+ ey"));
    c.send_line("k2 DELETE INBOX");
    let r = text(&c.read_until_tagged("k"));
    assert_eq!(r, "k BAD Invalid base64 data.\r\n");
    c.logout();

    // Passwords too, by LOGIN, PLAIN and the LOGIN mechanism.
    let mut c = Client::connect(px.port);
    c.login("tricky", TRICKY_PASSWORD);
    c.logout();
    let plain = base64(format!("\0tricky\0{TRICKY_PASSWORD}").as_bytes());
    let mut c = Client::connect(px.port);
    c.cmd_ok("p", &format!("AUTHENTICATE PLAIN {plain}"));
    c.logout();
    assert!(login_mechanism(px.port, "tricky", TRICKY_PASSWORD).contains(&"b OK".to_string()));

    // Passwords and tokens never reach the log, at trace level, in any form.
    let log = px.log();
    let password_forms =
        [TRICKY_PASSWORD.to_string(), plain, base64(TRICKY_PASSWORD.as_bytes()), "p a".into()];
    for secret in
        [CAROL_TOKEN, DAVE_TOKEN, BOGUS_TOKEN].map(String::from).iter().chain(&password_forms)
    {
        assert!(!log.contains(secret.as_str()), "{secret} in the log:\n{log}");
    }
    for token in [CAROL_TOKEN, BOGUS_TOKEN] {
        assert!(!log.contains(&xoauth2("carol", token)), "a token message in the log:\n{log}");
    }
    assert!(log.contains("user=tricky backend=dovecot result=ok mech=PLAIN"), "{log}");
}

#[test]
fn a_bearer_mechanism_is_offered_only_when_every_backend_takes_it() {
    let idp = Introspection::start(&[(CAROL_TOKEN, "carol")]);
    let oauth = Dovecot::start_oauth(&idp.url());
    let plain = Dovecot::start();
    // Two backends in a pool: only one of them takes bearer tokens.
    let config = format!(
        "[global]\nlogin_failure_delay = 0s\n\n\
         [backend oauth]\nhost = 127.0.0.1\nport = {}\n\n\
         [backend plain]\nhost = 127.0.0.1\nport = {}\n\n\
         [pool both]\nbackends = oauth plain\n\n\
         [map users]\ntype = static\ndefault = both\n\n\
         [listener imap]\nlisten = 127.0.0.1:@PORT@\nmap = users\n\
         oauth_mechanisms = XOAUTH2\n",
        oauth.port, plain.port
    );
    let px = Proxy::start(&config);
    // Discovery has run once both backends' greetings are known: AUTH=LOGIN is imapgate's
    // own, IDLE comes from the backends.
    let caps = wait_for_capability(px.port, "IDLE");
    assert!(caps.contains("AUTH=PLAIN AUTH=LOGIN") && !caps.contains("XOAUTH2"), "{caps}");
    let mut c = Client::connect(px.port);
    c.send_line(&format!("x AUTHENTICATE XOAUTH2 {}", xoauth2("carol", CAROL_TOKEN)));
    let r = text(&c.read_until_tagged("x"));
    assert_eq!(r, "x NO [CANNOT] Unsupported authentication mechanism.\r\n");
}

#[test]
fn a_backend_that_lost_the_mechanism_answers_unavailable_without_falling_back() {
    let idp = Introspection::start(&[(CAROL_TOKEN, "carol")]);
    let dv = Dovecot::start_oauth(&idp.url());
    let px = Proxy::start(&oauth_config(dv.port));
    wait_for_capability(px.port, "AUTH=XOAUTH2");
    // The admin turns the mechanism off; imapgate learns it at the next discovery (5
    // minutes) or login, so for now it still offers XOAUTH2.
    dv.reconfigure("plain login xoauth2 oauthbearer", "plain login");
    wait_until(WAIT, || {
        let mut c = Client::connect(dv.port);
        (!text(&c.cmd_ok("C", "CAPABILITY")).contains("XOAUTH2")).then_some(())
    })
    .expect("Dovecot kept offering XOAUTH2 after its reload");
    let mut c = Client::connect(px.port);
    c.send_line(&format!("x AUTHENTICATE XOAUTH2 {}", xoauth2("carol", CAROL_TOKEN)));
    let r = text(&c.read_until_tagged("x"));
    assert!(r.starts_with("x NO [UNAVAILABLE]"), "{r}");
    assert!(idp.asked().is_empty(), "a token went somewhere: {:?}", idp.asked());
    px.wait_for_log(r"reason=backend-unavailable mech=XOAUTH2 detail=.*offers no AUTH=XOAUTH2");
    // Password logins go on as before.
    let mut c = Client::connect(px.port);
    c.login("alice", "secret");
    c.logout();
}
