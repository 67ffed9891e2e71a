//! imapgate benchmark harness: direct Dovecot, imapgate, nginx mail and
//! Perdition in front of one private Dovecot; see bench/README.md.

mod client;
mod load;
mod report;
mod setup;
mod sys;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use client::{Conn, Endpoint};
use report::Rec;
use setup::*;
use setup::Relaunch;

const USAGE: &str = "usage: imapgate-bench [--quick] [--tls] [--reps N] [--secs S] [--idle N]
                      [--targets direct,nginx,perdition,imapgate,imapgate-rules,imapgate-ldap,imapgate-ldap-cache]
                      [--scenarios login,bulk,small,append,idle] [--appends N]
                      [--no-install] [--no-build] [--imapgate PATH] [--keep] [--hold]
  --quick      1 repetition, 2 s login loops, fewer FETCH rounds and APPENDs (about 2-3 min)
  --tls        also measure every target with implicit TLS toward the client
  --reps N     repetitions of every measurement (default 3; the median is reported)
  --secs S     duration of each login loop (default 6)
  --idle N     idle logged-in sessions for the memory figure (default 1000)
  --targets    subset of targets, comma separated (default all but imapgate-rules, which
               is a second imapgate whose listener has rules: judged mode, and
               imapgate-ldap and imapgate-ldap-cache, which route through an LDAP map
               on a slapd of the bench's, without and with a cache)
  --scenarios  subset of scenarios, comma separated (default all)
  --appends N  messages per APPEND run (default 2000, --quick 500)
  --no-install do not apt-get install missing peers
  --no-build   do not run cargo build --release (use target/release/imapgate)
  --imapgate P use this imapgate binary (implies --no-build)
  --keep       keep the temp dir (configs, logs) after the run
  --hold       set everything up, sanity-check, print the endpoints, wait for Ctrl-C";

pub struct Opts {
    pub quick: bool,
    pub tls: bool,
    pub reps: usize,
    pub secs: f64,
    pub idle: usize,
    pub bulk_rounds: usize,
    pub small_rounds: usize,
    pub appends: usize,
    pub targets: Vec<String>,
    pub scenarios: Vec<String>,
    install: bool,
    build: bool,
    imapgate: Option<PathBuf>,
    keep: bool,
    hold: bool,
}

/// Everything `measure` can run, in the order it runs them.
const SCENARIOS: [&str; 6] = ["login", "bulk", "small", "bulkz", "append", "idle"];

/// Outstanding APPENDs of the pipelined APPEND run (a bulk uploader's window).
const APPEND_WINDOW: usize = 16;

impl Opts {
    fn runs(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        quick: false,
        tls: false,
        reps: 3,
        secs: 6.0,
        idle: 1000,
        bulk_rounds: 5,
        small_rounds: 10,
        appends: 2000,
        targets: ["direct", "nginx", "perdition", "imapgate"].map(String::from).to_vec(),
        scenarios: SCENARIOS.map(String::from).to_vec(),
        install: true,
        build: true,
        imapgate: None,
        keep: false,
        hold: false,
    };
    let mut reps = None;
    let mut secs = None;
    let mut appends = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--quick" => o.quick = true,
            "--tls" => o.tls = true,
            "--reps" => reps = Some(val("--reps")?.parse().map_err(|_| "bad --reps")?),
            "--secs" => secs = Some(val("--secs")?.parse().map_err(|_| "bad --secs")?),
            "--idle" => o.idle = val("--idle")?.parse().map_err(|_| "bad --idle")?,
            "--targets" => o.targets = val("--targets")?.split(',').map(String::from).collect(),
            "--scenarios" => o.scenarios = val("--scenarios")?.split(',').map(String::from).collect(),
            "--appends" => appends = Some(val("--appends")?.parse().map_err(|_| "bad --appends")?),
            "--no-install" => o.install = false,
            "--no-build" => o.build = false,
            "--imapgate" => {
                o.imapgate = Some(PathBuf::from(val("--imapgate")?));
                o.build = false;
            }
            "--keep" => o.keep = true,
            "--hold" => o.hold = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {a}\n{USAGE}")),
        }
    }
    for t in &o.targets {
        if !report::TARGETS.contains(&t.as_str()) {
            return Err(format!("unknown target {t}"));
        }
    }
    for sc in &o.scenarios {
        if !SCENARIOS.contains(&sc.as_str()) {
            return Err(format!("unknown scenario {sc}"));
        }
    }
    if o.quick {
        o.reps = 1;
        o.secs = 2.0;
        o.bulk_rounds = 2;
        o.small_rounds = 4;
        o.appends = 500;
    }
    o.appends = appends.unwrap_or(o.appends).max(1);
    o.reps = reps.unwrap_or(o.reps).max(1);
    o.secs = secs.unwrap_or(o.secs);
    Ok(o)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("authd") {
        let p = |i: usize| args.get(i).and_then(|s| s.parse().ok()).expect("authd PORT DOVECOT_PORT");
        setup::authd_main(p(2), p(3));
    }
    if args.get(1).map(String::as_str) == Some("load") {
        std::process::exit(load_cmd(&args[2..]));
    }
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(64);
        }
    };
    sys::install_signal_handling();
    let code = match run(&opts) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("\nbench: FAILED: {e}");
            sys::keep_temp();
            1
        }
    };
    sys::cleanup();
    std::process::exit(code);
}

