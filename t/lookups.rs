//! Routing from where the users already are (issue 13): file and CDB maps, an nginx
//! auth_http service, an LDAP directory (slapd), SQL databases (PostgreSQL, SQLite) and
//! chains of them, in front of two Dovecots that take master-user logins. For each: the
//! user lands on the right Dovecot, `destuser` rewrites the login, `nologin` refuses
//! with its reason, a source that is down gives `NO [UNAVAILABLE]` and nothing falls
//! through, the cache answers while the source is down only with `stale_if_error`, and
//! a new route is picked up without a restart. Where a landing shows which Dovecot and
//! which mailbox: each mailbox holds one message whose subject names both.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::auth_http::{Account, AuthHttp};
use crate::common::client::last_line;
use crate::common::dovecot::MASTER_PASSWORD;
use crate::common::postgres::Postgres;
use crate::common::proxy::run_imapgate;
use crate::common::slapd::{person, Slapd, BASE};
use crate::common::*;

/// Two Dovecots, `a` and `b`, both taking master-user logins by `admin`.
struct Two {
    a: Dovecot,
    b: Dovecot,
}

impl Two {
    fn start() -> Two {
        Two { a: Dovecot::start_with_master(), b: Dovecot::start_with_master() }
    }

    /// Gives `user` a message on each Dovecot whose subject says where it lives.
    fn seed(&self, users: &[&str]) {
        for user in users {
            self.a.append_message(user, "INBOX", &text_message(&format!("on-a-{user}"), "x"));
            self.b.append_message(user, "INBOX", &text_message(&format!("on-b-{user}"), "x"));
        }
    }

    /// A configuration with backends `a` and `b`, the map section `map` (called
    /// `users`), and one listener using it.
    fn config(&self, map: &str) -> String {
        format!(
            "[global]\nlogin_failure_delay = 0s\n\n\
             [backend a]\nhost = 127.0.0.1\nport = {}\n\n\
             [backend b]\nhost = 127.0.0.1\nport = {}\n\n\
             {map}\n\n\
             [listener imap]\nlisten = 127.0.0.1:@PORT@\nmap = users\n",
            self.a.port, self.b.port
        )
    }
}

/// Logs in through the proxy and says where the session landed: `on-a-USER` or
/// `on-b-USER` (the subject found in INBOX), or the login's tagged answer when it failed.
fn landed(port: u16, user: &str, pass: &str) -> String {
    let mut c = Client::connect(port);
    let r = c.try_login(user, pass);
    let answer = text(last_line(&r)).trim_end().to_string();
    if answer.split(' ').nth(1).is_none_or(|s| s != "OK") {
        return answer.split_once(' ').map_or(answer.clone(), |(_, rest)| rest.to_string());
    }
    c.cmd_ok("S", "SELECT INBOX");
    let r = text(&c.cmd_ok("F", "FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])"));
    c.logout();
    r.split_whitespace()
        .find(|w| w.starts_with("on-a-") || w.starts_with("on-b-"))
        .unwrap_or("nothing")
        .to_string()
}

fn write(dir: &TempDir, name: &str, body: &str) -> String {
    std::fs::write(dir.join(name), body).expect("write");
    dir.join(name).display().to_string()
}

