//! A private Dovecot that only speaks TLS (`ssl = required`), with a certificate
//! from the test CA: either implicit TLS only (the imaps listener; the plain
//! imap listener is off) or STARTTLS only (the imap listener, which advertises
//! STARTTLS before TLS). `alice` and `bob` log in with `secret`, over TLS only:
//! Dovecot counts loopback as secure, so plaintext logins are refused by the
//! passdb (see the config), not by `ssl = required`.
//! Killed by PID on drop, like [`super::Dovecot`].

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::dovecot::{identity, Identity};
use super::{free_port, require_tool, stop_child, tail, wait_for_port, TempDir};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DovecotTls {
    /// Only the imaps listener (TLS from the first byte).
    Implicit,
    /// Only the imap listener, TLS through STARTTLS.
    Starttls,
}

pub struct TlsDovecot {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
}

impl TlsDovecot {
    pub fn start(mode: DovecotTls, cert: &Path, key: &Path) -> TlsDovecot {
        let bin = require_tool("dovecot", "dovecot-imapd");
        let dir = TempDir::new("dovecot-tls");
        let id = identity();
        for sub in ["mail", "run", "state"] {
            std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
        }
        if id.root {
            std::os::unix::fs::chown(dir.join("mail"), Some(id.uid), Some(id.gid))
                .expect("chown mail dir");
        }
        let users = "alice:{PLAIN}secret::::::\nbob:{PLAIN}secret::::::\n";
        std::fs::write(dir.join("users-TLS"), users).expect("write users-TLS");
        std::fs::write(dir.join("users-secured"), "").expect("write users-secured");
        let mut last_err = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let conf = dir.join("dovecot.conf");
            std::fs::write(&conf, config(&dir, &id, mode, port, cert, key))
                .expect("write dovecot.conf");
            let log =
                std::fs::File::create(dir.join("dovecot.stderr")).expect("create stderr file");
            let mut child = Command::new(&bin)
                .arg("-F")
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            if wait_for_port(port, &mut child, Duration::from_secs(20)) {
                return TlsDovecot { child: Some(child), port, dir };
            }
            stop_child(&mut child, Duration::from_secs(5));
            last_err = format!(
                "stderr:\n{}\nlog:\n{}",
                std::fs::read_to_string(dir.join("dovecot.stderr")).unwrap_or_default(),
                tail(&std::fs::read(dir.join("dovecot.log")).unwrap_or_default(), 3000)
            );
        }
        panic!("TLS dovecot did not start:\n{last_err}");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for TlsDovecot {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if std::thread::panicking() {
                eprintln!(
                    "--- TLS dovecot log (port {}) ---\n{}",
                    self.port,
                    tail(self.log().as_bytes(), 3000)
                );
            }
            stop_child(&mut child, Duration::from_secs(10));
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline && self.dir.join("run/master.pid").exists() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn config(
    dir: &TempDir,
    id: &Identity,
    mode: DovecotTls,
    port: u16,
    cert: &Path,
    key: &Path,
) -> String {
    let d = dir.path().display();
    let name = dir.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let chroot = if id.root { "" } else { "  chroot =\n" };
    let (imap_port, imaps_port) = match mode {
        DovecotTls::Implicit => (0, port),
        DovecotTls::Starttls => (port, 0),
    };
    format!(
        r#"base_dir = {d}/run
state_dir = {d}/state
instance_name = {name}
listen = 127.0.0.1
protocols = imap
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = yes
auth_mechanisms = plain login
log_path = {d}/dovecot.log
default_internal_user = {iu}
default_internal_group = {ig}
default_login_user = {lu}
first_valid_uid = 1
mail_location = maildir:~/Maildir
auth_failure_delay = 0

# %{{secured}} is "TLS" on TLS connections and "secured" on plaintext loopback
# ones, which ssl = required alone would let log in: only users-TLS has users.
passdb {{
  driver = passwd-file
  args = {d}/users-%{{secured}}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/mail/%u
}}

service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
{chroot}}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
{chroot}}}
"#,
        cert = cert.display(),
        key = key.display(),
        iu = id.internal_user,
        ig = id.internal_group,
        lu = id.login_user,
        uid = id.uid,
        gid = id.gid,
    )
}
