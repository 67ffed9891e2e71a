//! A private Cyrus IMAP server per test (Debian's cyrus-imapd): own temp dir with its
//! own imapd.conf, cyrus.conf and sasldb, only the imap service on a loopback port.
//! `cyrus master` is started as root in the foreground and drops to the `cyrus` user
//! itself; it is stopped by PID on drop.
//!
//! Debian's cyrus-imapd conflicts with dovecot-imapd (both provide `imap-server`), so
//! beside Dovecot only cyrus-common and sasl2-bin are installed, and the one program
//! of cyrus-imapd the tests need, `imapd`, is unpacked from its package without
//! installing it: `apt-get download cyrus-imapd && dpkg-deb -x cyrus-imapd_*.deb
//! target/cyrus-imapd` (what .ci/run does). [`imapd`] says where it is looked for.
//!
//! Users are created with `saslpasswd2` (sasl2-bin), all with the password `secret`;
//! their INBOX is created at the first login.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, require_tool, stop_child, tail, wait_child, wait_for_port, TempDir};

/// The SASL realm (and Cyrus `servername`) the users live in.
const REALM: &str = "cyrus.test";

pub struct Cyrus {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
}

impl Cyrus {
    /// Starts a fresh Cyrus with `users` (password `secret`) and waits for its port.
    pub fn start(users: &[&str]) -> Cyrus {
        let cyrus = require_tool("cyrus", "cyrus-imapd");
        let saslpasswd = require_tool("saslpasswd2", "sasl2-bin");
        let imapd = imapd();
        assert!(
            nix::unistd::geteuid().is_root(),
            "the Cyrus tests start `cyrus master` as root (it drops to the user `cyrus`)"
        );
        let owner = nix::unistd::User::from_name("cyrus")
            .ok()
            .flatten()
            .expect("user `cyrus` missing: install the Debian package cyrus-imapd");
        let dir = TempDir::new("cyrus");
        for sub in ["conf", "spool", "run"] {
            std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
        }
        let sasldb = dir.join("sasldb2");
        for user in users {
            let mut child = Command::new(&saslpasswd)
                .args(["-p", "-c", "-u", REALM, "-f"])
                .arg(&sasldb)
                .arg(user)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", saslpasswd.display()));
            child.stdin.take().expect("stdin").write_all(b"secret").expect("write password");
            let status = wait_child(&mut child, Duration::from_secs(20));
            if !status.is_some_and(|s| s.success()) {
                let _ = child.kill();
                panic!("saslpasswd2 for {user} failed: {status:?}");
            }
        }
        let (uid, gid) = (owner.uid.as_raw(), owner.gid.as_raw());
        for path in [dir.join("conf"), dir.join("spool"), dir.join("run"), sasldb] {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown for cyrus");
        }

        let mut last_err = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let (conf, master) = config(&dir, port, &imapd);
            std::fs::write(dir.join("imapd.conf"), conf).expect("write imapd.conf");
            std::fs::write(dir.join("cyrus.conf"), master).expect("write cyrus.conf");
            let out = std::fs::File::create(dir.join("master.out")).expect("create output file");
            let err = out.try_clone().expect("clone file");
            let mut child = Command::new(&cyrus)
                .arg("master")
                .arg("-C")
                .arg(dir.join("imapd.conf"))
                .arg("-M")
                .arg(dir.join("cyrus.conf"))
                .arg("-p")
                .arg(dir.join("run/master.pid"))
                .arg("-D")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", cyrus.display()));
            if wait_for_port(port, &mut child, Duration::from_secs(20)) {
                return Cyrus { child: Some(child), port, dir };
            }
            stop_child(&mut child, Duration::from_secs(5));
            last_err = tail(&std::fs::read(dir.join("master.out")).unwrap_or_default(), 3000);
        }
        panic!("cyrus master did not start (it logs to syslog); its output:\n{last_err}");
    }

    /// Makes Cyrus keep its protocol telemetry of `user`'s sessions from now on: imapd
    /// writes what it receives and sends to `{configdirectory}/log/USER/PID` once that
    /// directory exists.
    pub fn record_user(&self, user: &str) {
        let dir = self.dir.join("conf/log").join(user);
        std::fs::create_dir_all(&dir).expect("mkdir telemetry");
        let owner = nix::unistd::User::from_name("cyrus").ok().flatten().expect("user cyrus");
        for d in [self.dir.join("conf/log"), dir] {
            std::os::unix::fs::chown(&d, Some(owner.uid.as_raw()), Some(owner.gid.as_raw()))
                .expect("chown telemetry");
        }
    }

    /// `user`'s telemetry: every session's record, input and output interleaved as Cyrus
    /// wrote them (input follows `<TIME<` marks, output `>TIME>` marks).
    pub fn telemetry(&self, user: &str) -> Vec<u8> {
        let dir = self.dir.join("conf/log").join(user);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files.iter().flat_map(|f| std::fs::read(f).unwrap_or_default()).collect()
    }

    /// Stops Cyrus (SIGTERM to the master by PID; it stops its children).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Duration::from_secs(10));
        }
    }
}

