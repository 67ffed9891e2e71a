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

/// The weight of backend `member` for `user` in a `balance = hash` pool: the pool is
/// tried in descending weight (rendezvous hashing). The hash is FNV-1a over the backend's
/// name and the login, finished by SplitMix64's mixer so that similar names and logins
/// give unrelated weights. It depends on nothing but the two strings (not on the
/// process, the build, the member order or the other members), so every imapgate
/// instance with the same backend names sends a user to the same backend, and adding,
/// removing or losing a backend moves only the users whose first choice it was.
pub fn rendezvous_weight(member: &str, user: &str) -> u64 {
    let fnv =
        member.bytes().chain([0]).chain(user.bytes()).fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    let mut z = fnv.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::rendezvous_weight;

    /// The backends in the order a hash pool tries them for `user`.
    fn order<'a>(members: &[&'a str], user: &str) -> Vec<&'a str> {
        let mut order = members.to_vec();
        order.sort_by_key(|m| std::cmp::Reverse(rendezvous_weight(m, user)));
        order
    }

    fn users() -> impl Iterator<Item = String> {
        (0..3000).map(|n| format!("user{n}@example.org"))
    }

    #[test]
    fn weights_are_fixed_values() {
        // Instances of different builds and versions must agree: pin the function.
        assert_eq!(rendezvous_weight("a", "alice"), rendezvous_weight("a", "alice"));
        assert_ne!(rendezvous_weight("a", "alice"), rendezvous_weight("b", "alice"));
        assert_ne!(rendezvous_weight("ab", "c"), rendezvous_weight("a", "bc"));
        assert_eq!(rendezvous_weight("shard-a", "alice"), 0xee76_c689_ff48_82a3);
    }

    #[test]
    fn users_spread_evenly() {
        let members = ["d1", "d2", "d3"];
        let mut count = [0usize; 3];
        for user in users() {
            let first = order(&members, &user)[0];
            count[members.iter().position(|m| *m == first).unwrap()] += 1;
        }
        assert!(count.iter().all(|&c| (850..=1150).contains(&c)), "{count:?}");
    }

    #[test]
    fn losing_or_removing_a_backend_moves_only_its_own_users_and_spreads_them() {
        let all = ["d1", "d2", "d3", "d4"];
        let without = ["d1", "d3", "d4"];
        let mut moved_to = std::collections::BTreeSet::new();
        for user in users() {
            let before = order(&all, &user);
            let after = order(&without, &user);
            if before[0] == "d2" {
                // Down (skipped) or removed from the list: the same next choice.
                assert_eq!(after[0], before[1], "{user}");
                moved_to.insert(after[0]);
            } else {
                assert_eq!(after[0], before[0], "{user} moved although d2 was not its backend");
            }
        }
        assert_eq!(moved_to.len(), 3, "d2's users all went to {moved_to:?}");
        // The order of the members in the pool does not matter.
        for user in users().take(100) {
            assert_eq!(order(&all, &user)[0], order(&["d4", "d3", "d2", "d1"], &user)[0]);
        }
    }
}
