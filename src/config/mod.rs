//! The typed configuration, loaded from one INI file.
//!
//! Loading runs in three steps and collects every problem on the way, each as
//! `PATH:LINE: message`: `ini.rs` checks the syntax and remembers lines, the section
//! parsers here, in `global.rs` and in `map.rs` type the values, and references between
//! sections (map → backend, listener → map) are resolved by name. No I/O besides reading
//! the file; nothing is bound or resolved here.
//!
//! TLS keys (`tls.rs`) name certificate, key and CA files. They are not opened here: a
//! relative name is resolved against the directory of the configuration file and kept
//! with the line of its key as a [`FileRef`], so that the module that loads them can
//! report problems as `PATH:LINE: ...` at that key.

mod daemon;
mod error;
mod global;
mod ini;
mod map;
mod pool;
mod rule;
pub(crate) mod template;
mod tls;
mod value;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use daemon::{Access, Daemon, Mode};
pub use error::{ConfigError, ConfigErrors};
pub use global::{Global, LogTarget};
#[cfg(test)]
pub(crate) use map::SOURCE_TYPES;
pub use map::{Map, MapKind};
pub use pool::{rendezvous_weight, BackendLogin, Balance, LoginMethod, Pool};
pub use rule::RuleSection;
pub use tls::{ClientCertMode, FileRef, ListenerTls, TlsMode, TlsVersion};

use error::Diag;
use ini::{Entry, Section};
pub use value::{
    canonical, mask, parse_count, parse_duration, parse_log_filter, parse_size, parse_yes_no,
    words, Cidr, LogFilter,
};
use value::{is_name, parse_host, parse_listen, parse_port, positive_duration};

/// The whole configuration. Backends, maps and listeners keep the file's order.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from (as given, for messages).
    pub path: PathBuf,
    /// `[global]`, or the defaults.
    pub global: Global,
    /// `[backend NAME]` sections.
    pub backends: Vec<Backend>,
    /// `[map NAME]` sections.
    pub maps: Vec<Map>,
    /// `[listener NAME]` sections; at least one.
    pub listeners: Vec<Listener>,
    /// `[rule NAME]` sections, in file order, as written (`rules::load` builds them).
    pub rules: Vec<RuleSection>,
    /// `[pool NAME]` sections.
    pub pools: Vec<Pool>,
}

/// What a map routes a login to: one backend, or a pool of them (indexes into
/// [`Config::backends`] and [`Config::pools`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// `[backend NAME]`.
    Backend(usize),
    /// `[pool NAME]`.
    Pool(usize),
}

/// One `[backend NAME]` section: an IMAP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// NAME from the section header.
    pub name: String,
    /// Line of the section header, for problems found later (TLS names and bundles).
    pub line: usize,
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// TCP port, default 993 with `tls = implicit` and 143 otherwise.
    pub port: u16,
    /// Limit for the TCP connect, default 10s.
    pub connect_timeout: Duration,
    /// Limit for waiting on the greeting and login answers (`timeout`), default 30s.
    pub timeout: Duration,
    /// `tls`, default none.
    pub tls: TlsMode,
    /// `ca`: CA bundle (PEM) to verify the backend's certificate; `None` = system roots.
    /// Only with `tls` other than none.
    pub ca: Option<FileRef>,
    /// `tls_name`: the name to verify in the certificate instead of `host`.
    pub tls_name: Option<String>,
    /// `tls_insecure_skip_verify`, default false: accept any certificate.
    pub tls_insecure_skip_verify: bool,
    /// `tls_min_version`, default 1.2.
    pub tls_min_version: TlsVersion,
    /// `send_proxy_protocol`, default false: start the connection with a PROXY v2 header
    /// carrying the client's address (see `proxy_protocol::encode_v2`).
    pub send_proxy_protocol: bool,
    /// How imapgate logs in there, and how a failure is treated.
    pub login: BackendLogin,
}

impl Backend {
    /// A backend that no section names (a lookup answered with a host), with the
    /// defaults of a `[backend]` section: plaintext, port 143, timeouts 10 s and 30 s.
    pub fn unnamed(host: &str, port: Option<u16>) -> Backend {
        Backend {
            name: format!("{host}:{}", port.unwrap_or(143)),
            line: 0,
            host: host.to_string(),
            port: port.unwrap_or(143),
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            tls: TlsMode::None,
            ca: None,
            tls_name: None,
            tls_insecure_skip_verify: false,
            tls_min_version: TlsVersion::V1_2,
            send_proxy_protocol: false,
            login: BackendLogin::default(),
        }
    }
}

