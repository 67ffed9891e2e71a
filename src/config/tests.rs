use super::*;
use tls::SniCert;

const MINIMAL: &str = "\
[backend dovecot]          ; one section per IMAP server
host = 127.0.0.1
port = 143

[map users]                ; login name -> backend
type = static              ; static | regex
default = dovecot          ; static: backend for every user not listed

[listener imap]
listen = 127.0.0.1:1143    ; address:port, [v6]:port also accepted
map = users
";

/// A valid tail to append so that the text under test is not also missing a listener.
const TAIL: &str = "[backend b]\nhost = h\n[map m]\ntype = static\ndefault = b\n\
                    [listener l]\nlisten = 127.0.0.1:1\nmap = m\n";

fn parse_ok(text: &str) -> Config {
    match Config::parse(text, Path::new("t.ini")) {
        Ok(c) => c,
        Err(e) => panic!("unexpected errors:\n{e}"),
    }
}

/// Errors as `LINE: message`.
fn errs(text: &str) -> Vec<String> {
    match Config::parse(text, Path::new("t.ini")) {
        Ok(_) => panic!("config unexpectedly valid:\n{text}"),
        Err(e) => e.0.iter().map(|e| format!("{}: {}", e.line, e.msg)).collect(),
    }
}

/// Asserts exactly one error, at `line`, containing `needle`.
fn one_err(text: &str, line: usize, needle: &str) {
    let e = errs(text);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with(&format!("{line}: ")) && e[0].contains(needle),
        "expected {line}: ...{needle}..., got {e:#?}"
    );
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse_ok(MINIMAL);
    assert_eq!(c.path, Path::new("t.ini"));
    let g = &c.global;
    assert_eq!(g.log, LogTarget::Auto);
    assert_eq!(g.log_level.max, log::LevelFilter::Info);
    assert_eq!(g.syslog_facility, libc::LOG_MAIL);
    assert_eq!(g.thread_stack_size, 256 * 1024);
    assert_eq!(g.preauth_timeout, Duration::from_secs(60));
    assert_eq!(g.idle_timeout, Duration::from_secs(31 * 60));
    assert_eq!(g.preauth_max_line, 36 * 1024);
    assert_eq!(g.preauth_max_literal, 8 * 1024);
    assert_eq!(g.max_login_failures, 3);
    assert_eq!(g.login_failure_delay, Duration::from_secs(2));
    assert_eq!(g.greeting, "imapgate ready.");
    assert_eq!(
        c.backends,
        [Backend {
            name: "dovecot".into(),
            line: 1,
            host: "127.0.0.1".into(),
            port: 143,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            tls: TlsMode::None,
            ca: None,
            tls_name: None,
            tls_insecure_skip_verify: false,
            tls_min_version: TlsVersion::V1_2,
            send_proxy_protocol: false,
            login: BackendLogin {
                method: LoginMethod::Auto,
                sasl_ir: true,
                forward_id: false,
                trusted: false,
                down_time: Duration::from_secs(30),
                probe: None,
                compress: false,
            },
        }]
    );
    assert_eq!(c.maps.len(), 1);
    assert_eq!(c.maps[0].name, "users");
    match &c.maps[0].kind {
        MapKind::Static { default, users } => {
            assert_eq!(*default, Some(crate::config::Target::Backend(0)));
            assert!(users.is_empty());
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(
        c.listeners,
        [Listener {
            name: "imap".into(),
            listen: vec!["127.0.0.1:1143".parse().unwrap()],
            map: 0,
            tls: None,
            access: Access::default(),
            rules: vec![],
            oauth_mechanisms: vec![],
            compress: true,
        }]
    );
    assert_eq!(c.backend_index("dovecot"), Some(0));
    assert_eq!(c.backend_index("nope"), None);
    assert_eq!(c.map_index("users"), Some(0));
}

/// The configuration the Debian and RPM packages install: it parses, and it opens
/// nothing but a loopback port (installing the package must not expose a service).
#[test]
fn packaged_config_listens_on_loopback_only() {
    let c = parse_ok(include_str!("../../etc/packaged.ini"));
    assert!(c.global.daemon.user.is_some() && c.global.daemon.chroot.is_some());
    let addrs: Vec<_> = c.listeners.iter().flat_map(|l| l.listen.iter()).collect();
    assert!(!addrs.is_empty());
    assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
}

#[test]
fn example_config_loads() {
    let c = parse_ok(include_str!("../../etc/imapgate.ini"));
    assert!(!c.listeners.is_empty());
    assert!(c.maps.iter().any(|m| matches!(m.kind, MapKind::Regex { .. })));
    assert!(c.maps.iter().any(|m| matches!(m.kind, MapKind::Static { .. })));
    // The values written out in the example are the documented defaults.
    assert_eq!(format!("{:?}", c.global), format!("{:?}", Global::default()));
    let minimal = parse_ok(MINIMAL);
    let line = c.backends[0].line;
    assert_eq!(c.backends[0], Backend { line, ..minimal.backends[0].clone() });
}

#[test]
fn global_keys_are_typed() {
    let c = parse_ok(&format!(
        "[global]\nlog = file\nlog_file = /var/log/imapgate.log\nlog_level = debug\n\
         syslog_facility = local3\nthread_stack_size = 1m\npreauth_timeout = 500ms\n\
         idle_timeout = 2h\npreauth_max_line = 64k\npreauth_max_literal = 0\n\
         max_login_failures = 1\nlogin_failure_delay = 0\ngreeting = Hi there [x]; ok\n{TAIL}"
    ));
    let g = c.global;
    assert_eq!(g.log, LogTarget::File("/var/log/imapgate.log".into()));
    assert_eq!(g.log_level.max, log::LevelFilter::Debug);
    assert_eq!(g.syslog_facility, libc::LOG_LOCAL3);
    assert_eq!(g.thread_stack_size, 1 << 20);
    assert_eq!(g.preauth_timeout, Duration::from_millis(500));
    assert_eq!(g.idle_timeout, Duration::from_secs(7200));
    assert_eq!(g.preauth_max_line, 64 << 10);
    assert_eq!(g.preauth_max_literal, 0);
    assert_eq!(g.max_login_failures, 1);
    assert_eq!(g.login_failure_delay, Duration::ZERO);
    assert_eq!(g.greeting, "Hi there [x]; ok");
    let c = parse_ok(&format!("[global]\nlog = syslog\n{TAIL}"));
    assert_eq!(c.global.log, LogTarget::Syslog);
}

#[test]
fn bad_global_values_are_reported_at_their_lines() {
    let e = errs(&format!(
        "[global]\nlog = journal\nlog_level = loud\nsyslog_facility = local8\n\
         thread_stack_size = 32k\npreauth_timeout = 0\nidle_timeout = soon\n\
         preauth_max_line = 100m\nmax_login_failures = 0\nlogin_failure_delay = -1\n\
         greeting =\n{TAIL}"
    ));
    let lines: Vec<&str> = e.iter().map(|e| e.split(':').next().unwrap()).collect();
    assert_eq!(lines, ["2", "3", "4", "5", "6", "7", "8", "9", "10", "11"], "{e:#?}");
    assert!(e[3].contains("thread_stack_size: 32k is out of range (64k to 64m)"));
    assert!(e[9].contains("greeting: must not be empty"));
}

#[test]
fn a_relative_log_file_is_taken_relative_to_the_configuration_file() {
    let text = format!("[global]\nlog = file\nlog_file = log/imapgate.log\n{TAIL}");
    let c = Config::parse(&text, Path::new("/etc/imapgate/imapgate.ini")).expect("valid");
    assert_eq!(c.global.log, LogTarget::File("/etc/imapgate/log/imapgate.log".into()));
    let text = format!("[global]\nlog = file\nlog_file = /var/log/imapgate.log\n{TAIL}");
    let c = Config::parse(&text, Path::new("/etc/imapgate/imapgate.ini")).expect("valid");
    assert_eq!(c.global.log, LogTarget::File("/var/log/imapgate.log".into()));
}

#[test]
fn log_file_and_log_file_target_require_each_other() {
    one_err(&format!("[global]\nlog = file\n{TAIL}"), 2, "requires log_file");
    one_err(
        &format!("[global]\nlog_file = x.log\n{TAIL}"),
        2,
        "log_file: only valid with log = file",
    );
    one_err(
        &format!("[global]\nlog = fiel\nlog_file = x.log\n{TAIL}"),
        2,
        "log: invalid value \"fiel\"",
    );
}

#[test]
fn backend_and_listener_values() {
    let c = parse_ok(
        "[backend v6]\nhost = ::1\nport = 993\nconnect_timeout = 1500ms\ntimeout = 1m\n\
         [backend named]\nhost = imap.example.org\n\
         [map m]\ntype = static\nuser = a v6\nuser = b named\n\
         [listener l]\nlisten = [::1]:143 127.0.0.1:143\nlisten = *:1143\nmap = m\n",
    );
    let b = &c.backends[0];
    assert_eq!((b.host.as_str(), b.port), ("::1", 993));
    assert_eq!(b.connect_timeout, Duration::from_millis(1500));
    assert_eq!(b.timeout, Duration::from_secs(60));
    assert_eq!(c.backends[1].host, "imap.example.org");
    let want: Vec<SocketAddr> =
        ["[::1]:143", "127.0.0.1:143", "0.0.0.0:1143"].iter().map(|a| a.parse().unwrap()).collect();
    assert_eq!(c.listeners[0].listen, want);
    match &c.maps[0].kind {
        MapKind::Static { users, .. } => {
            assert_eq!(users.get("a"), Some(&crate::config::Target::Backend(0)));
            assert_eq!(users.get("b"), Some(&crate::config::Target::Backend(1)));
        }
        k => panic!("{k:?}"),
    }
}

#[test]
fn unknown_key_is_reported_at_its_line() {
    one_err(
        &format!("{TAIL}[backend x]\nhots = h\nhost = h\n"),
        10,
        "unknown key \"hots\" in [backend x] (known keys: host, port, connect_timeout, timeout, send_proxy_protocol, tls, ca, tls_name, tls_insecure_skip_verify, tls_min_version, login_method, sasl_ir, forward_id, trusted, down_time, probe_user, probe_password, compress)",
    );
}

#[test]
fn duplicate_key_is_reported_at_the_second_line() {
    one_err(
        &format!("{TAIL}[backend x]\nhost = h\nport = 1\nport = 2\n"),
        12,
        "duplicate key \"port\" (first at line 11)",
    );
    // A lookup map's own keys are `lookup::load`'s; type and default are checked here.
    one_err(
        &format!("{TAIL}[map f]\ntype = file\npath = x\ndefault = b\ndefault = b\n"),
        13,
        "duplicate key \"default\" (first at line 12)",
    );
}

#[test]
fn section_problems_are_reported_at_the_header() {
    one_err(&format!("{TAIL}[frontend x]\nhost = h\n"), 9, "unknown section [frontend x]");
    one_err(&format!("{TAIL}[rule hide]\nkind = x\n"), 9, "missing required key \"type\"");
    one_err(&format!("{TAIL}[backend]\n"), 9, "expected [backend NAME]");
    one_err(&format!("{TAIL}[backend a b]\n"), 9, "expected [backend NAME]");
    one_err(&format!("{TAIL}[map a/b]\n"), 9, "expected [map NAME]");
    one_err(&format!("{TAIL}[global x]\n"), 9, "[global] takes no name");
    one_err(&format!("{TAIL}[Global]\n"), 9, "unknown section [Global]");
    one_err(
        &format!("{TAIL}[backend x]\nport = 1\n"),
        9,
        "[backend x]: missing required key \"host\"",
    );
    one_err(
        &format!("{TAIL}[backend b]\nhost = h2\n"),
        9,
        "duplicate section [backend b] (first at line 1)",
    );
    one_err(
        &format!("[global]\n[global]\n{TAIL}"),
        2,
        "duplicate section [global] (first at line 1)",
    );
    one_err(&format!("{TAIL}[map x]\ndefault = b\n"), 9, "[map x]: missing required key \"type\"");
    one_err(&format!("{TAIL}[listener x]\nmap = m\n"), 9, "missing required key \"listen\"");
    one_err(&format!("{TAIL}[listener x]\nlisten = *:2\n"), 9, "missing required key \"map\"");
}

#[test]
fn same_name_in_different_kinds_is_fine() {
    parse_ok("[backend x]\nhost = h\n[map x]\ntype = static\ndefault = x\n[listener x]\nlisten = *:1\nmap = x\n");
}

#[test]
fn keys_outside_sections_are_errors() {
    one_err(&format!("host = h\n{TAIL}"), 1, "key \"host\" outside of any section");
}

#[test]
fn missing_listener_is_reported_at_the_last_line() {
    let e = errs("[backend b]\nhost = h\n\n; end\n");
    assert_eq!(e, ["4: no [listener NAME] section: at least one listener is required"]);
    assert_eq!(errs(""), ["0: no [listener NAME] section: at least one listener is required"]);
}

#[test]
fn undefined_references_are_errors() {
    one_err(
        &format!("{TAIL}[map x]\ntype = static\ndefault = nope\n"),
        11,
        "default: undefined backend \"nope\"",
    );
    one_err(
        &format!("{TAIL}[map x]\ntype = static\nuser = a nope\n"),
        11,
        "user: undefined backend \"nope\"",
    );
    one_err(
        &format!("{TAIL}[map x]\ntype = regex\nroute = ^a nope\n"),
        11,
        "route: undefined backend \"nope\"",
    );
    one_err(
        &format!("{TAIL}[listener x]\nlisten = *:2\nmap = nope\n"),
        11,
        "map: undefined map \"nope\"",
    );
}

#[test]
fn references_may_point_forward() {
    parse_ok("[listener l]\nlisten = *:1\nmap = m\n[map m]\ntype = static\ndefault = b\n[backend b]\nhost = h\n");
}

#[test]
fn bad_backend_values() {
    one_err(&format!("{TAIL}[backend x]\nhost = a b\n"), 10, "host: invalid host \"a b\"");
    one_err(&format!("{TAIL}[backend x]\nhost = h:143\n"), 10, "put the port in `port`");
    one_err(&format!("{TAIL}[backend x]\nhost = h\nport = 0\n"), 11, "port: invalid port \"0\"");
    one_err(
        &format!("{TAIL}[backend x]\nhost = h\ntimeout = 0s\n"),
        11,
        "timeout: must be greater than 0",
    );
    one_err(
        &format!("{TAIL}[backend x]\nhost = h\nconnect_timeout = 1d\n"),
        11,
        "connect_timeout: invalid duration",
    );
}

#[test]
fn bad_listen_values() {
    one_err(
        &format!("{TAIL}[listener x]\nlisten = ::1:143\nmap = m\n"),
        10,
        "listen: invalid listen address \"::1:143\"",
    );
    one_err(&format!("{TAIL}[listener x]\nlisten =\nmap = m\n"), 10, "listen: empty value");
    one_err(
        &format!("{TAIL}[listener x]\nlisten = 127.0.0.1:1\nmap = m\n"),
        10,
        "listen: 127.0.0.1:1 is already used by [listener l] (line 7)",
    );
}

#[test]
fn map_type_and_key_mismatches() {
    one_err(
        &format!("{TAIL}[map x]\ntype = hash\n"),
        10,
        "type: invalid value \"hash\" (expected static, regex, file, cdb, http, ldap, sql, chain)",
    );
    one_err(
        &format!("{TAIL}[map x]\ntype = regex\nuser = a b\n"),
        11,
        "user: only valid in maps of type static",
    );
    one_err(
        &format!("{TAIL}[map x]\ntype = static\nroute = ^a b\n"),
        11,
        "route: only valid in maps of type regex",
    );
    one_err(
        &format!("{TAIL}[map x]\ntype = static\nuser = a\n"),
        11,
        "user: expected \"LOGIN BACKEND\"",
    );
    one_err(
        &format!("{TAIL}[map x]\ntype = static\nuser = a b\nuser = a b\n"),
        12,
        "user: duplicate login \"a\" (first at line 11)",
    );
    one_err(
        &format!("{TAIL}[map x]\ntype = regex\nroute = ^a\n"),
        11,
        "route: expected \"REGEX BACKEND [USER]\"",
    );
    one_err(&format!("{TAIL}[map x]\ntype = regex\nroute = a b c d\n"), 11, "route: expected");
}

#[test]
fn regex_routes_are_compiled_and_checked_at_load() {
    one_err(
        &format!("{TAIL}[map x]\ntype = regex\nroute = (a b\n"),
        11,
        "route: invalid regex \"(a\": unclosed group",
    );
    one_err(
        &format!("{TAIL}[map x]\ntype = regex\nroute = ^(a)$ b-$2\n"),
        11,
        "route: backend template: $2 refers to group 2, but the regex has 1 group(s)",
    );
    one_err(
        &format!("{TAIL}[map x]\ntype = regex\nroute = ^(a)$ b $u\n"),
        11,
        "route: user template: $u names no capture group",
    );
    one_err(
        &format!("{TAIL}[map x]\ntype = regex\nroute = ^(a)$ b-$\n"),
        11,
        "route: backend template: invalid \"$\"",
    );
    let c = parse_ok(&format!(
        "{TAIL}[map x]\ntype = regex\nroute = ^(?i)(\\w+)@a\\.example$ b ${{1}}\nroute = ^(?P<u>x)y#z;q$ shard-$u\n"
    ));
    match &c.maps[1].kind {
        MapKind::Regex { routes, default } => {
            assert_eq!(*default, None);
            assert_eq!(routes.len(), 2);
            assert_eq!(routes[0].regex.as_str(), "^(?i)(\\w+)@a\\.example$");
            assert_eq!(routes[0].backend, "b");
            assert_eq!(routes[0].user.as_deref(), Some("${1}"));
            assert_eq!(routes[1].regex.as_str(), "^(?P<u>x)y#z;q$");
            assert_eq!(routes[1].backend, "shard-$u");
            assert_eq!(routes[1].user, None);
        }
        k => panic!("{k:?}"),
    }
}

#[test]
fn all_errors_are_reported_together() {
    let e = errs(
        "[global]\nlog_level = chatty\n\
         [backend a]\nhost = h\nprot = 1\n\
         [map m]\ntype = static\ndefault = zz\n\
         garbage\n\
         [listener l]\nlisten = *:99999\nmap = m\n",
    );
    assert_eq!(
        e,
        [
            "2: log_level: invalid value \"chatty\" (expected error, warn, info, debug or trace, or MODULE=LEVEL as in info,imapgate::rules=debug)",
            "5: unknown key \"prot\" in [backend a] (known keys: host, port, connect_timeout, timeout, send_proxy_protocol, tls, ca, tls_name, tls_insecure_skip_verify, tls_min_version, login_method, sasl_ir, forward_id, trusted, down_time, probe_user, probe_password, compress)",
            "8: default: undefined backend \"zz\"",
            "9: syntax error: expected \"[section]\" or \"key = value\"",
            "11: listen: invalid port \"99999\" (expected 1-65535)",
        ]
    );
}

#[test]
fn keys_under_a_broken_header_are_not_blamed_on_the_previous_section() {
    let e = errs(&format!("{TAIL}[backend x\nhost = h\nport = 1\n"));
    assert_eq!(e, ["9: syntax error: section header without closing \"]\""]);
}

#[test]
fn errors_display_with_path_and_line() {
    let e = Config::parse("[backend x]\n", Path::new("etc/a.ini")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "etc/a.ini:1: [backend x]: missing required key \"host\"\n\
         etc/a.ini:1: no [listener NAME] section: at least one listener is required"
    );
}

#[test]
fn unreadable_file_is_one_error_at_line_0() {
    let p = Path::new("t/configs/does-not-exist.ini");
    let e = Config::load(p).unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert_eq!(e.0[0].line, 0);
    assert!(e.to_string().starts_with("t/configs/does-not-exist.ini:0: cannot read: "));
}

#[test]
fn garbage_never_panics() {
    let inputs = [
        "[",
        "]",
        "=",
        "[]",
        "[a]]",
        "\\",
        "k=\\",
        "[a]\nk=\"",
        "\u{feff}",
        "\r\n\r",
        "[a]\n\tk = v\n",
        "[map m]\ntype = regex\nroute = ((((((((((((((((((((a)))))))))))))))))))) $20 $20\n",
        "[map m]\ntype=regex\nroute = \\p{Nope} b\n",
        "ä = ö\n[ä]\n",
    ];
    for text in inputs {
        let _ = Config::parse(text, Path::new("t.ini"));
    }
}

/// The bad fixtures for `imapgate -t` carry their expected errors as `; expect: LINE: text`.
#[test]
fn fixtures_in_t_configs_fail_as_they_expect() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("t/configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".ini") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let result = Config::parse(&text, Path::new(&name));
        if name.starts_with("good-") {
            assert!(result.is_ok(), "{name}: {:?}", result.err());
            seen += 1;
            continue;
        }
        let got = result.expect_err(&name);
        let expect: Vec<(usize, &str)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("; expect: "))
            .map(|l| {
                let (n, msg) = l.split_once(": ").unwrap();
                (n.parse().unwrap(), msg)
            })
            .collect();
        assert!(!expect.is_empty(), "{name} has no `; expect:` line");
        assert_eq!(got.0.len(), expect.len(), "{name}:\n{got}");
        for (e, (line, msg)) in got.0.iter().zip(&expect) {
            assert_eq!(e.line, *line, "{name}:\n{got}");
            assert!(e.msg.contains(msg), "{name}: {:?} lacks {msg:?}", e.msg);
        }
        seen += 1;
    }
    assert!(seen >= 4, "only {seen} fixtures");
}

