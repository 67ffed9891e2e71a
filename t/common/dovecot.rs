//! A private Dovecot per test (STYLE.md §4.13, Appendix C): own temp dir,
//! base_dir, state_dir, instance_name and loopback port; killed by PID on drop.
//!
//! Users: a passwd-file with `alice`/`secret`, `bob`/`secret` and `tricky`
//! with the password [`TRICKY_PASSWORD`]; any other name logs in with
//! `secret` through a static passdb (so tests use unique users for private
//! mailboxes).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::client::{assert_ok, quote, Client};
use super::{free_port, require_tool, stop_child, tail, wait_for_port, TempDir};

/// Spaces, a double quote, a backslash and 8-bit UTF-8 (é = C3 A9). The
/// passwd-file format splits on `:` only, so all of these are expressible.
pub const TRICKY_PASSWORD: &str = "p a\"s\\s é";

pub struct Dovecot {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
}

/// Who a private Dovecot runs as: the dovecot users when root, else the current user.
pub struct Identity {
    pub internal_user: String,
    pub internal_group: String,
    pub login_user: String,
    pub uid: u32,
    pub gid: u32,
    pub root: bool,
}

pub fn identity() -> Identity {
    use nix::unistd::{getegid, geteuid, User};
    if geteuid().is_root() {
        let dv = User::from_name("dovecot")
            .ok()
            .flatten()
            .expect("user `dovecot` missing: install the Debian package dovecot-imapd");
        let dn = User::from_name("dovenull").ok().flatten();
        Identity {
            internal_user: "dovecot".into(),
            internal_group: "dovecot".into(),
            login_user: dn.map_or_else(|| "dovecot".into(), |u| u.name),
            uid: dv.uid.as_raw(),
            gid: dv.gid.as_raw(),
            root: true,
        }
    } else {
        let me =
            User::from_uid(geteuid()).ok().flatten().expect("current user has no passwd entry");
        let group = nix::unistd::Group::from_gid(getegid())
            .ok()
            .flatten()
            .expect("current group has no entry");
        Identity {
            internal_user: me.name.clone(),
            internal_group: group.name,
            login_user: me.name,
            uid: geteuid().as_raw(),
            gid: getegid().as_raw(),
            root: false,
        }
    }
}

impl Dovecot {
    /// Starts a fresh Dovecot and waits until its IMAP port accepts.
    pub fn start() -> Dovecot {
        Dovecot::start_with("")
    }

