//! Several backends behind one listener: the capability set every client is shown
//! (the intersection over the listener's backends, Dovecot with different
//! `imap_capability` settings, and Cyrus IMAP beside Dovecot), refusal of commands
//! needing a capability that is not common, failover and return of a pool member,
//! the hash pool, and the client's address forwarded to a trusting backend by ID.

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::os::fd::AsRawFd;

use crate::common::client::last_line;
use crate::common::cyrus::Cyrus;
use crate::common::*;

/// The capabilities in a `* CAPABILITY ...` line or a `[CAPABILITY ...]` code.
fn caps_in(line: &str) -> Vec<String> {
    let list = if let Some(at) = line.find("[CAPABILITY ") {
        let rest = &line[at + "[CAPABILITY ".len()..];
        &rest[..rest.find(']').unwrap_or_else(|| panic!("no ] in {line}"))]
    } else if let Some(rest) = line.strip_prefix("* CAPABILITY ") {
        rest.trim_end()
    } else {
        panic!("no capability list in {line:?}")
    };
    list.split_whitespace().map(str::to_string).collect()
}

fn set(caps: &[String]) -> BTreeSet<String> {
    caps.iter().map(|c| c.to_ascii_uppercase()).collect()
}

fn has(caps: &[String], cap: &str) -> bool {
    caps.iter().any(|c| c.eq_ignore_ascii_case(cap))
}

/// A client logged in through the proxy, with the capability lists it was shown: the
/// LOGIN answer's code and the answer to CAPABILITY, which must agree.
fn login_through(port: u16, user: &str) -> (Client, Vec<String>) {
    let mut c = Client::connect(port);
    let ok = text(&c.try_login(user, "secret"));
    assert!(ok.starts_with("L1 OK [CAPABILITY "), "LOGIN {user}: {ok}");
    let from_login = caps_in(&ok);
    let r = text(&c.cmd_ok("C", "CAPABILITY"));
    let line = r.lines().find(|l| l.starts_with("* CAPABILITY ")).expect("* CAPABILITY");
    let from_command = caps_in(line);
    assert_eq!(
        set(&from_login),
        set(&from_command),
        "{user}: the LOGIN code and CAPABILITY differ"
    );
    (c, from_login)
}

/// The post-login capabilities of a backend, asked directly.
fn direct_caps(port: u16, user: &str) -> Vec<String> {
    let mut c = Client::connect(port);
    c.login(user, "secret");
    let r = text(&c.cmd_ok("C", "CAPABILITY"));
    c.logout();
    caps_in(r.lines().find(|l| l.starts_with("* CAPABILITY ")).expect("* CAPABILITY"))
}

/// Waits until the greeting a new client gets satisfies `ok` (discovery has run).
fn wait_for_greeting(port: u16, what: &str, ok: impl Fn(&[String]) -> bool) -> Vec<String> {
    let mut last = String::new();
    let found = wait_until(WAIT, || {
        let c = Client::connect(port);
        last = text(&c.greeting);
        let caps = caps_in(&last);
        ok(&caps).then_some(caps)
    });
    found.unwrap_or_else(|| panic!("no greeting with {what} within {WAIT:?}; last: {last}"))
}

/// The backend each successful login of `user` landed on, in order, from the log.
fn backends_of(px: &Proxy, user: &str) -> Vec<String> {
    let re = regex::Regex::new(&format!(
        r"LOGIN id=\d+ user={} backend=(\S+) result=ok",
        regex::escape(user)
    ))
    .unwrap();
    px.log().lines().filter_map(|l| re.captures(l).map(|c| c[1].to_string())).collect()
}

/// Logs `user` in through the proxy and returns the backend it landed on.
fn lands_on(px: &Proxy, user: &str) -> String {
    let before = backends_of(px, user).len();
    let mut c = Client::connect(px.port);
    c.login(user, "secret");
    c.logout();
    let all = wait_until(WAIT, || {
        let all = backends_of(px, user);
        (all.len() > before).then_some(all)
    });
    all.unwrap_or_else(|| panic!("no LOGIN line for {user}:\n{}", px.log())).pop().unwrap()
}

/// Subject of message 1 in INBOX, read through an open session.
fn first_subject(c: &mut Client) -> String {
    c.cmd_ok("S", "SELECT INBOX");
    let r = text(&c.cmd_ok("F", "FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])"));
    r.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or_else(|| panic!("no subject in {r}"))
        .to_owned()
}

/// d1 offers no MOVE and a small APPENDLIMIT (an explicit list, also used before
/// login, with the marker XTEST1); d2 has Dovecot's full default set plus a larger
/// APPENDLIMIT and the marker XTEST2.
const D1_CAPS: &str = "imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE \
     NAMESPACE UIDPLUS UNSELECT CHILDREN SORT CONDSTORE SPECIAL-USE APPENDLIMIT=1000000 XTEST1";