/// A listener section after [`TAIL`] (header at line 9, first key at line 10) with the
/// given extra lines; the listen address differs from TAIL's.
fn listener_with(lines: &str) -> String {
    format!("{TAIL}[listener x]\nlisten = 127.0.0.1:2\nmap = m\n{lines}")
}

/// A backend section after [`TAIL`] (header at line 9, `host` at line 10, extra lines
/// from line 11).
fn backend_with(lines: &str) -> String {
    format!("{TAIL}[backend x]\nhost = imap.example.org\n{lines}")
}

#[test]
fn listener_tls_defaults_and_paths_relative_to_the_config_file() {
    let text = listener_with("tls = implicit\ncert = certs/server.pem\nkey = /etc/ssl/k.pem\n");
    let c = parse_ok(&text);
    assert_eq!(c.listeners[0].tls, None);
    assert_eq!(
        c.listeners[1].tls,
        Some(ListenerTls {
            mode: TlsMode::Implicit,
            cert: FileRef { path: "certs/server.pem".into(), line: 13 },
            key: FileRef { path: "/etc/ssl/k.pem".into(), line: 14 },
            sni: vec![],
            min_version: TlsVersion::V1_2,
            login_requires_tls: true,
            client_cert: ClientCertMode::None,
            client_ca: None,
        })
    );
    // Relative names follow the configuration file's directory; absolute ones are kept.
    let c = Config::parse(&text, Path::new("etc/imapgate/imapgate.ini")).unwrap();
    let tls = c.listeners[1].tls.as_ref().unwrap();
    assert_eq!(tls.cert.path, Path::new("etc/imapgate/certs/server.pem"));
    assert_eq!(tls.key.path, Path::new("/etc/ssl/k.pem"));
    let c = Config::parse(&text, Path::new("/srv/gate.ini")).unwrap();
    let tls = c.listeners[1].tls.as_ref().unwrap();
    assert_eq!(tls.cert.path, Path::new("/srv/certs/server.pem"));
    // tls = none, explicit or not, gives no ListenerTls; "no" and "none" are accepted.
    let c = parse_ok(&listener_with("tls = none\nlogin_requires_tls = no\nclient_cert = none\n"));
    assert_eq!(c.listeners[1].tls, None);
}

