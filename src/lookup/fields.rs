//! The one answer shape every source fills, with the field names Dovecot's proxy uses, so
//! an admin recognises them in a file, an LDAP attribute map or an SQL query:
//!
//! | field | meaning |
//! |---|---|
//! | `backend` | a configured backend or pool |
//! | `host`, `port` | a server the configuration does not name (inside `allow_hosts`) |
//! | `tls` | `none`, `starttls` or `implicit`, for such a host |
//! | `destuser` | the login to present to the backend |
//! | `master`, `pass` | log in as this master user (authorization identity: the user) |
//! | `pass` alone | the password to present instead of the client's |
//! | `nologin`, `reason` | refuse the login, telling the client why |
//! | `wait` | hold a refusal back this many seconds |

use std::collections::HashMap;
use std::time::Duration;

use super::{Answer, Destination, Found};
use crate::config::{Target, TlsMode};
use crate::imap::sasl::Secret;

/// Every field name, for checking attribute maps and column lists.
pub const NAMES: [&str; 10] =
    ["backend", "host", "port", "tls", "destuser", "master", "pass", "nologin", "reason", "wait"];

/// The longest wait an answer may ask for.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Fields as a source reads them, checked one by one.
#[derive(Debug, Default)]
pub struct Fields {
    backend: Option<Target>,
    host: Option<String>,
    port: Option<u16>,
    tls: Option<TlsMode>,
    destuser: Option<String>,
    master: Option<String>,
    pass: Option<Secret>,
    nologin: bool,
    reason: Option<String>,
    wait: Option<Duration>,
}

