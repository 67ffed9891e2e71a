//! Daemon keys: privileges (`user`, `group`, `chroot`), the process model (`mode`),
//! connection limits, the per-address login-failure block and `shutdown_grace` in
//! `[global]`; access lists and the PROXY protocol in `[listener NAME]`;
//! `send_proxy_protocol` in `[backend NAME]`. Pure parsing: names are resolved and
//! directories checked by `privdrop` at startup (and by `-t`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::error::Diag;
use super::ini::Section;
use super::value::{parse_duration, parse_yes_no, positive_duration, Cidr};
use super::value_of;

/// `[global]` keys handled here.
pub(crate) const GLOBAL_KEYS: &[&str] = &[
    "user",
    "group",
    "chroot",
    "mode",
    "max_sessions",
    "max_sessions_per_ip",
    "login_block_after",
    "login_block_time",
    "login_failure_delay_max",
    "shutdown_grace",
];

/// `[listener NAME]` keys handled here; the CIDR lists are repeatable.
pub(crate) const LISTENER_KEYS: &[&str] = &["allow", "deny", "proxy_protocol", "proxy_trusted"];

/// Repeatable `[listener NAME]` keys.
pub(crate) const LISTENER_REPEATABLE: &[&str] = &["allow", "deny", "proxy_trusted"];

/// A value together with the line it was written on, for `PATH:LINE:` messages that
/// can only be found at startup (an unknown user, a missing chroot directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtLine<T> {
    /// The parsed value.
    pub value: T,
    /// 1-based line of the key.
    pub line: usize,
}

/// How connections are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// One thread per connection in one privilege-dropped process (default).
    #[default]
    Thread,
    /// One forked, privilege-dropped, single-threaded process per connection.
    Fork,
}

/// The daemon part of `[global]`. [`Default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    /// `user`: the account sessions run as.
    pub user: Option<AtLine<String>>,
    /// `group`: the group sessions run as; default the user's primary group.
    pub group: Option<AtLine<String>>,
    /// `chroot`: an absolute directory sessions are confined to.
    pub chroot: Option<AtLine<PathBuf>>,
    /// `mode`: thread | fork.
    pub mode: Mode,
    /// `max_sessions`: concurrent sessions of the whole process; 0 = unlimited.
    pub max_sessions: usize,
    /// `max_sessions_per_ip`: concurrent sessions per client address (IPv6: per /64);
    /// 0 = unlimited.
    pub max_sessions_per_ip: usize,
    /// `login_block_after`: failed logins from one address that block it; 0 = never.
    pub login_block_after: u32,
    /// `login_block_time`: how long a block lasts, and how long failures are remembered.
    pub login_block_time: Duration,
    /// `login_failure_delay_max`: cap of the growing delay after failed logins.
    pub login_failure_delay_max: Duration,
    /// `shutdown_grace`: time sessions get to end after SIGTERM.
    pub shutdown_grace: Duration,
}

impl Default for Daemon {
    fn default() -> Daemon {
        Daemon {
            user: None,
            group: None,
            chroot: None,
            mode: Mode::Thread,
            max_sessions: 1000,
            max_sessions_per_ip: 0,
            login_block_after: 10,
            login_block_time: Duration::from_secs(600),
            login_failure_delay_max: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Access control and PROXY protocol settings of one listener.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Access {
    /// `allow`: when not empty, only these blocks may connect.
    pub allow: Vec<Cidr>,
    /// `deny`: these blocks may not connect (checked first).
    pub deny: Vec<Cidr>,
    /// `proxy_protocol`: expect a PROXY v1/v2 header on every connection.
    pub proxy_protocol: bool,
    /// `proxy_trusted`: the load balancers allowed to send that header.
    pub proxy_trusted: Vec<Cidr>,
}

impl Access {
    /// Whether `ip` may use the listener: not denied, and allowed when there is an allow
    /// list.
    pub fn permits(&self, ip: IpAddr) -> bool {
        !self.deny.iter().any(|c| c.contains(ip))
            && (self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip)))
    }

    /// Whether `ip` may send a PROXY header.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.proxy_trusted.iter().any(|c| c.contains(ip))
    }
}

