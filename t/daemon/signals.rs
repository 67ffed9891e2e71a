//! SIGHUP reload (valid and broken), SIGTERM drain, SIGUSR1 status.

use std::time::{Duration, Instant};

use super::*;

fn reload_keeps_or_replaces(mode: &str) {
    let dv = Dovecot::start();
    let px = Proxy::start(&config(dv.port, &format!("mode = {mode}\ngreeting = first one."), ""));
    let pid = main_pid(&px);
    let mut old = Client::connect(px.port);
    old.login("alice", "secret");
    assert!(text(&old.greeting).ends_with("first one.\r\n"));
    let body = std::fs::read_to_string(&px.config).unwrap();
    // A broken file: errors with file:line in the log, the old configuration stays.
    std::fs::write(
        &px.config,
        body.replace("greeting = first one.", "greeting = second.\nbogus = 1"),
    )
    .unwrap();
    send_signal(pid, "HUP");
    let line = px.wait_for_log(r"reload: .*imapgate\.ini:\d+: unknown key");
    assert!(line.contains("ERROR"), "{line}");
    px.wait_for_log("reload: configuration rejected");
    let c = Client::connect(px.port);
    assert!(text(&c.greeting).ends_with("first one.\r\n"), "{}", text(&c.greeting));
    // A valid one: new sessions use it, the running one goes on.
    std::fs::write(&px.config, body.replace("greeting = first one.", "greeting = second."))
        .unwrap();
    send_signal(pid, "HUP");
    px.wait_for_log("reload: .* loaded; new sessions use it");
    let c = Client::connect(px.port);
    assert!(text(&c.greeting).ends_with("second.\r\n"), "{}", text(&c.greeting));
    old.cmd_ok("N", "NOOP");
    old.logout();
}

#[test]
fn sighup_reloads_a_valid_config_and_keeps_the_old_one_when_broken() {
    reload_keeps_or_replaces("thread");
}

#[test]
fn sighup_reloads_in_fork_mode_too() {
    reload_keeps_or_replaces("fork");
}

#[test]
fn sighup_reopens_the_log_file() {
    let dv = Dovecot::start();
    let px = Proxy::start(&config(dv.port, "log = file\nlog_file = @DIR@/imapgate.log", ""));
    let log = px.dir().join("imapgate.log");
    let pid = pid_of(&crate::common::proxy::wait_for_log_in("started", || {
        std::fs::read_to_string(&log).unwrap_or_default()
    }));
    std::fs::rename(&log, px.dir().join("imapgate.log.1")).unwrap();
    send_signal(pid, "HUP");
    crate::common::proxy::wait_for_log_in("log file .* reopened", || {
        std::fs::read_to_string(&log).unwrap_or_default()
    });
}

fn drain(mode: &str, expect_bye: bool) {
    let dv = Dovecot::start();
    let mut px = Proxy::start(&config(dv.port, &format!("mode = {mode}\nshutdown_grace = 2s"), ""));
    let pid = main_pid(&px);
    let mut c = Client::connect(px.port);
    c.login("alice", "secret");
    let t = Instant::now();
    send_signal(pid, "TERM");
    px.wait_for_log("shutting down: 1 sessions open");
    // No new connections, but the open session keeps working during the grace period.
    let refused = std::net::TcpStream::connect(("127.0.0.1", px.port));
    assert!(refused.is_err(), "still accepting after SIGTERM");
    c.cmd_ok("N", "NOOP");
    c.set_timeout(Duration::from_secs(15));
    let rest = text(&c.read_to_eof());
    assert!(t.elapsed() >= Duration::from_secs(2), "ended before the grace period");
    wait_until(Duration::from_secs(15), || (!px.is_running()).then_some(()));
    let status = px.stop();
    assert!(status.is_some_and(|s| s.success()), "exit status {status:?}");
    if expect_bye {
        assert!(rest.contains("* BYE"), "no BYE at shutdown: {rest:?}");
    }
}

#[test]
fn sigterm_stops_accepting_drains_and_exits_0() {
    drain("thread", false);
}

#[test]
fn sigterm_stops_accepting_drains_and_exits_0_in_fork_mode() {
    drain("fork", false);
}

// The BYE comes from the relay loop once it watches `signals::shutdown_fd()`.
#[test]
fn sigterm_says_bye_to_sessions_left_after_the_grace_period() {
    drain("thread", true);
    drain("fork", true);
}

#[test]
fn sigusr1_logs_a_status_line() {
    let dv = Dovecot::start();
    let px = Proxy::start(&config(dv.port, "", ""));
    let pid = main_pid(&px);
    let mut c = Client::connect(px.port);
    c.login("alice", "secret");
    send_signal(pid, "USR1");
    px.wait_for_log(r"STATUS mode=thread sessions_open=1 sessions_total=\d+ .*bytes_from_clients=\d+ .*backends=");
    c.logout();
}

/// Thread mode: discovery follows a reload. A backend the reload adds is probed at once,
/// and the new `discovery_interval` (at start-up 0: one round only) is in force: a
/// backend that goes down afterwards is found down by a later round.
#[test]
fn discovery_probes_the_backends_of_a_reloaded_configuration() {
    let dv = Dovecot::start();
    let mut added = Dovecot::start();
    let px = Proxy::start(&config(dv.port, "mode = thread\ndiscovery_interval = 0", ""));
    let pid = main_pid(&px);
    let body = std::fs::read_to_string(&px.config).unwrap();
    let body = body.replace("discovery_interval = 0", "discovery_interval = 1s")
        + &format!(
            "\n[backend added]\nhost = 127.0.0.1\nport = {}\nconnect_timeout = 2s\n\n\
             [backend gone]\nhost = 127.0.0.1\nport = {}\nconnect_timeout = 2s\n",
            added.port,
            free_port()
        );
    std::fs::write(&px.config, body).unwrap();
    send_signal(pid, "HUP");
    px.wait_for_log("reload: .* loaded; new sessions use it");
    // Probed in file order: once `gone` is found down, `added` was found up.
    px.wait_for_log(r"BACKEND-DOWN backend=gone ");
    assert!(!px.log().contains("BACKEND-DOWN backend=added"), "{}", px.log());
    added.kill();
    px.wait_for_log(r"BACKEND-DOWN backend=added ");
}

/// Thread mode: what discovery learned before a reload still shapes the greeting after
/// it (here with `discovery_interval = 0`, so nothing is probed on a timer).
#[test]
fn the_greeting_keeps_the_backend_capabilities_across_a_reload() {
    let dv = Dovecot::start_with(
        "imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE XRELOADMARK",
    );
    let px = Proxy::start(&config(dv.port, "mode = thread\ndiscovery_interval = 0", ""));
    let pid = main_pid(&px);
    let marked = |c: &Client| text(&c.greeting).contains("XRELOADMARK");
    let learned = wait_until(WAIT, || marked(&Client::connect(px.port)).then_some(()));
    assert!(learned.is_some(), "discovery never showed the backend's capabilities");
    let body = std::fs::read_to_string(&px.config).unwrap();
    std::fs::write(&px.config, body.replace("[global]\n", "[global]\ngreeting = reloaded.\n"))
        .unwrap();
    send_signal(pid, "HUP");
    px.wait_for_log("reload: .* loaded; new sessions use it");
    let c = Client::connect(px.port);
    assert!(text(&c.greeting).ends_with("reloaded.\r\n"), "{}", text(&c.greeting));
    assert!(marked(&c), "after the reload: {}", text(&c.greeting));
}
