//! The value syntaxes, in one place for every section and every rule kind: sizes,
//! durations, ports, host names, listen addresses, yes/no switches, address blocks,
//! word lists and section names. Each parser returns a message fit for `key: message`.
//! A leaf: it depends on nothing else in the crate.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// A size: bytes, or a number with a case-insensitive `k`, `m` or `g` suffix (1024-based).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let bad = || format!("invalid size {s:?} (expected e.g. 512, 64k, 1m, 1g)");
    let (digits, mult) = match s.char_indices().last() {
        Some((i, c)) if c.eq_ignore_ascii_case(&'k') => (&s[..i], 1usize << 10),
        Some((i, c)) if c.eq_ignore_ascii_case(&'m') => (&s[..i], 1 << 20),
        Some((i, c)) if c.eq_ignore_ascii_case(&'g') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    let n = parse_number(digits).ok_or_else(bad)?;
    usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// A duration: `500ms`, `10s`, `5m`, `1h` (unit case-insensitive); a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (expected e.g. 500ms, 10s, 5m, 1h)");
    let lower = s.to_ascii_lowercase();
    let (digits, unit_ms) = if let Some(d) = lower.strip_suffix("ms") {
        (d, 1u64)
    } else if let Some(d) = lower.strip_suffix('s') {
        (d, 1000)
    } else if let Some(d) = lower.strip_suffix('m') {
        (d, 60_000)
    } else if let Some(d) = lower.strip_suffix('h') {
        (d, 3_600_000)
    } else {
        (lower.as_str(), 1000)
    };
    let n = parse_number(digits).ok_or_else(bad)?;
    n.checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {s:?} is too large"))
}

/// A duration greater than zero.
pub(crate) fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("must be greater than 0".to_string());
    }
    Ok(d)
}

/// A count: decimal digits only (no sign, no fraction, no spaces, no size suffix).
pub fn parse_count(s: &str) -> Result<u64, String> {
    parse_number(s).ok_or_else(|| format!("invalid number {s:?} (expected digits only, e.g. 1000)"))
}

/// Decimal digits only: no sign, no fraction, no spaces.
fn parse_number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A TCP port, 1 to 65535.
pub(crate) fn parse_port(s: &str) -> Result<u16, String> {
    match parse_number(s).and_then(|n| u16::try_from(n).ok()) {
        Some(p) if p > 0 => Ok(p),
        _ => Err(format!("invalid port {s:?} (expected 1-65535)")),
    }
}

/// A backend host: an IPv4 or IPv6 literal (bare `::1` or `[::1]`) or a DNS name.
/// Returns the host without brackets.
pub(crate) fn parse_host(s: &str) -> Result<String, String> {
    let inner = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
    if inner.parse::<IpAddr>().is_ok() {
        return Ok(inner.to_string());
    }
    let host_port =
        s.rsplit_once(':').is_some_and(|(h, p)| is_hostname(h) && parse_number(p).is_some());
    if host_port || s.parse::<SocketAddr>().is_ok() {
        return Err(format!("invalid host {s:?} (put the port in `port`)"));
    }
    if is_hostname(s) {
        Ok(s.to_string())
    } else {
        Err(format!("invalid host {s:?} (expected a host name or an IP address)"))
    }
}

/// RFC 1123 host name, leniently: labels of letters, digits, `-` and `_`, an optional
/// trailing dot, at most 253 characters.
pub(crate) fn is_hostname(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A switch: `yes` or `no` (case-insensitive).
pub fn parse_yes_no(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(format!("invalid value {s:?} (expected yes or no)")),
    }
}

/// A listen address: `ADDR:PORT`, `[V6]:PORT`, or `*:PORT` for 0.0.0.0.
pub(crate) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let bad = || format!("invalid listen address {s:?} (expected ADDR:PORT, [V6]:PORT or *:PORT)");
    let addr = if let Some(port) = s.strip_prefix("*:") {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), parse_port(port)?)
    } else {
        s.parse::<SocketAddr>().map_err(|_| bad())?
    };
    if addr.port() == 0 {
        return Err(format!("invalid port in {s:?} (expected 1-65535)"));
    }
    Ok(addr)
}

/// A section name: `[A-Za-z0-9_.-]+`.
pub(crate) fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// An address block, `ADDR/BITS` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits cleared).
    pub addr: IpAddr,
    /// Prefix length.
    pub bits: u8,
}

impl Cidr {
    /// Parses `192.0.2.0/24`, `2001:db8::/32` or a bare address.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let bad = || format!("invalid address block {s:?} (expected e.g. 192.0.2.0/24 or ::1)");
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) if !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()) => {
                b.parse::<u8>().ok().filter(|n| *n <= max).ok_or_else(bad)?
            }
            Some(_) => return Err(bad()),
        };
        Ok(Cidr { addr: mask(addr, bits), bits })
    }

    /// True when `ip` is inside this block. IPv4-mapped IPv6 addresses match IPv4 blocks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.bits) == self.addr
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.bits)
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; other addresses unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `ip` with every bit after the first `bits` cleared.
pub fn mask(ip: IpAddr, bits: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(bits.min(32))).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(bits.min(128))).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// Splits a value into words; `"..."` keeps spaces inside a word (folder names).
pub fn words(value: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let word: String = chars.by_ref().take_while(|&c| c != '"').collect();
            out.push(word);
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek().filter(|c| !c.is_whitespace()) {
                word.push(c);
                chars.next();
            }
            out.push(word);
        }
    }
    if value.matches('"').count() % 2 == 1 {
        return Err("unbalanced double quote".into());
    }
    Ok(out)
}

