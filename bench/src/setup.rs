//! Everything the benchmark runs against: peers installed, imapgate built, a
//! private Dovecot with generated mailboxes, and each proxy in front of it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::sys::{self, free_port, have, is_root, spawn, wait_port};

pub type Res<T> = Result<T, String>;

pub const PASSWORD: &str = "secret";
pub const BIG_USER: &str = "big";
pub const BIG_COUNT: usize = 200;
pub const BIG_SIZE: usize = 1 << 20;
pub const SMALL_USER: &str = "small";
pub const SMALL_COUNT: usize = 2000;
pub const SMALL_SIZE: usize = 4096;

pub const NGINX_MAIL_MODULE: &str = "/usr/lib/nginx/modules/ngx_mail_module.so";

/// Installs the peers with apt-get when something is missing and we are root.
pub fn install_peers() -> Res<()> {
    let missing = have("dovecot").is_none()
        || have("nginx").is_none()
        || !Path::new(NGINX_MAIL_MODULE).exists()
        || have("perdition.imap4").is_none()
        || have("openssl").is_none();
    if !missing {
        return Ok(());
    }
    if !is_root() {
        return Err("missing peers; as root run: apt-get install -y dovecot-imapd nginx \
                    libnginx-mod-mail perdition openssl"
            .into());
    }
    eprintln!("bench: installing dovecot-imapd nginx libnginx-mod-mail perdition openssl");
    let run = |args: &[&str]| -> Res<()> {
        let st = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("apt-get: {e}"))?;
        st.success().then_some(()).ok_or(format!("apt-get {args:?} failed: {st}"))
    };
    let pkgs = ["install", "-y", "-q", "dovecot-imapd", "nginx", "libnginx-mod-mail", "perdition", "openssl"];
    if run(&pkgs).is_err() {
        run(&["update", "-q"])?;
        run(&pkgs)?;
    }
    Ok(())
}

/// The repository top (parent of bench/).
pub fn repo_top() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench has a parent")
        .to_path_buf()
}

/// `cargo build --release` at the repository top; returns the binary.
pub fn build_imapgate() -> Res<PathBuf> {
    let top = repo_top();
    eprintln!("bench: cargo build --release (imapgate)");
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--bin", "imapgate"])
        .current_dir(&top)
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !st.success() {
        return Err(format!("cargo build --release failed: {st}"));
    }
    Ok(top.join("target/release/imapgate"))
}

/// A temp dir that dovecot/nginx/perdition users may traverse.
pub fn make_temp() -> Res<PathBuf> {
    let base = std::env::temp_dir();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000);
    let dir = base.join(format!("imapgate-bench.{}.{stamp}", std::process::id()));
    std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    set_mode(&dir, 0o755);
    Ok(dir)
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
}

fn write(p: &Path, s: &str) -> Res<()> {
    std::fs::write(p, s).map_err(|e| format!("write {}: {e}", p.display()))
}

/// A CA and a leaf certificate for 127.0.0.1/localhost (ECDSA P-256).
pub fn make_certs(dir: &Path) -> Res<()> {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).map_err(|e| e.to_string())?;
    set_mode(&tls, 0o755);
    let ext = "basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n";
    write(&tls.join("leaf.ext"), ext)?;
    let steps: &[&[&str]] = &[
        &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"],
        &["req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "30", "-subj", "/CN=imapgate bench CA", "-out", "ca.pem"],
        &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "key.ec.pem"],
        &["pkcs8", "-topk8", "-nocrypt", "-in", "key.ec.pem", "-out", "key.pem"],
        &["req", "-new", "-key", "key.pem", "-subj", "/CN=localhost", "-out", "leaf.csr"],
        &["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "30", "-sha256", "-extfile", "leaf.ext", "-out", "cert.pem"],
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(*args)
            .current_dir(&tls)
            .output()
            .map_err(|e| format!("openssl: {e}"))?;
        if !out.status.success() {
            return Err(format!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    for f in ["cert.pem", "key.pem", "ca.pem"] {
        set_mode(&tls.join(f), 0o644);
    }
    Ok(())
}

// ---------------------------------------------------------------- mail ----

/// Deterministic message `n` of `user`, exactly `size` bytes, CRLF lines.
pub fn message(user: &str, n: usize, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: bench <bench@example.org>\r\nTo: {user} <{user}@example.org>\r\n\
         Subject: bench message {n}\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\
         Message-ID: <{n}.{user}@bench.example.org>\r\n\r\n"
    )
    .into_bytes();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 .,-";
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D);
    m.reserve(size + 80);
    while m.len() < size {
        for _ in 0..76 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            m.push(alphabet[(x % alphabet.len() as u64) as usize]);
        }
        m.extend_from_slice(b"\r\n");
    }
    m.truncate(size - 2);
    if m.last() == Some(&b'\r') {
        *m.last_mut().unwrap() = b'x';
    }
    m.extend_from_slice(b"\r\n");
    m
}

