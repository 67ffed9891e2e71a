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

/// The password of the master user `admin` of [`Dovecot::start_with_master`].
pub const MASTER_PASSWORD: &str = "master-pw-71";

pub struct Dovecot {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    /// Keeps a record of the sessions of users given to `record_user`.
    recorded: bool,
}

/// Where a recorded Dovecot's direct (test) sessions come from, so its record of the
/// sessions through imapgate (from 127.0.0.1) leaves them out.
const DIRECT_FROM: [u8; 4] = [127, 0, 0, 2];

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
        Dovecot::start_configured(extra, false, &[])
    }

    /// A Dovecot that also takes master-user logins: `admin` with the password
    /// [`MASTER_PASSWORD`] may log in as any user, by AUTHENTICATE PLAIN with the user as
    /// authorization identity (or `user*admin` with LOGIN).
    pub fn start_with_master() -> Dovecot {
        let extra = "auth_master_user_separator = *\n\
                     passdb {\n  driver = passwd-file\n  args = @DIR@/masters\n  master = yes\n  pass = yes\n}\n";
        let masters = format!("admin:{{PLAIN}}{MASTER_PASSWORD}::::::\n");
        Dovecot::start_configured(extra, false, &[("masters", masters)])
    }

    /// A Dovecot that also takes XOAUTH2 and OAUTHBEARER: an oauth2 passdb checks each
    /// token at `introspection_url` (RFC 7662, POST) and accepts it for the user the
    /// introspection names. Passwords work as in [`Dovecot::start`].
    pub fn start_oauth(introspection_url: &str) -> Dovecot {
        let oauth2 = format!(
            "introspection_mode = post\nintrospection_url = {introspection_url}\n\
             username_attribute = username\nactive_attribute = active\nactive_value = true\n\
             timeout_msecs = 5000\n"
        );
        let extra = "auth_mechanisms = plain login xoauth2 oauthbearer\n\
                     passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  \
                     args = @DIR@/oauth2.conf.ext\n}\n";
        Dovecot::start_configured(extra, false, &[("oauth2.conf.ext", oauth2)])
    }

    /// A Dovecot that keeps its own record of every session: a rawlog of the bytes each
    /// user's sessions received (`rawlog_in`) and an event line for every command it
    /// executed, as its own parser read it (`executed`). Call `record_user` before the
    /// user's session starts.
    pub fn start_recorded(extra: &str) -> Dovecot {
        Dovecot::start_configured(extra, true, &[])
    }

    /// Starts Dovecot with `extra` configuration (`@DIR@` is its directory) and `files`
    /// written into its directory first.
    fn start_configured(extra: &str, record: bool, files: &[(&str, String)]) -> Dovecot {
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
        for (name, body) in files {
            std::fs::write(dir.join(name), body).expect("write a Dovecot file");
        }
        let extra = extra.replace("@DIR@", &dir.path().display().to_string());

        let mut last_err = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let conf = dir.join("dovecot.conf");
            let recording = if record { recording(&dir) } else { String::new() };
            let body = format!("{}\n{recording}{extra}\n", config(&dir, &id, port));
            std::fs::write(&conf, body).expect("write dovecot.conf");
            let mut child = spawn(&bin, &dir);
            if wait_for_port(port, &mut child, Duration::from_secs(20)) {
                return Dovecot { child: Some(child), port, dir, recorded: record };
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

    /// Replaces `from` with `to` in the configuration and has Dovecot reload it (SIGHUP),
    /// as an admin changing a setting would; new connections get the new settings.
    pub fn reconfigure(&self, from: &str, to: &str) {
        let conf = self.dir.join("dovecot.conf");
        let text = std::fs::read_to_string(&conf).expect("read dovecot.conf");
        assert!(text.contains(from), "reconfigure: {from:?} is not in dovecot.conf");
        std::fs::write(&conf, text.replace(from, to)).expect("write dovecot.conf");
        let pid = self.child.as_ref().expect("reconfigure: dovecot is not running").id();
        super::send_signal(pid, "HUP");
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
        let mut c = if self.recorded {
            Client::connect_from(DIRECT_FROM, self.port)
        } else {
            Client::connect(self.port)
        };
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

    /// Makes Dovecot keep a rawlog of `user`'s sessions from 127.0.0.1 (through imapgate)
    /// from now on; direct sessions come from elsewhere and are not recorded.
    pub fn record_user(&self, user: &str) {
        let dir = self.dir.join("rawlog").join(format!("{user}@127.0.0.1"));
        std::fs::create_dir_all(&dir).expect("mkdir rawlog");
        let id = identity();
        if id.root {
            std::os::unix::fs::chown(&dir, Some(id.uid), Some(id.gid)).expect("chown rawlog");
        }
    }

    /// What `user`'s sessions sent Dovecot after login, all sessions in order, as
    /// Dovecot's rawlog recorded it (its time stamps removed).
    pub fn rawlog_in(&self, user: &str) -> Vec<u8> {
        self.rawlog(user).into_iter().flat_map(|(input, _)| input).collect()
    }

    /// Per session through imapgate, what Dovecot received and what it sent, as its
    /// rawlog recorded them (time stamps removed).
    pub fn rawlog(&self, user: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let dir = self.dir.join("rawlog").join(format!("{user}@127.0.0.1"));
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "in"));
        files.sort();
        let read = |path: &std::path::Path| {
            let raw = std::fs::read(path).unwrap_or_default();
            let mut out = Vec::new();
            // Every line, literal lines too, starts with "SECS.USECS ".
            for line in raw.split_inclusive(|&b| b == b'\n') {
                let start = line.iter().position(|&b| b == b' ').map_or(line.len(), |p| p + 1);
                out.extend_from_slice(&line[start..]);
            }
            out
        };
        files.iter().map(|f| (read(f), read(&f.with_extension("out")))).collect()
    }

    /// The commands Dovecot executed for `user`, as its parser read them, from the
    /// `imap_command_finished` events in its log (poll: events arrive asynchronously).
    pub fn executed(&self, user: &str) -> Vec<Executed> {
        let log = self.log();
        log.lines()
            .filter(|l| l.contains("\"event\":\"imap_command_finished\""))
            .filter(|l| json_field(l, "user").as_deref() == Some(user))
            .filter(|l| !l.contains("\"remote_ip\":\"127.0.0.2\""))
            .map(|l| Executed {
                tag: json_field(l, "cmd_tag").unwrap_or_default(),
                name: json_field(l, "cmd_name").unwrap_or_default(),
                input_name: json_field(l, "cmd_input_name").unwrap_or_default(),
                args: json_field(l, "cmd_args").unwrap_or_default(),
                reply: json_field(l, "tagged_reply_state").unwrap_or_default(),
            })
            .collect()
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

/// One command as Dovecot executed it.
#[derive(Clone, Debug)]
pub struct Executed {
    pub tag: String,
    /// Dovecot's name for it (`unknown` for a command it does not know).
    pub name: String,
    /// The name as the client sent it.
    pub input_name: String,
    /// The arguments as Dovecot's parser read them (literal contents of APPEND left out).
    pub args: String,
    /// OK, NO or BAD.
    pub reply: String,
}

/// The rawlog and the command events (helper-verified on Dovecot 2.3.19).
fn recording(dir: &TempDir) -> String {
    let d = dir.path().display();
    format!(
        "protocol imap {{\n  rawlog_dir = {d}/rawlog/%u@%{{rip}}\n}}\n\
         event_exporter log {{\n  format = json\n  format_args = time-rfc3339\n  transport = log\n}}\n\
         metric imap_commands {{\n  exporter = log\n  exporter_include = name fields\n  \
         filter = event=imap_command_finished\n}}\n"
    )
}

/// The string value of `"key":"..."` in a JSON line, unescaped (enough for Dovecot's
/// event lines: string fields, `\\`, `\"`, `\r`, `\n`, `\t`, `\uXXXX`).
pub fn json_field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
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
