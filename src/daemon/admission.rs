//! Connection limits and the per-address failed-login record: concurrent sessions in
//! total and per client address, a growing delay after failed logins, and a temporary
//! block. One table per process, shared by the sessions of thread mode. In fork mode the
//! listener process owns the table: it admits connections, and each session process,
//! which starts with a copy of the table, reports its failures back (`host::ForkChild`)
//! so that the next connection from that address sees them.
//!
//! Addresses are counted as given, except IPv6, which is counted per /64 (one end user
//! usually has a whole /64).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::{self, Daemon};

/// Why a connection is refused before the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `deny`/`allow` of the listener.
    Denied,
    /// `max_sessions` reached.
    TooMany,
    /// `max_sessions_per_ip` reached for this address.
    TooManyFromAddress,
    /// Blocked after `login_block_after` failed logins.
    Blocked,
    /// A PROXY header from an address not in `proxy_trusted`.
    UntrustedProxy,
}

impl Refusal {
    /// The `reason=` word of the REFUSED log line.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Denied => "access-denied",
            Refusal::TooMany => "max-sessions",
            Refusal::TooManyFromAddress => "max-sessions-per-ip",
            Refusal::Blocked => "login-blocked",
            Refusal::UntrustedProxy => "untrusted-proxy",
        }
    }

    /// The line the client gets instead of a greeting.
    pub fn bye(self) -> &'static [u8] {
        match self {
            Refusal::Denied | Refusal::UntrustedProxy => b"* BYE [UNAVAILABLE] Access denied.\r\n",
            Refusal::TooMany => b"* BYE [UNAVAILABLE] Too many sessions, try again later.\r\n",
            Refusal::TooManyFromAddress => {
                b"* BYE [UNAVAILABLE] Too many sessions from your address, try again later.\r\n"
            }
            Refusal::Blocked => crate::session::BLOCKED_BYE,
        }
    }
}

#[derive(Default)]
struct Entry {
    sessions: usize,
    failures: u32,
    last_failure: Option<Instant>,
    blocked_until: Option<Instant>,
}

impl Entry {
    /// Forgets failures older than `memory` and blocks that are over.
    fn expire(&mut self, now: Instant, memory: Duration) {
        if self.blocked_until.is_some_and(|t| t <= now) {
            self.blocked_until = None;
            self.failures = 0;
        }
        if self.last_failure.is_some_and(|t| now.duration_since(t) >= memory) {
            self.failures = 0;
            self.last_failure = None;
        }
    }

    fn unused(&self) -> bool {
        self.sessions == 0 && self.failures == 0 && self.blocked_until.is_none()
    }
}

#[derive(Default)]
struct Table {
    total: usize,
    by_addr: HashMap<IpAddr, Entry>,
}

static TABLE: LazyLock<Mutex<Table>> = LazyLock::new(|| Mutex::new(Table::default()));

fn table() -> MutexGuard<'static, Table> {
    // A panic while holding the lock leaves plain counters behind; they stay usable.
    TABLE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The key an address is counted under: IPv4 (also when mapped into IPv6) as is, IPv6
/// per /64.
pub fn key(ip: IpAddr) -> IpAddr {
    match config::canonical(ip) {
        v6 @ IpAddr::V6(_) => config::mask(v6, 64),
        v4 => v4,
    }
}

/// One admitted session; dropping it frees its place.
#[derive(Debug)]
pub struct Slot {
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = table();
        t.total = t.total.saturating_sub(1);
        if let Some(e) = t.by_addr.get_mut(&self.key) {
            e.sessions = e.sessions.saturating_sub(1);
            if e.unused() {
                t.by_addr.remove(&self.key);
            }
        }
    }
}

/// Admits a session from `ip`, or says why not.
pub fn admit(ip: IpAddr, d: &Daemon) -> Result<Slot, Refusal> {
    let key = key(ip);
    let now = Instant::now();
    let mut t = table();
    if let Some(e) = t.by_addr.get_mut(&key) {
        e.expire(now, d.login_block_time);
        if e.blocked_until.is_some() {
            return Err(Refusal::Blocked);
        }
    }
    if d.max_sessions > 0 && t.total >= d.max_sessions {
        return Err(Refusal::TooMany);
    }
    let e = t.by_addr.entry(key).or_default();
    if d.max_sessions_per_ip > 0 && e.sessions >= d.max_sessions_per_ip {
        return Err(Refusal::TooManyFromAddress);
    }
    e.sessions += 1;
    t.total += 1;
    Ok(Slot { key })
}

