//! inetd mode: the client connection is stdin (inetd, xinetd and systemd `Accept=yes` also
//! put it on stdout and stderr). It is taken from fd 0 and fds 0, 1 and 2 are pointed at
//! /dev/null, so no stray write (a panic message, a library's warning) reaches the client.

use std::fs::File;
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use crate::session::{self, Origin};
use crate::Runtime;

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

/// Serves the one connection.
pub fn serve(runtime: Arc<Runtime>, client: TcpStream) {
    let peer = client.peer_addr().map_or_else(|_| "local".to_string(), |a| a.to_string());
    let origin = Origin { id: session::next_id(), client: peer, listener: 0 };
    session::serve(runtime, origin, client);
}