impl Fields {
    /// Sets field `name` from `value`; `targets` knows the configured backends and pools.
    pub fn set(
        &mut self,
        name: &str,
        value: &str,
        targets: &HashMap<String, Target>,
    ) -> Result<(), String> {
        let text = |what: &str| -> Result<String, String> {
            if value.is_empty() || value.chars().any(char::is_control) {
                Err(format!("{name}: {what} must be non-empty text"))
            } else {
                Ok(value.to_string())
            }
        };
        match name {
            "backend" => {
                let t = targets.get(value).copied();
                self.backend =
                    Some(t.ok_or_else(|| format!("backend: undefined backend {value:?}"))?);
            }
            "host" => {
                if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == '/') {
                    return Err(format!("host: invalid host name {value:?}"));
                }
                self.host = Some(value.trim_matches(['[', ']']).to_string());
            }
            "port" => {
                let port = value.parse::<u16>().ok().filter(|&p| p != 0);
                self.port = Some(port.ok_or_else(|| format!("port: invalid port {value:?}"))?);
            }
            "tls" => {
                self.tls = Some(match value.to_ascii_lowercase().as_str() {
                    "none" | "no" => TlsMode::None,
                    "starttls" => TlsMode::Starttls,
                    "implicit" | "yes" => TlsMode::Implicit,
                    _ => return Err(format!("tls: {value:?} is not none, starttls or implicit")),
                });
            }
            "destuser" => self.destuser = Some(text("a user name")?),
            "master" => self.master = Some(text("a user name")?),
            "pass" => self.pass = Some(Secret::new(value.as_bytes().to_vec())),
            "nologin" => {
                self.nologin = !matches!(value.to_ascii_lowercase().as_str(), "no" | "0" | "false")
            }
            "reason" => self.reason = Some(value.replace(['\r', '\n'], " ")),
            "wait" => {
                let secs = value.trim_end_matches('s').parse::<u64>();
                let wait =
                    secs.map_err(|_| format!("wait: {value:?} is not a number of seconds"))?;
                self.wait = Some(Duration::from_secs(wait).min(MAX_WAIT));
            }
            _ => return Err(format!("unknown field {name:?} (known: {})", NAMES.join(", "))),
        }
        Ok(())
    }

    /// A host in `HOST[:PORT]` or `[V6]:PORT` form.
    pub fn set_host_port(&mut self, value: &str) -> Result<(), String> {
        let (host, port) = match value.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => (h, Some(p)),
            _ => (value, None),
        };
        self.set("host", host, &HashMap::new())?;
        match port {
            Some(p) => self.set("port", p, &HashMap::new()),
            None => Ok(()),
        }
    }

    /// True when no field was set.
    pub fn is_empty(&self) -> bool {
        self.backend.is_none()
            && self.host.is_none()
            && self.destuser.is_none()
            && self.master.is_none()
            && self.pass.is_none()
            && !self.nologin
    }

    /// The answer; `verified` says the source checked the user's own password.
    pub fn into_found(self, verified: bool) -> Result<Found, String> {
        if self.nologin {
            return Ok(Found::Refused { reason: self.reason, wait: self.wait });
        }
        let to = match (self.backend, self.host) {
            (Some(_), Some(_)) => return Err("both backend and host are given".into()),
            (Some(target), None) => Destination::Target(target),
            (None, Some(host)) => Destination::Host { host, port: self.port, tls: self.tls },
            (None, None) => Destination::Default,
        };
        let (master, pass) = match (self.master, self.pass) {
            (Some(_), None) => return Err("master needs pass (the master user's password)".into()),
            (Some(m), Some(p)) => (Some((m, p)), None),
            (None, pass) => (None, pass),
        };
        Ok(Found::Route(Answer {
            to,
            destuser: self.destuser,
            master,
            pass,
            verified,
            host_defaults: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets() -> HashMap<String, Target> {
        [("one".to_string(), Target::Backend(0)), ("both".to_string(), Target::Pool(0))].into()
    }

    fn found(pairs: &[(&str, &str)]) -> Result<Found, String> {
        let mut f = Fields::default();
        for (k, v) in pairs {
            f.set(k, v, &targets())?;
        }
        f.into_found(true)
    }

    #[test]
    fn every_field_reads_its_value() {
        let Ok(Found::Route(a)) = found(&[("backend", "both"), ("destuser", "u1")]) else {
            panic!()
        };
        assert_eq!(
            (a.to, a.destuser.as_deref()),
            (Destination::Target(Target::Pool(0)), Some("u1"))
        );
        let Ok(Found::Route(a)) =
            found(&[("host", "10.1.2.3"), ("port", "1143"), ("tls", "starttls")])
        else {
            panic!()
        };
        assert_eq!(
            a.to,
            Destination::Host {
                host: "10.1.2.3".into(),
                port: Some(1143),
                tls: Some(TlsMode::Starttls)
            }
        );
        let Ok(Found::Route(a)) = found(&[("backend", "one"), ("master", "admin"), ("pass", "p")])
        else {
            panic!()
        };
        assert_eq!(
            a.master.map(|(m, p)| (m, p.expose().to_vec())),
            Some(("admin".into(), b"p".to_vec()))
        );
        let Ok(Found::Refused { reason, wait }) =
            found(&[("nologin", "y"), ("reason", "Moved to\r\nelsewhere"), ("wait", "3")])
        else {
            panic!()
        };
        assert_eq!(
            (reason.as_deref(), wait),
            (Some("Moved to  elsewhere"), Some(Duration::from_secs(3)))
        );
    }

    #[test]
    fn bad_values_say_which_field() {
        for (pairs, needle) in [
            (&[("backend", "nope")][..], "backend: undefined backend"),
            (&[("port", "0")], "port: invalid"),
            (&[("tls", "maybe")], "tls:"),
            (&[("wait", "soon")], "wait:"),
            (&[("colour", "red")], "unknown field \"colour\""),
            (&[("backend", "one"), ("host", "h")], "both backend and host"),
            (&[("master", "admin")], "master needs pass"),
            (&[("destuser", "a\rb")], "destuser:"),
        ] {
            let e = found(pairs).unwrap_err();
            assert!(e.contains(needle), "{pairs:?}: {e}");
        }
        let mut f = Fields::default();
        f.set_host_port("[2001:db8::1]:993").unwrap();
        assert_eq!((f.host.as_deref(), f.port), (Some("2001:db8::1"), Some(993)));
        let mut f = Fields::default();
        f.set_host_port("imap.example.org").unwrap();
        assert_eq!((f.host.as_deref(), f.port), (Some("imap.example.org"), None));
    }
}