const D2_CAPS: &str = "imap_capability = +APPENDLIMIT=5000000 XTEST2";

#[test]
fn clients_see_one_capability_set_on_either_dovecot_and_move_is_refused_everywhere() {
    let d1 = Dovecot::start_with(D1_CAPS);
    let d2 = Dovecot::start_with(D2_CAPS);
    let (caps1, caps2) = (direct_caps(d1.port, "a"), direct_caps(d2.port, "b"));
    assert!(!has(&caps1, "MOVE") && has(&caps2, "MOVE"), "setup: d1 {caps1:?}, d2 {caps2:?}");
    d2.append_message("b", "INBOX", &text_message("b-on-d2", "stays"));
    // Trash exists, so a MOVE that reached d2 would succeed and empty INBOX.
    d2.append_message("b", "Trash", &text_message("trash", "trash"));
    let conf = format!(
        "[global]\nlogin_failure_delay = 0s\ndiscovery_interval = 2s\n\n\
         [backend d1]\nhost = 127.0.0.1\nport = {}\nprobe_user = alice\nprobe_password = secret\n\n\
         [backend d2]\nhost = 127.0.0.1\nport = {}\nprobe_user = alice\nprobe_password = secret\n\n\
         [map users]\ntype = static\nuser = a d1\nuser = b d2\n\n\
         [listener imap]\nlisten = 127.0.0.1:@PORT@\nmap = users\n",
        d1.port, d2.port
    );
    let px = Proxy::start(&conf);
    // The probe learns a backend's pre- and post-login lists together; a greeting
    // without either marker means both backends are known before any user logs in.
    let greeting = wait_for_greeting(px.port, "both backends known", |caps| {
        has(caps, "IDLE") && !has(caps, "XTEST1") && !has(caps, "XTEST2")
    });
    assert!(!has(&greeting, "MOVE"), "greeting: {greeting:?}");

    let (mut on_d2, shown_b) = login_through(px.port, "b");
    let (mut on_d1, shown_a) = login_through(px.port, "a");
    px.wait_for_log(r"LOGIN id=\d+ user=a backend=d1 result=ok");
    px.wait_for_log(r"LOGIN id=\d+ user=b backend=d2 result=ok");
    assert_eq!(set(&shown_a), set(&shown_b), "a on d1 and b on d2 see different sets");
    for shown in [&shown_a, &shown_b] {
        assert!(!has(shown, "MOVE"), "MOVE shown: {shown:?}");
        assert!(!has(shown, "XTEST1") && !has(shown, "XTEST2"), "{shown:?}");
        assert!(has(shown, "APPENDLIMIT=1000000"), "APPENDLIMIT not the minimum: {shown:?}");
        assert!(!shown.iter().any(|c| c.to_ascii_uppercase().starts_with("APPENDLIMIT=5")));
        for common in ["IMAP4rev1", "IDLE", "NAMESPACE", "UIDPLUS", "UNSELECT", "CONDSTORE"] {
            assert!(has(shown, common), "{common} missing: {shown:?}");
        }
    }

    // d2 has MOVE, yet the client was not shown it: imapgate refuses it itself.
    assert_eq!(first_subject(&mut on_d2), "b-on-d2");
    for (tag, cmd) in [("M1", "MOVE 1 Trash"), ("M2", "UID MOVE 1:* Trash")] {
        let r = text(&on_d2.cmd(tag, cmd));
        let last = text(last_line(r.as_bytes()));
        assert!(
            last.starts_with(&format!("{tag} NO [CANNOT]"))
                && last.contains("is not available here."),
            "{cmd} on d2: {r}"
        );
    }
    let r = text(&on_d2.cmd_ok("N", "NOOP"));
    assert!(!r.contains("EXPUNGE"), "the refused MOVE reached d2: {r}");
    assert_eq!(first_subject(&mut on_d2), "b-on-d2");
    on_d2.logout();
    // And on d1, which lacks it anyway, the same answer without asking d1.
    on_d1.cmd_ok("S", "SELECT INBOX");
    let r = text(&on_d1.cmd("M3", "MOVE 1 Trash"));
    assert!(text(last_line(r.as_bytes())).starts_with("M3 NO [CANNOT]"), "MOVE on d1: {r}");
    on_d1.logout();
}