/// The number N of "Subject: bench message N" in a message.
pub fn message_number(m: &[u8]) -> Option<usize> {
    let key = b"Subject: bench message ";
    let at = m.windows(key.len()).position(|w| w == key)? + key.len();
    let digits: Vec<u8> = m[at..].iter().take_while(|c| c.is_ascii_digit()).copied().collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

fn fill_maildir(home: &Path, user: &str, count: usize, size: usize) -> Res<()> {
    let cur = home.join("Maildir/cur");
    for d in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(home.join("Maildir").join(d)).map_err(|e| e.to_string())?;
    }
    for n in 1..=count {
        let name = format!("{}.M{n}P1.bench,S={size},W={size}:2,S", 1_700_000_000 + n);
        std::fs::write(cur.join(name), message(user, n, size)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn chown_tree(p: &Path, uid: u32, gid: u32) {
    let _ = std::os::unix::fs::chown(p, Some(uid), Some(gid));
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                chown_tree(&e.path(), uid, gid);
            } else {
                let _ = std::os::unix::fs::chown(e.path(), Some(uid), Some(gid));
            }
        }
    }
}

// ------------------------------------------------------------- dovecot ----

#[allow(dead_code)]
pub struct Dovecot {
    pub pid: u32,
    pub port: u16,
    pub tls_port: u16,
}

fn user_ids(name: &str) -> Option<(u32, u32)> {
    let f = std::fs::read_to_string("/etc/passwd").ok()?;
    f.lines().find_map(|l| {
        let v: Vec<&str> = l.split(':').collect();
        (v.first() == Some(&name)).then(|| Some((v.get(2)?.parse().ok()?, v.get(3)?.parse().ok()?)))?
    })
}

fn user_name(uid: u32) -> Option<String> {
    let f = std::fs::read_to_string("/etc/passwd").ok()?;
    f.lines().find_map(|l| {
        let v: Vec<&str> = l.split(':').collect();
        (v.get(2)?.parse::<u32>().ok()? == uid).then(|| v[0].to_string())
    })
}

/// Dovecot's `mail_fsync`: `BENCH_MAIL_FSYNC`, default never (see the config).
pub fn mail_fsync() -> String {
    std::env::var("BENCH_MAIL_FSYNC").unwrap_or("never".into())
}

