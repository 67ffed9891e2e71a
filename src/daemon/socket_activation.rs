//! systemd socket activation (sd_listen_fds(3)): listening sockets passed as fds 3, 4,
//! ... with `LISTEN_PID` and `LISTEN_FDS` (and optionally `LISTEN_FDNAMES`) in the
//! environment. This is the third way to get listening sockets, beside binding them
//! ourselves and inetd mode (where systemd `Accept=yes` passes one connection instead).

use std::net::TcpListener;
use std::os::fd::AsRawFd;

/// First descriptor systemd passes.
const FIRST_FD: i32 = 3;

/// One passed listening socket.
#[derive(Debug)]
pub struct Passed {
    /// `FileDescriptorName=` of its .socket unit, when systemd sent names.
    pub name: Option<String>,
    /// The socket.
    pub socket: TcpListener,
}

/// Takes the passed sockets, or `None` when this process was not socket-activated.
/// The variables are removed so that nothing else adopts the same descriptors.
pub fn take() -> Result<Option<Vec<Passed>>, String> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    if pid.parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    let count: i32 = fds.parse().map_err(|_| format!("LISTEN_FDS={fds:?} is not a number"))?;
    let names: Vec<String> =
        names.map(|n| n.split(':').map(str::to_string).collect()).unwrap_or_default();
    let mut passed = Vec::new();
    for i in 0..count {
        let fd = FIRST_FD + i;
        let owned = crate::daemon::sys::adopt_socket(fd)
            .ok_or_else(|| format!("socket activation: fd {fd} is not a socket"))?;
        let socket = TcpListener::from(owned);
        let flags = nix::fcntl::fcntl(socket.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD)
            .map_err(|e| format!("socket activation: fd {fd}: {e}"))?;
        let cloexec =
            nix::fcntl::FdFlag::from_bits_truncate(flags) | nix::fcntl::FdFlag::FD_CLOEXEC;
        let _ = nix::fcntl::fcntl(socket.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFD(cloexec));
        socket
            .local_addr()
            .map_err(|e| format!("socket activation: fd {fd} is not a TCP socket: {e}"))?;
        let name = names.get(i as usize).filter(|n| !n.is_empty()).cloned();
        passed.push(Passed { name, socket });
    }
    Ok(Some(passed))
}

/// Assigns passed sockets to listeners: a socket whose name is a listener's name goes to
/// that listener; the others go, in order, to the listeners that got none by name.
/// Returns `(listener index, socket)` pairs.
pub fn assign(
    passed: Vec<Passed>,
    listener_names: &[&str],
) -> Result<Vec<(usize, TcpListener)>, String> {
    if listener_names.is_empty() {
        return Err("socket activation: no listener configured".into());
    }
    let mut out = Vec::new();
    let mut unnamed = Vec::new();
    for p in passed {
        match p.name.as_deref().and_then(|n| listener_names.iter().position(|l| *l == n)) {
            Some(i) => out.push((i, p.socket)),
            None => unnamed.push(p.socket),
        }
    }
    let named: Vec<usize> = out.iter().map(|(i, _)| *i).collect();
    let mut free = (0..listener_names.len()).filter(|i| !named.contains(i));
    for socket in unnamed {
        let i = free.next().ok_or_else(|| {
            "socket activation: more unnamed sockets than listeners (name them with \
             FileDescriptorName= after the listener)"
                .to_string()
        })?;
        out.push((i, socket));
    }
    Ok(out)
}