#[test]
fn listener_tls_all_keys() {
    let c = Config::parse(
        &listener_with(
            "tls = STARTTLS\ncert = a.pem\nkey = a.key\n\
             sni_cert = Mail.Example.org m.pem keys/m.key\n\
             sni_cert = *.example.com. /w.pem w.key\n\
             tls_min_version = 1.3\nlogin_requires_tls = no\n\
             client_cert = require\nclient_ca = ca/clients.pem\n",
        ),
        Path::new("conf/t.ini"),
    )
    .unwrap();
    let tls = c.listeners[1].tls.clone().unwrap();
    assert_eq!(tls.mode, TlsMode::Starttls);
    assert_eq!(tls.cert.path, Path::new("conf/a.pem"));
    let f = |p: &str, line| FileRef { path: p.into(), line };
    assert_eq!(
        tls.sni,
        [
            SniCert {
                name: "mail.example.org".into(),
                cert: f("conf/m.pem", 15),
                key: f("conf/keys/m.key", 15),
            },
            SniCert {
                name: "*.example.com".into(),
                cert: f("/w.pem", 16),
                key: f("conf/w.key", 16),
            },
        ]
    );
    assert_eq!(tls.min_version, TlsVersion::V1_3);
    assert!(!tls.login_requires_tls);
    assert_eq!(tls.client_cert, ClientCertMode::Require);
    assert_eq!(tls.client_ca, Some(f("conf/ca/clients.pem", 20)));
    let c = parse_ok(&listener_with(
        "tls = implicit\ncert = a\nkey = b\nclient_cert = request\nclient_ca = ca\nlogin_requires_tls = yes\n",
    ));
    let tls = c.listeners[1].tls.as_ref().unwrap();
    assert_eq!(tls.client_cert, ClientCertMode::Request);
    assert!(tls.login_requires_tls);
}

