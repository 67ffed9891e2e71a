use super::*;

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
        Err(e) => {
            e.0.iter()
                .map(|e| format!("{}: {}", e.line, e.msg))
                .collect()
        }
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
    assert_eq!(g.log_file, None);
    assert_eq!(g.log_level, log::LevelFilter::Info);
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
            host: "127.0.0.1".into(),
            port: 143,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
        }]
    );
    assert_eq!(c.maps.len(), 1);
    assert_eq!(c.maps[0].name, "users");
    match &c.maps[0].kind {
        MapKind::Static { default, users } => {
            assert_eq!(*default, Some(0));
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
        }]
    );
    assert_eq!(c.backend_index("dovecot"), Some(0));
    assert_eq!(c.backend_index("nope"), None);
    assert_eq!(c.map_index("users"), Some(0));
}

#[test]
fn example_config_loads() {
    let c = parse_ok(include_str!("../../etc/imapgate.ini"));
    assert!(!c.listeners.is_empty());
    assert!(c
        .maps
        .iter()
        .any(|m| matches!(m.kind, MapKind::Regex { .. })));
    assert!(c
        .maps
        .iter()
        .any(|m| matches!(m.kind, MapKind::Static { .. })));
    // The values written out in the example are the documented defaults.
    assert_eq!(
        format!("{:?}", c.global),
        format!("{:?}", Global::default())
    );
    let minimal = parse_ok(MINIMAL);
    assert_eq!(c.backends[0], minimal.backends[0]);
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
    assert_eq!(g.log_file, Some("/var/log/imapgate.log".into()));
    assert_eq!(g.log_level, log::LevelFilter::Debug);
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
    assert_eq!(
        lines,
        ["2", "3", "4", "5", "6", "7", "8", "9", "10", "11"],
        "{e:#?}"
    );
    assert!(e[3].contains("thread_stack_size: 32k is out of range (64k to 64m)"));
    assert!(e[9].contains("greeting: must not be empty"));
}

#[test]
fn log_file_and_log_file_target_require_each_other() {
    one_err(
        &format!("[global]\nlog = file\n{TAIL}"),
        2,
        "requires log_file",
    );
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
    let want: Vec<SocketAddr> = ["[::1]:143", "127.0.0.1:143", "0.0.0.0:1143"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(c.listeners[0].listen, want);
    match &c.maps[0].kind {
        MapKind::Static { users, .. } => {
            assert_eq!(users.get("a"), Some(&0));
            assert_eq!(users.get("b"), Some(&1));
        }
        k => panic!("{k:?}"),
    }
}

#[test]
fn unknown_key_is_reported_at_its_line() {
    one_err(
        &format!("{TAIL}[backend x]\nhots = h\nhost = h\n"),
        10,
        "unknown key \"hots\" in [backend x] (known keys: host, port, connect_timeout, timeout)",
    );
}

#[test]
fn duplicate_key_is_reported_at_the_second_line() {
    one_err(
        &format!("{TAIL}[backend x]\nhost = h\nport = 1\nport = 2\n"),
        12,
        "duplicate key \"port\" (first at line 11)",
    );
}

#[test]
fn section_problems_are_reported_at_the_header() {
    one_err(
        &format!("{TAIL}[frontend x]\nhost = h\n"),
        9,
        "unknown section [frontend x]",
    );
    one_err(
        &format!("{TAIL}[rule hide]\nkind = x\n"),
        9,
        "rule sections are not supported yet",
    );
    one_err(&format!("{TAIL}[backend]\n"), 9, "expected [backend NAME]");
    one_err(
        &format!("{TAIL}[backend a b]\n"),
        9,
        "expected [backend NAME]",
    );
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
    one_err(
        &format!("{TAIL}[map x]\ndefault = b\n"),
        9,
        "[map x]: missing required key \"type\"",
    );
    one_err(
        &format!("{TAIL}[listener x]\nmap = m\n"),
        9,
        "missing required key \"listen\"",
    );
    one_err(
        &format!("{TAIL}[listener x]\nlisten = *:2\n"),
        9,
        "missing required key \"map\"",
    );
}

#[test]
fn same_name_in_different_kinds_is_fine() {
    parse_ok("[backend x]\nhost = h\n[map x]\ntype = static\ndefault = x\n[listener x]\nlisten = *:1\nmap = x\n");
}

#[test]
fn keys_outside_sections_are_errors() {
    one_err(
        &format!("host = h\n{TAIL}"),
        1,
        "key \"host\" outside of any section",
    );
}

#[test]
fn missing_listener_is_reported_at_the_last_line() {
    let e = errs("[backend b]\nhost = h\n\n; end\n");
    assert_eq!(
        e,
        ["4: no [listener NAME] section: at least one listener is required"]
    );
    assert_eq!(
        errs(""),
        ["0: no [listener NAME] section: at least one listener is required"]
    );
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
    one_err(
        &format!("{TAIL}[backend x]\nhost = a b\n"),
        10,
        "host: invalid host \"a b\"",
    );
    one_err(
        &format!("{TAIL}[backend x]\nhost = h:143\n"),
        10,
        "put the port in `port`",
    );
    one_err(
        &format!("{TAIL}[backend x]\nhost = h\nport = 0\n"),
        11,
        "port: invalid port \"0\"",
    );
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
    one_err(
        &format!("{TAIL}[listener x]\nlisten =\nmap = m\n"),
        10,
        "listen: empty value",
    );
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
        "type: invalid value \"hash\" (expected static or regex)",
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
    one_err(
        &format!("{TAIL}[map x]\ntype = regex\nroute = a b c d\n"),
        11,
        "route: expected",
    );
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
            "2: log_level: invalid value \"chatty\" (expected error, warn, info, debug or trace)",
            "5: unknown key \"prot\" in [backend a] (known keys: host, port, connect_timeout, timeout)",
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
    assert!(e
        .to_string()
        .starts_with("t/configs/does-not-exist.ini:0: cannot read: "));
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