impl Drop for Cyrus {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Cyrus's `imapd`: `$IMAPGATE_CYRUS_IMAPD`, else the installed one, else the one
/// unpacked under `target/cyrus-imapd` (see the module documentation).
fn imapd() -> PathBuf {
    let unpacked =
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/cyrus-imapd/usr/lib/cyrus/bin/imapd");
    let candidates = [
        std::env::var_os("IMAPGATE_CYRUS_IMAPD").map(PathBuf::from),
        Some(PathBuf::from("/usr/lib/cyrus/bin/imapd")),
        Some(PathBuf::from(unpacked)),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "Cyrus `imapd` not found: install cyrus-common and sasl2-bin, then unpack \
             cyrus-imapd (it conflicts with dovecot-imapd) with `apt-get download \
             cyrus-imapd && dpkg-deb -x cyrus-imapd_*.deb target/cyrus-imapd`, or set \
             IMAPGATE_CYRUS_IMAPD; .ci/run does this when run as root"
        )
    })
}

/// imapd.conf and cyrus.conf: plaintext LOGIN/PLAIN against the private sasldb, every
/// path inside the temp dir, and no service but imap on `127.0.0.1:port`.
fn config(dir: &TempDir, port: u16, imapd: &Path) -> (String, String) {
    let d = dir.path().display();
    let imapd = imapd.display();
    let conf = format!(
        "configdirectory: {d}/conf\n\
         partition-default: {d}/spool\n\
         servername: {REALM}\n\
         admins: cyrus\n\
         allowplaintext: yes\n\
         sasl_pwcheck_method: auxprop\n\
         sasl_auxprop_plugin: sasldb\n\
         sasl_sasldb_path: {d}/sasldb2\n\
         sasl_mech_list: PLAIN LOGIN\n\
         autocreate_quota: 0\n\
         autocreate_post: yes\n\
         unixhierarchysep: yes\n\
         syslog_prefix: imapgate-test-cyrus\n\
         lmtpsocket: {d}/run/lmtp\n\
         idlesocket: {d}/run/idle\n\
         notifysocket: {d}/run/notify\n\
         mboxname_lockpath: {d}/run/lock\n\
         proc_path: {d}/run/proc\n"
    );
    let master = format!(
        "START {{\n  recover cmd=\"ctl_cyrusdb -r -C {d}/imapd.conf\"\n}}\n\
         SERVICES {{\n  imap cmd=\"{imapd} -C {d}/imapd.conf\" listen=\"127.0.0.1:{port}\" prefork=0\n}}\n\
         EVENTS {{\n}}\n\
         DAEMON {{\n}}\n"
    );
    (conf, master)
}
