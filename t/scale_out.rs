//! Scale-out (issue 17): a real HAProxy in front of three imapgate instances that share
//! nothing but one LDAP directory, which routes every user to a pool of two Dovecots
//! with `balance = hash`. The instances agree on each user's backend by construction
//! (rendezvous hashing over the backends' names), which the Dovecots' own logs show;
//! losing a Dovecot moves only its users, and every instance moves them the same way;
//! a SIGTERM on one instance loses no login; the instances' metrics add up to the logins.
//!
//! This is also the demonstration: `cargo test --test t scale_out -- --nocapture`
//! prints the HAProxy configuration and where each user landed.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::client::last_line;
use crate::common::slapd::{person, Slapd, BASE};
use crate::common::*;
use crate::metrics::{scrape, value};

const USERS: usize = 200;

fn user(n: usize) -> String {
    format!("fleet{n}")
}

/// The imapgate configuration every instance runs: the same file but for the port and
/// the process model (`thread` or `fork`).
fn gate_config(mode: &str, metrics: u16, d1: u16, d2: u16, ldap_url: &str) -> String {
    format!(
        "[global]\nmode = {mode}\nmetrics = {metrics}\nlogin_failure_delay = 0s\nshutdown_grace = 10s\n\n\
         [backend d1]\nhost = 127.0.0.1\nport = {d1}\ndown_time = 1m\n\n\
         [backend d2]\nhost = 127.0.0.1\nport = {d2}\ndown_time = 1m\n\n\
         [pool fleet]\nbackends = d1 d2\nbalance = hash\n\n\
         [map users]\ntype = ldap\nurl = {ldap_url}\nbase = {BASE}\n\
         filter = (&(objectClass=inetOrgPerson)(uid=%u))\nfield = backend l\n\n\
         [listener imap]\nlisten = 127.0.0.1:@PORT@\nmap = users\n\
         proxy_protocol = yes\nproxy_trusted = 127.0.0.1\n"
    )
}

/// HAProxy's configuration: round robin over the instances with PROXY v2; a health check
/// that waits for imapgate's greeting; a refused connection retried on another instance.
fn haproxy_config(port: u16, gates: &[u16]) -> String {
    let mut cfg = format!(
        "global\n  maxconn 2000\n\
         defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n\
         \x20 retries 3\n  option redispatch 1\n\
         listen imap\n  bind 127.0.0.1:{port}\n  balance roundrobin\n\
         \x20 option tcp-check\n  tcp-check expect string \"* OK\"\n"
    );
    for (i, gate) in gates.iter().enumerate() {
        cfg.push_str(&format!(
            "  server gate{i} 127.0.0.1:{gate} send-proxy-v2 check check-send-proxy inter 500ms fall 1 rise 1\n"
        ));
    }
    cfg
}

struct Fleet {
    dovecots: Vec<Dovecot>,
    gates: Vec<Proxy>,
    /// Each instance's metrics port.
    metrics: Vec<u16>,
    haproxy: Child,
    port: u16,
    _ldap: Slapd,
    _dir: TempDir,
}