pub fn start_dovecot(dir: &Path, tls: bool) -> Res<Dovecot> {
    let bin = have("dovecot").ok_or("dovecot not installed")?;
    let d = dir.join("dovecot");
    let mail = d.join("mail");
    for sub in ["run", "state", "mail"] {
        std::fs::create_dir_all(d.join(sub)).map_err(|e| e.to_string())?;
    }
    set_mode(&d, 0o755);
    let (internal, login, uid, gid, chroot) = if is_root() {
        let (uid, gid) = user_ids("dovecot").ok_or("user dovecot missing (install dovecot-imapd)")?;
        let login = if user_ids("dovenull").is_some() { "dovenull" } else { "dovecot" };
        ("dovecot".to_string(), login.to_string(), uid, gid, "")
    } else {
        let uid = unsafe { libc::geteuid() };
        let gid = unsafe { libc::getegid() };
        let me = user_name(uid).ok_or("current user has no passwd entry")?;
        (me.clone(), me, uid, gid, "  chroot =\n")
    };
    eprintln!(
        "bench: generating mailboxes: {BIG_USER} {BIG_COUNT} x {BIG_SIZE} B, {SMALL_USER} {SMALL_COUNT} x {SMALL_SIZE} B"
    );
    fill_maildir(&mail.join(BIG_USER), BIG_USER, BIG_COUNT, BIG_SIZE)?;
    fill_maildir(&mail.join(SMALL_USER), SMALL_USER, SMALL_COUNT, SMALL_SIZE)?;
    chown_tree(&mail, uid, gid);

    let port = free_port();
    let tls_port = if tls { free_port() } else { 0 };
    let dd = d.display();
    let ssl = if tls {
        format!(
            "ssl = yes\nssl_cert = <{t}/cert.pem\nssl_key = <{t}/key.pem\n",
            t = dir.join("tls").display()
        )
    } else {
        "ssl = no\n".to_string()
    };
    let conf = format!(
        r#"base_dir = {dd}/run
state_dir = {dd}/state
instance_name = imapgate-bench-{pid}
listen = 127.0.0.1
protocols = imap
{ssl}disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = {dd}/dovecot.log
info_log_path = /dev/null
default_internal_user = {internal}
default_login_user = {login}
first_valid_uid = 1
mail_location = maildir:~/Maildir
# The APPEND scenario measures the proxy, not the disk: with Dovecot's default
# (optimized) every saved message waits for an fsync, which on the VM disk this was
# written on doubled the time per APPEND (BENCH_MAIL_FSYNC=optimized for it)
mail_fsync = {mail_fsync}
auth_failure_delay = 0
default_process_limit = 4000
default_client_limit = 20000
default_vsz_limit = 1G
mail_max_userip_connections = 100000
imap_idle_notify_interval = 30 mins
# COMPRESS=DEFLATE for the direct figure of the bulkz scenario.
mail_plugins = $mail_plugins zlib
protocol imap {{
  mail_plugins = $mail_plugins imap_zlib
}}

passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={dd}/mail/%u
}}

service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
  # high-performance mode: long-lived login processes, one per core
  service_count = 0
  process_min_avail = {ncpu}
  process_limit = 16
  client_limit = 10000
{chroot}}}
service imap {{
  process_limit = 4000
  # reuse imap processes (all users share one uid here), keep some ready
  service_count = {imap_service_count}
  process_min_avail = {imap_min_avail}
  # surplus processes left by the 1000 idle sessions go away quickly; a
  # thousand idle imap processes all woken by every new login would slow
  # every later measurement down
  idle_kill = 2 secs
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
{chroot}}}
"#,
        pid = std::process::id(),
        ncpu = sys::ncpu(),
        mail_fsync = mail_fsync(),
        imap_service_count = std::env::var("BENCH_IMAP_SERVICE_COUNT").unwrap_or("0".into()),
        imap_min_avail = std::env::var("BENCH_IMAP_MIN_AVAIL").unwrap_or("16".into()),
    );
    let conf_path = d.join("dovecot.conf");
    write(&conf_path, &conf)?;
    let err = std::fs::File::create(d.join("dovecot.stderr")).map_err(|e| e.to_string())?;
    let pid = spawn(
        "dovecot",
        Command::new(bin).arg("-F").arg("-c").arg(&conf_path).stdin(Stdio::null()).stdout(Stdio::null()).stderr(err),
    )
    .map_err(|e| format!("dovecot: {e}"))?;
    if !wait_port(port, pid, Duration::from_secs(20)) || (tls && !wait_port(tls_port, pid, Duration::from_secs(5))) {
        return Err(format!(
            "dovecot did not start:\n{}\n{}",
            std::fs::read_to_string(d.join("dovecot.stderr")).unwrap_or_default(),
            std::fs::read_to_string(d.join("dovecot.log")).unwrap_or_default()
        ));
    }
    Ok(Dovecot { pid, port, tls_port })
}

