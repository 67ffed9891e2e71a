//! A PostgreSQL client for one parameterised query (frontend/backend protocol 3.0):
//! startup, authentication (trust, peer over a unix socket, cleartext password or
//! SCRAM-SHA-256), then the extended query protocol (Parse, Bind with text parameters,
//! Describe, Execute, Sync), so values are sent apart from the SQL and never parsed as
//! SQL. One connection per query, under the map's `timeout`; no TLS (use a unix socket
//! or loopback). No PostgreSQL crate: the maintained ones run on an async runtime.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};

use super::{Database, Rows};
use crate::imap::sasl::{base64_decode, base64_encode, Secret};
use crate::lookup::Place;

/// The longest message read from the server.
const MAX_MESSAGE: usize = 1 << 20;

#[derive(Debug)]
enum Address {
    Tcp(Vec<SocketAddr>),
    Unix(Place),
}

#[derive(Debug)]
pub struct Postgres {
    address: Address,
    user: String,
    password: Option<Secret>,
    dbname: String,
}

impl Postgres {
    /// `postgresql://USER[:PASSWORD]@[HOST][:PORT]/DBNAME[?host=/SOCKET/DIR&port=N]`; a
    /// host name is resolved now, an empty host means the unix socket in
    /// /var/run/postgresql.
    pub fn parse(url: &str, chroot: Option<&std::path::Path>) -> Result<Postgres, String> {
        let rest = url
            .strip_prefix("postgresql://")
            .or_else(|| url.strip_prefix("postgres://"))
            .ok_or("expected postgresql://")?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, dbname) = rest.split_once('/').ok_or("no /DBNAME")?;
        let (userinfo, hostport) = authority.rsplit_once('@').ok_or("no USER@")?;
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (decode(u), Some(Secret::new(decode(p).into_bytes()))),
            None => (decode(userinfo), None),
        };
        let (mut host, mut port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => (
                h.trim_matches(['[', ']']).to_string(),
                p.parse::<u16>().map_err(|_| format!("invalid port {p:?}"))?,
            ),
            _ => (hostport.trim_matches(['[', ']']).to_string(), 5432),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("host", h)) => host = decode(h),
                Some(("port", p)) => port = p.parse().map_err(|_| format!("invalid port {p:?}"))?,
                Some(("sslmode", "disable" | "allow" | "prefer")) => {}
                Some(("sslmode", mode)) => {
                    return Err(format!("sslmode={mode}: imapgate speaks to PostgreSQL without TLS (use a unix socket or loopback)"))
                }
                _ => return Err(format!("unknown parameter {pair:?} (known: host, port, sslmode)")),
            }
        }
        if user.is_empty() || dbname.is_empty() {
            return Err("USER and DBNAME are required".into());
        }
        let address = if host.is_empty() || host.starts_with('/') {
            let dir = if host.is_empty() { "/var/run/postgresql".to_string() } else { host };
            Address::Unix(Place::new(&PathBuf::from(format!("{dir}/.s.PGSQL.{port}")), chroot))
        } else {
            let addrs = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
                .map_err(|e| format!("cannot resolve {host}: {e}"))?
                .collect();
            Address::Tcp(addrs)
        };
        Ok(Postgres { address, user, password, dbname: decode(dbname) })
    }
}

fn decode(s: &str) -> String {
    super::super::http::unescape(s)
}

trait Stream: Read + Write {
    fn timeouts(&self, t: Duration) -> std::io::Result<()>;
}
impl Stream for TcpStream {
    fn timeouts(&self, t: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}
impl Stream for UnixStream {
    fn timeouts(&self, t: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

struct Conn {
    stream: Box<dyn Stream>,
    deadline: Instant,
}

impl Conn {
    fn left(&self) -> Result<Duration, String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out".into());
        }
        Ok(left)
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        let left = self.left()?;
        self.stream.timeouts(left).map_err(|e| e.to_string())?;
        self.stream.write_all(bytes).map_err(|e| format!("write: {e}"))
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), String> {
        let left = self.left()?;
        self.stream.timeouts(left).map_err(|e| e.to_string())?;
        self.stream.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "the server closed the connection".to_string(),
            _ => crate::lookup::read_failure(&e),
        })
    }

    /// One backend message: its type and body.
    fn receive(&mut self) -> Result<(u8, Vec<u8>), String> {
        let mut head = [0u8; 5];
        self.read_exact(&mut head)?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if !(4..=MAX_MESSAGE).contains(&len) {
            return Err(format!("a message of impossible length {len}"));
        }
        let mut body = vec![0u8; len - 4];
        self.read_exact(&mut body)?;
        Ok((head[0], body))
    }
}