#[test]
fn a_file_map_routes_rewrites_refuses_and_rereads_a_changed_file() {
    let two = Two::start();
    two.seed(&["u1", "u2", "u3", "x@example.net"]);
    let dir = TempDir::new("filemap");
    let records = "# login        backend-or-host   fields\n\
                   u1              a\n\
                   u2              b\n\
                   alias1          a                 destuser=u3\n\
                   gone            nologin           reason=\"Your mailbox moved to imap.example.com\"\n\
                   *@example.net   b\n";
    let path = write(&dir, "users.map", records);
    let px = Proxy::start(&two.config(&format!("[map users]\ntype = file\npath = {path}\n")));
    assert_eq!(landed(px.port, "u1", "secret"), "on-a-u1");
    assert_eq!(landed(px.port, "u2", "secret"), "on-b-u2");
    assert_eq!(landed(px.port, "alias1", "secret"), "on-a-u3", "destuser");
    assert_eq!(landed(px.port, "x@example.net", "secret"), "on-b-x@example.net");
    assert_eq!(
        landed(px.port, "gone", "secret"),
        "NO [ALERT] Your mailbox moved to imap.example.com"
    );
    assert_eq!(
        landed(px.port, "nobody", "secret"),
        "NO [AUTHENTICATIONFAILED] Authentication failed."
    );
    px.wait_for_log(r"LOGIN id=\d+ user=gone backend=- result=failed reason=nologin");

    // The file changes under a running imapgate: the next login uses it.
    std::fs::write(dir.join("users.map"), records.replace("u1              a", "u1 b")).unwrap();
    assert_eq!(landed(px.port, "u1", "secret"), "on-b-u1");
    // A broken file is logged with its line, and the last good one stays.
    std::fs::write(dir.join("users.map"), "u1 b\nu2 nowhere-at-all:99999\n").unwrap();
    assert_eq!(landed(px.port, "u2", "secret"), "on-b-u2");
    px.wait_for_log(r"users\.map:2: port: invalid port");
}

#[test]
fn a_file_map_cannot_give_a_master_user_and_t_says_where() {
    let dir = TempDir::new("filemap-t");
    let path = write(&dir, "users.map", "u1 a\nu2 a master=admin pass=x\n");
    let config = write(
        &dir,
        "imapgate.ini",
        &format!(
            "[backend a]\nhost = 127.0.0.1\n[map users]\ntype = file\npath = {path}\n\
             master_user = admin\nmaster_password = x\n[listener l]\nlisten = 127.0.0.1:1\nmap = users\n"
        ),
    );
    let out = run_imapgate(&["-t", "-f", &config]);
    let err = out.stderr_text();
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains(&format!("{path}:2: master, pass: a file cannot verify passwords")),
        "{err}"
    );
    assert!(
        err.contains("imapgate.ini:6: master_user: a master-user login needs a map that verifies"),
        "{err}"
    );
}

#[test]
fn a_cdb_built_by_the_real_tool_routes_and_an_atomic_replacement_is_used_at_once() {
    let cdb = require_tool("cdb", "tinycdb");
    let two = Two::start();
    two.seed(&["u1", "u2", "u3"]);
    let dir = TempDir::new("cdbmap");
    let build = |records: &str| {
        let input = write(&dir, "users.txt", records);
        let mut c = Command::new(&cdb);
        c.args(["-c", "-m", "-t"]).arg(dir.join("users.tmp")).arg(dir.join("users.cdb")).arg(input);
        let out = run_with_timeout(c, &dir, WAIT);
        assert!(out.status.success(), "cdb: {}", out.stderr_text());
    };
    build("u1 a\nu2 b\nalias1 b destuser=u3\ngone nologin reason=Closed\n");
    let map = format!(
        "[map users]\ntype = cdb\npath = {}\ndefault = a\n",
        dir.join("users.cdb").display()
    );
    let px = Proxy::start(&two.config(&map));
    assert_eq!(landed(px.port, "u1", "secret"), "on-a-u1");
    assert_eq!(landed(px.port, "u2", "secret"), "on-b-u2");
    assert_eq!(landed(px.port, "alias1", "secret"), "on-b-u3");
    assert_eq!(landed(px.port, "gone", "secret"), "NO [ALERT] Closed");
    assert_eq!(landed(px.port, "u3", "secret"), "on-a-u3", "the default, for users not listed");
    build("u1 b\n");
    assert_eq!(landed(px.port, "u1", "secret"), "on-b-u1");
    // The CDB gone: that is a failure, not a user the map does not know.
    std::fs::remove_file(dir.join("users.cdb")).unwrap();
    let r = landed(px.port, "u1", "secret");
    assert!(r.starts_with("NO [UNAVAILABLE]"), "{r}");
    px.wait_for_log(r"map users: cannot open .*users\.cdb");
}

