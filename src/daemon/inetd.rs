//! inetd mode: the client connection is stdin (inetd, xinetd and systemd `Accept=yes` also
//! put it on stdout and stderr). It is taken from fd 0 and fds 0, 1 and 2 are pointed at
//! /dev/null, so no stray write (a panic message, a library's warning) reaches the client.
//! Privileges are dropped after that (/dev/null may not exist in the chroot) and before
//! the first byte is read. The first listener's settings apply: its map, its access
//! lists and its PROXY protocol setting.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use crate::daemon::admission::Refusal;
use crate::daemon::host::InProcess;
use crate::daemon::listener::{self, PROXY_HEADER_TIMEOUT};
use crate::net::proxy_protocol;
use crate::session::Runtime;
use crate::session::{self, Origin, Peer, SessionId};

/// Takes the client socket from stdin and detaches the standard descriptors.
pub fn take_client() -> io::Result<TcpStream> {
    let stdin = io::stdin();
    let fd = stdin.as_fd().try_clone_to_owned()?;
    let kind = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(io::Error::from)?;
    if kind.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::other(
            "stdin is not a socket (run --inetd from inetd, xinetd or systemd)",
        ));
    }
    let null = File::options().read(true).write(true).open("/dev/null")?;
    for std_fd in 0..=2 {
        nix::unistd::dup2(null.as_raw_fd(), std_fd).map_err(io::Error::from)?;
    }
    Ok(TcpStream::from(fd))
}

/// Serves the one connection, after the PROXY header and the access list of the first
/// listener. Limits on concurrent sessions cannot be counted across inetd's separate
/// processes; inetd's own limits (xinetd `instances`, `per_source`, systemd
/// `MaxConnections`, `MaxConnectionsPerSource`) do that job.
pub fn serve(runtime: Arc<Runtime>, client: TcpStream) {
    let peer = client.peer_addr().ok();
    let access = &runtime.config.listeners[0].access;
    let name = &runtime.config.listeners[0].name;
    let mut real = peer;
    if let Some(p) = peer {
        if access.proxy_protocol {
            if !access.trusts(p.ip()) {
                return listener::refuse(&client, Refusal::UntrustedProxy, p, name);
            }
            match proxy_protocol::take(&client, PROXY_HEADER_TIMEOUT) {
                Ok(h) => real = Some(h.addrs.map_or(p, |(src, _)| src)),
                Err(e) => return log::warn!("listener {name}: PROXY header from {p}: {e}"),
            }
        }
    }
    if let Some(r) = real.filter(|r: &SocketAddr| !access.permits(r.ip())) {
        return listener::refuse(&client, Refusal::Denied, r, name);
    }
    let peer = real.map_or(Peer::Local, Peer::Inet);
    let origin = Origin { id: SessionId::next(), peer, listener: 0 };
    session::serve(runtime, origin, client, &InProcess);
}