/// A frontend message: type, length, body.
fn message(kind: u8, body: &[u8]) -> Secret {
    let mut m = Vec::with_capacity(body.len() + 5);
    m.push(kind);
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    Secret::new(m)
}

fn cstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s);
    out.push(0);
}

/// The `M` (message) field of an ErrorResponse.
fn error_text(body: &[u8]) -> String {
    for field in body.split(|&b| b == 0) {
        if let Some((b'M', msg)) = field.split_first() {
            return String::from_utf8_lossy(msg).chars().take(200).collect();
        }
    }
    "an error without a message".into()
}

impl Postgres {
    fn connect(&self, timeout: Duration) -> Result<Conn, String> {
        let deadline = Instant::now() + timeout;
        let stream: Box<dyn Stream> = match &self.address {
            Address::Tcp(addrs) => {
                let mut last = "no address".to_string();
                let mut conn = None;
                for a in addrs {
                    let left = deadline
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1));
                    match TcpStream::connect_timeout(a, left) {
                        Ok(s) => {
                            conn = Some(s);
                            break;
                        }
                        Err(e) => last = format!("connect to {a}: {e}"),
                    }
                }
                Box::new(conn.ok_or(last)?)
            }
            Address::Unix(place) => Box::new(
                place
                    .with(|p| UnixStream::connect(p))
                    .map_err(|e| format!("connect to {}: {e}", place.path.display()))?,
            ),
        };
        let mut conn = Conn { stream, deadline };
        let mut startup = Vec::new();
        startup.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
        for (k, v) in [("user", &self.user), ("database", &self.dbname)] {
            cstr(&mut startup, k.as_bytes());
            cstr(&mut startup, v.as_bytes());
        }
        cstr(&mut startup, b"application_name");
        cstr(&mut startup, b"imapgate");
        startup.push(0);
        let mut first = (startup.len() as u32 + 4).to_be_bytes().to_vec();
        first.extend_from_slice(&startup);
        conn.send(&first)?;
        let mut scram: Option<Scram> = None;
        loop {
            let (kind, body) = conn.receive()?;
            match kind {
                b'R' => {
                    let code = body.get(..4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                    match code {
                        Some(0) => {}
                        Some(3) => {
                            let pw = self
                                .password
                                .as_ref()
                                .ok_or("the server asks for a password; give one in the URL")?;
                            let mut b = pw.expose().to_vec();
                            b.push(0);
                            conn.send(message(b'p', &b).expose())?;
                        }
                        Some(10) => {
                            let mechs: Vec<&[u8]> = body[4..].split(|&b| b == 0).collect();
                            if !mechs.contains(&&b"SCRAM-SHA-256"[..]) {
                                return Err("the server offers no SCRAM-SHA-256".into());
                            }
                            let pw = self
                                .password
                                .as_ref()
                                .ok_or("the server asks for a password; give one in the URL")?;
                            let s = Scram::new(pw)?;
                            let first = s.client_first();
                            let mut b = Vec::new();
                            cstr(&mut b, b"SCRAM-SHA-256");
                            b.extend_from_slice(&(first.len() as u32).to_be_bytes());
                            b.extend_from_slice(first.as_bytes());
                            conn.send(message(b'p', &b).expose())?;
                            scram = Some(s);
                        }
                        Some(11) => {
                            let s = scram.as_mut().ok_or("SCRAM continuation out of order")?;
                            let fin = s.client_final(&body[4..])?;
                            conn.send(message(b'p', fin.expose()).expose())?;
                        }
                        Some(12) => {
                            let s = scram.as_ref().ok_or("SCRAM final out of order")?;
                            s.check_server(&body[4..])?;
                        }
                        Some(5) => {
                            return Err(
                                "MD5 password authentication is not supported; use scram-sha-256"
                                    .into(),
                            )
                        }
                        other => {
                            return Err(format!("unsupported authentication request {other:?}"))
                        }
                    }
                }
                b'E' => {
                    return Err(format!("login to the database refused: {}", error_text(&body)))
                }
                b'Z' => return Ok(conn),
                _ => {} // ParameterStatus, BackendKeyData, notices
            }
        }
    }
}

