//! Shared harness for the integration tests: temp dirs, ports, deadlines, process
//! control. Every test builds its own world (Dovecot, proxy, client) from these
//! pieces, so tests can run in parallel threads without sharing state.

#![allow(dead_code)] // not every test module uses every helper

pub mod auth_http;
pub mod certs;
pub mod client;
pub mod cyrus;
pub mod deflate;
pub mod dovecot;
pub mod fake_backend;
pub mod oauth;
pub mod postgres;
pub mod proxy;
pub mod slapd;
pub mod tls_client;
pub mod tls_dovecot;

pub use client::Client;
pub use dovecot::Dovecot;
pub use proxy::Proxy;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Default bound for a single wait (port, log line, response).
pub const WAIT: Duration = Duration::from_secs(20);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A number unique within this test process.
pub fn unique() -> usize {
    COUNTER.fetch_add(1, Ordering::SeqCst)
}

/// A user name unique to this test process and call: each gets its own maildir
/// through Dovecot's static passdb (password `secret`).
pub fn unique_user(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), unique())
}

/// A directory under the system temp dir, removed on drop (kept when the
/// environment variable `IMAPGATE_TEST_KEEP` is set, for debugging).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("imapgate-t-{what}-{}-{}-{nanos}", std::process::id(), unique());
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).expect("create temp dir");
        set_mode(&path, 0o755);
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("IMAPGATE_TEST_KEEP").is_some() {
            eprintln!("keeping {}", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A loopback port that was free a moment ago (bind port 0, then release it).
/// Callers retry with a new port if the server then fails to bind.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Waits until something accepts on `127.0.0.1:port`, or `child` exits, or the
/// deadline passes. Returns true when the port accepts.
pub fn wait_for_port(port: u16, child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let addr = ("127.0.0.1", port);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        let sa = std::net::SocketAddr::from(([127, 0, 0, 1], addr.1));
        if TcpStream::connect_timeout(&sa, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    false
}

/// Polls `f` until it returns Some or the timeout passes.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends SIGTERM to a child we started, waits up to `grace`, then SIGKILLs it.
pub fn stop_child(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(st)) = child.try_wait() {
        return Some(st);
    }
    send_signal(child.id(), "TERM");
    if let Some(st) = wait_child(child, grace) {
        return Some(st);
    }
    let _ = child.kill();
    wait_child(child, Duration::from_secs(5))
}

/// Sends a signal (`TERM`, `HUP`, ...) to one process we started, by PID.
pub fn send_signal(pid: u32, sig: &str) {
    use nix::sys::signal::{kill, Signal};
    let signal: Signal = format!("SIG{sig}").parse().expect("a signal name");
    let _ = kill(nix::unistd::Pid::from_raw(pid as i32), signal);
}

/// Waits for a child to exit, at most `timeout`.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    wait_until(timeout, || child.try_wait().ok().flatten())
}

/// Output of a helper command run to completion with a deadline.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs `cmd` with stdin closed and stdout/stderr captured into files in `dir`,
/// killing it when it outlives `timeout` (then panics with what it printed).
pub fn run_with_timeout(mut cmd: Command, dir: &TempDir, timeout: Duration) -> Output {
    let n = unique();
    let out_path = dir.join(&format!("cmd-{n}.out"));
    let err_path = dir.join(&format!("cmd-{n}.err"));
    let out = std::fs::File::create(&out_path).expect("create stdout file");
    let err = std::fs::File::create(&err_path).expect("create stderr file");
    cmd.stdin(std::process::Stdio::null()).stdout(out).stderr(err);
    let desc = format!("{cmd:?}");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {desc}: {e}"));
    let status = wait_child(&mut child, timeout);
    let stdout = std::fs::read(&out_path).unwrap_or_default();
    let stderr = std::fs::read(&err_path).unwrap_or_default();
    match status {
        Some(status) => Output { status, stdout, stderr },
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{desc} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
        }
    }
}

/// Finds an executable in PATH or the sbin dirs; panics with the Debian
/// package to install when it is missing (tests fail, they never skip).
pub fn require_tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from));
    for d in dirs {
        let p = d.join(name);
        if is_executable(&p) {
            return p;
        }
    }
    panic!(
        "`{name}` not found: install the Debian package `{package}` \
         (apt-get install {package}); .ci/run does this when run as root"
    );
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Lossy text of bytes, for assertion messages.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Last `n` bytes of `b` as text (assertion messages for large transcripts).
pub fn tail(b: &[u8], n: usize) -> String {
    text(&b[b.len().saturating_sub(n)..])
}

/// Base64 (RFC 4648, with padding), for AUTHENTICATE PLAIN.
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A deterministic message of about `size` bytes whose body holds every byte
/// value: lines of raw bytes (all values except CR and LF, NUL included) each
/// ended by CRLF, so the message survives CRLF normalisation unchanged.
pub fn binary_message(size: usize, subject: &str) -> Vec<u8> {
    let mut m = format!(
        "From: t@example.org\r\nTo: t@example.org\r\nSubject: {subject}\r\n\
         MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n\
         Content-Transfer-Encoding: binary\r\n\r\n"
    )
    .into_bytes();
    // First line: every byte value other than CR/LF, in order.
    m.extend((0u8..=255).filter(|b| *b != b'\r' && *b != b'\n'));
    m.extend_from_slice(b"\r\n");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ size as u64;
    while m.len() + 80 < size {
        for _ in 0..76 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = (x >> 24) as u8;
            m.push(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// A small text message with a recognisable subject and body.
pub fn text_message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: t@example.org\r\nTo: t@example.org\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.org>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// The standard one-backend config for `Proxy::start` (`@PORT@` is the
/// listener port, filled in by the harness).
pub fn minimal_config(backend_port: u16) -> String {
    format!(
        "[global]\nlogin_failure_delay = 0s\n\n\
         [backend dovecot]\nhost = 127.0.0.1\nport = {backend_port}\n\n\
         [map users]\ntype = static\ndefault = dovecot\n\n\
         [listener imap]\nlisten = 127.0.0.1:@PORT@\nmap = users\n"
    )
}