#[test]
fn an_nginx_auth_http_script_routes_and_verifies_with_nginx_s_protocol() {
    let two = Two::start();
    two.seed(&["u1", "u2", "u3"]);
    let account = |password: &str, answer: &[(&str, String)]| Account {
        password: password.into(),
        answer: answer.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
    };
    let accounts: HashMap<String, Account> = [
        ("u1".into(), account("pw 1%", &[("Auth-Server", "a".into())])),
        (
            "u2@example.org".into(),
            account(
                "pw2",
                &[
                    ("Auth-Server", "127.0.0.1".into()),
                    ("Auth-Port", two.b.port.to_string()),
                    ("Auth-User", "u2".into()),
                ],
            ),
        ),
        (
            "u3".into(),
            account("pw3", &[("Auth-Server", "192.0.2.99".into()), ("Auth-Port", "143".into())]),
        ),
    ]
    .into();
    let mut service = AuthHttp::start(accounts);
    let map = format!(
        "[map users]\ntype = http\nurl = {}\nallow_hosts = 127.0.0.1/32\nheader = X-Api-Key: k1\n\
         master_user = admin\nmaster_password = {MASTER_PASSWORD}\n",
        service.url()
    );
    let px = Proxy::start(&two.config(&map));
    // The script checks the password; imapgate logs in as the master user for the user.
    assert_eq!(landed(px.port, "u1", "pw 1%"), "on-a-u1");
    assert_eq!(
        landed(px.port, "u2@example.org", "pw2"),
        "on-b-u2",
        "Auth-Server address, Auth-Port, Auth-User"
    );
    let r = service.requests()[0].clone();
    assert_eq!(r[":request"], "GET /mail/auth HTTP/1.0");
    for (k, v) in [
        ("Auth-Method", "plain"),
        ("Auth-User", "u1"),
        ("Auth-Pass", "pw%201%25"),
        ("Auth-Protocol", "imap"),
        ("Auth-Login-Attempt", "1"),
        ("Client-IP", "127.0.0.1"),
        ("X-Api-Key", "k1"),
    ] {
        assert_eq!(r.get(k).map(String::as_str), Some(v), "{k}: {r:?}");
    }
    // A wrong password: the script's words, after its Auth-Wait.
    let started = Instant::now();
    assert_eq!(
        landed(px.port, "u1", "wrong"),
        "NO [AUTHENTICATIONFAILED] Invalid login or password"
    );
    assert!(started.elapsed() >= Duration::from_secs(1), "Auth-Wait was not honoured");
    // An address outside allow_hosts is never contacted.
    let r = landed(px.port, "u3", "pw3");
    assert!(r.starts_with("NO [UNAVAILABLE]"), "{r}");
    px.wait_for_log(r"map users: the answer names host .192\.0\.2\.99., outside allow_hosts");
    // The service down: UNAVAILABLE, logged with the map's name.
    service.stop();
    let r = landed(px.port, "u1", "pw 1%");
    assert!(r.starts_with("NO [UNAVAILABLE]"), "{r}");
    px.wait_for_log(r"map users: connect to 127\.0\.0\.1:\d+");
}

fn ldap_people() -> Vec<String> {
    vec![
        person("u1", "ldap-pw-1", &[("l", "a")]),
        person("u2", "ldap-pw-2", &[("l", "b")]),
        person("alias1", "ldap-pw-3", &[("l", "a"), ("description", "u3")]),
        person(
            "gone",
            "ldap-pw-4",
            &[("l", "a"), ("businessCategory", "TRUE"), ("title", "Account closed")],
        ),
    ]
}

fn ldap_map(url: &str, extra: &str) -> String {
    format!(
        "[map users]\ntype = ldap\nurl = {url}\nbase = {BASE}\nfilter = (&(objectClass=inetOrgPerson)(uid=%u))\n\
         field = backend l\nfield = destuser description\nfield = nologin businessCategory\nfield = reason title\n\
         verify_password = yes\nmaster_user = admin\nmaster_password = {MASTER_PASSWORD}\n{extra}"
    )
}

