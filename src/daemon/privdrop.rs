//! Dropping root for good, in the order of relayd's `proc_run` and OpenSMTPD's
//! `dispatcher`: chroot → chdir("/") → setgroups → setresgid → setresuid → verify →
//! no-new-privs. Any failing step is fatal and named in the error.
//!
//! [`resolve`] runs first, while /etc/passwd and /etc/group are still reachable (and for
//! `-t`); [`drop_privileges`] runs after the configuration, the TLS keys, the listening
//! sockets and the log are open, and before a byte is read from a client.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::unistd::{Gid, Group, Uid, User};

use crate::config::{Config, ConfigError, ConfigErrors};

/// Whom to become, resolved from `[global] user`, `group` and `chroot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The account name, for messages.
    pub user: String,
    /// Its uid.
    pub uid: Uid,
    /// The group id: `group`, else the user's primary group.
    pub gid: Gid,
    /// The directory to chroot into.
    pub chroot: Option<PathBuf>,
}

/// Resolves the names and checks the chroot directory. `Ok(None)`: no `user`, nothing
/// to drop. Errors point at the line of the key.
pub fn resolve(config: &Config) -> Result<Option<Spec>, ConfigErrors> {
    let d = &config.global.daemon;
    let err = |line: usize, msg: String| {
        ConfigErrors(vec![ConfigError { path: config.path.clone(), line, msg }])
    };
    let Some(user) = &d.user else {
        if let Some(c) = &d.chroot {
            return Err(err(c.line, "chroot: requires user (root can leave a chroot)".into()));
        }
        return Ok(None);
    };
    let found = match user.value.parse::<u32>() {
        Ok(n) => User::from_uid(Uid::from_raw(n)),
        Err(_) => User::from_name(&user.value),
    };
    let account = match found {
        Ok(Some(u)) => u,
        Ok(None) => return Err(err(user.line, format!("user: no such user {:?}", user.value))),
        Err(e) => {
            return Err(err(user.line, format!("user: cannot look up {:?}: {e}", user.value)))
        }
    };
    let gid = match &d.group {
        None => account.gid,
        Some(g) => {
            let found = match g.value.parse::<u32>() {
                Ok(n) => Group::from_gid(Gid::from_raw(n)),
                Err(_) => Group::from_name(&g.value),
            };
            match found {
                Ok(Some(group)) => group.gid,
                Ok(None) => return Err(err(g.line, format!("group: no such group {:?}", g.value))),
                Err(e) => {
                    return Err(err(g.line, format!("group: cannot look up {:?}: {e}", g.value)))
                }
            }
        }
    };
    if let Some(c) = &d.chroot {
        check_chroot(&c.value).map_err(|m| err(c.line, format!("chroot: {m}")))?;
    }
    Ok(Some(Spec {
        user: account.name,
        uid: account.uid,
        gid,
        chroot: d.chroot.as_ref().map(|c| c.value.clone()),
    }))
}

/// The chroot must be a directory that only root can change (as sshd demands of a
/// ChrootDirectory): otherwise the unprivileged side could prepare files in its own root.
fn check_chroot(dir: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} must be owned by root and not writable by group or others",
            dir.display()
        ));
    }
    Ok(())
}

/// Logs the warning for a process that stays root.
pub fn warn_if_root(spec: Option<&Spec>) {
    if spec.is_none() && Uid::effective().is_root() {
        log::warn!("running as root: set [global] user (and chroot) so sessions run unprivileged");
    }
}

