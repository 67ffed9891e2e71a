//! The load generator: login loops, bulk and small FETCH, APPEND, idle sessions.
//! Blocking sockets, one thread per simulated client.

use std::collections::VecDeque;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use crate::client::{err, Conn, Endpoint};
use crate::setup::{message, PASSWORD};
use crate::sys;

pub struct LoginResult {
    pub sessions: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub secs: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn one_session(ep: &Endpoint, user: &str) -> std::io::Result<()> {
    let mut c = Conn::open(ep, 4096)?;
    c.login(user, PASSWORD)?;
    c.cmd_ok("b", "LOGOUT", None)?;
    Ok(())
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// `clients` threads each run connect, greeting, LOGIN, LOGOUT in a loop
/// for `dur`; latency is measured from connect to the LOGOUT's tagged OK.
pub fn login_loop(ep: &Endpoint, clients: usize, dur: Duration, user_base: &str) -> LoginResult {
    let barrier = Arc::new(Barrier::new(clients + 1));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let mut handles = Vec::new();
    for i in 0..clients {
        let ep = ep.clone();
        let barrier = Arc::clone(&barrier);
        let first_error = Arc::clone(&first_error);
        let user = format!("{user_base}{i}");
        handles.push(
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    let mut lats = Vec::with_capacity(1 << 14);
                    let mut errors = 0u64;
                    barrier.wait();
                    let start = Instant::now();
                    let deadline = start + dur;
                    loop {
                        let t0 = Instant::now();
                        if t0 >= deadline {
                            break;
                        }
                        match one_session(&ep, &user) {
                            Ok(()) => {
                                let t1 = Instant::now();
                                if t1 <= deadline {
                                    lats.push((t1 - t0).as_micros().min(u32::MAX as u128) as u32);
                                }
                            }
                            Err(e) => {
                                errors += 1;
                                first_error.lock().unwrap().get_or_insert(e.to_string());
                                std::thread::sleep(Duration::from_millis(10));
                            }
                        }
                    }
                    (lats, errors)
                })
                .expect("spawn client thread"),
        );
    }
    barrier.wait();
    let start = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h.join().expect("client thread");
        all.extend(l);
        errors += e;
    }
    let secs = dur.as_secs_f64().min(start.elapsed().as_secs_f64());
    all.sort_unstable();
    let first_error = first_error.lock().unwrap().take();
    LoginResult {
        sessions: all.len() as u64,
        errors,
        first_error,
        secs,
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
    }
}

pub struct FetchResult {
    pub bytes: u64,
    pub secs: f64,
    pub proxy_cpu: f64,
}

/// Logs in as `user`, selects INBOX (expecting `count` messages), then runs
/// `FETCH 1:* BODY.PEEK[]` `repeats` times; each must return `count`
/// literals of `size` bytes. Only the FETCHes are timed.
/// FETCHes every message of `user` `repeats` times; with `compress`, after COMPRESS
/// DEFLATE (`None` when the target does not offer it).
pub fn fetch(
    ep: &Endpoint,
    user: &str,
    count: u64,
    size: u64,
    repeats: usize,
    proxy: &[u32],
    compress: bool,
) -> std::io::Result<Option<FetchResult>> {
    let mut c = Conn::open(ep, 256 << 10)?;
    c.login(user, PASSWORD)?;
    if compress && !c.compress()? {
        return Ok(None);
    }
    let sel = c.cmd_ok("s", "SELECT INBOX", None)?;
    if sel.exists != Some(count) {
        return Err(err(format!("{user}: SELECT INBOX: EXISTS {:?}, expected {count}", sel.exists)));
    }
    let cpu0 = sys::tree_cpu(proxy);
    let t0 = Instant::now();
    let mut bytes = 0;
    for r in 0..repeats {
        let d = c.cmd_ok(&format!("f{r}"), "FETCH 1:* BODY.PEEK[]", None)?;
        if d.literals != count || d.literal_bytes != count * size {
            return Err(err(format!(
                "{user}: FETCH returned {} literals / {} bytes, expected {count} / {}",
                d.literals,
                d.literal_bytes,
                count * size
            )));
        }
        bytes += d.literal_bytes;
    }
    let secs = t0.elapsed().as_secs_f64();
    let proxy_cpu = sys::tree_cpu(proxy) - cpu0;
    let _ = c.cmd("z", "LOGOUT", None);
    Ok(Some(FetchResult { bytes, secs, proxy_cpu }))
}

pub struct AppendResult {
    pub messages: u64,
    pub bytes: u64,
    pub secs: f64,
    pub proxy_cpu: f64,
    /// Median time from sending an APPEND to its tagged OK, ms.
    pub p50_ms: f64,
}

/// The APPEND commands, built before the clock starts: `APPEND INBOX {size+}`
/// and the message in one buffer, as a LITERAL+ client writes it.
fn append_commands(user: &str, count: usize, size: usize) -> Vec<Vec<u8>> {
    (1..=count)
        .map(|n| {
            let mut c = format!("A{n} APPEND INBOX {{{size}+}}\r\n").into_bytes();
            c.extend_from_slice(&message(user, n, size));
            c.extend_from_slice(b"\r\n");
            c
        })
        .collect()
}