/// One `[listener NAME]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// NAME from the section header.
    pub name: String,
    /// Addresses to bind; never empty.
    pub listen: Vec<SocketAddr>,
    /// Index into [`Config::maps`].
    pub map: usize,
    /// `rules = NAME, ...`: indexes into [`Config::rules`], in evaluation order.
    pub rules: Vec<usize>,
    /// TLS toward the clients; `None` for `tls = none` (the default).
    pub tls: Option<ListenerTls>,
    /// `allow`, `deny`, `proxy_protocol`, `proxy_trusted` (`config/daemon.rs`).
    pub access: Access,
    /// `oauth_mechanisms`: the bearer-token SASL mechanisms passed through to backends
    /// (`XOAUTH2`, `OAUTHBEARER`, upper case), offered when every backend offers them.
    pub oauth_mechanisms: Vec<String>,
    /// `compress = yes | no` (default yes): clients may turn on COMPRESS=DEFLATE.
    pub compress: bool,
}

/// The bearer-token mechanisms a listener may pass through.
pub const OAUTH_MECHANISMS: [&str; 2] = ["XOAUTH2", "OAUTHBEARER"];

impl Config {
    /// Reads and parses `path`. An unreadable file is one error at line 0.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, path),
            Err(e) => Err(ConfigErrors(vec![ConfigError {
                path: path.to_path_buf(),
                line: 0,
                msg: format!("cannot read: {e}"),
            }])),
        }
    }

    /// Parses `text`; `path` is used for messages and [`Config::path`].
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        let mut diag = Diag::new(path);
        let sections = ini::read(text, &mut diag);
        match build(&sections, ini::line_count(text), path, &mut diag) {
            Some(config) if diag.is_empty() => Ok(config),
            _ => {
                if diag.is_empty() {
                    diag.err(0, "internal error: configuration rejected without a reason");
                }
                Err(diag.into_errors())
            }
        }
    }

    /// Index of the backend called `name` in [`Config::backends`].
    pub fn backend_index(&self, name: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.name == name)
    }

    /// The map target (backend or pool) called `name`.
    pub fn target_index(&self, name: &str) -> Option<Target> {
        self.backend_index(name)
            .map(Target::Backend)
            .or_else(|| self.pools.iter().position(|p| p.name == name).map(Target::Pool))
    }

    /// Every backend and pool by name.
    pub fn targets(&self) -> HashMap<String, Target> {
        let backends =
            self.backends.iter().enumerate().map(|(i, b)| (b.name.clone(), Target::Backend(i)));
        let pools = self.pools.iter().enumerate().map(|(i, p)| (p.name.clone(), Target::Pool(i)));
        backends.chain(pools).collect()
    }

    /// The name of a map target (a backend or a pool).
    pub fn target_name(&self, target: Target) -> String {
        let name = match target {
            Target::Backend(b) => self.backends.get(b).map(|b| &b.name),
            Target::Pool(p) => self.pools.get(p).map(|p| &p.name),
        };
        name.map_or_else(|| "-".into(), Clone::clone)
    }

    /// The backends to try for `user` on map target `target`, in order. `turn` counts
    /// logins, for round-robin pools.
    pub fn candidates(&self, target: Target, user: &str, turn: usize) -> Vec<usize> {
        let pool = match target {
            Target::Backend(b) => return vec![b],
            Target::Pool(p) => match self.pools.get(p) {
                Some(pool) => pool,
                None => return Vec::new(),
            },
        };
        let n = pool.members.len();
        let start = match pool.balance {
            Balance::Failover => 0,
            Balance::Hash => {
                let mut order = pool.members.clone();
                let weight = |b: &usize| rendezvous_weight(&self.backends[*b].name, user);
                order.sort_by_cached_key(|b| std::cmp::Reverse(weight(b)));
                return order;
            }
            Balance::RoundRobin => turn % n,
        };
        (0..n).map(|i| pool.members[(start + i) % n]).collect()
    }

    /// Index of the map called `name` in [`Config::maps`].
    #[cfg(test)]
    pub fn map_index(&self, name: &str) -> Option<usize> {
        self.maps.iter().position(|m| m.name == name)
    }
}

