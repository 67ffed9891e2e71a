//! A private OpenLDAP slapd per test: its own directory, an mdb database loaded from
//! the test's LDIF with slapadd, listening on a loopback port and on a unix socket
//! (ldapi). Suffix `dc=example,dc=org`; users under `ou=people` bind with their
//! `userPassword`; anyone may search.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, require_tool, run_with_timeout, stop_child, wait_for_port, TempDir};

pub const BASE: &str = "ou=people,dc=example,dc=org";

pub struct Slapd {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
}

/// An entry of a test user for [`Slapd::start`]: uid, password, and extra attribute lines.
pub fn person(uid: &str, password: &str, extra: &[(&str, &str)]) -> String {
    let mut ldif = format!(
        "dn: uid={uid},{BASE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n\
         mail: {uid}@example.org\nuserPassword: {password}\n"
    );
    for (attr, value) in extra {
        ldif.push_str(&format!("{attr}: {value}\n"));
    }
    ldif + "\n"
}

impl Slapd {
    /// Starts slapd with the entries in `people` (see [`person`]).
    pub fn start(people: &[String]) -> Slapd {
        let slapd = require_tool("slapd", "slapd");
        let slapadd = require_tool("slapadd", "slapd");
        let dir = TempDir::new("slapd");
        let d = dir.path().display().to_string();
        std::fs::create_dir_all(dir.join("db")).expect("mkdir db");
        let conf = format!(
            "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\npidfile {d}/slapd.pid\n\
             modulepath /usr/lib/ldap\nmoduleload back_mdb\ndatabase mdb\nmaxsize 10485760\n\
             suffix \"dc=example,dc=org\"\nrootdn \"cn=admin,dc=example,dc=org\"\nrootpw adminpw\n\
             directory {d}/db\n\
             access to attrs=userPassword by anonymous auth by self read by * none\n\
             access to * by * read\n"
        );
        std::fs::write(dir.join("slapd.conf"), conf).expect("write slapd.conf");
        let mut ldif = "dn: dc=example,dc=org\nobjectClass: dcObject\nobjectClass: organization\n\
                        o: Example\ndc: example\n\ndn: ou=people,dc=example,dc=org\n\
                        objectClass: organizationalUnit\nou: people\n\n"
            .to_string();
        for p in people {
            ldif.push_str(p);
        }
        std::fs::write(dir.join("data.ldif"), ldif).expect("write ldif");
        let mut add = Command::new(slapadd);
        add.arg("-f").arg(dir.join("slapd.conf")).arg("-l").arg(dir.join("data.ldif"));
        let out = run_with_timeout(add, &dir, Duration::from_secs(30));
        assert!(out.status.success(), "slapadd: {}", out.stderr_text());
        let port = free_port();
        let mut me = Slapd { child: None, port, dir };
        me.child = Some(me.spawn(&slapd));
        me
    }

    fn spawn(&self, slapd: &std::path::Path) -> Child {
        let urls = format!("ldap://127.0.0.1:{}/ {}", self.port, self.ldapi_url());
        let mut child = Command::new(slapd)
            .arg("-f")
            .arg(self.dir.join("slapd.conf"))
            .arg("-h")
            .arg(urls)
            .arg("-d")
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start slapd");
        if !wait_for_port(self.port, &mut child, Duration::from_secs(20)) {
            stop_child(&mut child, Duration::from_secs(5));
            panic!("slapd did not start on port {}", self.port);
        }
        child
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// The unix socket, as an ldapi:// URL (path %-escaped).
    pub fn ldapi_url(&self) -> String {
        format!("ldapi://{}", self.socket().display().to_string().replace('/', "%2F"))
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("ldapi")
    }

    /// Stops slapd (the directory goes down).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            super::send_signal(child.id(), "CONT");
            stop_child(&mut child, Duration::from_secs(10));
        }
    }

    /// Freezes slapd (SIGSTOP): connections are accepted by the kernel and never
    /// answered, a directory that hangs.
    pub fn pause(&self) {
        super::send_signal(self.child.as_ref().expect("slapd runs").id(), "STOP");
    }

    /// Lets a paused slapd go on (SIGCONT).
    pub fn resume(&self) {
        super::send_signal(self.child.as_ref().expect("slapd runs").id(), "CONT");
    }

    /// Starts it again, same port and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let slapd = require_tool("slapd", "slapd");
        self.child = Some(self.spawn(&slapd));
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