#[test]
fn an_ldap_directory_routes_verifies_by_binding_and_logs_in_as_the_master_user() {
    let two = Two::start();
    two.seed(&["u1", "u2", "u3"]);
    let ldap = Slapd::start(&ldap_people());
    let px = Proxy::start(&two.config(&ldap_map(&ldap.url(), "")));
    // The LDAP password is not Dovecot's: only the master-user login gets the user in.
    assert_eq!(landed(px.port, "u1", "ldap-pw-1"), "on-a-u1");
    assert_eq!(landed(px.port, "u2", "ldap-pw-2"), "on-b-u2");
    assert_eq!(landed(px.port, "alias1", "ldap-pw-3"), "on-a-u3", "destuser");
    assert_eq!(landed(px.port, "gone", "ldap-pw-4"), "NO [ALERT] Account closed");
    assert_eq!(landed(px.port, "u1", "secret"), "NO [AUTHENTICATIONFAILED] Authentication failed.");
    assert_eq!(
        landed(px.port, "u1", ""),
        "NO [AUTHENTICATIONFAILED] Authentication failed.",
        "no unauthenticated bind"
    );
    assert_eq!(
        landed(px.port, "u*", "ldap-pw-1"),
        "NO [AUTHENTICATIONFAILED] Authentication failed.",
        "escaped"
    );

    // Over the unix socket too.
    let px2 = Proxy::start(&two.config(&ldap_map(&ldap.ldapi_url(), "")));
    assert_eq!(landed(px2.port, "u2", "ldap-pw-2"), "on-b-u2");
}

#[test]
fn a_directory_that_is_down_is_never_papered_over_except_by_a_stale_cache_entry() {
    let two = Two::start();
    two.seed(&["u1", "u2"]);
    let mut ldap = Slapd::start(&ldap_people());
    let stale =
        Proxy::start(&two.config(&ldap_map(&ldap.url(), "cache_ttl = 1s\nstale_if_error = 1m\n")));
    let fresh_only =
        Proxy::start(&two.config(&ldap_map(&ldap.url(), "cache_ttl = 1s\ndefault = b\n")));
    assert_eq!(landed(stale.port, "u1", "ldap-pw-1"), "on-a-u1");
    assert_eq!(landed(fresh_only.port, "u1", "ldap-pw-1"), "on-a-u1");
    ldap.stop();
    std::thread::sleep(Duration::from_millis(1200));
    // Expired, but the directory is down: the stale answer serves with stale_if_error...
    assert_eq!(landed(stale.port, "u1", "ldap-pw-1"), "on-a-u1");
    stale.wait_for_log(r"map users: connect to .*; answering from the cache");
    // ...but not for another password (the key holds the credentials)...
    let r = landed(stale.port, "u1", "guess");
    assert!(r.starts_with("NO [UNAVAILABLE]"), "{r}");
    // ...and without stale_if_error nothing answers; `default` is not a fallback.
    let r = landed(fresh_only.port, "u1", "ldap-pw-1");
    assert!(r.starts_with("NO [UNAVAILABLE]"), "{r}");
    let r = landed(fresh_only.port, "u2", "ldap-pw-2");
    assert!(r.starts_with("NO [UNAVAILABLE]"), "{r}");
    fresh_only.wait_for_log(r"LOGIN id=\d+ user=u2 backend=- result=failed reason=lookup-failed");
    ldap.restart();
    assert_eq!(landed(fresh_only.port, "u2", "ldap-pw-2"), "on-b-u2");
}