/// Drops privileges as `spec` says, or fails naming the step. Must run before any thread
/// is started (thread mode), in the session process right after fork (fork mode), or
/// before the first byte is read (inetd mode).
pub fn drop_privileges(spec: &Spec) -> Result<(), String> {
    let step = |what: String| move |e: Errno| format!("privdrop: {what}: {}", e.desc());
    if !Uid::effective().is_root() {
        if Uid::current() == spec.uid && spec.chroot.is_none() {
            log::info!("privdrop: already running as {}; nothing to drop", spec.user);
            return nix::sys::prctl::set_no_new_privs()
                .map_err(step("prctl(PR_SET_NO_NEW_PRIVS)".into()));
        }
        return Err(format!(
            "privdrop: not running as root, cannot become {}{}",
            spec.user,
            spec.chroot.as_ref().map_or(String::new(), |c| format!(" in {}", c.display()))
        ));
    }
    if let Some(dir) = &spec.chroot {
        nix::unistd::chroot(dir).map_err(step(format!("chroot({})", dir.display())))?;
        nix::unistd::chdir("/").map_err(step("chdir(/)".into()))?;
    }
    nix::unistd::setgroups(&[spec.gid]).map_err(step(format!("setgroups({})", spec.gid)))?;
    nix::unistd::setresgid(spec.gid, spec.gid, spec.gid)
        .map_err(step(format!("setresgid({})", spec.gid)))?;
    nix::unistd::setresuid(spec.uid, spec.uid, spec.uid)
        .map_err(step(format!("setresuid({})", spec.uid)))?;
    verify(spec)?;
    nix::sys::prctl::set_no_new_privs().map_err(step("prctl(PR_SET_NO_NEW_PRIVS)".into()))?;
    Ok(())
}

/// Checks that every uid and gid is the target and that root cannot be regained.
fn verify(spec: &Spec) -> Result<(), String> {
    let uids = nix::unistd::getresuid().map_err(|e| format!("privdrop: getresuid: {e}"))?;
    let gids = nix::unistd::getresgid().map_err(|e| format!("privdrop: getresgid: {e}"))?;
    if [uids.real, uids.effective, uids.saved] != [spec.uid; 3] {
        return Err(format!("privdrop: verify: uids are {uids:?}, expected {}", spec.uid));
    }
    if [gids.real, gids.effective, gids.saved] != [spec.gid; 3] {
        return Err(format!("privdrop: verify: gids are {gids:?}, expected {}", spec.gid));
    }
    if !spec.uid.is_root() {
        match nix::unistd::setuid(Uid::from_raw(0)) {
            Err(Errno::EPERM) => {}
            Ok(()) => return Err("privdrop: verify: setuid(0) succeeded after the drop".into()),
            Err(e) => {
                return Err(format!("privdrop: verify: setuid(0) failed with {e}, not EPERM"))
            }
        }
    }
    Ok(())
}

/// Chroot problems of the backends: inside a chroot there is usually no resolv.conf, so
/// host names are resolved here, before the chroot, and replaced by the first address
/// (TLS keeps checking the certificate against the name: `tls::load` has already taken
/// it). Backends that are IP literals are left alone. `previous` supplies the addresses
/// of a configuration already in force, for names that cannot be resolved now (a reload
/// inside the chroot).
pub fn resolve_backends(config: &mut Config, previous: Option<&Config>) -> Result<(), String> {
    use std::net::{IpAddr, ToSocketAddrs};
    for b in &mut config.backends {
        if b.host.parse::<IpAddr>().is_ok() {
            continue;
        }
        let resolved = (b.host.as_str(), b.port).to_socket_addrs().ok().and_then(|mut a| a.next());
        match resolved {
            Some(addr) => {
                log::info!(
                    "backend {}: {} resolved to {} for the chroot",
                    b.name,
                    b.host,
                    addr.ip()
                );
                b.host = addr.ip().to_string();
            }
            None => {
                let old = previous
                    .and_then(|p| p.backends.iter().find(|o| o.name == b.name))
                    .filter(|o| o.host.parse::<IpAddr>().is_ok());
                match old {
                    Some(o) => {
                        log::warn!(
                            "backend {}: cannot resolve {} now; keeping {}",
                            b.name,
                            b.host,
                            o.host
                        );
                        b.host = o.host.clone();
                    }
                    None => {
                        return Err(format!(
                            "backend {}: cannot resolve host {:?} (needed before chroot)",
                            b.name, b.host
                        ))
                    }
                }
            }
        }
    }
    Ok(())
}