/// Sections by kind, in file order.
#[derive(Default)]
struct Sorted<'a> {
    global: Option<&'a Section>,
    backends: Vec<(&'a str, &'a Section)>,
    maps: Vec<(&'a str, &'a Section)>,
    listeners: Vec<(&'a str, &'a Section)>,
    rules: Vec<(&'a str, &'a Section)>,
    pools: Vec<(&'a str, &'a Section)>,
}

fn build(sections: &[Section], last_line: usize, path: &Path, diag: &mut Diag) -> Option<Config> {
    // Relative file names (TLS keys, log_file) are taken relative to the configuration
    // file; lookup maps and rules do the same with `Config::path`.
    let base = path.parent().unwrap_or(Path::new(""));
    let sorted = sort(sections, diag);
    let global = sorted.global.map(|s| global::parse(s, base, diag)).unwrap_or_default();
    let backend_idx = name_index(&sorted.backends);
    let map_idx = name_index(&sorted.maps);
    let rule_idx = name_index(&sorted.rules);
    let rules: Vec<_> = sorted.rules.iter().map(|(n, s)| rule::parse(n, s, diag)).collect();
    let backends: Vec<_> =
        sorted.backends.iter().map(|(n, s)| parse_backend(n, s, base, diag)).collect();
    let pools: Vec<_> =
        sorted.pools.iter().map(|(n, s)| pool::parse(n, s, &backend_idx, diag)).collect();
    let mut target_idx: HashMap<String, Target> =
        backend_idx.iter().map(|(n, &i)| (n.clone(), Target::Backend(i))).collect();
    for (i, (name, sec)) in sorted.pools.iter().enumerate() {
        if backend_idx.contains_key(*name) {
            diag.err(sec.line, format!("[pool {name}]: a backend has the same name"));
        }
        target_idx.insert(name.to_string(), Target::Pool(i));
    }
    let maps: Vec<_> =
        sorted.maps.iter().map(|(n, s)| map::parse(n, s, &target_idx, diag)).collect();
    let mut addrs = HashMap::new();
    let listeners: Vec<_> = sorted
        .listeners
        .iter()
        .map(|(n, s)| parse_listener(n, s, base, &map_idx, &rule_idx, &mut addrs, diag))
        .collect();
    if listeners.is_empty() {
        diag.err(last_line, "no [listener NAME] section: at least one listener is required");
    }
    Some(Config {
        path: path.to_path_buf(),
        global,
        backends: backends.into_iter().collect::<Option<_>>()?,
        maps: maps.into_iter().collect::<Option<_>>()?,
        listeners: listeners.into_iter().collect::<Option<_>>()?,
        rules: rules.into_iter().collect::<Option<_>>()?,
        pools: pools.into_iter().collect::<Option<_>>()?,
    })
}

/// Name → position, for resolving references before the sections are typed.
fn name_index(list: &[(&str, &Section)]) -> HashMap<String, usize> {
    list.iter().enumerate().map(|(i, (n, _))| (n.to_string(), i)).collect()
}

/// Checks section headers and sorts sections by kind. Sections with a bad header or a
/// duplicate name are reported and skipped, and so are their keys.
fn sort<'a>(sections: &'a [Section], diag: &mut Diag) -> Sorted<'a> {
    let mut sorted = Sorted::default();
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    for sec in sections {
        let Some(header) = sec.name.as_deref() else {
            for e in &sec.entries {
                diag.err(e.line, format!("key {:?} outside of any section", e.key));
            }
            continue;
        };
        let words: Vec<&str> = header.split_whitespace().collect();
        let (kind, name) = match words[..] {
            ["global"] => ("global", ""),
            ["global", ..] => {
                diag.err(sec.line, "[global] takes no name");
                continue;
            }
            [kind @ ("backend" | "map" | "listener" | "pool"), name] if is_name(name) => {
                (kind, name)
            }
            [kind @ ("backend" | "map" | "listener" | "pool"), ..] => {
                diag.err(
                    sec.line,
                    format!("invalid section header [{header}]: expected [{kind} NAME] with NAME of A-Z a-z 0-9 _ . -"),
                );
                continue;
            }
            ["rule", name] if is_name(name) => ("rule", name),
            ["rule", ..] => {
                diag.err(
                    sec.line,
                    format!("invalid section header [{header}]: expected [rule NAME] with NAME of A-Z a-z 0-9 _ . -"),
                );
                continue;
            }
            _ => {
                diag.err(
                    sec.line,
                    format!(
                        "unknown section [{header}] (expected global, backend, pool, map, listener or rule)"
                    ),
                );
                continue;
            }
        };
        if let Some(first) = seen.get(&(kind, name)) {
            diag.err(sec.line, format!("duplicate section [{header}] (first at line {first})"));
            continue;
        }
        seen.insert((kind, name), sec.line);
        match kind {
            "global" => sorted.global = Some(sec),
            "backend" => sorted.backends.push((name, sec)),
            "map" => sorted.maps.push((name, sec)),
            "rule" => sorted.rules.push((name, sec)),
            "pool" => sorted.pools.push((name, sec)),
            _ => sorted.listeners.push((name, sec)),
        }
    }
    sorted
}