/// What a failed login costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Failures from this address within `login_block_time`, this one included.
    pub count: u32,
    /// How long the answer is held back: `base` doubled for every earlier failure from
    /// the address, at most `login_failure_delay_max` (never less than `base`).
    pub delay: Duration,
    /// The address is now blocked: end the session.
    pub blocked: bool,
}

/// Records a failed login from `ip` in this process's table.
pub fn record_failure(ip: IpAddr, d: &Daemon, base: Duration) -> Failure {
    record(ip, d, base)
}

/// Applies a failure reported by a session process (fork mode).
pub fn apply_report(ip: IpAddr, d: &Daemon) {
    let f = record(ip, d, Duration::ZERO);
    if f.blocked {
        log::warn!("BLOCKED client={ip} failures={} for={:?}", f.count, d.login_block_time);
    }
}

fn record(ip: IpAddr, d: &Daemon, base: Duration) -> Failure {
    let now = Instant::now();
    let mut t = table();
    let e = t.by_addr.entry(key(ip)).or_default();
    e.expire(now, d.login_block_time);
    e.failures = e.failures.saturating_add(1);
    e.last_failure = Some(now);
    let blocked = d.login_block_after > 0 && e.failures >= d.login_block_after;
    if blocked && e.blocked_until.is_none() {
        e.blocked_until = Some(now + d.login_block_time);
    }
    let doublings = e.failures.saturating_sub(1).min(20);
    let delay = base.saturating_mul(1 << doublings).min(d.login_failure_delay_max).max(base);
    Failure { count: e.failures, delay, blocked }
}

/// Sessions admitted and addresses blocked now, for the status line.
pub fn snapshot() -> (usize, usize) {
    let now = Instant::now();
    let t = table();
    let blocked = t.by_addr.values().filter(|e| e.blocked_until.is_some_and(|b| b > now)).count();
    (t.total, blocked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon() -> Daemon {
        Daemon {
            max_sessions: 3,
            max_sessions_per_ip: 2,
            login_block_after: 3,
            login_block_time: Duration::from_secs(60),
            login_failure_delay_max: Duration::from_secs(5),
            ..Daemon::default()
        }
    }

    // One test owns the process-wide table, with addresses no other test uses.
    #[test]
    fn sessions_failures_and_blocks_are_counted_per_address() {
        let d = daemon();
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b2: IpAddr = "2001:db8:1:2::99".parse().unwrap();
        let s1 = admit(a, &d).unwrap();
        let s2 = admit(a, &d).unwrap();
        assert_eq!(admit(a, &d).unwrap_err(), Refusal::TooManyFromAddress);
        let s3 = admit(b, &d).unwrap();
        assert_eq!(admit(b2, &d).unwrap_err(), Refusal::TooMany);
        drop(s1);
        let s4 = admit(b2, &d).unwrap();
        assert_eq!(admit(b, &d).unwrap_err(), Refusal::TooMany);
        drop((s2, s3, s4));
        assert_eq!(snapshot().0, 0);

        let base = Duration::from_secs(1);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let f1 = record_failure(ip("203.0.113.1"), &d, base);
        let f2 = record_failure(ip("203.0.113.1"), &d, base);
        assert_eq!((f1.count, f1.delay, f1.blocked), (1, base, false));
        assert_eq!((f2.count, f2.delay, f2.blocked), (2, 2 * base, false));
        let f3 = record_failure(ip("203.0.113.1"), &d, base);
        assert!(f3.blocked);
        assert_eq!(f3.delay, Duration::from_secs(4));
        assert_eq!(admit(a, &d).unwrap_err(), Refusal::Blocked);
        assert_eq!(snapshot().1, 1);
        // Another address is unaffected.
        let other = admit("203.0.113.2".parse().unwrap(), &d).unwrap();
        drop(other);
        // The delay never exceeds the cap.
        for _ in 0..9 {
            record_failure(ip("2001:db8::5"), &d, base);
        }
        let many = record_failure(ip("2001:db8::5"), &d, base);
        assert_eq!(many.delay, Duration::from_secs(5));
    }
}
