//! Processes we start (killed by PID on exit, Ctrl-C or panic), /proc readings
//! (CPU ticks, PSS, process trees, TCP connection counts) and small helpers.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A process we started, with its start time so a recycled PID is never killed.
struct Started {
    name: String,
    child: Child,
}

static STARTED: Mutex<Vec<Started>> = Mutex::new(Vec::new());
static TEMP: Mutex<Option<(PathBuf, bool)>> = Mutex::new(None);

/// Spawns `cmd`; the child gets SIGTERM if we die (PR_SET_PDEATHSIG) and is
/// killed with its whole process tree by `cleanup`.
pub fn spawn(name: &str, cmd: &mut Command) -> io::Result<u32> {
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let pid = child.id();
    lock(&STARTED).push(Started {
        name: name.to_string(),
        child,
    });
    Ok(pid)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Remembers the temp dir to remove at cleanup (unless `keep`).
pub fn set_temp(dir: &Path, keep: bool) {
    *lock(&TEMP) = Some((dir.to_path_buf(), keep));
}

/// Keeps the temp dir (configs and logs) for a post-mortem.
pub fn keep_temp() {
    if let Some((_, keep)) = lock(&TEMP).as_mut() {
        *keep = true;
    }
}

/// Returns Some(status) if a started process has exited.
pub fn exited(pid: u32) -> Option<std::process::ExitStatus> {
    let mut started = lock(&STARTED);
    for s in started.iter_mut() {
        if s.child.id() == pid {
            return s.child.try_wait().ok().flatten();
        }
    }
    None
}

/// Stops one process we started (and its tree), by PID.
pub fn stop(pid: u32) {
    let mut one: Vec<Started> = {
        let mut started = lock(&STARTED);
        let (one, rest) = std::mem::take(&mut *started).into_iter().partition(|s| s.child.id() == pid);
        *started = rest;
        one
    };
    kill_all(&mut one);
}

/// Kills every process we started, with its descendants, by PID.
pub fn cleanup() {
    let mut started = std::mem::take(&mut *lock(&STARTED));
    // Most recent first: proxies before Dovecot.
    started.reverse();
    kill_all(&mut started);
    if let Some((dir, keep)) = lock(&TEMP).take() {
        if keep {
            eprintln!("bench: kept {}", dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

fn kill_all(started: &mut [Started]) {
    for s in started.iter_mut() {
        let pid = s.child.id();
        if s.child.try_wait().ok().flatten().is_some() {
            continue;
        }
        let tree = descendants(pid);
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && s.child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
        if s.child.try_wait().ok().flatten().is_none() {
            eprintln!("bench: {} (pid {pid}) did not stop on SIGTERM; killing", s.name);
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
        // Anything of its tree still alive (e.g. Perdition session children).
        std::thread::sleep(Duration::from_millis(100));
        for (p, start) in tree {
            if start_time(p) == Some(start) {
                unsafe { libc::kill(p as i32, libc::SIGKILL) };
            }
        }
    }
}

/// Blocks SIGINT/SIGTERM/SIGHUP in every thread and handles them in one
/// thread: clean up, then exit 130. Call before starting any thread.
pub fn install_signal_handling() {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let set_copy = set;
        std::thread::spawn(move || {
            let mut sig = 0;
            libc::sigwait(&set_copy, &mut sig);
            eprintln!("\nbench: signal {sig}, stopping everything we started");
            cleanup();
            std::process::exit(130);
        });
    }
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        cleanup();
        std::process::exit(101);
    }));
}

/// Raises RLIMIT_NOFILE (soft to hard; as root also hard to `want`).
pub fn raise_nofile(want: u64) -> u64 {
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        if r.rlim_max < want && libc::geteuid() == 0 {
            let n = libc::rlimit {
                rlim_cur: want,
                rlim_max: want,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &n) == 0 {
                return want;
            }
        }
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur
    }
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

pub fn ticks_per_sec() -> f64 {
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// Fields of /proc/PID/stat after the command name (field 3 is index 0).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = s.rfind(')')?;
    Some(s[close + 2..].split_whitespace().map(str::to_string).collect())
}

fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// utime+stime+cutime+cstime of one process, in ticks. Summed over a tree,
/// every process is counted once: live ones by their own times, reaped ones
/// in their parent's c-times.
fn cpu_ticks(pid: u32) -> u64 {
    let Some(f) = stat_fields(pid) else { return 0 };
    (11..=14).filter_map(|i| f.get(i)?.parse::<u64>().ok()).sum()
}

/// All processes' parent PIDs.
fn parents() -> HashMap<u32, u32> {
    let mut m = HashMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(f) = stat_fields(pid) {
                if let Some(pp) = f.get(1).and_then(|p| p.parse().ok()) {
                    m.insert(pid, pp);
                }
            }
        }
    }
    m
}