/// What to log: a level for everything, and optionally levels per module, in
/// env_logger's directive syntax (`info,imapgate::rules=debug,rustls=warn`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter {
    /// The directives as written (checked).
    pub spec: String,
    /// The most verbose level any directive allows.
    pub max: log::LevelFilter,
}

impl LogFilter {
    /// Everything at `level`.
    pub fn level(level: log::LevelFilter) -> LogFilter {
        LogFilter { spec: level.to_string().to_ascii_lowercase(), max: level }
    }
}

/// Parses log directives: `LEVEL` or `MODULE=LEVEL`, comma-separated (env_logger's
/// syntax, but a bare word must be a level, so a typo is not taken for a module name).
/// Checked here, so a mistake is an error at its line (env_logger would only warn on
/// stderr, which under inetd is the client).
pub fn parse_log_filter(s: &str) -> Result<LogFilter, String> {
    let level = |w: &str| match w.to_ascii_lowercase().as_str() {
        "off" => Some(log::LevelFilter::Off),
        "error" => Some(log::LevelFilter::Error),
        "warn" => Some(log::LevelFilter::Warn),
        "info" => Some(log::LevelFilter::Info),
        "debug" => Some(log::LevelFilter::Debug),
        "trace" => Some(log::LevelFilter::Trace),
        _ => None,
    };
    let module = |m: &str| {
        !m.is_empty() && m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut max = log::LevelFilter::Off;
    let mut parts = Vec::new();
    for d in s.split(',').map(str::trim) {
        let directive_max = match d.split_once('=') {
            Some((m, l)) if module(m.trim()) => level(l.trim()),
            Some(_) => None,
            None => level(d),
        };
        let Some(directive_max) = directive_max else {
            return Err(format!(
                "invalid value {d:?} (expected error, warn, info, debug or trace, or \
                 MODULE=LEVEL as in info,imapgate::rules=debug)"
            ));
        };
        max = max.max(directive_max);
        parts.push(d.replace(' ', ""));
    }
    Ok(LogFilter { spec: parts.join(","), max })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_suffixes_in_any_case() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn bad_sizes_are_refused() {
        for s in ["", "k", "-1", "1.5k", "1 k", "1kb", "0x10", "1t", "+5"] {
            assert!(parse_size(s).is_err(), "{s:?}");
        }
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("18446744073709551615g").is_err());
    }

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1H"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("42"), Ok(Duration::from_secs(42)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_are_refused() {
        for s in ["", "s", "ms", "1d", "1.5s", "-1s", "10 s", "1sm"] {
            assert!(parse_duration(s).is_err(), "{s:?}");
        }
        assert!(parse_duration("18446744073709551615h").is_err());
    }

    #[test]
    fn ports_are_1_to_65535() {
        assert_eq!(parse_port("143"), Ok(143));
        assert_eq!(parse_port("65535"), Ok(65535));
        for s in ["0", "65536", "-1", "", "imap"] {
            assert!(parse_port(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn hosts_are_names_or_ip_literals() {
        assert_eq!(parse_host("127.0.0.1").as_deref(), Ok("127.0.0.1"));
        assert_eq!(parse_host("::1").as_deref(), Ok("::1"));
        assert_eq!(parse_host("[::1]").as_deref(), Ok("::1"));
        assert_eq!(parse_host("imap.example.org.").as_deref(), Ok("imap.example.org."));
        assert_eq!(parse_host("mail_1").as_deref(), Ok("mail_1"));
        for s in ["", "a..b", "-a", "a b", "a/b", "[::1", "imap:143", "1.2.3.4:143"] {
            assert!(parse_host(s).is_err(), "{s:?}");
        }
        assert!(parse_host("imap:143").unwrap_err().contains("port"));
    }

    #[test]
    fn listen_addresses_accept_v4_v6_and_wildcard() {
        assert_eq!(parse_listen("127.0.0.1:1143"), Ok("127.0.0.1:1143".parse().unwrap()));
        assert_eq!(parse_listen("[::1]:143"), Ok("[::1]:143".parse().unwrap()));
        assert_eq!(parse_listen("*:143"), Ok("0.0.0.0:143".parse().unwrap()));
        for s in ["127.0.0.1", "::1:143", "*:0", "1.2.3.4:0", "host:143", "*:", ""] {
            assert!(parse_listen(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn switches_are_yes_or_no() {
        assert_eq!(parse_yes_no("yes"), Ok(true));
        assert_eq!(parse_yes_no("No"), Ok(false));
        for s in ["", "true", "1", "on", "y"] {
            assert!(parse_yes_no(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn section_names() {
        assert!(is_name("a-b_c.9"));
        assert!(!is_name(""));
        assert!(!is_name("a b"));
        assert!(!is_name("a/b"));
    }

    #[test]
    fn words_keep_quoted_spaces() {
        assert_eq!(
            words("Calendar \"Sent Items\"  x").unwrap(),
            vec!["Calendar", "Sent Items", "x"]
        );
        assert!(words("\"open").is_err());
    }

    #[test]
    fn log_filters_take_levels_and_module_directives() {
        let f = parse_log_filter("info, imapgate::rules=debug").unwrap();
        assert_eq!(
            (f.spec.as_str(), f.max),
            ("info,imapgate::rules=debug", log::LevelFilter::Debug)
        );
        assert_eq!(parse_log_filter("WARN").unwrap().max, log::LevelFilter::Warn);
        assert!(parse_log_filter("loud").is_err());
        assert!(parse_log_filter("imapgate=noisy").is_err());
        assert!(parse_log_filter("a/b").is_err());
    }
}
