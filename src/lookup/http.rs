//! `type = http`: nginx's mail `auth_http` protocol, so a script written for nginx works
//! unchanged. One HTTP/1.0 GET per login, over TCP (`url = http://HOST[:PORT]/PATH`) or a
//! unix socket (`url = unix:/PATH/TO/SOCKET:/URI`, nginx's form), under `timeout`:
//!
//! ```text
//! GET /auth HTTP/1.0
//! Host: localhost
//! Auth-Method: plain                  (none when the client sent no password)
//! Auth-User: alice%40example.org      (escaped like nginx: %XX for space, %, controls, 8-bit)
//! Auth-Pass: secret
//! Auth-Protocol: imap
//! Auth-Login-Attempt: 1
//! Client-IP: 192.0.2.42
//! Auth-SSL: on                        (with TLS; Auth-SSL-Verify and -Subject with a
//!                                      client certificate)
//! ```
//!
//! The answer's headers: `Auth-Status: OK` with `Auth-Server` (an address, or the name of
//! a configured backend or pool), `Auth-Port`, and optionally `Auth-User` (destuser) and
//! `Auth-Pass` (the password to present to the backend); any other `Auth-Status` is the
//! text of a refusal, held back `Auth-Wait` seconds. An OK to a password counts as the
//! password verified. Anything else (no answer, another HTTP status, no Auth-Status) is
//! a failed lookup.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::fields::Fields;
use super::{Found, Place, Query, Source};
use crate::config::Target;
use crate::imap::sasl::Secret;

/// The longest answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// Where the service listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp { addrs: Vec<SocketAddr>, host: String },
    Unix(Place),
}

pub struct HttpMap {
    endpoint: Endpoint,
    path: String,
    headers: Vec<(String, String)>,
    timeout: Duration,
    targets: HashMap<String, Target>,
}

impl HttpMap {
    /// `url` in nginx's forms; a host name is resolved now (before any chroot).
    pub fn new(
        url: &str,
        chroot: Option<&std::path::Path>,
        headers: Vec<(String, String)>,
        timeout: Duration,
        targets: HashMap<String, Target>,
    ) -> Result<HttpMap, String> {
        let (endpoint, path) = parse_url(url, chroot)?;
        Ok(HttpMap { endpoint, path, headers, timeout, targets })
    }

    fn request(&self, q: &Query<'_>) -> Secret {
        let mut req = format!("GET {} HTTP/1.0\r\nHost: ", self.path);
        req.push_str(match &self.endpoint {
            Endpoint::Tcp { host, .. } => host,
            Endpoint::Unix(_) => "localhost",
        });
        let method = if q.password.is_some() { "plain" } else { "none" };
        req.push_str(&format!(
            "\r\nAuth-Method: {method}\r\nAuth-User: {}\r\n",
            escape(q.user.as_bytes())
        ));
        let mut req = Secret::new(req.into_bytes());
        let buf = req.bytes_mut();
        buf.extend_from_slice(b"Auth-Pass: ");
        if let Some(p) = q.password {
            buf.extend_from_slice(escape(p.expose()).as_bytes());
        }
        buf.extend_from_slice(
            format!("\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: {}\r\n", q.attempt).as_bytes(),
        );
        if let Some(client) = q.client {
            buf.extend_from_slice(format!("Client-IP: {}\r\n", client.ip()).as_bytes());
        }
        if q.tls {
            buf.extend_from_slice(b"Auth-SSL: on\r\n");
            match q.client_cert {
                Some(subject) => {
                    buf.extend_from_slice(b"Auth-SSL-Verify: SUCCESS\r\nAuth-SSL-Subject: ");
                    buf.extend_from_slice(escape(subject.as_bytes()).as_bytes());
                    buf.extend_from_slice(b"\r\n");
                }
                None => buf.extend_from_slice(b"Auth-SSL-Verify: NONE\r\n"),
            }
        }
        for (name, value) in &self.headers {
            buf.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
        req
    }

    fn exchange(&self, request: &[u8]) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + self.timeout;
        let left =
            || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let mut conn: Box<dyn ReadWrite> = match &self.endpoint {
            Endpoint::Tcp { addrs, .. } => {
                let mut last = String::from("no address");
                let mut conn = None;
                for addr in addrs {
                    match TcpStream::connect_timeout(addr, left()) {
                        Ok(s) => {
                            conn = Some(s);
                            break;
                        }
                        Err(e) => last = format!("connect to {addr}: {e}"),
                    }
                }
                let conn = conn.ok_or(last)?;
                conn.set_read_timeout(Some(left())).map_err(|e| e.to_string())?;
                conn.set_write_timeout(Some(left())).map_err(|e| e.to_string())?;
                Box::new(conn)
            }
            Endpoint::Unix(place) => {
                let conn = place
                    .with(|p| UnixStream::connect(p))
                    .map_err(|e| format!("connect to {}: {e}", place.path.display()))?;
                conn.set_read_timeout(Some(left())).map_err(|e| e.to_string())?;
                conn.set_write_timeout(Some(left())).map_err(|e| e.to_string())?;
                Box::new(conn)
            }
        };
        conn.write_all(request).map_err(|e| format!("write: {e}"))?;
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(answer);
            }
            if Instant::now() >= deadline {
                return Err("timed out".into());
            }
            let _ = conn.set_timeout(left());
            match conn.read(&mut chunk) {
                Ok(0) => return Ok(answer),
                Ok(n) if answer.len() + n <= MAX_ANSWER => answer.extend_from_slice(&chunk[..n]),
                Ok(_) => return Err("answer too long".into()),
                Err(e) => return Err(super::read_failure(&e)),
            }
        }
    }
}