/// `pid` and all its descendants.
pub fn tree(pid: u32) -> Vec<u32> {
    let par = parents();
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(par.iter().filter(|(_, &pp)| pp == p).map(|(&c, _)| c));
        i += 1;
    }
    out
}

fn descendants(pid: u32) -> Vec<(u32, u64)> {
    tree(pid)
        .into_iter()
        .skip(1)
        .filter_map(|p| Some((p, start_time(p)?)))
        .collect()
}

/// CPU seconds used so far by the trees rooted at `roots`.
pub fn tree_cpu(roots: &[u32]) -> f64 {
    let t: u64 = roots.iter().flat_map(|&r| tree(r)).map(cpu_ticks).sum();
    t as f64 / ticks_per_sec()
}

/// Our own CPU seconds so far (all threads).
pub fn self_cpu() -> f64 {
    let f = stat_fields(std::process::id()).unwrap_or_default();
    let t: u64 = (11..=12).filter_map(|i| f.get(i)?.parse::<u64>().ok()).sum();
    t as f64 / ticks_per_sec()
}

/// Sum of PSS (KiB) over the trees rooted at `roots`.
pub fn tree_pss_kib(roots: &[u32]) -> u64 {
    roots
        .iter()
        .flat_map(|&r| tree(r))
        .map(|p| {
            let s = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).unwrap_or_default();
            s.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// Processes and threads in the trees rooted at `roots`.
pub fn tree_counts(roots: &[u32]) -> (usize, usize) {
    let procs: Vec<u32> = roots.iter().flat_map(|&r| tree(r)).collect();
    let threads = procs
        .iter()
        .map(|p| {
            std::fs::read_to_string(format!("/proc/{p}/status"))
                .unwrap_or_default()
                .lines()
                .find(|l| l.starts_with("Threads:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<usize>().ok())
                .unwrap_or(0)
        })
        .sum();
    (procs.len(), threads)
}

/// ESTABLISHED TCP connections on 127.0.0.1 with local port `port`.
pub fn established(port: u16) -> usize {
    let s = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let want = format!(":{port:04X}");
    s.lines()
        .skip(1)
        .filter(|l| {
            let mut f = l.split_whitespace();
            let local = f.nth(1).unwrap_or("");
            let state = f.nth(1).unwrap_or("");
            local.ends_with(&want) && state == "01"
        })
        .count()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Waits until 127.0.0.1:port accepts, or the process exits, or the time is up.
pub fn wait_port(port: u16, pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        if exited(pid).is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

pub fn have(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    for d in ["/usr/sbin", "/sbin", "/usr/local/sbin"] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter().map(|d| d.join(cmd)).find(|p| p.is_file())
}

pub fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn ncpu() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Busy CPU seconds of the whole machine so far (everything but idle and iowait).
pub fn machine_busy() -> f64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let first = s.lines().next().unwrap_or("");
    let v: Vec<u64> = first.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum();
    busy as f64 / ticks_per_sec()
}

/// CPU seconds of this process and every process tree we started.
pub fn ours_cpu() -> f64 {
    let roots: Vec<u32> = lock(&STARTED).iter().map(|s| s.child.id()).collect();
    self_cpu() + tree_cpu(&roots)
}
