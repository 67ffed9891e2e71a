//! `[pool NAME]` sections (several backends behind one name, tried in an order chosen by
//! `balance`) and the backend keys that say how imapgate logs in and how it treats a
//! backend that fails.

use std::collections::HashMap;
use std::time::Duration;

use super::error::Diag;
use super::ini::Section;
use super::value::{parse_duration, parse_yes_no};
use super::{check_keys, first, value_of};

/// How a pool orders its members for a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// In the order listed: the first that is up.
    Failover,
    /// Starting at a stable hash of the login name: the same user lands on the same
    /// backend while it is up, and fails over along the list when it is not.
    Hash,
    /// Starting at the next member for each new login.
    RoundRobin,
}

/// One `[pool NAME]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// NAME.
    pub name: String,
    /// Indexes into `Config::backends`, in the listed order.
    pub members: Vec<usize>,
    /// How logins are spread.
    pub balance: Balance,
}

/// How imapgate logs in on a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginMethod {
    /// LOGIN, or AUTHENTICATE PLAIN when the backend says LOGINDISABLED.
    Auto,
    /// Always LOGIN.
    Login,
    /// Always AUTHENTICATE PLAIN.
    AuthenticatePlain,
}

/// The backend keys about logging in and health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendLogin {
    /// `login_method = auto | login | authenticate-plain`.
    pub method: LoginMethod,
    /// `sasl_ir = yes | no`: send the PLAIN response with the command when the backend
    /// advertises SASL-IR (some advertise it and then reject it).
    pub sasl_ir: bool,
    /// `forward_id = yes | no`: pass the client's ID parameters on before login.
    pub forward_id: bool,
    /// `trusted = yes | no`: add x-originating-ip, x-originating-port and x-session-id to
    /// the forwarded ID (Dovecot's login_trusted_networks convention).
    pub trusted: bool,
    /// `down_time`: how long a backend that failed to connect or greet is skipped.
    pub down_time: Duration,
    /// `probe_user` and `probe_password`: an account imapgate logs in with to learn the
    /// backend's post-login capabilities before any user does.
    pub probe: Option<(String, String)>,
    /// `compress = yes | no` (default no): when the backend offers COMPRESS=DEFLATE,
    /// imapgate compresses its link to it (worth it across a WAN, not on a LAN).
    pub compress: bool,
}

impl Default for BackendLogin {
    fn default() -> BackendLogin {
        BackendLogin {
            method: LoginMethod::Auto,
            sasl_ir: true,
            forward_id: false,
            trusted: false,
            down_time: Duration::from_secs(30),
            probe: None,
            compress: false,
        }
    }
}

/// `[pool NAME]` keys.
pub(crate) const POOL_KEYS: &[&str] = &["backends", "balance"];

/// Keys `backend_login` reads.
pub(crate) const BACKEND_KEYS: &[&str] = &[
    "login_method",
    "sasl_ir",
    "forward_id",
    "trusted",
    "down_time",
    "probe_user",
    "probe_password",
    "compress",
];

pub(crate) fn backend_login(sec: &Section, diag: &mut Diag) -> BackendLogin {
    let method = value_of(sec, "login_method", diag, |s| match s.to_ascii_lowercase().as_str() {
        "auto" => Ok(LoginMethod::Auto),
        "login" => Ok(LoginMethod::Login),
        "authenticate-plain" => Ok(LoginMethod::AuthenticatePlain),
        _ => Err(format!("invalid value {s:?} (expected auto, login or authenticate-plain)")),
    });
    let yes_no = |key: &str, diag: &mut Diag, default: bool| {
        value_of(sec, key, diag, parse_yes_no).unwrap_or(default)
    };
    let probe_user = first(sec, "probe_user").map(|e| e.value.clone());
    let probe_password = first(sec, "probe_password").map(|e| e.value.clone());
    let probe = match (probe_user, probe_password) {
        (Some(u), Some(p)) => Some((u, p)),
        (None, None) => None,
        _ => {
            diag.err(sec.line, "probe_user and probe_password go together");
            None
        }
    };
    let d = BackendLogin::default();
    BackendLogin {
        method: method.unwrap_or(d.method),
        sasl_ir: yes_no("sasl_ir", diag, d.sasl_ir),
        forward_id: yes_no("forward_id", diag, d.forward_id),
        trusted: yes_no("trusted", diag, d.trusted),
        down_time: value_of(sec, "down_time", diag, parse_duration).unwrap_or(d.down_time),
        probe,
        compress: yes_no("compress", diag, d.compress),
    }
}

pub(crate) fn parse(
    name: &str,
    sec: &Section,
    backends: &HashMap<String, usize>,
    diag: &mut Diag,
) -> Option<Pool> {
    let before = diag.count();
    let label = format!("[pool {name}]");
    check_keys(sec, &label, POOL_KEYS, &[], diag);
    let balance = value_of(sec, "balance", diag, |s| match s.to_ascii_lowercase().as_str() {
        "failover" => Ok(Balance::Failover),
        "hash" => Ok(Balance::Hash),
        "roundrobin" => Ok(Balance::RoundRobin),
        _ => Err(format!("invalid value {s:?} (expected failover, hash or roundrobin)")),
    });
    let mut members = Vec::new();
    match first(sec, "backends") {
        None => diag.err(sec.line, format!("{label}: missing required key \"backends\"")),
        Some(e) => {
            for word in
                e.value.split(|c: char| c == ',' || c.is_whitespace()).filter(|w| !w.is_empty())
            {
                match backends.get(word) {
                    Some(&i) if members.contains(&i) => {
                        diag.err(e.line, format!("backends: {word:?} listed twice"))
                    }
                    Some(&i) => members.push(i),
                    None => diag.err(e.line, format!("backends: undefined backend {word:?}")),
                }
            }
            if members.is_empty() && diag.count() == before {
                diag.err(e.line, "backends: empty list");
            }
        }
    }
    let pool =
        Pool { name: name.to_string(), members, balance: balance.unwrap_or(Balance::Failover) };
    (diag.count() == before).then_some(pool)
}

/// FNV-1a: a stable hash (the same on every run and build), for `balance = hash`.
pub fn stable_hash(text: &str) -> u64 {
    text.bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}