#[test]
fn listener_tls_keys_without_tls_are_errors() {
    for (key, value) in [
        ("cert", "a.pem"),
        ("key", "a.key"),
        ("sni_cert", "a.example a.pem a.key"),
        ("tls_min_version", "1.3"),
        ("client_ca", "ca.pem"),
        ("client_cert", "require"),
        ("client_cert", "request"),
    ] {
        let msg = format!("{key}: only valid with tls = starttls or implicit");
        one_err(&listener_with(&format!("{key} = {value}\n")), 12, &msg);
        one_err(&listener_with(&format!("tls = none\n{key} = {value}\n")), 13, &msg);
    }
    one_err(
        &listener_with("login_requires_tls = yes\n"),
        12,
        "login_requires_tls = yes needs tls = starttls or implicit",
    );
    let e = errs(&listener_with("cert = a\nkey = b\nsni_cert = a a a\nsni_cert = b b b\n"));
    let lines: Vec<&str> = e.iter().map(|e| e.split(':').next().unwrap()).collect();
    assert_eq!(lines, ["12", "13", "14", "15"], "{e:#?}");
}

#[test]
fn listener_oauth_mechanisms_are_known_names_in_any_case() {
    let c = parse_ok(&listener_with("oauth_mechanisms = xoauth2, OAuthBearer xoauth2\n"));
    assert_eq!(c.listeners[1].oauth_mechanisms, ["XOAUTH2", "OAUTHBEARER"]);
    assert!(c.listeners[0].oauth_mechanisms.is_empty(), "none unless listed");
    one_err(
        &listener_with("oauth_mechanisms = XOAUTH2 PLAIN\n"),
        12,
        "oauth_mechanisms: unknown mechanism \"PLAIN\" (known: XOAUTH2, OAUTHBEARER)",
    );
}