/// `load KIND PORT [N] [SECS]`: one scenario against a running endpoint
/// (TLS when BENCH_CA names the CA file), for profiling a proxy by hand while
/// `--hold` keeps it up.
/// KIND: login (N clients, SECS), bulk, small, idle (N sessions held SECS),
/// append (N messages, at most SECS of them outstanding; user `append-load-<pid>`).
fn load_cmd(a: &[String]) -> i32 {
    let kind = a.first().map(String::as_str).unwrap_or("");
    let port: u16 = a.get(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    let n: usize = a.get(2).and_then(|p| p.parse().ok()).unwrap_or(64);
    let secs: f64 = a.get(3).and_then(|p| p.parse().ok()).unwrap_or(10.0);
    // BENCH_CA=path/to/ca.pem: connect with TLS trusting that CA.
    let tls = std::env::var_os("BENCH_CA").map(|ca| client::tls_config(std::path::Path::new(&ca)));
    let e = ep(port, &tls);
    match kind {
        "login" => {
            let r = load::login_loop(&e, n, Duration::from_secs_f64(secs), "p");
            println!(
                "{:.0} sessions/s, p50 {:.1} ms, p99 {:.1} ms, {} errors {:?}",
                r.sessions as f64 / r.secs,
                r.p50_ms,
                r.p99_ms,
                r.errors,
                r.first_error
            );
        }
        "bulk" | "small" => {
            let (user, count, size) =
                if kind == "bulk" { (BIG_USER, BIG_COUNT, BIG_SIZE) } else { (SMALL_USER, SMALL_COUNT, SMALL_SIZE) };
            match load::fetch(&e, user, count as u64, size as u64, n, &[], false) {
                Ok(Some(f)) => println!("{:.0} MB/s", f.bytes as f64 / 1e6 / f.secs),
                Ok(None) => println!("n/a"),
                Err(err) => {
                    eprintln!("{err}");
                    return 1;
                }
            }
        }
        "append" => {
            let user = format!("append-load-{}", std::process::id());
            match load::append(&e, &user, n, SMALL_SIZE, secs as usize, &[]) {
                Ok(a) => println!(
                    "{:.0} messages/s, {:.1} MB/s, p50 {:.2} ms per APPEND",
                    a.messages as f64 / a.secs,
                    a.bytes as f64 / 1e6 / a.secs,
                    a.p50_ms
                ),
                Err(err) => {
                    eprintln!("{err}");
                    return 1;
                }
            }
        }
        "idle" => {
            let (c, errors, retries, first) = load::open_idle(&e, n, 8);
            println!("{} sessions open, {errors} errors, {retries} failed attempts {first:?}; holding {secs} s", c.len());
            std::thread::sleep(Duration::from_secs_f64(secs));
        }
        _ => {
            eprintln!("usage: imapgate-bench load login|bulk|small|idle|append PORT [N] [SECS|WINDOW]");
            return 64;
        }
    }
    0
}

/// One measured target in one mode.
pub struct Target {
    pub name: &'static str,
    pub ep: Endpoint,
    /// Roots of the proxy's process tree (empty for direct Dovecot); shared by
    /// the plain and TLS targets of one process, updated when it is restarted.
    pub proxy: Rc<RefCell<Vec<u32>>>,
    /// Restarts the proxy (before each idle-memory measurement).
    pub relaunch: Option<Relaunch>,
}

/// A mode's targets by name; None = not available (printed as n/a).
type ModeTargets = Vec<(&'static str, Option<Target>)>;

/// One attempt of a scenario: pushes (metric, value), returns other processes' CPU %.
type ScenarioRun<'a> = dyn FnMut(&mut Vec<(String, f64)>) -> Result<f64, String> + 'a;

fn procs(pids: Vec<u32>) -> Rc<RefCell<Vec<u32>>> {
    Rc::new(RefCell::new(pids))
}

fn ep(port: u16, tls: &Option<std::sync::Arc<rustls::ClientConfig>>) -> Endpoint {
    Endpoint {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        tls: tls.clone(),
    }
}

fn versions() -> String {
    let out = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .map(|o| {
                let s = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
                s.lines().next().unwrap_or("").trim().to_string()
            })
            .unwrap_or_default()
    };
    let perdition = out("dpkg-query", &["-W", "-f", "${Version}", "perdition"]);
    format!(
        "dovecot {}, {}, perdition {}, kernel {}",
        out("dovecot", &["--version"]),
        out("nginx", &["-v"]).replace("nginx version: ", ""),
        perdition,
        out("uname", &["-r"])
    )
}

fn run(o: &Opts) -> Result<(), String> {
    let t_start = Instant::now();
    let nofile = sys::raise_nofile(65536);
    if (nofile as usize) < 4 * o.idle + 1000 {
        eprintln!("bench: warning: RLIMIT_NOFILE is {nofile}; raise it (ulimit -n 65536)");
    }
    if o.install {
        install_peers()?;
    }
    let want = |t: &str| o.targets.iter().any(|x| x == t);
    let gate_bin = if !["imapgate", "imapgate-rules", "imapgate-ldap", "imapgate-ldap-cache"].iter().any(|t| want(t)) {
        None
    } else if let Some(p) = &o.imapgate {
        Some(p.clone())
    } else if o.build {
        Some(build_imapgate()?)
    } else {
        Some(repo_top().join("target/release/imapgate"))
    };

    let dir = make_temp()?;
    sys::set_temp(&dir, o.keep);
    eprintln!("bench: working in {}", dir.display());
    let tls_cfg = if o.tls {
        make_certs(&dir)?;
        Some(client::tls_config(&dir.join("tls/ca.pem")))
    } else {
        None
    };
    let dovecot = start_dovecot(&dir, o.tls)?;
    // Warm the page cache and Dovecot's indexes.
    let direct = ep(dovecot.port, &None);
    for (user, count, size) in [(BIG_USER, BIG_COUNT, BIG_SIZE), (SMALL_USER, SMALL_COUNT, SMALL_SIZE)] {
        load::fetch(&direct, user, count as u64, size as u64, 1, &[], false)
            .map_err(|e| format!("warm-up {user}: {e}\n{}", dovecot_log(&dir)))?;
    }

    std::thread::sleep(Duration::from_secs(1));
    *DOVECOT.lock().unwrap() = (dovecot.pid, sys::tree(dovecot.pid).len());

    // Targets per mode; None = not available (printed as n/a).
    let mut modes: Vec<(&'static str, ModeTargets)> = Vec::new();
    let mut plain = Vec::new();
    let mut tls = Vec::new();
    let tls_none: Option<std::sync::Arc<rustls::ClientConfig>> = None;
    if want("direct") {
        plain.push(("direct", Some(Target { name: "direct", ep: ep(dovecot.port, &tls_none), proxy: procs(vec![]), relaunch: None })));
        tls.push(("direct", Some(Target { name: "direct", ep: ep(dovecot.tls_port, &tls_cfg), proxy: procs(vec![]), relaunch: None })));
    }
    if want("nginx") {
        let n = start_nginx(&dir, dovecot.port, o.tls, nofile)?;
        let pr = procs(vec![n.pid]);
        let rl = Some(n.relaunch.clone());
        plain.push(("nginx", Some(Target { name: "nginx", ep: ep(n.port, &tls_none), proxy: pr.clone(), relaunch: rl.clone() })));
        tls.push(("nginx", Some(Target { name: "nginx", ep: ep(n.tls_port, &tls_cfg), proxy: pr, relaunch: rl })));
    }
    if want("perdition") {
        let p = start_perdition(&dir, dovecot.port, false)?;
        plain.push(("perdition", Some(Target { name: "perdition", ep: ep(p.port, &tls_none), proxy: procs(vec![p.pid]), relaunch: Some(p.relaunch) })));
        if o.tls {
            let p = start_perdition(&dir, dovecot.port, true)?;
            tls.push(("perdition", Some(Target { name: "perdition", ep: ep(p.port, &tls_cfg), proxy: procs(vec![p.pid]), relaunch: Some(p.relaunch) })));
        }
    }
    let ldap_port = if want("imapgate-ldap") || want("imapgate-ldap-cache") {
        // Every user a scenario logs in as: the sanity and warm-up users, pN and lNuM.
        let mut users: Vec<String> = vec![BIG_USER.into(), SMALL_USER.into()];
        users.extend((0..256).map(|i| format!("p{i}")));
        for clients in [16, 64, 256] {
            users.extend((0..clients).map(|i| format!("l{clients}u{i}")));
        }
        Some(start_slapd(&dir, &users)?)
    } else {
        None
    };
    for name in ["imapgate", "imapgate-rules", "imapgate-ldap", "imapgate-ldap-cache"].into_iter().filter(|t| want(t)) {
        let Some(bin) = &gate_bin else { break };
        let g = start_imapgate(bin, &dir, name, dovecot.port, o.tls, ldap_port)?;
        let pr = procs(vec![g.pid]);
        let rl = Some(g.relaunch.clone());
        plain.push((name, Some(Target { name, ep: ep(g.port, &tls_none), proxy: pr.clone(), relaunch: rl.clone() })));
        tls.push((name, g.tls_port.map(|p| Target { name, ep: ep(p, &tls_cfg), proxy: pr, relaunch: rl })));
    }
    modes.push(("plain", plain));
    if o.tls {
        modes.push(("tls", tls));
    }

    // Sanity: a login and a FETCH through every target return the expected bytes.
    for (mode, targets) in &modes {
        for (name, t) in targets {
            let Some(t) = t else {
                println!("sanity {mode:5} {name:14}: n/a (not supported by this build)");
                continue;
            };
            sanity(&t.ep).map_err(|e| format!("sanity check {name} ({mode}) failed: {e}"))?;
            println!("sanity {mode:5} {name:14}: ok (login, SELECT, FETCH bytes match)");
        }
    }
    let dports: Vec<u16> = [dovecot.port, dovecot.tls_port].into_iter().filter(|&p| p != 0).collect();
    if o.hold {
        for (mode, targets) in &modes {
            for (name, t) in targets {
                if let Some(t) = t {
                    println!("{mode:5} {name:14} {} proxy pids {:?}", t.ep.addr, t.proxy.borrow());
                }
            }
        }
        println!("users: {BIG_USER}, {SMALL_USER}, any other name; password {PASSWORD}. Ctrl-C to stop.");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }

    let load0 = sys::load_avg();
    let mut recs: Vec<Rec> = Vec::new();
    for rep in 0..o.reps {
        for (mode, targets) in &modes {
            for (_, t) in targets {
                let Some(t) = t else { continue };
                let t0 = Instant::now();
                measure(o, t, mode, rep, &dports, &mut recs)?;
                eprintln!(
                    "bench: rep {}/{} {mode} {} done in {:.0}s (total {:.0}s)",
                    rep + 1,
                    o.reps,
                    t.name,
                    t0.elapsed().as_secs_f64(),
                    t_start.elapsed().as_secs_f64()
                );
            }
        }
    }
    let na: Vec<(String, String)> = modes
        .iter()
        .flat_map(|(m, ts)| ts.iter().filter(|(_, t)| t.is_none()).map(|(n, _)| (m.to_string(), n.to_string())))
        .collect();
    let ctx = format!(
        "{} cores, load average at start {load0}, at end {}; {}; reps {}, login loops {} s, \
         bulk {} x {BIG_COUNT} x {BIG_SIZE} B, small {} x {SMALL_COUNT} x {SMALL_SIZE} B, {} idle sessions, \
         APPEND {} x {SMALL_SIZE} B (LITERAL+; one at a time, and {APPEND_WINDOW} outstanding); \
         Dovecot mail_fsync = {}; scenarios {}; listener rules: imapgate [{}], imapgate-rules [{}]; \
         run time {:.0} s",
        sys::ncpu(),
        sys::load_avg(),
        versions(),
        o.reps,
        o.secs,
        o.bulk_rounds,
        o.small_rounds,
        o.idle,
        o.appends,
        mail_fsync(),
        o.scenarios.join(","),
        rules_line("imapgate").trim_end(),
        rules_line("imapgate-rules").trim_end(),
        t_start.elapsed().as_secs_f64()
    );
    report::report(o, &recs, &na, &ctx)
}

/// Login as big and small, FETCH message 1 and compare to the generated bytes.
fn sanity(ep: &Endpoint) -> Result<(), String> {
    for (user, count, size) in [(BIG_USER, BIG_COUNT, BIG_SIZE), (SMALL_USER, SMALL_COUNT, SMALL_SIZE)] {
        let mut c = Conn::open(ep, 64 << 10).map_err(|e| format!("connect: {e}"))?;
        c.login(user, PASSWORD).map_err(|e| format!("login {user}: {e}"))?;
        let sel = c.cmd_ok("s", "SELECT INBOX", None).map_err(|e| e.to_string())?;
        if sel.exists != Some(count as u64) {
            return Err(format!("{user}: EXISTS {:?}, expected {count}", sel.exists));
        }
        for seq in [1, count] {
            let mut cap = Vec::new();
            c.cmd_ok("f", &format!("FETCH {seq} BODY.PEEK[]"), Some(&mut cap)).map_err(|e| e.to_string())?;
            let got = cap.first().ok_or(format!("{user}: FETCH {seq}: no literal"))?;
            let n = message_number(got).ok_or(format!("{user}: FETCH {seq}: no bench Subject"))?;
            if *got != message(user, n, size) {
                return Err(format!("{user}: FETCH {seq}: {} bytes differ from message {n}", got.len()));
            }
        }
        c.cmd_ok("z", "LOGOUT", None).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// CPU seconds used by processes that are not ours (other work on the machine).
fn foreign() -> f64 {
    sys::machine_busy() - sys::ours_cpu()
}

/// Dovecot's master PID and its process count when idle.
static DOVECOT: std::sync::Mutex<(u32, usize)> = std::sync::Mutex::new((0, 0));

/// Waits until no session is open to Dovecot (previous scenario's sessions
/// gone) and Dovecot's surplus imap processes have exited.
fn quiet(dports: &[u16]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && dports.iter().map(|&p| sys::established(p)).sum::<usize>() > 0 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (pid, base) = *DOVECOT.lock().unwrap();
    if pid != 0 {
        while Instant::now() < deadline && sys::tree(pid).len() > base + 8 {
            std::thread::sleep(Duration::from_millis(200));
        }
        if sys::tree(pid).len() > base + 8 {
            eprintln!("bench: warning: Dovecot still has {} processes (idle: {base})", sys::tree(pid).len());
        }
    }
    std::thread::sleep(Duration::from_millis(300));
}

/// Before a scenario: sessions of the previous one gone, the proxy still
/// alive, and (for up to 30 s) the machine not busy with other work.
fn prepare(t: &Target, dports: &[u16]) -> Result<(), String> {
    quiet(dports);
    for &p in t.proxy.borrow().iter() {
        if let Some(st) = sys::exited(p) {
            return Err(format!("{} (pid {p}) is gone: {st}", t.name));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (f0, w0) = (foreign(), Instant::now());
        std::thread::sleep(Duration::from_millis(500));
        let pct = 100.0 * (foreign() - f0) / w0.elapsed().as_secs_f64() / sys::ncpu() as f64;
        if pct < 10.0 || Instant::now() > deadline {
            return Ok(());
        }
    }
}

/// Numbers the APPEND users (`append_seq-imapgate-plain-7`), so no two runs share a mailbox.
static APPEND_USERS: AtomicUsize = AtomicUsize::new(0);

/// Share of the machine (percent of all cores) used by other processes.
const REDO_ABOVE_PCT: f64 = 20.0;

fn measure(o: &Opts, t: &Target, mode: &str, rep: usize, dports: &[u16], recs: &mut Vec<Rec>) -> Result<(), String> {
    let dur = Duration::from_secs_f64(o.secs);
    let ncpu = sys::ncpu() as f64;
    let proxy = t.proxy.borrow().clone();
    // Runs one scenario up to 3 times while other processes used more than
    // REDO_ABOVE_PCT of the machine during it; keeps the last attempt.
    let mut scenario = |what: &str, f: &mut ScenarioRun| -> Result<(), String> {
        let mut out = Vec::new();
        for attempt in 0..3 {
            prepare(t, dports)?;
            out.clear();
            let foreign_pct = f(&mut out)?;
            out.push((format!("{what}_foreign_cpu_pct"), foreign_pct));
            if foreign_pct <= REDO_ABOVE_PCT {
                break;
            }
            eprintln!(
                "bench: other processes used {foreign_pct:.0}% of the CPU during {} {mode} {what}{}",
                t.name,
                if attempt < 2 { "; measuring again" } else { "; keeping it" }
            );
        }
        for (metric, value) in out {
            recs.push(Rec { mode: mode.to_string(), target: t.name.to_string(), rep, metric, value });
        }
        Ok(())
    };

    for clients in [16usize, 64].into_iter().filter(|_| o.runs("login")) {
        scenario(&format!("login{clients}"), &mut |out| {
            let (g0, p0, w0, f0) = (sys::self_cpu(), sys::tree_cpu(&proxy), Instant::now(), foreign());
            let r = load::login_loop(&t.ep, clients, dur, &format!("l{clients}u"));
            let (g1, p1, wall) = (sys::self_cpu(), sys::tree_cpu(&proxy), w0.elapsed().as_secs_f64());
            let foreign_pct = 100.0 * (foreign() - f0) / wall / ncpu;
            if r.sessions == 0 {
                return Err(format!("{} {mode}: login loop: no session completed: {:?}", t.name, r.first_error));
            }
            if r.errors > 0 {
                eprintln!(
                    "bench: {} {mode} login x{clients}: {} errors (first: {})",
                    t.name,
                    r.errors,
                    r.first_error.as_deref().unwrap_or("")
                );
            }
            let m = |x: &str| format!("login{clients}_{x}");
            out.push((m("rate"), r.sessions as f64 / r.secs));
            out.push((m("p50_ms"), r.p50_ms));
            out.push((m("p99_ms"), r.p99_ms));
            out.push((m("errors"), r.errors as f64));
            out.push((m("gen_cpu_pct"), 100.0 * (g1 - g0) / wall / ncpu));
            if !proxy.is_empty() {
                out.push((m("cpu_s_per_1000"), (p1 - p0) / r.sessions as f64 * 1000.0));
            }
            Ok(foreign_pct)
        })?;
    }

    for (name, user, count, size, rounds, compress) in [
        ("bulk", BIG_USER, BIG_COUNT, BIG_SIZE, o.bulk_rounds, false),
        ("small", SMALL_USER, SMALL_COUNT, SMALL_SIZE, o.small_rounds, false),
        ("bulkz", BIG_USER, BIG_COUNT, BIG_SIZE, o.bulk_rounds, true),
    ]
    .into_iter()
    .filter(|s| o.runs(s.0))
    {
        scenario(name, &mut |out| {
            let (g0, f0) = (sys::self_cpu(), foreign());
            let f = load::fetch(&t.ep, user, count as u64, size as u64, rounds, &proxy, compress)
                .map_err(|e| format!("{} {mode} {name} FETCH: {e}", t.name))?;
            // A target without COMPRESS has no figure here.
            let Some(f) = f else { return Ok(0.0) };
            let g1 = sys::self_cpu();
            let foreign_pct = 100.0 * (foreign() - f0) / f.secs / ncpu;
            out.push((format!("{name}_mb_s"), f.bytes as f64 / 1e6 / f.secs));
            out.push((format!("{name}_gen_cpu_pct"), 100.0 * (g1 - g0) / f.secs / ncpu));
            if !proxy.is_empty() {
                out.push((format!("{name}_cpu_s_per_gb"), f.proxy_cpu / (f.bytes as f64 / 1e9)));
            }
            Ok(foreign_pct)
        })?;
    }

    for (name, window) in [("append_seq", 1), ("append_pipe", APPEND_WINDOW)].into_iter().filter(|_| o.runs("append")) {
        scenario(name, &mut |out| {
            // A fresh user per attempt: every run appends to an empty INBOX.
            let user = format!("{name}-{}-{mode}-{}", t.name, APPEND_USERS.fetch_add(1, Ordering::Relaxed));
            let (g0, f0) = (sys::self_cpu(), foreign());
            let a = load::append(&t.ep, &user, o.appends, SMALL_SIZE, window, &proxy)
                .map_err(|e| format!("{} {mode} {name}: {e}", t.name))?;
            let g1 = sys::self_cpu();
            let foreign_pct = 100.0 * (foreign() - f0) / a.secs / ncpu;
            out.push((format!("{name}_msg_s"), a.messages as f64 / a.secs));
            out.push((format!("{name}_mb_s"), a.bytes as f64 / 1e6 / a.secs));
            if window == 1 {
                // With a window, an APPEND's latency is mostly its wait in the queue.
                out.push((format!("{name}_p50_ms"), a.p50_ms));
            }
            out.push((format!("{name}_gen_cpu_pct"), 100.0 * (g1 - g0) / a.secs / ncpu));
            if !proxy.is_empty() {
                out.push((format!("{name}_cpu_s_per_1000"), a.proxy_cpu / a.messages as f64 * 1000.0));
            }
            Ok(foreign_pct)
        })?;
    }

    if !proxy.is_empty() && o.idle > 0 && o.runs("idle") {
        // Memory is not disturbed by other processes' CPU: one attempt. The
        // proxy is restarted first: allocators keep freed memory, so a proxy
        // that already served 1000 sessions would show no growth at all.
        if let Some(relaunch) = &t.relaunch {
            for &p in &proxy {
                sys::stop(p);
            }
            let pid = relaunch()?;
            *t.proxy.borrow_mut() = vec![pid];
        }
        let proxy = t.proxy.borrow().clone();
        prepare(t, dports)?;
        // One session first, so one-time lazy initialisation is in the baseline.
        drop(load::open_idle(&t.ep, 1, 1));
        quiet(dports);
        let base = sys::tree_pss_kib(&proxy);
        let (conns, errors, retries, first) = load::open_idle(&t.ep, o.idle, 8);
        if retries > 0 {
            eprintln!(
                "bench: {} {mode}: {retries} failed attempts while opening {} idle sessions (first: {})",
                t.name,
                o.idle,
                first.as_deref().unwrap_or("")
            );
        }
        if errors > 0 {
            return Err(format!(
                "{} {mode}: {errors} of {} idle sessions failed: {}",
                t.name,
                o.idle,
                first.unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(1500));
        let after = sys::tree_pss_kib(&proxy);
        let (procs, threads) = sys::tree_counts(&proxy);
        for (metric, value) in [
            ("idle_kib_per_session", (after as f64 - base as f64) / conns.len() as f64),
            ("idle_proxy_procs", procs as f64),
            ("idle_proxy_threads", threads as f64),
            ("idle_failed_attempts", retries as f64),
        ] {
            recs.push(Rec { mode: mode.to_string(), target: t.name.to_string(), rep, metric: metric.into(), value });
        }
        drop(conns);
    }
    Ok(())
}