#[test]
fn a_hanging_directory_holds_back_only_the_logins_that_wait_for_it() {
    let two = Two::start();
    two.seed(&["u1", "u2"]);
    let ldap = Slapd::start(&ldap_people());
    let px = Proxy::start(&two.config(&ldap_map(&ldap.url(), "timeout = 4s\ncache_ttl = 5m\n")));
    assert_eq!(landed(px.port, "u1", "ldap-pw-1"), "on-a-u1");
    ldap.pause();
    let port = px.port;
    let waiting = std::thread::spawn(move || {
        let started = Instant::now();
        (landed(port, "u2", "ldap-pw-2"), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    // Meanwhile, while u2's login still waits: other clients are answered, and a
    // cached user logs in. (Judged by order, not by a time bound a loaded machine breaks.)
    let mut c = Client::connect(px.port);
    c.cmd_ok("C", "CAPABILITY");
    assert_eq!(landed(px.port, "u1", "ldap-pw-1"), "on-a-u1");
    assert!(!waiting.is_finished(), "the cached login was held back until the lookup timed out");
    let (answer, took) = waiting.join().unwrap();
    assert!(answer.starts_with("NO [UNAVAILABLE]"), "{answer}");
    assert!(took >= Duration::from_millis(3500), "answered before the timeout: {took:?}");
    px.wait_for_log(r"map users: timed out");
    ldap.resume();
}

/// `doveadm pw -s SCHEME -p PASSWORD`, the way an admin fills a password column.
fn hash(scheme: &str, password: &str) -> String {
    let doveadm = require_tool("doveadm", "dovecot-core");
    let dir = TempDir::new("doveadm");
    let mut c = Command::new(doveadm);
    c.args(["pw", "-s", scheme, "-p", password]);
    let out = run_with_timeout(c, &dir, WAIT);
    assert!(out.status.success(), "doveadm pw: {}", out.stderr_text());
    out.stdout_text().trim().to_string()
}

const SQL_QUERY: &str =
    "SELECT backend, destuser, password, nologin, reason FROM users WHERE login = %u";

fn sql_map(database: &str, extra: &str) -> String {
    format!(
        "[map users]\ntype = sql\ndatabase = {database}\nquery = {SQL_QUERY}\nverify_password = yes\n\
         master_user = admin\nmaster_password = {MASTER_PASSWORD}\n{extra}"
    )
}

fn sql_rows() -> Vec<String> {
    vec![
        format!("('u1', 'a', NULL, '{}', NULL, NULL)", hash("SHA512-CRYPT", "sql-pw-1")),
        format!("('u2', 'b', NULL, '{}', NULL, NULL)", hash("BLF-CRYPT", "sql-pw-2")),
        format!("('alias1', 'b', 'u3', '{}', NULL, NULL)", hash("ARGON2ID", "sql-pw-3")),
        format!(
            "('gone', 'a', NULL, '{}', 'y', 'Closed for good')",
            hash("SHA512-CRYPT", "sql-pw-4")
        ),
    ]
}

#[test]
fn a_postgresql_query_routes_and_verifies_dovecot_password_schemes() {
    let two = Two::start();
    two.seed(&["u1", "u2", "u3"]);
    let mut pg = Postgres::start();
    pg.psql(&format!(
        "CREATE TABLE users (login text PRIMARY KEY, backend text, destuser text, password text, \
         nologin text, reason text); INSERT INTO users VALUES {};",
        sql_rows().join(", ")
    ));
    let tcp = Proxy::start(&two.config(&sql_map(&pg.tcp_url(), "")));
    assert_eq!(landed(tcp.port, "u1", "sql-pw-1"), "on-a-u1", "SHA512-CRYPT, over TCP with SCRAM");
    assert_eq!(landed(tcp.port, "u2", "sql-pw-2"), "on-b-u2", "BLF-CRYPT");
    assert_eq!(landed(tcp.port, "alias1", "sql-pw-3"), "on-b-u3", "ARGON2ID, destuser");
    assert_eq!(landed(tcp.port, "gone", "sql-pw-4"), "NO [ALERT] Closed for good");
    assert_eq!(
        landed(tcp.port, "u1", "sql-pw-2"),
        "NO [AUTHENTICATIONFAILED] Authentication failed."
    );
    assert_eq!(
        landed(tcp.port, "u1' OR '1'='1", "sql-pw-1"),
        "NO [AUTHENTICATIONFAILED] Authentication failed.",
        "the login is a bound parameter"
    );
    let socket = Proxy::start(&two.config(&sql_map(&pg.socket_url(), "")));
    assert_eq!(landed(socket.port, "u2", "sql-pw-2"), "on-b-u2", "over the unix socket");
    // A changed row is the next login's answer.
    pg.psql("UPDATE users SET backend = 'b' WHERE login = 'u1'");
    assert_eq!(landed(tcp.port, "u1", "sql-pw-1"), "on-b-u1");
    pg.stop();
    let r = landed(tcp.port, "u1", "sql-pw-1");
    assert!(r.starts_with("NO [UNAVAILABLE]"), "{r}");
    tcp.wait_for_log(r"LOGIN id=\d+ user=u1 backend=- result=failed reason=lookup-failed detail=.map users: connect to");
    pg.restart();
    assert_eq!(landed(tcp.port, "u1", "sql-pw-1"), "on-b-u1");
}

#[cfg(feature = "sqlite")]
#[test]
fn an_sqlite_query_routes_and_verifies() {
    let sqlite3 = require_tool("sqlite3", "sqlite3");
    let two = Two::start();
    two.seed(&["u1", "u2", "u3"]);
    let dir = TempDir::new("sqlite");
    let db = dir.join("users.db");
    let sql = format!(
        "CREATE TABLE users (login text PRIMARY KEY, backend text, destuser text, password text, \
         nologin text, reason text); INSERT INTO users VALUES {};",
        sql_rows().join(", ")
    );
    let mut c = Command::new(sqlite3);
    c.arg(&db).arg(sql);
    let out = run_with_timeout(c, &dir, WAIT);
    assert!(out.status.success(), "sqlite3: {}", out.stderr_text());
    let px = Proxy::start(&two.config(&sql_map(&format!("sqlite:{}", db.display()), "")));
    assert_eq!(landed(px.port, "u1", "sql-pw-1"), "on-a-u1");
    assert_eq!(landed(px.port, "alias1", "sql-pw-3"), "on-b-u3");
    assert_eq!(landed(px.port, "gone", "sql-pw-4"), "NO [ALERT] Closed for good");
    assert_eq!(landed(px.port, "u2", "wrong"), "NO [AUTHENTICATIONFAILED] Authentication failed.");
    std::fs::remove_file(&db).unwrap();
    let r = landed(px.port, "u1", "sql-pw-1");
    assert!(r.starts_with("NO [UNAVAILABLE]"), "{r}");
}

#[test]
fn a_chain_asks_a_local_file_first_and_a_failing_directory_ends_the_lookup() {
    let two = Two::start();
    two.seed(&["u1", "u2", "special"]);
    let mut ldap = Slapd::start(&ldap_people());
    let dir = TempDir::new("chain");
    let path = write(&dir, "exceptions.map", "special b\n");
    let map = format!(
        "[map exceptions]\ntype = file\npath = {path}\n\n{}\n\n[map users]\ntype = chain\nmaps = exceptions, directory\ndefault = a\n",
        ldap_map(&ldap.url(), "").replace("[map users]", "[map directory]")
    );
    let px = Proxy::start(&two.config(&map));
    assert_eq!(landed(px.port, "special", "secret"), "on-b-special", "the file answers first");
    assert_eq!(landed(px.port, "u2", "ldap-pw-2"), "on-b-u2", "then the directory");
    ldap.stop();
    let r = landed(px.port, "u2", "ldap-pw-2");
    assert!(r.starts_with("NO [UNAVAILABLE]"), "a failing map ends the chain, no default: {r}");
    assert_eq!(landed(px.port, "special", "secret"), "on-b-special", "the file still answers");
}

/// A host answer from a map inside a chain takes that map's `host_defaults` (the port of
/// `b` here; the answer names none), as it passed that map's `allow_hosts`.
#[test]
fn a_host_answer_in_a_chain_takes_the_host_defaults_of_the_map_that_gave_it() {
    let two = Two::start();
    two.seed(&["u1"]);
    let dir = TempDir::new("chain-host");
    let path = write(&dir, "hosts.map", "u1 127.0.0.1\n");
    let map = format!(
        "[map hosts]\ntype = file\npath = {path}\nallow_hosts = 127.0.0.1/32\nhost_defaults = b\n\n\
         [map users]\ntype = chain\nmaps = hosts\n"
    );
    let px = Proxy::start(&two.config(&map));
    assert_eq!(landed(px.port, "u1", "secret"), "on-b-u1");
}

#[test]
fn a_reload_picks_up_a_new_route() {
    let two = Two::start();
    two.seed(&["u1"]);
    let dir = TempDir::new("reload");
    let path = write(&dir, "one.map", "u1 a\n");
    let mut px = Proxy::start(&two.config(&format!("[map users]\ntype = file\npath = {path}\n")));
    assert_eq!(landed(px.port, "u1", "secret"), "on-a-u1");
    let path2 = write(&dir, "two.map", "u1 b\n");
    let config = std::fs::read_to_string(&px.config).unwrap().replace(&path, &path2);
    std::fs::write(&px.config, config).unwrap();
    send_signal(px.pid(), "HUP");
    px.wait_for_log(r"reload: .* loaded; new sessions use it");
    assert_eq!(landed(px.port, "u1", "secret"), "on-b-u1");
    let _ = px.stop();
}

#[test]
fn t_reports_lookup_problems_at_their_lines() {
    let dir = TempDir::new("lookup-t");
    let config = write(
        &dir,
        "imapgate.ini",
        "[backend a]\nhost = 127.0.0.1\n\
         [map l]\ntype = ldap\nurl = ldap://127.0.0.1:1\nbase = dc=x\nfilter = (uid=%u\nfield = host mailHost\n\
         [map s]\ntype = sql\ndatabase = postgresql://u@127.0.0.1/db\nquery = SELECT 'a' AS backend\n\
         [map h]\ntype = http\nurl = https://x/\ncolour = red\n\
         [map c]\ntype = chain\nmaps = c, nowhere\n\
         [listener x]\nlisten = 127.0.0.1:1\nmap = l\n",
    );
    let out = run_imapgate(&["-t", "-f", &config]);
    let err = out.stderr_text();
    assert_eq!(out.status.code(), Some(78), "{err}");
    for needle in [
        "imapgate.ini:7: filter: expected ')'",
        "imapgate.ini:12: the query uses no %u",
        "imapgate.ini:15: url: expected http://",
        "imapgate.ini:16: unknown key \"colour\" for type = http",
        "imapgate.ini:19: maps: \"c\" leads back to this chain",
        "imapgate.ini:19: maps: undefined map \"nowhere\"",
    ] {
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    }
}

#[test]
fn lookups_work_after_the_privilege_drop_in_both_process_models() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let two = Two::start();
    two.seed(&["u1", "u2"]);
    let ldap = Slapd::start(&ldap_people());
    for mode in ["thread", "fork"] {
        // The jail holds the map file; the configuration names it by its full path.
        let jail = TempDir::new("jail");
        std::fs::create_dir_all(jail.join("maps")).unwrap();
        let path = write(&jail, "maps/users.map", "u1 b\n");
        let map = format!(
            "[map files]\ntype = file\npath = {path}\n\n{}\n\n[map users]\ntype = chain\nmaps = files, directory\n",
            ldap_map(&ldap.url(), "").replace("[map users]", "[map directory]")
        );
        let config = two.config(&map).replace(
            "[global]\n",
            &format!(
                "[global]\nuser = nobody\ngroup = nogroup\nchroot = {}\nmode = {mode}\n",
                jail.path().display()
            ),
        );
        let px = Proxy::start(&config);
        assert_eq!(landed(px.port, "u1", "secret"), "on-b-u1", "{mode}: the file, inside the jail");
        assert_eq!(landed(px.port, "u2", "ldap-pw-2"), "on-b-u2", "{mode}: the directory");
        std::fs::write(jail.join("maps/users.map"), "u1 a\n").unwrap();
        assert_eq!(
            landed(px.port, "u1", "secret"),
            "on-a-u1",
            "{mode}: the changed file, read in the jail"
        );
    }
}
