//! The HAProxy PROXY protocol, versions 1 (text) and 2 (binary), as a sans-I/O parser
//! plus the small blocking/non-blocking helpers that feed it by peeking at a socket.
//!
//! IMAP servers speak first, so before the greeting the only bytes a client side may have
//! sent are the PROXY header: peeking (`MSG_PEEK`) at what has arrived, parsing it, and
//! then reading exactly the header's length leaves every later byte in the socket for the
//! session. The parser never allocates more than the header and refuses anything that is
//! not a well-formed header (spec: "haproxy.org/download/2.9/doc/proxy-protocol.txt").

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// The 12-byte signature that starts every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// A v1 header is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;

/// Largest v2 header accepted: addresses plus a generous amount of TLVs.
pub const V2_MAX: usize = 16 + 1024;

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes the header occupies at the start of the stream.
    pub len: usize,
    /// The original client and the address it connected to; `None` for v2 LOCAL
    /// (health checks), v1 UNKNOWN and address families other than TCP over IPv4/IPv6.
    pub addrs: Option<(SocketAddr, SocketAddr)>,
}

/// The parser's verdict on the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse {
    /// A valid prefix of a header: wait for more bytes.
    Incomplete,
    /// A complete header.
    Done(Header),
    /// Not a PROXY header, or a malformed one; the reason is for the log.
    Invalid(String),
}

/// Parses the start of `buf`.
pub fn parse(buf: &[u8]) -> Parse {
    if buf.is_empty() {
        return Parse::Incomplete;
    }
    if buf[0] == b'P' {
        return parse_v1(buf);
    }
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return Parse::Invalid("no PROXY protocol header".into());
    }
    parse_v2(buf)
}

fn parse_v1(buf: &[u8]) -> Parse {
    let n = buf.len().min(6);
    if buf[..n] != b"PROXY "[..n] {
        return Parse::Invalid("no PROXY protocol header".into());
    }
    let Some(end) = buf.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX {
            return Parse::Invalid("PROXY v1 header longer than 107 bytes".into());
        }
        return Parse::Incomplete;
    };
    let Ok(line) = std::str::from_utf8(&buf[..end]) else {
        return Parse::Invalid("PROXY v1 header is not ASCII".into());
    };
    let words: Vec<&str> = line.split(' ').collect();
    let len = end + 2;
    match words[..] {
        ["PROXY", "UNKNOWN", ..] => Parse::Done(Header { len, addrs: None }),
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let v4 = family == "TCP4";
            match (v1_addr(src, sport, v4), v1_addr(dst, dport, v4)) {
                (Some(s), Some(d)) => Parse::Done(Header { len, addrs: Some((s, d)) }),
                _ => Parse::Invalid(format!("bad PROXY v1 addresses in {line:?}")),
            }
        }
        _ => Parse::Invalid(format!("malformed PROXY v1 header {line:?}")),
    }
}

fn v1_addr(ip: &str, port: &str, v4: bool) -> Option<SocketAddr> {
    let ip: IpAddr = if v4 { IpAddr::V4(ip.parse().ok()?) } else { IpAddr::V6(ip.parse().ok()?) };
    // Decimal without leading zeros, as the specification requires.
    let canonical = !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && (port == "0" || !port.starts_with('0'));
    if !canonical {
        return None;
    }
    let port: u16 = port.parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

fn parse_v2(buf: &[u8]) -> Parse {
    if buf.len() < 16 {
        return Parse::Incomplete;
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Parse::Invalid(format!("unsupported PROXY protocol version {version}"));
    }
    let body = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body;
    if len > V2_MAX {
        return Parse::Invalid(format!("PROXY v2 header of {len} bytes is too long"));
    }
    if buf.len() < len {
        return Parse::Incomplete;
    }
    let addr = &buf[16..len];
    match command {
        0 => return Parse::Done(Header { len, addrs: None }), // LOCAL
        1 => {}                                               // PROXY
        c => return Parse::Invalid(format!("unknown PROXY v2 command {c}")),
    }
    let addrs = match buf[13] {
        0x11 if addr.len() >= 12 => {
            let ip = |o: usize| {
                IpAddr::V4(Ipv4Addr::new(addr[o], addr[o + 1], addr[o + 2], addr[o + 3]))
            };
            let port = |o: usize| u16::from_be_bytes([addr[o], addr[o + 1]]);
            Some((SocketAddr::new(ip(0), port(8)), SocketAddr::new(ip(4), port(10))))
        }
        0x21 if addr.len() >= 36 => {
            let ip = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&addr[o..o + 16]);
                IpAddr::V6(Ipv6Addr::from(b))
            };
            let port = |o: usize| u16::from_be_bytes([addr[o], addr[o + 1]]);
            Some((SocketAddr::new(ip(0), port(32)), SocketAddr::new(ip(16), port(34))))
        }
        0x11 | 0x21 => return Parse::Invalid("PROXY v2 address block too short".into()),
        // UNSPEC, UDP, UNIX: the connection is accepted, the peer address is kept.
        _ => None,
    };
    Parse::Done(Header { len, addrs })
}

