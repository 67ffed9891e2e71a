//! The serving process runs as the configured user and group, inside the chroot.

use super::*;

fn chroot_config(dv: &Dovecot, mode: &str, dir: &TempDir) -> String {
    config(
        dv.port,
        &format!(
            "user = nobody\ngroup = nogroup\nchroot = {}\nmode = {mode}",
            dir.path().display()
        ),
        "",
    )
}

fn nogroup() -> u32 {
    nix::unistd::Group::from_name("nogroup").ok().flatten().expect("group nogroup").gid.as_raw()
}

#[test]
fn thread_mode_serves_as_the_configured_user_inside_the_chroot() {
    if !is_root() {
        return;
    }
    let dv = Dovecot::start();
    let root = TempDir::new("chroot");
    let px = Proxy::start(&chroot_config(&dv, "thread", &root));
    let pid = main_pid(&px);
    let mut c = Client::connect(px.port);
    c.login("alice", "secret");
    c.cmd_ok("S", "SELECT INBOX");
    let (uid, gid, dir) = identity(pid);
    assert_eq!(uid, "65534 65534 65534 65534");
    assert_eq!(gid, format!("{0} {0} {0} {0}", nogroup()));
    assert_eq!(dir, root.path().display().to_string());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.lines().any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1')), "{status}");
    c.logout();
    px.wait_for_log("privileges dropped to nobody");
}

#[test]
fn fork_mode_session_processes_run_as_the_user_inside_the_chroot() {
    if !is_root() {
        return;
    }
    let dv = Dovecot::start();
    let root = TempDir::new("chroot");
    let px = Proxy::start(&chroot_config(&dv, "fork", &root));
    let pid = main_pid(&px);
    let mut c = Client::connect(px.port);
    c.login("alice", "secret");
    let kids = wait_children(pid, 1);
    let (uid, gid, dir) = identity(kids[0]);
    assert_eq!(uid, "65534 65534 65534 65534");
    assert_eq!(gid, format!("{0} {0} {0} {0}", nogroup()));
    assert_eq!(dir, root.path().display().to_string());
    // The listener process keeps root so that a reload can change everything.
    assert_eq!(identity(pid).0, "0 0 0 0");
    c.logout();
}

#[test]
fn running_as_root_without_user_warns_and_a_bad_chroot_is_a_config_error() {
    let dv = Dovecot::start();
    let px = Proxy::start(&config(dv.port, "", ""));
    if nix::unistd::geteuid().is_root() {
        px.wait_for_log("WARN: running as root: set \\[global\\] user");
    }
    let dir = TempDir::new("chk");
    let path = dir.join("bad.ini");
    let body = config(dv.port, "chroot = /nonexistent-imapgate\nuser = nobody", "")
        .replace("@PORT@", "1143");
    std::fs::write(&path, body).unwrap();
    let out = crate::common::proxy::run_imapgate(&["-t", "-f", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78), "{}", out.stderr_text());
    assert!(
        out.stderr_text().contains(": chroot: /nonexistent-imapgate: No such file"),
        "{}",
        out.stderr_text()
    );
}
