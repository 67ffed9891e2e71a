//! `type = ldap`: a directory search per login, LDAPv3 (RFC 4511) spoken by imapgate
//! itself: a simple bind (anonymous, or as `bind_dn`), one search under `base` with the
//! `filter` template (`(uid=%u)`; values escaped, so a login name cannot add a term), the
//! `field = FIELD ATTRIBUTE` attributes read into the answer, and with `verify_password`
//! a bind as the entry found, with the client's password. Over `ldap://HOST[:PORT]`,
//! `ldaps://HOST[:PORT]` (TLS, certificates checked against `ca` or the system's), or
//! `ldapi://` (a unix socket, path %-escaped as in `ldapi://%2Frun%2Fslapd%2Fldapi`).
//!
//! No LDAP crate: the usable ones run on an async runtime. A bind and a search are two
//! request shapes and three answer shapes; `ber.rs` and `filter.rs` are all it takes.
//! One connection per lookup (the cache is what saves round trips), under `timeout`.

pub mod ber;
pub mod filter;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use super::fields::Fields;
use super::template::Template;
use super::{Found, Place, Query, Source};
use crate::config::Target;
use crate::imap::sasl::Secret;
use crate::net::transport::Transport;
use std::collections::HashMap;

/// The longest LDAP message read.
const MAX_MESSAGE: usize = 1 << 20;

/// LDAP result codes imapgate tells apart.
const SUCCESS: i64 = 0;
const INVALID_CREDENTIALS: i64 = 49;

#[derive(Debug, Clone)]
pub enum Endpoint {
    Tcp { addrs: Vec<SocketAddr>, tls: Option<(Arc<ClientConfig>, ServerName<'static>)> },
    Unix(Place),
}

/// Search scope (RFC 4511 §4.5.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Base = 0,
    One = 1,
    Sub = 2,
}

pub struct LdapMap {
    pub endpoint: Endpoint,
    pub base: String,
    pub scope: Scope,
    pub filter: Template,
    pub bind: Option<(String, Secret)>,
    pub verify_password: bool,
    /// (field, attribute) pairs.
    pub fields: Vec<(String, String)>,
    pub timeout: Duration,
    pub targets: HashMap<String, Target>,
}

/// `ldap://HOST[:PORT]`, `ldaps://HOST[:PORT]` or `ldapi://%2FPATH`; names resolved now.
pub fn parse_url(
    url: &str,
    chroot: Option<&std::path::Path>,
    tls: impl FnOnce() -> Result<Arc<ClientConfig>, String>,
) -> Result<Endpoint, String> {
    if let Some(path) = url.strip_prefix("ldapi://") {
        let path = super::http::unescape(path.trim_end_matches('/'));
        if !path.starts_with('/') {
            return Err(
                "ldapi:// needs an absolute socket path, %-escaped: ldapi://%2Frun%2Fslapd%2Fldapi"
                    .into(),
            );
        }
        return Ok(Endpoint::Unix(Place::new(std::path::Path::new(&path), chroot)));
    }
    let (rest, secure) = match (url.strip_prefix("ldap://"), url.strip_prefix("ldaps://")) {
        (Some(r), _) => (r, false),
        (_, Some(r)) => (r, true),
        _ => {
            return Err("expected ldap://HOST[:PORT], ldaps://HOST[:PORT] or ldapi://%2FPATH".into())
        }
    };
    let authority = rest.trim_end_matches('/');
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
            (h, p.parse::<u16>().map_err(|_| format!("invalid port {p:?}"))?)
        }
        _ => (authority, if secure { 636 } else { 389 }),
    };
    let host = host.trim_matches(['[', ']']);
    if host.is_empty() || authority.contains('/') {
        return Err(format!("invalid LDAP URL {url:?}"));
    }
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let tls = if secure {
        let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
        Some((tls()?, name))
    } else {
        None
    };
    Ok(Endpoint::Tcp { addrs, tls })
}

/// One connection to the directory.
struct Conn {
    stream: Stream,
    next_id: i64,
    deadline: Instant,
    buf: Vec<u8>,
}