#[test]
fn listener_tls_needs_cert_and_key() {
    let e = errs(&listener_with("tls = starttls\n"));
    assert_eq!(
        e,
        [
            "12: missing key \"cert\" (required with tls = starttls)",
            "12: missing key \"key\" (required with tls = starttls)",
        ]
    );
    one_err(
        &listener_with("cert = a\ntls = implicit\n"),
        13,
        "missing key \"key\" (required with tls = implicit)",
    );
    one_err(&listener_with("tls = implicit\ncert =\nkey = k\n"), 13, "cert: empty path");
}

#[test]
fn a_bad_tls_value_is_the_only_error() {
    one_err(
        &listener_with("tls = ssl\ncert = a\nsni_cert = a.b c d\n"),
        12,
        "tls: invalid value \"ssl\" (expected none, starttls or implicit)",
    );
    one_err(
        &backend_with("tls = yes\nca = x\n"),
        11,
        "tls: invalid value \"yes\" (expected none, starttls or implicit)",
    );
}

#[test]
fn bad_listener_tls_values() {
    let tls = "tls = implicit\ncert = c\nkey = k\n"; // lines 12-14
    for (line, needle) in [
        ("tls_min_version = 1.1", "tls_min_version: invalid value \"1.1\" (expected 1.2 or 1.3)"),
        (
            "login_requires_tls = true",
            "login_requires_tls: invalid value \"true\" (expected yes or no)",
        ),
        (
            "client_cert = optional",
            "client_cert: invalid value \"optional\" (expected none, request or require)",
        ),
        ("sni_cert = a.example c", "sni_cert: expected \"NAME CERTFILE KEYFILE\""),
        ("sni_cert = a.example c k x", "sni_cert: expected \"NAME CERTFILE KEYFILE\""),
        (
            "sni_cert = a..example c k",
            "sni_cert: invalid name \"a..example\" (expected a DNS name or *.domain)",
        ),
        ("sni_cert = a.*.example c k", "sni_cert: invalid name"),
        (
            "sni_cert = 192.0.2.1 c k",
            "sni_cert: invalid name \"192.0.2.1\" (SNI carries DNS names, not IP addresses)",
        ),
        ("client_ca = ca.pem", "client_ca: only valid with client_cert = request or require"),
        (
            "client_cert = none\nclient_ca = ca.pem",
            "client_ca: only valid with client_cert = request or require",
        ),
    ] {
        let at = 15 + line.matches('\n').count();
        one_err(&listener_with(&format!("{tls}{line}\n")), at, needle);
    }
    for mode in ["request", "require"] {
        one_err(
            &listener_with(&format!("{tls}client_cert = {mode}\n")),
            15,
            &format!("missing key \"client_ca\" (required with client_cert = {mode})"),
        );
    }
    // A bad client_cert value is reported once, not again as a missing or extra client_ca.
    one_err(
        &listener_with(&format!("{tls}client_cert = optional\nclient_ca = ca\n")),
        15,
        "client_cert: invalid value",
    );
}