/// What the proxy should show after login, computed from the backends' own lists:
/// the case-insensitive intersection with the smallest APPENDLIMIT, minus what the
/// relay cannot pass on.
fn expected_intersection(a: &[String], b: &[String]) -> BTreeSet<String> {
    let limit = |caps: &[String]| -> Option<u64> {
        caps.iter().find_map(|c| c.to_ascii_uppercase().strip_prefix("APPENDLIMIT=")?.parse().ok())
    };
    let mut out: BTreeSet<String> = set(a).intersection(&set(b)).cloned().collect();
    out.retain(|c| {
        !(c.starts_with("APPENDLIMIT")
            || c.starts_with("COMPRESS=")
            || c.starts_with("AUTH=")
            || matches!(c.as_str(), "STARTTLS" | "LOGINDISABLED" | "SASL-IR"))
    });
    if let (Some(x), Some(y)) = (limit(a), limit(b)) {
        out.insert(format!("APPENDLIMIT={}", x.min(y)));
    }
    // COMPRESS toward the client is imapgate's own, whatever the backends offer.
    out.insert("COMPRESS=DEFLATE".into());
    out
}

#[test]
fn clients_see_one_capability_set_on_cyrus_and_dovecot() {
    let dv = Dovecot::start();
    let cy = Cyrus::start(&["alice", "b"]);
    let (dv_caps, cy_caps) = (direct_caps(dv.port, "a"), direct_caps(cy.port, "b"));
    assert!(has(&cy_caps, "XLIST") && !has(&dv_caps, "XLIST"), "setup: {cy_caps:?}");
    let expected = expected_intersection(&dv_caps, &cy_caps);
    // Dovecot first: discovery probes in config order, so once Cyrus is known (no IDLE
    // before login: Cyrus announces none), Dovecot is too.
    let conf = format!(
        "[global]\nlogin_failure_delay = 0s\ndiscovery_interval = 2s\n\n\
         [backend dovecot]\nhost = 127.0.0.1\nport = {}\nprobe_user = alice\nprobe_password = secret\n\n\
         [backend cyrus]\nhost = 127.0.0.1\nport = {}\nprobe_user = alice\nprobe_password = secret\n\n\
         [map users]\ntype = static\nuser = a dovecot\nuser = b cyrus\n\n\
         [listener imap]\nlisten = 127.0.0.1:@PORT@\nmap = users\n",
        dv.port, cy.port
    );
    let px = Proxy::start(&conf);
    wait_for_greeting(px.port, "Cyrus known", |caps| has(caps, "ENABLE") && !has(caps, "IDLE"));

    let (mut on_dv, shown_dv) = login_through(px.port, "a");
    let (mut on_cy, shown_cy) = login_through(px.port, "b");
    px.wait_for_log(r"LOGIN id=\d+ user=a backend=dovecot result=ok");
    px.wait_for_log(r"LOGIN id=\d+ user=b backend=cyrus result=ok");
    assert_eq!(set(&shown_dv), set(&shown_cy), "Dovecot and Cyrus users see different sets");
    assert_eq!(set(&shown_cy), expected, "not the intersection of {dv_caps:?} and {cy_caps:?}");
    assert!(has(&shown_cy, "IMAP4rev1") && has(&shown_cy, "MOVE"), "{shown_cy:?}");

    // Cyrus-only capabilities are refused on Cyrus too, without reaching it.
    on_cy.cmd_ok("S", "SELECT INBOX");
    for (tag, cmd) in [("X1", "XLIST \"\" \"*\""), ("X2", "GETMETADATA INBOX /private/comment")] {
        let r = text(&on_cy.cmd(tag, cmd));
        assert!(text(last_line(r.as_bytes())).starts_with(&format!("{tag} NO [CANNOT]")), "{r}");
    }
    on_cy.cmd_ok("L", "LIST \"\" \"*\"");
    on_cy.logout();
    on_dv.cmd_ok("S", "SELECT INBOX");
    on_dv.logout();
}

#[test]
fn failover_pool_uses_the_second_backend_while_the_first_is_down_and_returns() {
    let mut d1 = Dovecot::start();
    let d2 = Dovecot::start();
    let user = unique_user("fo");
    d1.append_message(&user, "INBOX", &text_message("on-d1", "d1"));
    d2.append_message(&user, "INBOX", &text_message("on-d2", "d2"));
    let conf = format!(
        "[global]\nlogin_failure_delay = 0s\ndiscovery_interval = 2s\n\n\
         [backend d1]\nhost = 127.0.0.1\nport = {}\ndown_time = 2s\nconnect_timeout = 2s\n\n\
         [backend d2]\nhost = 127.0.0.1\nport = {}\ndown_time = 2s\nconnect_timeout = 2s\n\n\
         [pool both]\nbackends = d1 d2\nbalance = failover\n\n\
         [map users]\ntype = static\ndefault = both\n\n\
         [listener imap]\nlisten = 127.0.0.1:@PORT@\nmap = users\n",
        d1.port, d2.port
    );
    let px = Proxy::start(&conf);
    let subject = |px: &Proxy| {
        let mut c = Client::connect(px.port);
        c.login(&user, "secret");
        let s = first_subject(&mut c);
        c.logout();
        s
    };
    assert_eq!(subject(&px), "on-d1");
    assert_eq!(backends_of(&px, &user), ["d1"]);

    d1.kill();
    assert_eq!(subject(&px), "on-d2", "no failover to d2");
    assert_eq!(subject(&px), "on-d2");
    assert_eq!(backends_of(&px, &user), ["d1", "d2", "d2"]);
    px.wait_for_log(r"BACKEND-DOWN backend=d1 ");
    assert!(!px.log().contains("BACKEND-DOWN backend=d2"), "{}", px.log());

    d1.restart();
    let back = wait_until(WAIT, || (subject(&px) == "on-d1").then_some(()));
    assert!(back.is_some(), "logins did not return to d1:\n{}", px.log());
    px.wait_for_log(r"BACKEND-UP backend=d1$");
    assert_eq!(backends_of(&px, &user).last().map(String::as_str), Some("d1"));
    assert_eq!(subject(&px), "on-d1");
}

