//! The `[global]` section: logging, thread and pre-auth limits, timeouts, greeting.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::daemon::{self, Daemon};
use super::error::Diag;
use super::ini::Section;
use super::value::{
    parse_duration, parse_listen, parse_log_filter, parse_port, parse_size, positive_duration,
    LogFilter,
};
use super::{check_keys, first, value_of};

/// Where log records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// stderr when running standalone, syslog in inetd mode.
    Auto,
    /// Standard error.
    Stderr,
    /// syslog with [`Global::syslog_facility`].
    Syslog,
    /// Append to this file.
    File(PathBuf),
}

/// Settings of the `[global]` section. [`Default`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct Global {
    /// `log`: auto | stderr | syslog | file.
    pub log: LogTarget,
    /// `log_level`: a level (error | warn | info | debug | trace), optionally with levels
    /// per module (`info,imapgate::rules=debug`).
    pub log_level: LogFilter,
    /// `syslog_facility` as a `libc::LOG_*` value.
    pub syslog_facility: i32,
    /// `thread_stack_size` of connection threads, 64k to 64m.
    pub thread_stack_size: usize,
    /// `preauth_timeout`: time allowed from connect to successful login.
    pub preauth_timeout: Duration,
    /// `idle_timeout`: post-login inactivity limit (RFC 3501 §5.4: at least 30 minutes).
    pub idle_timeout: Duration,
    /// `preauth_max_line`: longest command line accepted before login.
    pub preauth_max_line: usize,
    /// `preauth_max_literal`: largest literal accepted before login.
    pub preauth_max_literal: usize,
    /// `max_login_failures` per connection before it is closed, at least 1.
    pub max_login_failures: u32,
    /// `login_failure_delay` before answering a failed login; may be 0.
    pub login_failure_delay: Duration,
    /// `greeting`: text after `* OK [CAPABILITY ...] `.
    pub greeting: String,
    /// Privileges, process model, limits and shutdown (`config/daemon.rs`).
    pub daemon: Daemon,
    /// How often backends are probed for state and capabilities (0: only at start-up).
    pub discovery_interval: Duration,
    /// `metrics`: where the Prometheus metrics are served; none by default.
    pub metrics: Option<SocketAddr>,
}

impl Default for Global {
    fn default() -> Global {
        Global {
            log: LogTarget::Auto,
            log_level: LogFilter::level(log::LevelFilter::Info),
            syslog_facility: libc::LOG_MAIL,
            thread_stack_size: 256 << 10,
            preauth_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(31 * 60),
            preauth_max_line: 36 << 10,
            preauth_max_literal: 8 << 10,
            max_login_failures: 3,
            login_failure_delay: Duration::from_secs(2),
            greeting: "imapgate ready.".to_string(),
            daemon: Daemon::default(),
            discovery_interval: Duration::from_secs(300),
            metrics: None,
        }
    }
}

pub(crate) const KEYS: &[&str] = &[
    "log",
    "log_file",
    "log_level",
    "syslog_facility",
    "thread_stack_size",
    "preauth_timeout",
    "idle_timeout",
    "preauth_max_line",
    "preauth_max_literal",
    "max_login_failures",
    "login_failure_delay",
    "greeting",
    "discovery_interval",
    "metrics",
];

/// Types the `[global]` section; problems go to `diag`, bad keys keep their default.
/// A relative `log_file` is taken relative to `base`, the configuration file's directory,
/// like every other file the configuration names.
pub(crate) fn parse(sec: &Section, base: &Path, diag: &mut Diag) -> Global {
    check_keys(sec, "[global]", &[KEYS, daemon::GLOBAL_KEYS].concat(), &[], diag);
    let d = Global::default();
    let log = value_of(sec, "log", diag, parse_log);
    let log_level = value_of(sec, "log_level", diag, parse_log_filter);
    let syslog_facility = value_of(sec, "syslog_facility", diag, parse_facility);
    let thread_stack_size =
        value_of(sec, "thread_stack_size", diag, |s| sized(s, 64 << 10, 64 << 20));
    let preauth_max_line = value_of(sec, "preauth_max_line", diag, |s| sized(s, 1 << 10, 16 << 20));
    let preauth_max_literal = value_of(sec, "preauth_max_literal", diag, |s| sized(s, 0, 16 << 20));
    let preauth_timeout = value_of(sec, "preauth_timeout", diag, positive_duration);
    let idle_timeout = value_of(sec, "idle_timeout", diag, positive_duration);
    let login_failure_delay = value_of(sec, "login_failure_delay", diag, parse_duration);
    let max_login_failures = value_of(sec, "max_login_failures", diag, parse_failures);
    let greeting = value_of(sec, "greeting", diag, parse_greeting);
    let log_file = value_of(sec, "log_file", diag, |s| {
        if s.is_empty() {
            Err("empty path".to_string())
        } else {
            Ok(base.join(s))
        }
    });
    let log = resolve_log(sec, log, log_file, diag);
    Global {
        log: log.unwrap_or(d.log),
        log_level: log_level.unwrap_or(d.log_level),
        syslog_facility: syslog_facility.unwrap_or(d.syslog_facility),
        thread_stack_size: thread_stack_size.unwrap_or(d.thread_stack_size),
        preauth_timeout: preauth_timeout.unwrap_or(d.preauth_timeout),
        idle_timeout: idle_timeout.unwrap_or(d.idle_timeout),
        preauth_max_line: preauth_max_line.unwrap_or(d.preauth_max_line),
        preauth_max_literal: preauth_max_literal.unwrap_or(d.preauth_max_literal),
        max_login_failures: max_login_failures.unwrap_or(d.max_login_failures),
        login_failure_delay: login_failure_delay.unwrap_or(d.login_failure_delay),
        greeting: greeting.unwrap_or(d.greeting),
        daemon: daemon::parse_global(sec, diag),
        discovery_interval: value_of(sec, "discovery_interval", diag, parse_duration)
            .unwrap_or(d.discovery_interval),
        metrics: value_of(sec, "metrics", diag, parse_metrics),
    }
}