/// A v2 PROXY header announcing a TCP connection from `src` to `dst`. Mixed families
/// are sent as IPv6 (IPv4 addresses mapped into `::ffff:0:0/96`).
pub fn encode_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21); // version 2, PROXY
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out
}

/// One attempt to take a header off a socket: peek at what arrived, and when it holds a
/// complete header, read exactly that many bytes. `Ok(None)`: incomplete, try again when
/// the socket is readable. A socket closed before a complete header is an error.
pub fn try_take(sock: &TcpStream) -> io::Result<Option<Header>> {
    let mut buf = [0u8; V2_MAX];
    let flags = nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT;
    let n = match nix::sys::socket::recv(sock.as_raw_fd(), &mut buf, flags) {
        Ok(n) => n,
        Err(nix::errno::Errno::EAGAIN) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match parse(&buf[..n]) {
        Parse::Incomplete if n == 0 => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed before sending a PROXY header",
        )),
        Parse::Incomplete => Ok(None),
        Parse::Invalid(why) => Err(io::Error::new(io::ErrorKind::InvalidData, why)),
        Parse::Done(header) => {
            use std::io::Read;
            (&*sock).read_exact(&mut buf[..header.len])?;
            Ok(Some(header))
        }
    }
}

/// Reads a header from a blocking socket, waiting at most `timeout` in total.
pub fn take(sock: &TcpStream, timeout: Duration) -> io::Result<Header> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(h) = try_take(sock)? {
            return Ok(h);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no PROXY header in time"));
        }
        let ms = u16::try_from(left.as_millis().min(1000)).unwrap_or(1000);
        let mut fds =
            [nix::poll::PollFd::new(std::os::fd::AsFd::as_fd(sock), nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(b: &[u8]) -> Header {
        match parse(b) {
            Parse::Done(h) => h,
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(b)),
        }
    }

    #[test]
    fn v1_tcp4_and_tcp6_give_both_addresses() {
        let h = done(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 143\r\na LOGIN");
        assert_eq!(h.len, 45);
        let (s, d) = h.addrs.unwrap();
        assert_eq!(s, "192.0.2.1:56324".parse().unwrap());
        assert_eq!(d, "198.51.100.2:143".parse().unwrap());
        let h = done(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n");
        assert_eq!(h.addrs.unwrap().0, "[2001:db8::1]:1".parse().unwrap());
        assert_eq!(done(b"PROXY UNKNOWN\r\n").addrs, None);
        assert_eq!(done(b"PROXY UNKNOWN ff ee 1 2\r\n").addrs, None);
    }

    #[test]
    fn v1_prefixes_wait_and_garbage_is_refused() {
        for prefix in
            [&b"P"[..], b"PROXY", b"PROXY TCP4 1.2.3.4", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"]
        {
            assert_eq!(parse(prefix), Parse::Incomplete, "{prefix:?}");
        }
        for bad in [
            &b"a LOGIN x y\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXYTCP4\r\n",
        ] {
            assert!(matches!(parse(bad), Parse::Invalid(_)), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert!(matches!(parse(&long), Parse::Invalid(_)));
    }

    #[test]
    fn v2_roundtrips_through_encode() {
        let (s, d): (SocketAddr, SocketAddr) =
            ("192.0.2.1:4000".parse().unwrap(), "10.0.0.1:143".parse().unwrap());
        let mut b = encode_v2(s, d);
        assert_eq!(b.len(), 28);
        b.extend_from_slice(b"rest");
        assert_eq!(done(&b), Header { len: 28, addrs: Some((s, d)) });
        let (s6, d6): (SocketAddr, SocketAddr) =
            ("[2001:db8::7]:1".parse().unwrap(), "[::1]:143".parse().unwrap());
        let b = encode_v2(s6, d6);
        assert_eq!(done(&b), Header { len: 52, addrs: Some((s6, d6)) });
        // Every proper prefix is incomplete, never invalid.
        for i in 0..b.len() {
            assert_eq!(parse(&b[..i]), Parse::Incomplete, "prefix {i}");
        }
        let mixed = encode_v2(s, d6);
        let (ms, _) = done(&mixed).addrs.unwrap();
        assert_eq!(ms.ip(), IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()));
    }

    #[test]
    fn v2_local_unspec_tlvs_and_errors() {
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(done(&local), Header { len: 16, addrs: None });
        // PROXY with TLVs after the IPv4 block: the TLVs are skipped.
        let mut tlv = encode_v2("1.2.3.4:5".parse().unwrap(), "6.7.8.9:10".parse().unwrap());
        tlv[15] = 12 + 5;
        tlv.extend_from_slice(&[0x04, 0, 2, 0xaa, 0xbb]);
        assert_eq!(done(&tlv).len, 33);
        let mut v3 = local.clone();
        v3[12] = 0x31;
        assert!(matches!(parse(&v3), Parse::Invalid(_)));
        let mut short = V2_SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(matches!(parse(&short), Parse::Invalid(_)));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(parse(&huge), Parse::Invalid(_)));
        assert!(matches!(parse(b"\r\n\r\nX"), Parse::Invalid(_)));
    }
}