/// Logs in as `user` (a fresh one: the run starts from an empty INBOX) and
/// appends `count` messages of `size` bytes, one APPEND each, with at most
/// `window` commands outstanding: 1 waits for every tagged OK (one round trip
/// per message), 16 is how mbsync/imapsync pipeline. Literals are
/// non-synchronizing (LITERAL+), so the client itself never waits for `+`.
/// Afterwards INBOX must hold `count` messages, the last one byte for byte.
pub fn append(ep: &Endpoint, user: &str, count: usize, size: usize, window: usize, proxy: &[u32]) -> std::io::Result<AppendResult> {
    let mut c = Conn::open(ep, 64 << 10)?;
    c.login(user, PASSWORD)?;
    if !c.capabilities()?.iter().any(|x| x.eq_ignore_ascii_case("LITERAL+")) {
        return Err(err("no LITERAL+ after login"));
    }
    // Dovecot creates the user's maildir and INBOX index here, not during the first APPEND.
    c.cmd_ok("s", "STATUS INBOX (MESSAGES)", None)?;
    let cmds = append_commands(user, count, size);
    let mut lats = Vec::with_capacity(count);
    let mut sent: VecDeque<(usize, Instant)> = VecDeque::with_capacity(window);
    let cpu0 = sys::tree_cpu(proxy);
    let t0 = Instant::now();
    let mut next = 0;
    while lats.len() < count {
        while next < count && sent.len() < window.max(1) {
            c.send(&cmds[next])?;
            next += 1;
            sent.push_back((next, Instant::now()));
        }
        let d = c.next_tagged()?;
        let (n, at) = sent.pop_front().expect("a command is outstanding");
        if !d.ok || !d.status.starts_with(&format!("A{n} ")) {
            return Err(err(format!("{user}: APPEND {n}: {}", d.status)));
        }
        lats.push(at.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }
    let secs = t0.elapsed().as_secs_f64();
    let proxy_cpu = sys::tree_cpu(proxy) - cpu0;
    check_appended(&mut c, user, count, size)?;
    let _ = c.cmd("z", "LOGOUT", None);
    lats.sort_unstable();
    Ok(AppendResult {
        messages: count as u64,
        bytes: (count * size) as u64,
        secs,
        proxy_cpu,
        p50_ms: percentile(&lats, 0.50),
    })
}

/// INBOX holds `count` messages and the last is the one appended last.
fn check_appended(c: &mut Conn, user: &str, count: usize, size: usize) -> std::io::Result<()> {
    let sel = c.cmd_ok("s", "SELECT INBOX", None)?;
    if sel.exists != Some(count as u64) {
        return Err(err(format!("{user}: after APPEND: EXISTS {:?}, expected {count}", sel.exists)));
    }
    let mut cap = Vec::new();
    c.cmd_ok("f", &format!("FETCH {count} BODY.PEEK[]"), Some(&mut cap))?;
    if cap.first() != Some(&message(user, count, size)) {
        return Err(err(format!("{user}: message {count} differs from what was appended")));
    }
    Ok(())
}

/// Opens `n` logged-in sessions that have selected INBOX, with `threads`
/// threads. Users idle0..idle99 share the load. Returns the sessions, the
/// sessions that failed 3 attempts, the failed attempts, and the first error.
pub fn open_idle(ep: &Endpoint, n: usize, threads: usize) -> (Vec<Conn>, u64, u64, Option<String>) {
    let next = Arc::new(Mutex::new(0usize));
    let mut handles = Vec::new();
    for _ in 0..threads {
        let ep = ep.clone();
        let next = Arc::clone(&next);
        handles.push(std::thread::spawn(move || {
            let mut conns = Vec::new();
            let mut errors = 0;
            let mut first = None;
            let mut retries = 0u64;
            let mut first_retry = None::<String>;
            loop {
                let i = {
                    let mut g = next.lock().unwrap();
                    if *g >= n {
                        break;
                    }
                    *g += 1;
                    *g - 1
                };
                // Up to 3 attempts per session; every failed attempt is counted.
                let mut r = Err(err("not tried"));
                for attempt in 0..3 {
                    r = (|| {
                        let mut c = Conn::open(&ep, 1024)?;
                        c.login(&format!("idle{}", i % 100), PASSWORD)?;
                        c.cmd_ok("s", "SELECT INBOX", None)?;
                        Ok::<Conn, std::io::Error>(c)
                    })();
                    match &r {
                        Ok(_) => break,
                        Err(e) => {
                            retries += 1;
                            first_retry.get_or_insert(e.to_string());
                            if attempt < 2 {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        }
                    }
                }
                match r {
                    Ok(c) => conns.push(c),
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert(e.to_string());
                    }
                }
            }
            (conns, errors, first.or(first_retry), retries)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first = None;
    let mut retries = 0;
    for h in handles {
        let (c, e, f, r) = h.join().expect("idle thread");
        all.extend(c);
        errors += e;
        retries += r;
        if first.is_none() {
            first = f;
        }
    }
    (all, errors, retries, first)
}
