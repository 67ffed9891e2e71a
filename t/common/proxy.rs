//! The real imapgate binary (`CARGO_BIN_EXE_imapgate`) in the foreground with
//! stderr captured to a file in its temp dir; killed by PID on drop.
//!
//! Config bodies may use `@PORT@` (the listener port chosen here) and `@DIR@`
//! (the proxy's temp dir).

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{free_port, stop_child, tail, wait_for_port, wait_until, TempDir, WAIT};

pub const BIN: &str = env!("CARGO_BIN_EXE_imapgate");

pub struct Proxy {
    child: Option<Child>,
    pub port: u16,
    pub config: PathBuf,
    stderr: PathBuf,
    dir: TempDir,
}

impl Proxy {
    /// The resident memory of the imapgate process, in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().expect("imapgate runs").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
        line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmRSS value")
    }

    /// Starts `imapgate -d debug -f CONFIG` and waits for its port.
    pub fn start(config_body: &str) -> Proxy {
        Proxy::start_with(config_body, &["-d", "debug"])
    }

    /// Starts `imapgate ARGS -f CONFIG` and waits for its port.
    pub fn start_with(config_body: &str, args: &[&str]) -> Proxy {
        let dir = TempDir::new("proxy");
        let config = dir.join("imapgate.ini");
        let stderr = dir.join("imapgate.stderr");
        let mut last = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let body = fill(config_body, port, &dir);
            std::fs::write(&config, &body).expect("write config");
            let err = std::fs::File::create(&stderr).expect("create stderr file");
            let mut child = Command::new(BIN)
                .args(args)
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
            if wait_for_port(port, &mut child, Duration::from_secs(10)) {
                return Proxy { child: Some(child), port, config, stderr, dir };
            }
            let status = stop_child(&mut child, Duration::from_secs(5));
            last = format!(
                "status {status:?}\nconfig:\n{body}\nstderr:\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        panic!("imapgate did not start listening within 10 s:\n{last}");
    }

    /// The imapgate process's PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("imapgate runs").id()
    }

    pub fn dir(&self) -> &TempDir {
        &self.dir
    }

    /// Everything the proxy wrote to stderr so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stderr).unwrap_or_default()).into_owned()
    }

    /// Waits until a log line matches `re`; returns that line (panics with the
    /// log after the timeout).
    pub fn wait_for_log(&self, re: &str) -> String {
        wait_for_log_in(re, || self.log())
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops the proxy; returns its exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.child.take().and_then(|mut c| stop_child(&mut c, Duration::from_secs(5)))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- imapgate stderr (port {}) ---\n{}",
                self.port,
                tail(self.log().as_bytes(), 4000)
            );
        }
        self.stop();
    }
}

/// Replaces `@PORT@` and `@DIR@` in a config body.
pub fn fill(body: &str, port: u16, dir: &TempDir) -> String {
    body.replace("@PORT@", &port.to_string()).replace("@DIR@", &dir.path().display().to_string())
}

/// Polls `read` until one of its lines matches `re`.
pub fn wait_for_log_in(re: &str, read: impl Fn() -> String) -> String {
    let rx = regex::Regex::new(re).expect("bad regex in test");
    let found = wait_until(WAIT, || read().lines().find(|l| rx.is_match(l)).map(str::to_owned));
    found.unwrap_or_else(|| {
        panic!(
            "no log line matching /{re}/ within {WAIT:?}; log:\n{}",
            tail(read().as_bytes(), 4000)
        )
    })
}

/// Runs `imapgate ARGS` to completion (for `-t`), with a timeout.
pub fn run_imapgate(args: &[&str]) -> super::Output {
    let dir = TempDir::new("run");
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    super::run_with_timeout(cmd, &dir, Duration::from_secs(20))
}