/// `metrics`: `ADDR:PORT`, `[V6]:PORT`, `*:PORT`, or a bare port on 127.0.0.1.
fn parse_metrics(s: &str) -> Result<SocketAddr, String> {
    if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), parse_port(s)?));
    }
    parse_listen(s)
}

/// `log` as written; `file` still needs `log_file` to become a [`LogTarget`].
enum LogKind {
    Plain(LogTarget),
    File,
}

fn parse_log(s: &str) -> Result<LogKind, String> {
    match s.to_ascii_lowercase().as_str() {
        "auto" => Ok(LogKind::Plain(LogTarget::Auto)),
        "stderr" => Ok(LogKind::Plain(LogTarget::Stderr)),
        "syslog" => Ok(LogKind::Plain(LogTarget::Syslog)),
        "file" => Ok(LogKind::File),
        _ => Err(format!("invalid value {s:?} (expected auto, stderr, syslog or file)")),
    }
}

/// Ties `log = file` and `log_file` together: each requires the other.
fn resolve_log(
    sec: &Section,
    log: Option<LogKind>,
    file: Option<PathBuf>,
    diag: &mut Diag,
) -> Option<LogTarget> {
    let file_line = first(sec, "log_file").map(|e| e.line);
    match (log, file) {
        (Some(LogKind::File), Some(f)) => Some(LogTarget::File(f)),
        (Some(LogKind::File), None) => {
            if file_line.is_none() {
                let line = first(sec, "log").map_or(sec.line, |e| e.line);
                diag.err(line, "log: \"file\" requires log_file");
            }
            None
        }
        // A bad `log` value is already reported; do not blame log_file for it too.
        (None, _) if first(sec, "log").is_some() => None,
        (other, _) => {
            if let Some(line) = file_line {
                diag.err(line, "log_file: only valid with log = file");
            }
            match other {
                Some(LogKind::Plain(t)) => Some(t),
                _ => None,
            }
        }
    }
}

fn parse_facility(s: &str) -> Result<i32, String> {
    let f = match s.to_ascii_lowercase().as_str() {
        "mail" => libc::LOG_MAIL,
        "daemon" => libc::LOG_DAEMON,
        "user" => libc::LOG_USER,
        "local0" => libc::LOG_LOCAL0,
        "local1" => libc::LOG_LOCAL1,
        "local2" => libc::LOG_LOCAL2,
        "local3" => libc::LOG_LOCAL3,
        "local4" => libc::LOG_LOCAL4,
        "local5" => libc::LOG_LOCAL5,
        "local6" => libc::LOG_LOCAL6,
        "local7" => libc::LOG_LOCAL7,
        _ => {
            return Err(format!(
                "invalid value {s:?} (expected mail, daemon, user or local0 to local7)"
            ))
        }
    };
    Ok(f)
}

/// A size within `min..=max` bytes.
fn sized(s: &str, min: usize, max: usize) -> Result<usize, String> {
    let n = parse_size(s)?;
    if n < min || n > max {
        return Err(format!("{s} is out of range ({} to {})", human(min), human(max)));
    }
    Ok(n)
}

/// Renders a byte count the way it would be written in the file.
fn human(n: usize) -> String {
    match n {
        0 => "0".to_string(),
        n if n % (1 << 20) == 0 => format!("{}m", n >> 20),
        n if n % (1 << 10) == 0 => format!("{}k", n >> 10),
        n => n.to_string(),
    }
}

fn parse_failures(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n >= 1 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!("invalid value {s:?} (expected a number >= 1)")),
    }
}

/// IMAP `text` (RFC 3501 §9): at least one character, printable ASCII here.
fn parse_greeting(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("must not be empty".to_string());
    }
    if !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err("only printable ASCII characters are allowed".to_string());
    }
    Ok(s.to_string())
}