#[test]
fn duplicate_sni_names_are_errors() {
    one_err(
        &listener_with(
            "tls = implicit\ncert = c\nkey = k\nsni_cert = a.example c1 k1\n\
             sni_cert = *.example c2 k2\nsni_cert = A.Example. c3 k3\n",
        ),
        17,
        "sni_cert: duplicate name \"a.example\" (first at line 15)",
    );
    one_err(
        &listener_with("tls = implicit\ncert = c\ncert = d\nkey = k\n"),
        14,
        "duplicate key \"cert\" (first at line 13)",
    );
}

#[test]
fn backend_tls_defaults_and_port_993() {
    let c = parse_ok(&backend_with(""));
    let b = &c.backends[1];
    assert_eq!((b.tls, b.port), (TlsMode::None, 143));
    let c = parse_ok(&backend_with("tls = implicit\n"));
    let b = &c.backends[1];
    assert_eq!((b.tls, b.port), (TlsMode::Implicit, 993));
    assert_eq!(b.ca, None);
    assert_eq!(b.tls_name, None);
    assert!(!b.tls_insecure_skip_verify);
    assert_eq!(b.tls_min_version, TlsVersion::V1_2);
    let c = parse_ok(&backend_with("tls = starttls\n"));
    assert_eq!((c.backends[1].tls, c.backends[1].port), (TlsMode::Starttls, 143));
    let c = parse_ok(&backend_with("port = 1993\ntls = implicit\n"));
    assert_eq!(c.backends[1].port, 1993);
    let c = Config::parse(
        &backend_with(
            "tls = starttls\nca = ca/backend.pem\ntls_name = Mail.Internal\n\
             tls_insecure_skip_verify = yes\ntls_min_version = 1.3\n",
        ),
        Path::new("conf/t.ini"),
    )
    .unwrap();
    let b = &c.backends[1];
    assert_eq!(b.ca, Some(FileRef { path: "conf/ca/backend.pem".into(), line: 12 }));
    assert_eq!(b.tls_name.as_deref(), Some("mail.internal"));
    assert!(b.tls_insecure_skip_verify);
    assert_eq!(b.tls_min_version, TlsVersion::V1_3);
}