enum Stream {
    Tcp(Transport),
    Unix(UnixStream),
}

impl Conn {
    fn open(endpoint: &Endpoint, timeout: Duration) -> Result<Conn, String> {
        let deadline = Instant::now() + timeout;
        let left =
            || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let stream = match endpoint {
            Endpoint::Tcp { addrs, tls } => {
                let mut last = "no address".to_string();
                let mut sock = None;
                for addr in addrs {
                    match TcpStream::connect_timeout(addr, left()) {
                        Ok(s) => {
                            sock = Some(s);
                            break;
                        }
                        Err(e) => last = format!("connect to {addr}: {e}"),
                    }
                }
                let mut t = Transport::plain(sock.ok_or(last)?);
                if let Some((config, name)) = tls {
                    t.connect_tls(Arc::clone(config), name.clone(), deadline)
                        .map_err(|e| format!("TLS: {e}"))?;
                }
                Stream::Tcp(t)
            }
            Endpoint::Unix(place) => Stream::Unix(
                place
                    .with(|p| UnixStream::connect(p))
                    .map_err(|e| format!("connect to {}: {e}", place.path.display()))?,
            ),
        };
        Ok(Conn { stream, next_id: 1, deadline, buf: Vec::new() })
    }

    fn left(&self) -> Result<Duration, String> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out".into());
        }
        Ok(left)
    }

    fn send(&mut self, op: impl FnOnce(&mut Vec<u8>)) -> Result<i64, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = Secret::new(Vec::new());
        ber::tlv(msg.bytes_mut(), ber::SEQUENCE, |o| {
            ber::integer(o, ber::INTEGER, id);
            op(o);
        });
        let left = self.left()?;
        let sent = match &mut self.stream {
            Stream::Tcp(t) => t
                .set_write_timeout(Some(left))
                .and_then(|()| t.write_all(msg.expose()))
                .and_then(|()| t.flush()),
            Stream::Unix(u) => {
                u.set_write_timeout(Some(left)).and_then(|()| u.write_all(msg.expose()))
            }
        };
        sent.map_err(|e| format!("write: {e}"))?;
        Ok(id)
    }

    /// The next message for `id`: its protocol operation's tag and the message bytes.
    fn receive(&mut self, id: i64) -> Result<(u8, Vec<u8>), String> {
        loop {
            if let Some((tlv, used)) = ber::parse(&self.buf)? {
                if tlv.tag != ber::SEQUENCE {
                    return Err("not an LDAP message".into());
                }
                let mut r = tlv.reader();
                let msg_id = r.expect(ber::INTEGER)?.int()?;
                let op = r.next()?;
                let (tag, content) = (op.tag, op.content.to_vec());
                self.buf.drain(..used);
                if msg_id == id {
                    return Ok((tag, content));
                }
                if msg_id == 0 {
                    return Err("the server sent a notice of disconnection".into());
                }
                continue;
            }
            if self.buf.len() > MAX_MESSAGE {
                return Err("message too long".into());
            }
            let left = self.left()?;
            let mut chunk = [0u8; 4096];
            let read = match &mut self.stream {
                Stream::Tcp(t) => t.set_read_timeout(Some(left)).and_then(|()| t.read(&mut chunk)),
                Stream::Unix(u) => u.set_read_timeout(Some(left)).and_then(|()| u.read(&mut chunk)),
            };
            match read {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(crate::lookup::read_failure(&e)),
            }
        }
    }

    /// A simple bind; the result code and diagnostic message.
    fn bind(&mut self, dn: &str, password: &[u8]) -> Result<(i64, String), String> {
        let id = self.send(|o| {
            ber::tlv(o, 0x60, |o| {
                ber::integer(o, ber::INTEGER, 3);
                ber::octets(o, ber::OCTET_STRING, dn.as_bytes());
                ber::octets(o, 0x80, password);
            })
        })?;
        let (tag, content) = self.receive(id)?;
        if tag != 0x61 {
            return Err(format!("expected a bind response, got tag {tag:#04x}"));
        }
        result(&content)
    }

    /// A search for at most two entries: (DN, attributes) of each.
    fn search(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &[u8],
        attrs: &[&str],
    ) -> Result<Vec<Entry>, String> {
        let id = self.send(|o| {
            ber::tlv(o, 0x63, |o| {
                ber::octets(o, ber::OCTET_STRING, base.as_bytes());
                ber::integer(o, ber::ENUMERATED, scope as i64);
                ber::integer(o, ber::ENUMERATED, 0); // never dereference aliases
                ber::integer(o, ber::INTEGER, 2); // two are enough to see ambiguity
                ber::integer(o, ber::INTEGER, 0);
                ber::octets(o, ber::BOOLEAN, &[0]);
                o.extend_from_slice(filter);
                ber::tlv(o, ber::SEQUENCE, |o| {
                    for a in attrs {
                        ber::octets(o, ber::OCTET_STRING, a.as_bytes());
                    }
                });
            })
        })?;
        let mut entries = Vec::new();
        loop {
            let (tag, content) = self.receive(id)?;
            match tag {
                0x64 => entries.push(entry(&content)?),
                0x73 => {} // a referral elsewhere: not followed
                0x65 => {
                    let (code, msg) = result(&content)?;
                    return match code {
                        SUCCESS => Ok(entries),
                        4 => Err("the filter matches more than one entry".into()),
                        32 => Ok(Vec::new()), // no such object: the base is empty
                        _ => Err(format!("search failed: result {code} {msg}")),
                    };
                }
                _ => return Err(format!("unexpected answer to a search, tag {tag:#04x}")),
            }
        }
    }

    fn unbind(mut self) {
        let _ = self.send(|o| o.extend_from_slice(&[0x42, 0x00]));
    }
}