fn parse_backend(name: &str, sec: &Section, base: &Path, diag: &mut Diag) -> Option<Backend> {
    let before = diag.count();
    let label = format!("[backend {name}]");
    let keys = backend_keys();
    check_keys(sec, &label, &keys, &[], diag);
    let host = required(sec, &label, "host", diag, parse_host);
    let port = value_of(sec, "port", diag, parse_port);
    let connect_timeout = value_of(sec, "connect_timeout", diag, positive_duration);
    let timeout = value_of(sec, "timeout", diag, positive_duration);
    let send_proxy_protocol = value_of(sec, "send_proxy_protocol", diag, value::parse_yes_no);
    let tls = tls::backend(sec, base, diag)?;
    let default_port = if tls.mode == TlsMode::Implicit { 993 } else { 143 };
    let backend = Backend {
        name: name.to_string(),
        line: sec.line,
        host: host?,
        port: port.unwrap_or(default_port),
        connect_timeout: connect_timeout.unwrap_or(Duration::from_secs(10)),
        timeout: timeout.unwrap_or(Duration::from_secs(30)),
        tls: tls.mode,
        ca: tls.ca,
        tls_name: tls.tls_name,
        tls_insecure_skip_verify: tls.insecure_skip_verify,
        tls_min_version: tls.min_version,
        send_proxy_protocol: send_proxy_protocol.unwrap_or(false),
        login: pool::backend_login(sec, diag),
    };
    (diag.count() == before).then_some(backend)
}

fn parse_listener(
    name: &str,
    sec: &Section,
    base: &Path,
    maps: &HashMap<String, usize>,
    rules: &HashMap<String, usize>,
    addrs: &mut HashMap<SocketAddr, (String, usize)>,
    diag: &mut Diag,
) -> Option<Listener> {
    let before = diag.count();
    let label = format!("[listener {name}]");
    let keys = listener_keys();
    let repeatable = [&["listen", "sni_cert"], daemon::LISTENER_REPEATABLE].concat();
    check_keys(sec, &label, &keys, &repeatable, diag);
    let mut listen = Vec::new();
    for e in sec.entries.iter().filter(|e| e.key == "listen") {
        if e.value.is_empty() {
            diag.err(e.line, "listen: empty value");
        }
        for word in e.value.split_whitespace() {
            match parse_listen(word) {
                Err(m) => diag.err(e.line, format!("listen: {m}")),
                Ok(a) => match addrs.get(&a) {
                    Some((other, line)) => diag.err(
                        e.line,
                        format!("listen: {a} is already used by [listener {other}] (line {line})"),
                    ),
                    None => {
                        addrs.insert(a, (name.to_string(), e.line));
                        listen.push(a);
                    }
                },
            }
        }
    }
    if first(sec, "listen").is_none() {
        diag.err(sec.line, format!("{label}: missing required key \"listen\""));
    }
    let map = required(sec, &label, "map", diag, |s| {
        maps.get(s).copied().ok_or_else(|| format!("undefined map {s:?}"))
    });
    let tls = tls::listener(sec, base, diag);
    let access = daemon::parse_listener(sec, &label, diag);
    let mut rule_list = Vec::new();
    if let Some(e) = first(sec, "rules") {
        for word in e.value.split(|c: char| c == ',' || c.is_whitespace()).filter(|w| !w.is_empty())
        {
            match rules.get(word) {
                Some(&i) if rule_list.contains(&i) => {
                    diag.err(e.line, format!("rules: {word:?} listed twice"))
                }
                Some(&i) => rule_list.push(i),
                None => diag.err(e.line, format!("rules: undefined rule {word:?}")),
            }
        }
    }
    let mut oauth_mechanisms = Vec::new();
    if let Some(e) = first(sec, "oauth_mechanisms") {
        for word in e.value.split(|c: char| c == ',' || c.is_whitespace()).filter(|w| !w.is_empty())
        {
            let upper = word.to_ascii_uppercase();
            if !OAUTH_MECHANISMS.contains(&upper.as_str()) {
                let known = OAUTH_MECHANISMS.join(", ");
                diag.err(
                    e.line,
                    format!("oauth_mechanisms: unknown mechanism {word:?} (known: {known})"),
                );
            } else if !oauth_mechanisms.contains(&upper) {
                oauth_mechanisms.push(upper);
            }
        }
    }
    let listener = Listener {
        name: name.to_string(),
        listen,
        map: map?,
        tls,
        access,
        rules: rule_list,
        oauth_mechanisms,
        compress: value_of(sec, "compress", diag, value::parse_yes_no).unwrap_or(true),
    };
    (diag.count() == before).then_some(listener)
}