impl Database for Postgres {
    fn query(&self, sql: &str, params: &[String], timeout: Duration) -> Result<Rows, String> {
        let mut conn = self.connect(timeout)?;
        let mut out = Vec::new();
        let mut parse = Vec::new();
        cstr(&mut parse, b"");
        cstr(&mut parse, sql.as_bytes());
        parse.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(message(b'P', &parse).expose());
        let mut bind = Vec::new();
        cstr(&mut bind, b"");
        cstr(&mut bind, b"");
        bind.extend_from_slice(&0u16.to_be_bytes());
        bind.extend_from_slice(&(params.len() as u16).to_be_bytes());
        for p in params {
            bind.extend_from_slice(&(p.len() as u32).to_be_bytes());
            bind.extend_from_slice(p.as_bytes());
        }
        bind.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(message(b'B', &bind).expose());
        out.extend_from_slice(message(b'D', b"P\0").expose());
        let mut exec = Vec::new();
        cstr(&mut exec, b"");
        exec.extend_from_slice(&3u32.to_be_bytes()); // enough to see more than one row
        out.extend_from_slice(message(b'E', &exec).expose());
        out.extend_from_slice(message(b'S', b"").expose());
        conn.send(&out)?;
        let mut rows = Rows::default();
        let mut error = None;
        loop {
            let (kind, body) = conn.receive()?;
            match kind {
                b'T' => rows.columns = row_description(&body)?,
                b'D' => rows.rows.push(data_row(&body)?),
                b'E' => error = Some(error_text(&body)),
                b'Z' => break,
                _ => {} // ParseComplete, BindComplete, NoData, CommandComplete, PortalSuspended
            }
        }
        let _ = conn.send(message(b'X', b"").expose());
        match error {
            Some(e) => Err(format!("query failed: {e}")),
            None => Ok(rows),
        }
    }
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if b.len() < n {
        return Err("a truncated message".into());
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

fn row_description(mut b: &[u8]) -> Result<Vec<String>, String> {
    let n = u16::from_be_bytes(take(&mut b, 2)?.try_into().unwrap_or_default());
    let mut names = Vec::new();
    for _ in 0..n {
        let end = b.iter().position(|&c| c == 0).ok_or("a truncated message")?;
        names.push(String::from_utf8_lossy(&b[..end]).into_owned());
        b = &b[end + 1..];
        take(&mut b, 18)?;
    }
    Ok(names)
}

fn data_row(mut b: &[u8]) -> Result<Vec<Option<Secret>>, String> {
    let n = u16::from_be_bytes(take(&mut b, 2)?.try_into().unwrap_or_default());
    let mut values = Vec::new();
    for _ in 0..n {
        let len = i32::from_be_bytes(take(&mut b, 4)?.try_into().unwrap_or_default());
        values.push(if len < 0 {
            None
        } else {
            Some(Secret::new(take(&mut b, len as usize)?.to_vec()))
        });
    }
    Ok(values)
}

/// Fuzzing: a server's rows, column lists and SCRAM messages never panic the client.
#[cfg(any(test, fuzzing))]
pub fn fuzz(data: &[u8]) {
    let _ = row_description(data);
    let _ = data_row(data);
    let _ = error_text(data);
    if let Ok(mut s) = Scram::new(&Secret::new(b"pw".to_vec())) {
        // A low iteration count keeps the fuzzer fast; the parsing is what is fuzzed.
        let text = String::from_utf8_lossy(data).replace("i=", "i=1x");
        let _ = s.client_final(text.as_bytes());
        let _ = s.check_server(data);
    }
}

/// The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL uses it (the
/// user name in the messages is empty: the startup message named the user).
struct Scram {
    password: Secret,
    nonce: String,
    /// client-first-bare, server-first, client-final-without-proof.
    auth_message: String,
    salted: Option<Secret>,
}

impl Scram {
    fn new(password: &Secret) -> Result<Scram, String> {
        let mut raw = [0u8; 18];
        SystemRandom::new().fill(&mut raw).map_err(|_| "no randomness for a SCRAM nonce")?;
        Ok(Scram {
            password: password.clone(),
            nonce: base64_encode(&raw),
            auth_message: String::new(),
            salted: None,
        })
    }

    fn client_first(&self) -> String {
        format!("n,,n=,r={}", self.nonce)
    }

    fn client_final(&mut self, server_first: &[u8]) -> Result<Secret, String> {
        let text = std::str::from_utf8(server_first).map_err(|_| "SCRAM: not UTF-8")?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for part in text.split(',') {
            match part.split_at_checked(2) {
                Some(("r=", v)) => nonce = Some(v),
                Some(("s=", v)) => salt = base64_decode(v.as_bytes()),
                Some(("i=", v)) => iterations = v.parse::<u32>().ok(),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err("SCRAM: a malformed server-first message".into());
        };
        if !nonce.starts_with(&self.nonce) || !(1..=10_000_000).contains(&iterations) {
            return Err("SCRAM: the server's nonce or iteration count is wrong".into());
        }
        let mut salted = [0u8; 32];
        let iterations = std::num::NonZeroU32::new(iterations).ok_or("SCRAM: zero iterations")?;
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            &salt,
            self.password.expose(),
            &mut salted,
        );
        let salted = Secret::new(salted.to_vec());
        let key = hmac::Key::new(hmac::HMAC_SHA256, salted.expose());
        let client_key = hmac::sign(&key, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        self.auth_message = format!("n=,r={},{text},{without_proof}", self.nonce);
        let signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, stored_key.as_ref()),
            self.auth_message.as_bytes(),
        );
        let proof: Vec<u8> =
            client_key.as_ref().iter().zip(signature.as_ref()).map(|(a, b)| a ^ b).collect();
        self.salted = Some(salted);
        Ok(Secret::new(format!("{without_proof},p={}", base64_encode(&proof)).into_bytes()))
    }

    fn check_server(&self, server_final: &[u8]) -> Result<(), String> {
        let salted = self.salted.as_ref().ok_or("SCRAM final out of order")?;
        let server_key =
            hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, salted.expose()), b"Server Key");
        let expected = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, server_key.as_ref()),
            self.auth_message.as_bytes(),
        );
        let given = server_final.strip_prefix(b"v=").and_then(base64_decode);
        if given.as_deref() != Some(expected.as_ref()) {
            return Err("SCRAM: the server did not prove it knows the password".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let p = Postgres::parse("postgresql://imapgate:p%40ss@127.0.0.1:5433/mail", None).unwrap();
        assert!(matches!(p.address, Address::Tcp(ref a) if a[0].port() == 5433));
        assert_eq!((p.user.as_str(), p.dbname.as_str()), ("imapgate", "mail"));
        assert_eq!(p.password.unwrap().expose(), b"p@ss");
        let p = Postgres::parse("postgres://u@/db?host=/tmp/pg&port=5999", None).unwrap();
        assert!(
            matches!(p.address, Address::Unix(ref s) if s.path == std::path::Path::new("/tmp/pg/.s.PGSQL.5999"))
        );
        assert!(Postgres::parse("postgresql://u@h/db?sslmode=require", None).is_err());
        assert!(Postgres::parse("mysql://u@h/db", None).is_err());
    }

    #[test]
    fn scram_follows_rfc_7677() {
        // RFC 7677 §3's example, with PostgreSQL's empty user name replaced back in.
        let mut s = Scram::new(&Secret::new(b"pencil".to_vec())).unwrap();
        s.nonce = "rOprNGfwEbeRWgbNEkqO".into();
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let fin = s.client_final(server_first).unwrap();
        let fin = String::from_utf8(fin.expose().to_vec()).unwrap();
        assert!(fin.starts_with("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p="));
        assert!(s.check_server(b"v=bogus").is_err());
        assert!(s.client_final(b"r=someoneelse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096").is_err());
    }
}