#[test]
fn backend_tls_keys_without_tls_are_errors() {
    for (key, value) in [
        ("ca", "ca.pem"),
        ("tls_name", "imap.example.org"),
        ("tls_insecure_skip_verify", "no"),
        ("tls_min_version", "1.2"),
    ] {
        let msg = format!("{key}: only valid with tls = starttls or implicit");
        one_err(&backend_with(&format!("{key} = {value}\n")), 11, &msg);
        one_err(&backend_with(&format!("tls = none\n{key} = {value}\n")), 12, &msg);
    }
}

#[test]
fn bad_backend_tls_values() {
    for (line, needle) in [
        ("tls_name = a b", "tls_name: invalid name \"a b\" (expected a DNS name or an IP address)"),
        (
            "tls_insecure_skip_verify = 1",
            "tls_insecure_skip_verify: invalid value \"1\" (expected yes or no)",
        ),
        ("tls_min_version = 1.0", "tls_min_version: invalid value \"1.0\""),
        ("ca =", "ca: empty path"),
    ] {
        one_err(&backend_with(&format!("tls = implicit\n{line}\n")), 12, needle);
    }
}

/// The commented-out "TLS examples" of etc/imapgate.ini are valid once uncommented.
#[test]
fn example_config_tls_examples_load_when_uncommented() {
    let text = include_str!("../../etc/imapgate.ini");
    let start = text.find("; TLS examples").expect("TLS examples section");
    let examples: String = text[start..]
        .lines()
        .map(|l| match l.strip_prefix(';') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '[') => rest,
            _ => l,
        })
        .flat_map(|l| [l, "\n"])
        .collect();
    let c = Config::parse(&format!("{}{examples}", &text[..start]), Path::new("etc/imapgate.ini"))
        .unwrap_or_else(|e| panic!("{e}"));
    let listener = |n: &str| c.listeners.iter().find(|l| l.name == n).unwrap();
    let backend = |n: &str| &c.backends[c.backend_index(n).unwrap()];
    let imaps = listener("imaps").tls.as_ref().unwrap();
    assert_eq!(imaps.mode, TlsMode::Implicit);
    assert_eq!(imaps.sni.len(), 1);
    let starttls = listener("imap-starttls").tls.as_ref().unwrap();
    assert_eq!(starttls.mode, TlsMode::Starttls);
    assert_eq!(starttls.cert.path, Path::new("etc/tls/imap.pem"));
    assert_eq!(listener("internal").tls, None);
    assert_eq!(backend("legacy").tls, TlsMode::None);
    let provider = backend("provider");
    assert_eq!((provider.tls, provider.port), (TlsMode::Implicit, 993));
    assert!(provider.ca.is_some());
    let dovecot_tls = backend("dovecot-tls");
    assert_eq!((dovecot_tls.tls, dovecot_tls.port), (TlsMode::Starttls, 143));
    assert_eq!(dovecot_tls.tls_name.as_deref(), Some("mail.example.org"));
}

#[test]
fn metrics_is_an_address_or_a_loopback_port() {
    assert_eq!(parse_ok(MINIMAL).global.metrics, None);
    let at = |v: &str| parse_ok(&format!("[global]\nmetrics = {v}\n{TAIL}")).global.metrics;
    assert_eq!(at("9143"), Some("127.0.0.1:9143".parse().unwrap()));
    assert_eq!(at("127.0.0.2:9000"), Some("127.0.0.2:9000".parse().unwrap()));
    assert_eq!(at("[::1]:9143"), Some("[::1]:9143".parse().unwrap()));
    assert_eq!(at("*:9143"), Some("0.0.0.0:9143".parse().unwrap()));
    one_err(&format!("[global]\nmetrics = 0\n{TAIL}"), 2, "invalid port");
    one_err(&format!("[global]\nmetrics = localhost:9143\n{TAIL}"), 2, "invalid listen address");
}