trait ReadWrite: Read + Write {
    fn set_timeout(&self, t: Duration) -> std::io::Result<()>;
}
impl ReadWrite for TcpStream {
    fn set_timeout(&self, t: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(t))
    }
}
impl ReadWrite for UnixStream {
    fn set_timeout(&self, t: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(t))
    }
}

impl Source for HttpMap {
    fn find(&self, q: &Query<'_>) -> Result<Option<Found>, String> {
        let answer = self.exchange(self.request(q).expose())?;
        let headers = parse_answer(&answer)?;
        let get = |name: &str| {
            headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        };
        let wait = get("Auth-Wait")
            .and_then(|w| w.parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(60)));
        let status = get("Auth-Status").ok_or("the answer has no Auth-Status")?;
        if status != "OK" {
            let text = Some(status.to_string()).filter(|s| !s.is_empty());
            return Ok(Some(Found::Rejected { text, wait }));
        }
        let mut fields = Fields::default();
        let server = get("Auth-Server").ok_or("Auth-Status: OK without Auth-Server")?;
        if self.targets.contains_key(server) {
            fields.set("backend", server, &self.targets)?;
        } else {
            fields.set("host", server, &self.targets)?;
        }
        if let Some(port) = get("Auth-Port") {
            fields.set("port", port, &self.targets)?;
        }
        if let Some(user) = get("Auth-User") {
            fields.set("destuser", &unescape(user), &self.targets)?;
        }
        if let Some(pass) = get("Auth-Pass") {
            let pass = Secret::new(unescape(pass).into_bytes());
            fields.set("pass", &String::from_utf8_lossy(pass.expose()), &self.targets)?;
        }
        fields.into_found(q.password.is_some()).map(Some)
    }

    fn verifies(&self) -> bool {
        true
    }

    fn depends_on(&self, q: &Query<'_>) -> Vec<Secret> {
        let client = q.client.map(|c| c.ip().to_string()).unwrap_or_default();
        vec![
            Secret::new(q.user.as_bytes().to_vec()),
            q.password.cloned().unwrap_or_else(|| Secret::new(Vec::new())),
            Secret::new(client.into_bytes()),
        ]
    }
}