#[test]
fn hash_pool_sends_a_user_to_the_same_backend_every_time_and_spreads_users() {
    let d1 = Dovecot::start();
    let d2 = Dovecot::start();
    let conf = format!(
        "[global]\nlogin_failure_delay = 0s\n\n\
         [backend d1]\nhost = 127.0.0.1\nport = {}\n\n\
         [backend d2]\nhost = 127.0.0.1\nport = {}\n\n\
         [pool spread]\nbackends = d1 d2\nbalance = hash\n\n\
         [map users]\ntype = static\ndefault = spread\n\n\
         [listener imap]\nlisten = 127.0.0.1:@PORT@\nmap = users\n",
        d1.port, d2.port
    );
    let px = Proxy::start(&conf);
    let mut used = BTreeSet::new();
    for n in 0..12 {
        let user = format!("hash{n}");
        let first = lands_on(&px, &user);
        let times = if n < 2 { 10 } else { 1 };
        for _ in 1..times {
            assert_eq!(lands_on(&px, &user), first, "{user} moved:\n{}", px.log());
        }
        used.insert(first);
    }
    assert_eq!(used.len(), 2, "12 users all on {used:?}");
    assert_eq!(backends_of(&px, "hash0").len(), 10);
}

/// A TCP connection to `127.0.0.1:port` from the loopback address `from`.
fn connect_from(from: [u8; 4], port: u16) -> TcpStream {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .expect("socket");
    let [a, b, c, d] = from;
    bind(fd.as_raw_fd(), &SockaddrIn::new(a, b, c, d, 0)).expect("bind the client address");
    connect(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, port)).expect("connect to imapgate");
    TcpStream::from(fd)
}

#[test]
fn trusting_dovecot_logs_the_client_address_forwarded_by_id() {
    let dv = Dovecot::start_with("login_trusted_networks = 127.0.0.0/8\nimap_id_log = *\n");
    let conf = format!(
        "[global]\nlogin_failure_delay = 0s\n\n\
         [backend dovecot]\nhost = 127.0.0.1\nport = {}\nforward_id = yes\ntrusted = yes\n\n\
         [map users]\ntype = static\ndefault = dovecot\n\n\
         [listener imap]\nlisten = 127.0.0.1:@PORT@\nmap = users\n",
        dv.port
    );
    let px = Proxy::start(&conf);
    let user = unique_user("rip");
    // The client connects from 127.0.0.2; imapgate connects to Dovecot from 127.0.0.1.
    let stream = connect_from([127, 0, 0, 2], px.port);
    let client_port = stream.local_addr().unwrap().port();
    let mut c = Client::from_conn(Box::new(stream));
    c.greeting = c.read_line();
    // 30 pairs, the RFC 2971 maximum, one of them a forged address: imapgate's own
    // fields must still reach Dovecot, and the forged one must not.
    let mut id = String::from("ID (\"name\" \"backends-test\" \"x-originating-ip\" \"10.9.9.9\"");
    for i in 0..28 {
        id.push_str(&format!(" \"x-field{i}\" \"v\""));
    }
    id.push(')');
    c.cmd_ok("I", &id);
    c.login(&user, "secret");
    c.cmd_ok("S", "SELECT INBOX");
    c.logout();

    px.wait_for_log(&format!(r"SESSION-START id=\d+ client=127\.0\.0\.2:{client_port} "));
    let login = wait_until(WAIT, || {
        dv.log()
            .lines()
            .find(|l| l.contains("Login: user=<") && l.contains(&user))
            .map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("no login of {user} in the Dovecot log:\n{}", dv.log()));
    assert!(login.contains("rip=127.0.0.2,"), "rip is not the client's: {login}");
    assert!(login.contains("lip=127.0.0.1"), "{login}");
    assert!(dv.log().contains("backends-test"), "the client's ID was not forwarded:\n{}", dv.log());
    assert!(!dv.log().contains("10.9.9.9"), "a forged address reached Dovecot:\n{}", dv.log());
}