    /// Like [`Dovecot::start`], with `extra` (whole dovecot.conf lines, e.g.
    /// `imap_capability = ...` or `login_trusted_networks = ...`) appended to the
    /// generated configuration.
    pub fn start_with(extra: &str) -> Dovecot {
        let bin = require_tool("dovecot", "dovecot-imapd");
        let dir = TempDir::new("dovecot");
        let id = identity();
        let mail = dir.join("mail");
        std::fs::create_dir_all(&mail).expect("mkdir mail");
        std::fs::create_dir_all(dir.join("run")).expect("mkdir run");
        std::fs::create_dir_all(dir.join("state")).expect("mkdir state");
        if id.root {
            std::os::unix::fs::chown(&mail, Some(id.uid), Some(id.gid)).expect("chown mail dir");
        }
        let users = format!(
            "alice:{{PLAIN}}secret::::::\nbob:{{PLAIN}}secret::::::\ntricky:{{PLAIN}}{TRICKY_PASSWORD}::::::\n"
        );
        std::fs::write(dir.join("users"), users).expect("write users");

        let mut last_err = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let conf = dir.join("dovecot.conf");
            let body = format!("{}\n{extra}\n", config(&dir, &id, port));
            std::fs::write(&conf, body).expect("write dovecot.conf");
            let mut child = spawn(&bin, &dir);
            if wait_for_port(port, &mut child, Duration::from_secs(20)) {
                return Dovecot { child: Some(child), port, dir };
            }
            stop_child(&mut child, Duration::from_secs(5));
            last_err = format!(
                "stderr:\n{}\nlog:\n{}",
                std::fs::read_to_string(dir.join("dovecot.stderr")).unwrap_or_default(),
                tail(&std::fs::read(dir.join("dovecot.log")).unwrap_or_default(), 3000)
            );
        }
        panic!("dovecot did not start:\n{last_err}");
    }

    /// Starts this instance again after [`Dovecot::kill`]: same configuration,
    /// same port, same mail.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart: dovecot is still running");
        let bin = require_tool("dovecot", "dovecot-imapd");
        let mut child = spawn(&bin, &self.dir);
        if !wait_for_port(self.port, &mut child, Duration::from_secs(20)) {
            stop_child(&mut child, Duration::from_secs(5));
            panic!(
                "dovecot did not restart on port {}:\n{}",
                self.port,
                tail(self.log().as_bytes(), 3000)
            );
        }
        self.child = Some(child);
    }

    /// Dovecot's log file so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }

    /// Password for a user: `tricky` has its own, every other one is `secret`.
    pub fn password(user: &str) -> &'static str {
        if user == "tricky" {
            TRICKY_PASSWORD
        } else {
            "secret"
        }
    }

    /// A direct (proxy-less) logged-in connection.
    pub fn connect_as(&self, user: &str) -> Client {
        let mut c = Client::connect(self.port);
        c.login(user, Dovecot::password(user));
        c
    }

    /// Appends `msg` to `mailbox` of `user` by a direct IMAP connection,
    /// creating the mailbox when needed.
    pub fn append_message(&self, user: &str, mailbox: &str, msg: &[u8]) {
        let mut c = self.connect_as(user);
        if !mailbox.eq_ignore_ascii_case("INBOX") {
            c.cmd("C1", &format!("CREATE {}", quote(mailbox)));
        }
        c.set_timeout(Duration::from_secs(120));
        c.send_line(&format!("A1 APPEND {} {{{}}}", quote(mailbox), msg.len()));
        let cont = c.read_line();
        assert!(
            cont.starts_with(b"+"),
            "APPEND: no continuation: {}",
            String::from_utf8_lossy(&cont)
        );
        c.send(msg);
        c.send(b"\r\n");
        let r = c.read_until_tagged("A1");
        assert_ok(&r, "A1", "direct APPEND");
        c.logout();
    }

    /// PID of the imap process serving `user`'s latest session, from this
    /// instance's log (`Login: user=<USER>, ... mpid=PID`).
    pub fn session_pid(&self, user: &str) -> u32 {
        let re =
            regex::Regex::new(&format!(r"Login: user=<{}>,.* mpid=(\d+)", regex::escape(user)))
                .unwrap();
        let found = super::wait_until(super::WAIT, || {
            let log = self.log();
            let pid = re.captures_iter(&log).last().map(|c| c[1].parse::<u32>().unwrap());
            pid
        });
        found.unwrap_or_else(|| panic!("no login of {user} in the dovecot log:\n{}", self.log()))
    }

    /// Stops Dovecot (SIGTERM to the master by PID; it stops its children).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Duration::from_secs(10));
            // Give the processes serving sessions a moment to go, so the
            // temp dir can be removed cleanly.
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline && self.dir.join("run/master.pid").exists() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            eprintln!(
                "--- dovecot log (port {}) ---\n{}",
                self.port,
                tail(self.log().as_bytes(), 3000)
            );
        }
        self.kill();
    }
}

/// Runs `dovecot -F -c DIR/dovecot.conf`, stderr to `DIR/dovecot.stderr`.
fn spawn(bin: &std::path::Path, dir: &TempDir) -> Child {
    let log = std::fs::File::create(dir.join("dovecot.stderr")).expect("create stderr file");
    Command::new(bin)
        .arg("-F")
        .arg("-c")
        .arg(dir.join("dovecot.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

fn config(dir: &TempDir, id: &Identity, port: u16) -> String {
    let d = dir.path().display();
    let name = dir.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Non-root Dovecot cannot chroot its login/anvil processes.
    let chroot = if id.root { "" } else { "  chroot =\n" };
    format!(
        r#"base_dir = {d}/run
state_dir = {d}/state
instance_name = {name}
listen = 127.0.0.1
protocols = imap
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = {d}/dovecot.log
default_internal_user = {iu}
default_internal_group = {ig}
default_login_user = {lu}
first_valid_uid = 1
mail_location = maildir:~/Maildir
auth_failure_delay = 0
default_process_limit = 1000
default_client_limit = 4000
default_vsz_limit = 1G
mail_max_userip_connections = 1000
imap_idle_notify_interval = 1 mins

passdb {{
  driver = passwd-file
  args = {d}/users
}}
passdb {{
  driver = static
  args = password=secret
  username_filter = !alice !bob !tricky
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/mail/%u
}}

service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  process_limit = 1000
  client_limit = 1000
{chroot}}}
service imap {{
  process_limit = 1000
}}
service anvil {{
  # mode 0 removes the auth penalty socket: no growing delays after the
  # deliberate login failures of the tests.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
{chroot}}}
"#,
        iu = id.internal_user,
        ig = id.internal_group,
        lu = id.login_user,
        uid = id.uid,
        gid = id.gid,
    )
}