impl Fleet {
    fn start() -> Fleet {
        let haproxy = require_tool("haproxy", "haproxy");
        let dovecots = vec![Dovecot::start(), Dovecot::start()];
        let people: Vec<String> =
            (0..USERS).map(|n| person(&user(n), "ldap-unused", &[("l", "fleet")])).collect();
        let ldap = Slapd::start(&people);
        // Two instances in thread mode, one in fork mode: the process model does not
        // change where a user goes.
        let (d1, d2, url) = (dovecots[0].port, dovecots[1].port, ldap.url());
        let mut metrics = Vec::new();
        let mut gates = Vec::new();
        for mode in ["thread", "thread", "fork"] {
            metrics.push(free_port());
            gates.push(Proxy::start(&gate_config(mode, metrics[gates.len()], d1, d2, &url)));
        }
        let dir = TempDir::new("haproxy");
        let ports: Vec<u16> = gates.iter().map(|g| g.port).collect();
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let cfg = haproxy_config(port, &ports);
            std::fs::write(dir.join("haproxy.cfg"), &cfg).unwrap();
            let err = std::fs::File::create(dir.join("haproxy.err")).unwrap();
            let mut child = Command::new(&haproxy)
                .args(["-db", "-f"])
                .arg(dir.join("haproxy.cfg"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(err)
                .spawn()
                .expect("run haproxy");
            if wait_for_port(port, &mut child, Duration::from_secs(10)) {
                println!("HAProxy configuration:\n{cfg}");
                let fleet = Fleet {
                    dovecots,
                    gates,
                    metrics,
                    haproxy: child,
                    port,
                    _ldap: ldap,
                    _dir: dir,
                };
                fleet.wait_all_checked_up();
                return fleet;
            }
            stop_child(&mut child, Duration::from_secs(5));
            last = std::fs::read_to_string(dir.join("haproxy.err")).unwrap_or_default();
        }
        panic!("haproxy did not start:\n{last}");
    }

    /// Waits until HAProxy's health check has reached every instance (each logged a
    /// session from the check), so round robin uses all three.
    fn wait_all_checked_up(&self) {
        for gate in &self.gates {
            gate.wait_for_log(r"SESSION-START id=\d+ client=127\.0\.0\.1:\d+ listener=imap");
        }
        std::thread::sleep(Duration::from_millis(600));
    }

    /// Logs `user` in through HAProxy and out again; the tagged answer's status.
    fn login(&self, user: &str) -> Result<(), String> {
        let mut c = Client::connect(self.port);
        if !c.greeting.starts_with(b"* OK") {
            return Err(format!("greeting {}", text(&c.greeting)));
        }
        let r = c.try_login(user, "secret");
        let answer = text(last_line(&r)).trim_end().to_string();
        if !answer.contains(" OK") {
            return Err(answer);
        }
        c.logout();
        Ok(())
    }

    /// The Dovecots (0 or 1) each user logged in to, from the Dovecots' own logs.
    fn landings(&self) -> BTreeMap<String, BTreeSet<usize>> {
        let rx = regex::Regex::new(r"Login: user=<(fleet\d+)>").unwrap();
        let mut out: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
        for (i, d) in self.dovecots.iter().enumerate() {
            for cap in rx.captures_iter(&d.log()) {
                out.entry(cap[1].to_string()).or_default().insert(i);
            }
        }
        out
    }

    /// Successful logins each instance logged (`LOGIN ... result=ok`).
    fn logins_per_gate(&self) -> Vec<usize> {
        self.gates
            .iter()
            .map(|g| {
                g.log()
                    .lines()
                    .filter(|l| l.contains("LOGIN id=") && l.contains("result=ok"))
                    .count()
            })
            .collect()
    }
}

/// The successful and the failed logins all instances count in their metrics.
fn logins_in_metrics(fleet: &Fleet) -> (f64, f64) {
    let mut sum = (0.0, 0.0);
    for port in &fleet.metrics {
        let body = scrape(*port);
        sum.0 += value(&body, OK_LOGINS).unwrap_or(0.0);
        sum.1 += body
            .lines()
            .filter(|l| l.starts_with("imapgate_logins_total{") && l.contains("result=\"failed\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    sum
}

const OK_LOGINS: &str = r#"imapgate_logins_total{listener="imap",result="ok",reason="none"}"#;

impl Drop for Fleet {
    fn drop(&mut self) {
        stop_child(&mut self.haproxy, Duration::from_secs(5));
    }
}

#[test]
fn behind_haproxy_every_instance_sends_a_user_to_the_same_backend() {
    let mut fleet = Fleet::start();

    // Every user logs in three times; round robin spreads each user's logins over the
    // instances, and each Dovecot's log shows which users reached it.
    for round in 0..3 {
        for n in 0..USERS {
            fleet.login(&user(n)).unwrap_or_else(|e| panic!("round {round}, {}: {e}", user(n)));
        }
    }
    let per_gate = fleet.logins_per_gate();
    assert_eq!(per_gate.iter().sum::<usize>(), 3 * USERS, "logins per instance {per_gate:?}");
    assert!(
        per_gate.iter().all(|&n| n >= USERS / 2),
        "round robin skipped an instance: {per_gate:?}"
    );
    let landings = fleet.landings();
    assert_eq!(landings.len(), USERS);
    let split: Vec<usize> =
        (0..2).map(|d| landings.values().filter(|set| set.contains(&d)).count()).collect();
    for (u, set) in &landings {
        assert_eq!(set.len(), 1, "{u} reached both Dovecots");
    }
    assert!(split.iter().all(|&n| n >= USERS / 4), "users per Dovecot {split:?}");
    println!("users per Dovecot: {split:?}; successful logins per imapgate: {per_gate:?}");
    let home: BTreeMap<String, usize> =
        landings.iter().map(|(u, set)| (u.clone(), *set.iter().next().unwrap())).collect();

    // Dovecot 1 stops: its users move to Dovecot 0 on every instance; Dovecot 0's users
    // stay where they were. Fresh log positions tell the new landings apart.
    let before: Vec<usize> = fleet.dovecots.iter().map(|d| d.log().len()).collect();
    fleet.dovecots[1].kill();
    for n in 0..USERS {
        fleet.login(&user(n)).unwrap_or_else(|e| panic!("with d2 down, {}: {e}", user(n)));
    }
    let moved = fleet.dovecots[0].log()[before[0]..].to_string();
    for n in 0..USERS {
        let u = user(n);
        assert!(
            moved.contains(&format!("Login: user=<{u}>")),
            "{u} (home {}) did not reach the remaining Dovecot",
            home[&u]
        );
    }
    for gate in &fleet.gates {
        gate.wait_for_log(r"BACKEND-DOWN backend=d2 ");
    }

    // The instances' metrics add up to the logins made so far (fork-mode sessions
    // report to their listener process asynchronously: wait for them).
    let made = (4 * USERS) as f64;
    let counted = wait_until(WAIT, || {
        let c = logins_in_metrics(&fleet);
        (c == (made, 0.0)).then_some(c)
    });
    assert_eq!(counted, Some((made, 0.0)), "last: {:?}", logins_in_metrics(&fleet));

    // SIGTERM to the fork-mode instance, then to a thread-mode one, while logins keep
    // coming: HAProxy's connections already queued there are served, new ones are
    // refused and retried on another instance.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let made = Arc::new(AtomicUsize::new(0));
    let port = fleet.port;
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (stop, failures, made) = (stop.clone(), failures.clone(), made.clone());
            std::thread::spawn(move || {
                let mut errors = Vec::new();
                let mut n = w;
                while !stop.load(Ordering::Relaxed) {
                    let u = user(n % USERS);
                    let mut c = Client::connect(port);
                    let ok = c.greeting.starts_with(b"* OK")
                        && text(last_line(&c.try_login(&u, "secret"))).contains(" OK");
                    if ok {
                        c.logout();
                        made.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures.fetch_add(1, Ordering::Relaxed);
                        errors.push(format!("{u}: {}", c.transcript()));
                    }
                    n += 4;
                }
                errors
            })
        })
        .collect();
    for gate in [2, 1] {
        std::thread::sleep(Duration::from_millis(700));
        send_signal(fleet.gates[gate].pid(), "TERM");
        fleet.gates[gate].wait_for_log(r"all sessions ended; exiting");
    }
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    let errors: Vec<String> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert_eq!(failures.load(Ordering::Relaxed), 0, "logins lost around the SIGTERM:\n{errors:?}");
    let made = made.load(Ordering::Relaxed);
    assert!(made > 20, "too few logins during the SIGTERM test: {made}");
    println!("{made} logins around the SIGTERM, none lost");
    for gate in [2, 1] {
        assert_eq!(fleet.gates[gate].stop().and_then(|s| s.code()), Some(0));
    }
}