/// Types the daemon keys of `[global]`.
pub(crate) fn parse_global(sec: &Section, diag: &mut Diag) -> Daemon {
    let d = Daemon::default();
    let at = |key: &str| super::first(sec, key).map_or(0, |e| e.line);
    let user = value_of(sec, "user", diag, account).map(|value| AtLine { value, line: at("user") });
    let group =
        value_of(sec, "group", diag, account).map(|value| AtLine { value, line: at("group") });
    let chroot = value_of(sec, "chroot", diag, |s| {
        if s.starts_with('/') {
            Ok(PathBuf::from(s))
        } else {
            Err(format!("{s:?} is not an absolute path"))
        }
    })
    .map(|value| AtLine { value, line: at("chroot") });
    let mode = value_of(sec, "mode", diag, |s| match s.to_ascii_lowercase().as_str() {
        "thread" => Ok(Mode::Thread),
        "fork" => Ok(Mode::Fork),
        _ => Err(format!("invalid value {s:?} (expected thread or fork)")),
    });
    let count = |s: &str| {
        s.parse::<u32>()
            .ok()
            .filter(|_| s.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("invalid value {s:?} (expected a number, 0 for no limit)"))
    };
    let max_sessions = value_of(sec, "max_sessions", diag, count);
    let max_sessions_per_ip = value_of(sec, "max_sessions_per_ip", diag, count);
    let login_block_after = value_of(sec, "login_block_after", diag, count);
    let login_block_time = value_of(sec, "login_block_time", diag, positive_duration);
    let delay_max = value_of(sec, "login_failure_delay_max", diag, parse_duration);
    let shutdown_grace = value_of(sec, "shutdown_grace", diag, parse_duration);
    if group.is_some() && user.is_none() {
        diag.err(at("group"), "group: only valid together with user");
    }
    Daemon {
        user,
        group,
        chroot,
        mode: mode.unwrap_or(d.mode),
        max_sessions: max_sessions.map_or(d.max_sessions, |n| n as usize),
        max_sessions_per_ip: max_sessions_per_ip.map_or(d.max_sessions_per_ip, |n| n as usize),
        login_block_after: login_block_after.unwrap_or(d.login_block_after),
        login_block_time: login_block_time.unwrap_or(d.login_block_time),
        login_failure_delay_max: delay_max.unwrap_or(d.login_failure_delay_max),
        shutdown_grace: shutdown_grace.unwrap_or(d.shutdown_grace),
    }
}

/// A user or group name as /etc/passwd allows it, or a numeric id.
fn account(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("invalid name {s:?}"))
    }
}

/// Types the daemon keys of one `[listener NAME]` section.
pub(crate) fn parse_listener(sec: &Section, label: &str, diag: &mut Diag) -> Access {
    let cidrs = |key: &str, diag: &mut Diag| {
        let mut list = Vec::new();
        for e in sec.entries.iter().filter(|e| e.key == key) {
            if e.value.is_empty() {
                diag.err(e.line, format!("{key}: empty value"));
            }
            for word in e.value.split_whitespace() {
                match Cidr::parse(word) {
                    Ok(c) => list.push(c),
                    Err(m) => diag.err(e.line, format!("{key}: {m}")),
                }
            }
        }
        list
    };
    let allow = cidrs("allow", diag);
    let deny = cidrs("deny", diag);
    let proxy_trusted = cidrs("proxy_trusted", diag);
    let proxy_protocol = value_of(sec, "proxy_protocol", diag, parse_yes_no).unwrap_or(false);
    if proxy_protocol && proxy_trusted.is_empty() {
        let line = super::first(sec, "proxy_protocol").map_or(sec.line, |e| e.line);
        diag.err(
            line,
            format!("{label}: proxy_protocol = yes requires proxy_trusted (the load balancers' addresses)"),
        );
    }
    if !proxy_protocol {
        if let Some(e) = super::first(sec, "proxy_trusted") {
            diag.err(e.line, "proxy_trusted: only valid with proxy_protocol = yes");
        }
    }
    Access { allow, deny, proxy_protocol, proxy_trusted }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_match() {
        let c = Cidr::parse("192.0.2.77/24").unwrap();
        assert_eq!(c.to_string(), "192.0.2.0/24");
        assert!(c.contains("192.0.2.1".parse().unwrap()));
        assert!(c.contains("::ffff:192.0.2.9".parse().unwrap()));
        assert!(!c.contains("192.0.3.1".parse().unwrap()));
        let one = Cidr::parse("127.0.0.2").unwrap();
        assert!(one.contains("127.0.0.2".parse().unwrap()));
        assert!(!one.contains("127.0.0.1".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("192.0.2.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        for bad in ["", "1.2.3.4/33", "::/129", "1.2.3/8", "a/8", "1.2.3.4/", "1.2.3.4/+1"] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deny_wins_over_allow() {
        let access = Access {
            allow: vec![Cidr::parse("127.0.0.0/8").unwrap()],
            deny: vec![Cidr::parse("127.0.0.2").unwrap()],
            ..Access::default()
        };
        assert!(access.permits("127.0.0.1".parse().unwrap()));
        assert!(!access.permits("127.0.0.2".parse().unwrap()));
        assert!(!access.permits("10.0.0.1".parse().unwrap()));
        assert!(Access::default().permits("10.0.0.1".parse().unwrap()));
    }
}