/// An entry: its DN and (attribute, first value) pairs.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    dn: String,
    attrs: Vec<(String, String)>,
}

fn text(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a value is not UTF-8".to_string())
}

/// LDAPResult: result code and diagnostic message.
fn result(content: &[u8]) -> Result<(i64, String), String> {
    let mut r = ber::Reader::new(content);
    let code = r.expect(ber::ENUMERATED)?.int()?;
    let _matched = r.expect(ber::OCTET_STRING)?;
    let msg = r.expect(ber::OCTET_STRING)?;
    Ok((code, String::from_utf8_lossy(msg.content).chars().take(200).collect()))
}

fn entry(content: &[u8]) -> Result<Entry, String> {
    let mut r = ber::Reader::new(content);
    let dn = text(r.expect(ber::OCTET_STRING)?.content)?;
    let mut attrs = Vec::new();
    let mut list = r.expect(ber::SEQUENCE)?.reader();
    while !list.is_empty() {
        let mut attr = list.expect(ber::SEQUENCE)?.reader();
        let name = text(attr.expect(ber::OCTET_STRING)?.content)?;
        let mut values = attr.expect(ber::SET)?.reader();
        if !values.is_empty() {
            attrs.push((name, text(values.expect(ber::OCTET_STRING)?.content)?));
        }
    }
    Ok(Entry { dn, attrs })
}

/// Fuzzing: what a directory sends is decoded without panics and without reading past
/// what it announced.
#[cfg(any(test, fuzzing))]
pub fn fuzz(data: &[u8]) {
    if let Ok(Some((tlv, used))) = ber::parse(data) {
        assert!(used <= data.len());
        let _ = entry(tlv.content);
        let _ = result(tlv.content);
        let mut r = tlv.reader();
        while r.next().is_ok() {}
    }
}