/// `http://HOST[:PORT]/PATH` or `unix:/PATH/TO/SOCKET[:/URI]`.
pub fn parse_url(
    url: &str,
    chroot: Option<&std::path::Path>,
) -> Result<(Endpoint, String), String> {
    if let Some(rest) = url.strip_prefix("unix:") {
        let (socket, uri) = match rest.split_once(":/") {
            Some((s, u)) => (s, format!("/{u}")),
            None => (rest, "/".to_string()),
        };
        if !socket.starts_with('/') {
            return Err(format!("unix socket path {socket:?} must be absolute"));
        }
        return Ok((Endpoint::Unix(Place::new(std::path::Path::new(socket), chroot)), uri));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or("expected http://HOST[:PORT]/PATH or unix:/SOCKET:/URI")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err("the path must not contain spaces or control characters".into());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
            (h, p.parse::<u16>().map_err(|_| format!("invalid port {p:?}"))?)
        }
        _ => (authority, 80),
    };
    let name = host.trim_matches(['[', ']']);
    if name.is_empty() {
        return Err("no host".into());
    }
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(name, port))
        .map_err(|e| format!("cannot resolve {name}: {e}"))?
        .collect();
    Ok((Endpoint::Tcp { addrs, host: authority.to_string() }, path))
}

/// nginx's escaping of Auth-User and Auth-Pass: `%XX` for space, `%`, control characters
/// and bytes over 0x7e.
pub fn escape(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value {
        if b <= b' ' || b == b'%' || b >= 0x7f {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// Undoes `%XX` escapes (Auth-User and Auth-Pass in an answer).
pub(super) fn unescape(value: &str) -> String {
    let b = value.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Fuzzing: answers and escapes never panic; escaping is undone exactly.
#[cfg(any(test, fuzzing))]
pub fn fuzz(data: &[u8]) {
    let _ = parse_answer(data);
    let text = String::from_utf8_lossy(data);
    let _ = unescape(&text);
    assert_eq!(unescape(&escape(text.as_bytes())), text);
}

/// The headers of an HTTP answer with status 200.
fn parse_answer(answer: &[u8]) -> Result<Vec<(String, String)>, String> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no complete answer")?;
    let head = std::str::from_utf8(&answer[..end]).map_err(|_| "the answer's head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split_whitespace().nth(1);
    if !status.starts_with("HTTP/1.") || code != Some("200") {
        return Err(format!("answered {:?}", status.chars().take(80).collect::<String>()));
    }
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or("a malformed header line")?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_nginx_forms() {
        let (e, p) = parse_url("http://127.0.0.1:9000/auth?x=1", None).unwrap();
        assert_eq!(p, "/auth?x=1");
        assert!(matches!(e, Endpoint::Tcp { ref addrs, .. } if addrs[0].port() == 9000));
        let (e, p) =
            parse_url("unix:/srv/jail/run/auth.sock:/mail/auth", Some("/srv/jail".as_ref()))
                .unwrap();
        let Endpoint::Unix(place) = e else { panic!() };
        assert_eq!(
            (place.path.to_str(), p.as_str()),
            (Some("/srv/jail/run/auth.sock"), "/mail/auth")
        );
        assert_eq!(
            place,
            Place::new("/srv/jail/run/auth.sock".as_ref(), Some("/srv/jail".as_ref()))
        );
        assert!(parse_url("https://x/", None).is_err());
        assert!(parse_url("unix:relative.sock", None).is_err());
    }

    #[test]
    fn escaping_is_nginx_s_and_reversible() {
        assert_eq!(escape(b"a b%c\xc3\xa9\r"), "a%20b%25c%C3%A9%0D");
        assert_eq!(unescape("a%20b%25c%C3%A9"), "a b%cé");
        assert_eq!(unescape("100%"), "100%");
    }

    #[test]
    fn answers_are_read_strictly() {
        let ok = b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 10.0.0.1\r\n\r\n";
        assert_eq!(parse_answer(ok).unwrap()[1], ("Auth-Server".into(), "10.0.0.1".into()));
        assert!(parse_answer(b"HTTP/1.0 500 Oops\r\n\r\n").unwrap_err().contains("500"));
        assert!(parse_answer(b"HTTP/1.0 200 OK\r\nAuth-Status").is_err());
    }
}
