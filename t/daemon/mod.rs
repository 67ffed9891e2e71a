//! The hardened daemon (issue 6): privilege drop and chroot, fork mode, limits, signals,
//! PROXY protocol, HAProxy and fail2ban. Real processes on loopback, as root (CI runs
//! as root; without root the privilege tests say so and return).

mod fail2ban;
mod fork;
mod haproxy;
mod limits;
mod privdrop;
mod proxy_protocol;
mod signals;

use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;

use crate::common::*;

/// The standard config with `extra` added to `[global]` and `listener` to the listener.
pub fn config(backend_port: u16, global: &str, listener: &str) -> String {
    let body =
        minimal_config(backend_port).replacen("[global]\n", &format!("[global]\n{global}\n"), 1);
    format!("{body}{listener}\n")
}

/// The PID of the imapgate process that wrote the first line of `log`.
pub fn main_pid(px: &Proxy) -> u32 {
    let line = px.wait_for_log(r"imapgate\[\d+\] INFO: imapgate .* started");
    pid_of(&line)
}

/// The PID in an `imapgate[PID]` log line.
pub fn pid_of(line: &str) -> u32 {
    let start = line.find("imapgate[").expect("imapgate[PID] in line") + 9;
    let end = start + line[start..].find(']').expect("]");
    line[start..end].parse().expect("pid")
}

/// Connects to `127.0.0.1:port` from the local address `src` (e.g. 127.0.0.2).
pub fn connect_from(src: &str, port: u16) -> TcpStream {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let fd: OwnedFd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
        .expect("socket");
    let local: SocketAddr = format!("{src}:0").parse().expect("address");
    let std::net::SocketAddr::V4(local) = local else { panic!("IPv4 only") };
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(local)).expect("bind source");
    let remote = std::net::SocketAddrV4::new([127, 0, 0, 1].into(), port);
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(remote)).expect("connect");
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(WAIT)).ok();
    s
}

/// A client on a stream made elsewhere, with the greeting read.
pub fn client_on(s: TcpStream) -> Client {
    let mut c = Client::from_conn(Box::new(s));
    c.greeting = c.read_line();
    c
}

/// True when the tests run as root (needed for user/chroot).
pub fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root");
    false
}

/// `Uid:` and `Gid:` lines and the root directory of a process.
pub fn identity(pid: u32) -> (String, String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .map(|l| l[k.len()..].split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    let root = std::fs::read_link(format!("/proc/{pid}/root")).expect("root link");
    (field("Uid:"), field("Gid:"), root.display().to_string())
}

/// The child processes of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    text.split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

/// Waits until the proxy process has `n` session children.
pub fn wait_children(pid: u32, n: usize) -> Vec<u32> {
    wait_until(WAIT, || {
        let c = children(pid);
        (c.len() == n).then_some(c)
    })
    .unwrap_or_else(|| panic!("expected {n} session processes, have {:?}", children(pid)))
}