/// The keys of `[backend NAME]`: this module's, TLS's and the login and health keys.
fn backend_keys() -> Vec<&'static str> {
    let own: &[&str] = &["host", "port", "connect_timeout", "timeout", "send_proxy_protocol"];
    [own, tls::BACKEND_KEYS, pool::BACKEND_KEYS].concat()
}

/// The keys of `[listener NAME]`: this module's, TLS's and the access keys.
fn listener_keys() -> Vec<&'static str> {
    let own: &[&str] = &["listen", "map", "rules", "oauth_mechanisms", "compress"];
    [own, tls::LISTENER_KEYS, daemon::LISTENER_KEYS].concat()
}

/// Every key of every section kind as the configuration reads it. The keys of a map of a
/// lookup type and of a rule's kind are `lookup`'s and `rules`' (`crate::documented` gathers them all).
#[cfg(test)]
pub(crate) fn section_keys() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("global", [global::KEYS, daemon::GLOBAL_KEYS].concat()),
        ("backend", backend_keys()),
        ("pool", pool::POOL_KEYS.to_vec()),
        ("map", map::MAP_KEYS.to_vec()),
        ("listener", listener_keys()),
        ("rule", vec!["type"]),
    ]
}

/// Reports keys not in `allowed`, and repeated keys not in `repeatable`.
pub(crate) fn check_keys(
    sec: &Section,
    label: &str,
    allowed: &[&str],
    repeatable: &[&str],
    diag: &mut Diag,
) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for e in &sec.entries {
        let key = e.key.as_str();
        if !allowed.contains(&key) {
            let known = allowed.join(", ");
            diag.err(e.line, format!("unknown key {key:?} in {label} (known keys: {known})"));
            continue;
        }
        if repeatable.contains(&key) {
            continue;
        }
        match seen.get(key) {
            Some(first) => {
                diag.err(e.line, format!("duplicate key {key:?} (first at line {first})"))
            }
            None => {
                seen.insert(key, e.line);
            }
        }
    }
}

/// The first entry for `key`.
pub(crate) fn first<'a>(sec: &'a Section, key: &str) -> Option<&'a Entry> {
    sec.entries.iter().find(|e| e.key == key)
}

/// Parses the first value of `key`; a bad value is reported as `key: message`.
pub(crate) fn value_of<T>(
    sec: &Section,
    key: &str,
    diag: &mut Diag,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Option<T> {
    let e = first(sec, key)?;
    parse(&e.value).map_err(|m| diag.err(e.line, format!("{key}: {m}"))).ok()
}

/// Like [`value_of`], but a missing key is reported at the section header.
fn required<T>(
    sec: &Section,
    label: &str,
    key: &str,
    diag: &mut Diag,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Option<T> {
    if first(sec, key).is_none() {
        diag.err(sec.line, format!("{label}: missing required key {key:?}"));
        return None;
    }
    value_of(sec, key, diag, parse)
}

#[cfg(test)]
mod tests;