impl Source for LdapMap {
    fn find(&self, q: &Query<'_>) -> Result<Option<Found>, String> {
        let filter = filter::encode(&self.filter.expand(q, filter::escape))?;
        let mut conn = Conn::open(&self.endpoint, self.timeout)?;
        if let Some((dn, password)) = &self.bind {
            match conn.bind(dn, password.expose())? {
                (SUCCESS, _) => {}
                (code, msg) => return Err(format!("bind as {dn} refused: result {code} {msg}")),
            }
        }
        let attrs: Vec<&str> = self.fields.iter().map(|(_, a)| a.as_str()).collect();
        let mut entries = conn.search(&self.base, self.scope, &filter, &attrs)?;
        let entry = match entries.len() {
            0 => return Ok(None),
            1 => entries.remove(0),
            _ => return Err("the filter matches more than one entry".into()),
        };
        let mut fields = Fields::default();
        for (field, attr) in &self.fields {
            let value = entry.attrs.iter().find(|(a, _)| a.eq_ignore_ascii_case(attr));
            if let Some((_, value)) = value {
                fields
                    .set(field, value, &self.targets)
                    .map_err(|e| format!("{}: {e}", entry.dn))?;
            }
        }
        let mut verified = false;
        if self.verify_password {
            match q.password {
                // An empty password is an unauthenticated bind (RFC 4513 §5.1.2), which
                // succeeds without proving anything.
                Some(p) if p.expose().is_empty() => {
                    return Ok(Some(Found::Rejected { text: None, wait: None }))
                }
                Some(p) => match conn.bind(&entry.dn, p.expose())? {
                    (SUCCESS, _) => verified = true,
                    (INVALID_CREDENTIALS, _) => {
                        return Ok(Some(Found::Rejected { text: None, wait: None }))
                    }
                    (code, msg) => {
                        return Err(format!("bind as the user failed: result {code} {msg}"))
                    }
                },
                // A bearer token: the backend checks it; nothing here is verified.
                None => {}
            }
        }
        conn.unbind();
        fields.into_found(verified).map(Some)
    }

    fn verifies(&self) -> bool {
        self.verify_password
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_entries_and_results_decode() {
        // SearchResultEntry: "uid=a,dc=x" { mailHost: ["h1", "h2"], empty: [] }
        let mut e = Vec::new();
        ber::octets(&mut e, ber::OCTET_STRING, b"uid=a,dc=x");
        ber::tlv(&mut e, ber::SEQUENCE, |o| {
            ber::tlv(o, ber::SEQUENCE, |o| {
                ber::octets(o, ber::OCTET_STRING, b"mailHost");
                ber::tlv(o, ber::SET, |o| {
                    ber::octets(o, ber::OCTET_STRING, b"h1");
                    ber::octets(o, ber::OCTET_STRING, b"h2");
                });
            });
            ber::tlv(o, ber::SEQUENCE, |o| {
                ber::octets(o, ber::OCTET_STRING, b"empty");
                ber::tlv(o, ber::SET, |_| {});
            });
        });
        let got = entry(&e).unwrap();
        assert_eq!(
            got,
            Entry { dn: "uid=a,dc=x".into(), attrs: vec![("mailHost".into(), "h1".into())] }
        );
        let mut r = Vec::new();
        ber::integer(&mut r, ber::ENUMERATED, 49);
        ber::octets(&mut r, ber::OCTET_STRING, b"");
        ber::octets(&mut r, ber::OCTET_STRING, b"bad");
        assert_eq!(result(&r).unwrap(), (49, "bad".into()));
        assert!(entry(&r).is_err());
    }

    #[test]
    fn urls() {
        let no_tls = || Err("no".to_string());
        assert!(
            matches!(parse_url("ldap://127.0.0.1", None, no_tls).unwrap(), Endpoint::Tcp { addrs, tls: None } if addrs[0].port() == 389)
        );
        assert!(
            matches!(parse_url("ldapi://%2Frun%2Fslapd%2Fldapi", None, no_tls).unwrap(), Endpoint::Unix(p) if p.path == std::path::Path::new("/run/slapd/ldapi"))
        );
        assert!(
            parse_url("ldaps://127.0.0.1", None, no_tls).is_err(),
            "TLS needs its configuration"
        );
        assert!(parse_url("http://x", None, no_tls).is_err());
    }
}
