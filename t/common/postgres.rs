//! A private PostgreSQL per test: initdb into a temp dir, the server on a loopback port
//! and a unix socket in that dir, run as the `postgres` user when the tests run as root
//! (PostgreSQL refuses to run as root). The superuser `imapgate` has the password
//! [`PG_PASSWORD`]: SCRAM-SHA-256 over TCP, trust over the unix socket.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{
    free_port, run_with_timeout, send_signal, stop_child, wait_for_port, wait_until, TempDir,
};

pub const PG_PASSWORD: &str = "pg-pw-3d1";

pub struct Postgres {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    bin: PathBuf,
}

/// The directory of the PostgreSQL server programs (Debian keeps them per version).
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    found.retain(|p| p.join("initdb").exists());
    found.sort();
    found.pop().expect("PostgreSQL server missing: install the Debian package postgresql")
}

/// `cmd` as the `postgres` user when we are root.
fn as_postgres(program: &std::path::Path) -> Command {
    if nix::unistd::geteuid().is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = TempDir::new("pg");
        if nix::unistd::geteuid().is_root() {
            let pg =
                nix::unistd::User::from_name("postgres").ok().flatten().expect("user postgres");
            std::os::unix::fs::chown(dir.path(), Some(pg.uid.as_raw()), Some(pg.gid.as_raw()))
                .expect("chown");
        }
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, PG_PASSWORD).expect("write pwfile");
        if nix::unistd::geteuid().is_root() {
            let pg =
                nix::unistd::User::from_name("postgres").ok().flatten().expect("user postgres");
            std::os::unix::fs::chown(&pwfile, Some(pg.uid.as_raw()), None).expect("chown");
        }
        let mut init = as_postgres(&bin.join("initdb"));
        init.arg("-D").arg(dir.join("data")).args([
            "-U",
            "imapgate",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
        ]);
        init.arg(format!("--pwfile={}", pwfile.display()));
        let out = run_with_timeout(init, &dir, Duration::from_secs(120));
        assert!(out.status.success(), "initdb: {}\n{}", out.stdout_text(), out.stderr_text());
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            match spawn(&dir, &bin, port) {
                Ok(child) => return Postgres { child: Some(child), port, dir, bin },
                Err(e) => last = e,
            }
        }
        panic!("postgres did not start: {last}");
    }

    fn spawn(&self) -> Result<Child, String> {
        spawn(&self.dir, &self.bin, self.port)
    }

    /// Runs SQL as the superuser over the unix socket; panics on failure.
    pub fn psql(&self, sql: &str) {
        let mut c = Command::new("psql");
        c.arg("-h").arg(self.dir.path()).arg("-p").arg(self.port.to_string());
        c.args(["-U", "imapgate", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c", sql]);
        let out = run_with_timeout(c, &self.dir, Duration::from_secs(30));
        assert!(out.status.success(), "psql {sql}: {}", out.stderr_text());
    }

    /// The database over TCP, with the password (SCRAM-SHA-256).
    pub fn tcp_url(&self) -> String {
        format!("postgresql://imapgate:{PG_PASSWORD}@127.0.0.1:{}/postgres", self.port)
    }

    /// The database over its unix socket (trust).
    pub fn socket_url(&self) -> String {
        format!(
            "postgresql://imapgate@/postgres?host={}&port={}",
            self.dir.path().display(),
            self.port
        )
    }

    /// Stops the server (the database goes down).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u32>().ok()));
        if let Some(pid) = pid {
            // Fast shutdown: the postmaster, not the runuser wrapper, takes the signal.
            send_signal(pid, "INT");
        }
        let gone = wait_until(Duration::from_secs(20), || child.try_wait().ok().flatten());
        if gone.is_none() {
            stop_child(&mut child, Duration::from_secs(5));
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        self.child = Some(self.spawn().expect("postgres restart"));
    }
}

/// Starts the server on `port`; its log goes to pg.log.
fn spawn(dir: &TempDir, bin: &std::path::Path, port: u16) -> Result<Child, String> {
    let log = std::fs::File::create(dir.join("pg.log")).map_err(|e| e.to_string())?;
    let mut child = as_postgres(&bin.join("postgres"))
        .arg("-D")
        .arg(dir.join("data"))
        .arg("-k")
        .arg(dir.path())
        .arg("-p")
        .arg(port.to_string())
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| e.to_string())?;
    // The port opens while the server still refuses logins ("the database system is
    // starting up"), notably after a restart: wait for the log line that ends recovery.
    let ready = || {
        std::fs::read_to_string(dir.join("pg.log"))
            .is_ok_and(|log| log.contains("ready to accept connections"))
            .then_some(())
    };
    if wait_for_port(port, &mut child, Duration::from_secs(30))
        && super::wait_until(Duration::from_secs(30), ready).is_some()
    {
        return Ok(child);
    }
    stop_child(&mut child, Duration::from_secs(5));
    Err(std::fs::read_to_string(dir.join("pg.log")).unwrap_or_default())
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