pub fn dovecot_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("dovecot/dovecot.log")).unwrap_or_default()
}

// ------------------------------------------------------------ launcher ----

/// Starts the process again (same command, same ports); returns the new PID.
pub type Relaunch = std::rc::Rc<dyn Fn() -> Res<u32>>;

/// Spawns `make()` as `name`, waits for `ports`; the returned closure does the
/// same again (after the caller stopped the old process). `log` is shown on failure.
fn launch(name: &'static str, make: impl Fn() -> Res<Command> + 'static, ports: Vec<u16>, log: PathBuf) -> Res<(u32, Relaunch)> {
    let start: Relaunch = std::rc::Rc::new(move || {
        let mut cmd = make()?;
        let pid = spawn(name, &mut cmd).map_err(|e| format!("{name}: {e}"))?;
        if !ports.iter().all(|&p| wait_port(p, pid, Duration::from_secs(10))) {
            return Err(format!(
                "{name} did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        Ok(pid)
    });
    let pid = start()?;
    Ok((pid, start))
}

// ------------------------------------------------------------ imapgate ----

pub struct Imapgate {
    pub pid: u32,
    pub relaunch: Relaunch,
    pub port: u16,
    /// None: this build has no TLS listener support.
    pub tls_port: Option<u16>,
}

/// Rule sections for the rule-engine cost measurement (issue 5); a listener uses them
/// only when it has a `rules =` line (`rules_line`).
const RULE_SECTIONS: &str = "\n[rule no-delete]\ntype = commands\ndeny = DELETE EXPUNGE\n\n\
    [rule audit-all]\ntype = audit\nfile = /dev/null\n\n\
    [rule hide-groupware]\ntype = hide_folders\nfolders = Calendar Contacts Tasks Notes Journal Configuration\n";

/// The listeners' `rules =` line. `IMAPGATE_BENCH_RULES` (`commands-audit`,
/// `hide-folders`, or unset for none) applies to the `imapgate` target; the
/// `imapgate-rules` target always has rules (judged mode): that set, or
/// `commands-audit` (denies neither APPEND nor anything the scenarios send).
pub fn rules_line(target: &str) -> &'static str {
    let env = std::env::var("IMAPGATE_BENCH_RULES").unwrap_or_default();
    let set = match env.as_str() {
        "commands-audit" | "hide-folders" => env.as_str(),
        _ if target == "imapgate-rules" => "commands-audit",
        _ => "",
    };
    match set {
        "commands-audit" => "rules = no-delete, audit-all\n",
        "hide-folders" => "rules = hide-groupware\n",
        _ => "",
    }
}

/// The `[map users]` section of a target: static, or an LDAP map on the bench's slapd
/// (`imapgate-ldap` without a cache, `imapgate-ldap-cache` with one).
pub fn map_section(target: &str, ldap_port: Option<u16>) -> String {
    match (target, ldap_port) {
        ("imapgate-ldap" | "imapgate-ldap-cache", Some(port)) => {
            let cache = if target == "imapgate-ldap-cache" { "cache_ttl = 5m\n" } else { "" };
            format!(
                "[map users]\ntype = ldap\nurl = ldap://127.0.0.1:{port}\nbase = {LDAP_BASE}\n\
                 filter = (uid=%u)\nfield = backend l\n{cache}"
            )
        }
        _ => "[map users]\ntype = static\ndefault = dovecot\n".to_string(),
    }
}

fn imapgate_conf(dovecot_port: u16, port: u16, tls: Option<(u16, &Path)>, rules: &str, map: &str) -> String {
    let mut s = format!(
        "[global]\nlog_level = warn\n\n[backend dovecot]\nhost = 127.0.0.1\nport = {dovecot_port}\n\n\
         {map}\n\
         [listener imap]\nlisten = 127.0.0.1:{port}\nmap = users\n{rules}"
    );
    s += RULE_SECTIONS;
    if let Some((tp, tlsdir)) = tls {
        s += &format!(
            "\n[listener imaps]\nlisten = 127.0.0.1:{tp}\nmap = users\ntls = implicit\ncert = {c}\nkey = {k}\n{rules}",
            c = tlsdir.join("cert.pem").display(),
            k = tlsdir.join("key.pem").display()
        );
    }
    s
}

/// One imapgate process as target `name` (`imapgate` or `imapgate-rules`, see
/// `rules_line`), with its config and log in its own subdirectory.
pub fn start_imapgate(
    bin: &Path,
    dir: &Path,
    name: &'static str,
    dovecot_port: u16,
    tls: bool,
    ldap_port: Option<u16>,
) -> Res<Imapgate> {
    if !bin.is_file() {
        return Err(format!("imapgate binary {} not found", bin.display()));
    }
    let rules = rules_line(name);
    let map = map_section(name, ldap_port);
    let d = dir.join(name);
    std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    // A private copy: the whole run uses one build even if target/ is rebuilt meanwhile.
    let copy = d.join("imapgate");
    std::fs::copy(bin, &copy).map_err(|e| format!("copy {}: {e}", bin.display()))?;
    let bin = copy.as_path();
    let port = free_port();
    let mut tls_port = None;
    if tls {
        // Does this build know `tls = implicit`? Ask `imapgate -t`.
        let tp = free_port();
        let probe = d.join("imapgate-tls.ini");
        write(&probe, &imapgate_conf(dovecot_port, port, Some((tp, &dir.join("tls"))), rules, &map))?;
        let out = Command::new(bin).arg("-t").arg("-f").arg(&probe).output().map_err(|e| e.to_string())?;
        if out.status.success() {
            tls_port = Some(tp);
        } else {
            eprintln!(
                "bench: imapgate TLS: n/a (not supported by this build): {}",
                String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or("")
            );
        }
    }
    let conf = d.join("imapgate.ini");
    let tls_dir = dir.join("tls");
    write(&conf, &imapgate_conf(dovecot_port, port, tls_port.map(|tp| (tp, tls_dir.as_path())), rules, &map))?;
    let (bin, logp) = (bin.to_path_buf(), d.join("imapgate.log"));
    let log_for_cmd = logp.clone();
    let mut ports = vec![port];
    ports.extend(tls_port);
    let make = move || {
        let log = std::fs::File::options().create(true).append(true).open(&log_for_cmd).map_err(|e| e.to_string())?;
        let mut c = Command::new(&bin);
        c.arg("-f").arg(&conf).stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        Ok(c)
    };
    let (pid, relaunch) = launch(name, make, ports, logp)?;
    Ok(Imapgate { pid, relaunch, port, tls_port })
}

// --------------------------------------------------------------- slapd ----

pub const LDAP_BASE: &str = "ou=people,dc=bench";

/// A slapd (mdb) holding one entry for every user the scenarios log in as, each
/// routed to the backend `dovecot` by its `l` attribute; for the LDAP-map targets.
pub fn start_slapd(dir: &Path, users: &[String]) -> Res<u16> {
    let slapd = have("slapd").ok_or("slapd not installed (Debian: slapd)")?;
    let slapadd = have("slapadd").ok_or("slapadd not installed (Debian: slapd)")?;
    let d = dir.join("slapd");
    std::fs::create_dir_all(d.join("db")).map_err(|e| e.to_string())?;
    let conf = d.join("slapd.conf");
    write(
        &conf,
        &format!(
            "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\npidfile {p}/slapd.pid\n\
             modulepath /usr/lib/ldap\nmoduleload back_mdb\ndatabase mdb\nmaxsize 104857600\n\
             suffix \"dc=bench\"\nrootdn \"cn=admin,dc=bench\"\nrootpw adminpw\ndirectory {p}/db\n\
             access to * by * read\n",
            p = d.display()
        ),
    )?;
    let mut ldif = "dn: dc=bench\nobjectClass: dcObject\nobjectClass: organization\no: bench\ndc: bench\n\n\
                    dn: ou=people,dc=bench\nobjectClass: organizationalUnit\nou: people\n\n"
        .to_string();
    for u in users {
        ldif += &format!(
            "dn: uid={u},{LDAP_BASE}\nobjectClass: inetOrgPerson\nuid: {u}\ncn: {u}\nsn: {u}\nl: dovecot\n\n"
        );
    }
    write(&d.join("data.ldif"), &ldif)?;
    let out = Command::new(slapadd)
        .arg("-f")
        .arg(&conf)
        .arg("-l")
        .arg(d.join("data.ldif"))
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("slapadd: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let port = free_port();
    let logp = d.join("slapd.log");
    let log2 = logp.clone();
    let make = move || {
        let log = std::fs::File::create(&log2).map_err(|e| e.to_string())?;
        let mut c = Command::new(&slapd);
        c.arg("-f").arg(&conf).arg("-h").arg(format!("ldap://127.0.0.1:{port}/")).args(["-d", "0"]);
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        Ok(c)
    };
    launch("slapd", make, vec![port], logp)?;
    Ok(port)
}

// --------------------------------------------------------------- nginx ----

/// The tiny auth_http responder nginx asks before each login: every user is
/// sent to the Dovecot port. Runs as `imapgate-bench authd PORT DOVECOT_PORT`.
pub fn authd_main(port: u16, dovecot_port: u16) -> ! {
    let l = TcpListener::bind(("127.0.0.1", port)).expect("authd: bind");
    let answer = format!(
        "HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: {dovecot_port}\r\n\r\n"
    );
    let answer = std::sync::Arc::new(answer);
    let mut threads = Vec::new();
    for _ in 0..4 {
        let l = l.try_clone().expect("authd: clone");
        let answer = std::sync::Arc::clone(&answer);
        threads.push(std::thread::spawn(move || loop {
            let Ok((s, _)) = l.accept() else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut r = BufReader::new(&s);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if line == "\r\n" || line == "\n" => {
                        let _ = (&s).write_all(answer.as_bytes());
                        break;
                    }
                    Ok(_) => {}
                }
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    std::process::exit(0)
}

#[allow(dead_code)]
pub struct Nginx {
    pub pid: u32,
    pub relaunch: Relaunch,
    pub authd_pid: u32,
    pub port: u16,
    pub tls_port: u16,
}

pub fn start_nginx(dir: &Path, dovecot_port: u16, tls: bool, nofile: u64) -> Res<Nginx> {
    let bin = have("nginx").ok_or("nginx not installed")?;
    let d = dir.join("nginx");
    std::fs::create_dir_all(d.join("logs")).map_err(|e| e.to_string())?;
    set_mode(&d, 0o755);
    let auth_port = free_port();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let authd_pid = spawn(
        "authd",
        Command::new(exe)
            .args(["authd", &auth_port.to_string(), &dovecot_port.to_string()])
            .stdin(Stdio::null()),
    )
    .map_err(|e| format!("authd: {e}"))?;
    if !wait_port(auth_port, authd_pid, Duration::from_secs(5)) {
        return Err("auth_http responder did not start".into());
    }
    let port = free_port();
    let tls_port = if tls { free_port() } else { 0 };
    let tls_server = if tls {
        format!(
            "    server {{\n        listen 127.0.0.1:{tls_port} ssl;\n        protocol imap;\n        \
             ssl_certificate {t}/cert.pem;\n        ssl_certificate_key {t}/key.pem;\n    }}\n",
            t = dir.join("tls").display()
        )
    } else {
        String::new()
    };
    let conf = format!(
        r#"load_module {NGINX_MAIL_MODULE};
daemon off;
master_process on;
worker_processes auto;
worker_rlimit_nofile {nofile};
pid {dd}/nginx.pid;
error_log {dd}/logs/error.log warn;
events {{
    worker_connections 20000;
}}
mail {{
    server_name bench.example.org;
    auth_http 127.0.0.1:{auth_port}/auth;
    imap_capabilities IMAP4rev1 LITERAL+ SASL-IR ID IDLE;
    imap_auth plain login;
    server {{
        listen 127.0.0.1:{port};
        protocol imap;
    }}
{tls_server}}}
"#,
        dd = d.display()
    );
    let conf_path = d.join("nginx.conf");
    write(&conf_path, &conf)?;
    let check = Command::new(&bin)
        .arg("-t")
        .arg("-p")
        .arg(&d)
        .arg("-e")
        .arg(d.join("logs/error.log"))
        .arg("-c")
        .arg(&conf_path)
        .output()
        .map_err(|e| e.to_string())?;
    if !check.status.success() {
        return Err(format!("nginx -t: {}", String::from_utf8_lossy(&check.stderr)));
    }
    let errlog = d.join("logs/error.log");
    let make = move || {
        let err = std::fs::File::options().create(true).append(true).open(d.join("nginx.stderr")).map_err(|e| e.to_string())?;
        let mut c = Command::new(&bin);
        c.arg("-p").arg(&d).arg("-e").arg(d.join("logs/error.log")).arg("-c").arg(&conf_path);
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err);
        Ok(c)
    };
    let mut ports = vec![port];
    if tls {
        ports.push(tls_port);
    }
    let (pid, relaunch) = launch("nginx", make, ports, errlog)?;
    Ok(Nginx { pid, relaunch, authd_pid, port, tls_port })
}

// ----------------------------------------------------------- perdition ----

pub struct Perdition {
    pub pid: u32,
    pub relaunch: Relaunch,
    pub port: u16,
}

/// One Perdition (IMAP4, or IMAP4S with `tls`) in the foreground, sending
/// every user to Dovecot (`--outgoing_server`, no map library).
pub fn start_perdition(dir: &Path, dovecot_port: u16, tls: bool) -> Res<Perdition> {
    let bin = have("perdition.imap4").ok_or("perdition not installed")?;
    let d = dir.join("perdition");
    std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    set_mode(&d, 0o777);
    let port = free_port();
    let name = if tls { "perdition-tls" } else { "perdition" };
    let errp = d.join(format!("{name}.stderr"));
    let (errp2, tlsdir) = (errp.clone(), dir.join("tls"));
    let make = move || {
        let mut cmd = Command::new(&bin);
        cmd.arg("--no_daemon")
            .args(["--config_file", "/dev/null"])
            .args(["--protocol", if tls { "IMAP4S" } else { "IMAP4" }])
            .args(["--bind_address", "127.0.0.1"])
            .args(["--listen_port", &port.to_string()])
            .args(["--outgoing_server", &format!("127.0.0.1:{dovecot_port}")])
            .args(["--map_library", ""])
            .arg("--server_resp_line")
            .args(["--imap_capability", "IMAP4 IMAP4rev1 LITERAL+"])
            .arg(format!("--pid_file={}", d.join(format!("{name}.pid")).display()));
        if is_root() {
            cmd.args(["--username", "nobody", "--group", "nogroup"]);
        }
        if tls {
            cmd.args(["--ssl_mode", "ssl_listen"])
                .arg("--ssl_cert_file")
                .arg(tlsdir.join("cert.pem"))
                .arg("--ssl_key_file")
                .arg(tlsdir.join("key.pem"));
        }
        let err = std::fs::File::options().create(true).append(true).open(&errp2).map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err);
        Ok(cmd)
    };
    let (pid, relaunch) = launch(name, make, vec![port], errp)?;
    Ok(Perdition { pid, relaunch, port })
}
