//! `[map NAME]` sections: how a login name is turned into a backend (and maybe a new
//! login). `static` and `regex` maps are typed here (backend names resolved to indexes;
//! the lookup itself is `backend/route.rs`); maps whose answers come from elsewhere
//! (`file`, `cdb`, `http`, `ldap`, `sql`, `chain`) keep their keys with their lines for
//! `lookup::load`, as `[rule]` sections do for the rules.

use std::collections::HashMap;

use regex::Regex;

use super::error::Diag;
use super::ini::Section;
use super::template;
use super::Target;
use super::{check_keys, first, value_of};

/// One `[map NAME]` section.
#[derive(Debug, Clone)]
pub struct Map {
    /// NAME from the section header.
    pub name: String,
    /// What the map does.
    pub kind: MapKind,
}

/// The two kinds of map (`type = static | regex`).
#[derive(Debug, Clone)]
pub enum MapKind {
    /// Exact, case-sensitive login names.
    Static {
        /// Target for logins not listed.
        default: Option<Target>,
        /// Login → backend or pool.
        users: HashMap<String, Target>,
    },
    /// Ordered regex routes; the first match wins.
    Regex {
        /// `route` lines in file order.
        routes: Vec<RegexRoute>,
        /// Target when no route matches (login unchanged).
        default: Option<Target>,
    },
    /// A lookup in a file, a CDB, an auth_http service, a directory, a database, or a
    /// chain of maps; `lookup::load` reads the keys.
    Source {
        /// `type`, in lower case, and its line.
        kind: (String, usize),
        /// Line of the section header.
        line: usize,
        /// Target for logins the source does not know.
        default: Option<Target>,
        /// Every key but `type` and `default`: (key, value, line), in file order.
        keys: Vec<(String, String, usize)>,
    },
}

/// Keys of static and regex maps (`user` is static's, `route` regex's); the other types'
/// keys are `lookup::load`'s.
pub(crate) const MAP_KEYS: &[&str] = &["type", "default", "user", "route"];

/// The map types whose keys `lookup::load` reads.
pub const SOURCE_TYPES: [&str; 6] = ["file", "cdb", "http", "ldap", "sql", "chain"];

/// One `route = REGEX BACKEND [USER]` line.
#[derive(Debug, Clone)]
pub struct RegexRoute {
    /// Matched unanchored against the login; write `^`/`$` to anchor.
    pub regex: Regex,
    /// Backend name template (`$1`, `${1}`, `$name`, `$$`).
    pub backend: String,
    /// New login template; `None` keeps the login unchanged.
    pub user: Option<String>,
}

/// Types one map section. Returns `None` if the section has errors (reported to `diag`).
pub(crate) fn parse(
    name: &str,
    sec: &Section,
    backends: &HashMap<String, Target>,
    diag: &mut Diag,
) -> Option<Map> {
    let before = diag.count();
    let label = format!("[map {name}]");
    let default = value_of(sec, "default", diag, |s| backend_ref(s, backends));
    let kind_word = first(sec, "type").map(|e| (e.value.trim().to_ascii_lowercase(), e));
    let kind = match kind_word.as_ref().map(|(w, e)| (w.as_str(), e)) {
        None => {
            diag.err(sec.line, format!("{label}: missing required key \"type\""));
            None
        }
        Some(("static", _)) => {
            check_keys(sec, &label, MAP_KEYS, &["user", "route"], diag);
            wrong_kind(sec, "route", "regex", diag);
            let users = static_users(sec, backends, diag);
            Some(MapKind::Static { default, users })
        }
        Some(("regex", _)) => {
            check_keys(sec, &label, MAP_KEYS, &["user", "route"], diag);
            wrong_kind(sec, "user", "static", diag);
            let routes = regex_routes(sec, backends, diag);
            Some(MapKind::Regex { routes, default })
        }
        Some((word, e)) if SOURCE_TYPES.contains(&word) => {
            // The other keys are `lookup::load`'s, which reports their repeats.
            for key in ["type", "default"] {
                let lines: Vec<usize> =
                    sec.entries.iter().filter(|k| k.key == key).map(|k| k.line).collect();
                for line in lines.iter().skip(1) {
                    diag.err(*line, format!("duplicate key {key:?} (first at line {})", lines[0]));
                }
            }
            let keys = (sec.entries.iter())
                .filter(|k| k.key != "type" && k.key != "default")
                .map(|k| (k.key.clone(), k.value.clone(), k.line))
                .collect();
            Some(MapKind::Source {
                kind: (word.to_string(), e.line),
                line: sec.line,
                default,
                keys,
            })
        }
        Some((_, e)) => {
            diag.err(
                e.line,
                format!(
                    "type: invalid value {:?} (expected static, regex, {})",
                    e.value,
                    SOURCE_TYPES.join(", ")
                ),
            );
            None
        }
    };
    let kind = kind?;
    (diag.count() == before).then(|| Map { name: name.to_string(), kind })
}

fn backend_ref(s: &str, backends: &HashMap<String, Target>) -> Result<Target, String> {
    backends.get(s).copied().ok_or_else(|| format!("undefined backend {s:?}"))
}

fn wrong_kind(sec: &Section, key: &str, kind: &str, diag: &mut Diag) {
    for e in sec.entries.iter().filter(|e| e.key == key) {
        diag.err(e.line, format!("{key}: only valid in maps of type {kind}"));
    }
}

/// `user = LOGIN BACKEND` lines; a login may appear once.
fn static_users(
    sec: &Section,
    backends: &HashMap<String, Target>,
    diag: &mut Diag,
) -> HashMap<String, Target> {
    let mut users = HashMap::new();
    let mut lines: HashMap<&str, usize> = HashMap::new();
    for e in sec.entries.iter().filter(|e| e.key == "user") {
        let fields: Vec<&str> = e.value.split_whitespace().collect();
        let [login, backend] = fields[..] else {
            diag.err(e.line, "user: expected \"LOGIN BACKEND\"");
            continue;
        };
        if let Some(first) = lines.get(login) {
            diag.err(e.line, format!("user: duplicate login {login:?} (first at line {first})"));
            continue;
        }
        lines.insert(login, e.line);
        match backend_ref(backend, backends) {
            Ok(i) => {
                users.insert(login.to_string(), i);
            }
            Err(m) => diag.err(e.line, format!("user: {m}")),
        }
    }
    users
}

/// `route = REGEX BACKEND [USER]` lines in order.
fn regex_routes(
    sec: &Section,
    backends: &HashMap<String, Target>,
    diag: &mut Diag,
) -> Vec<RegexRoute> {
    let mut routes = Vec::new();
    for e in sec.entries.iter().filter(|e| e.key == "route") {
        match regex_route(&e.value, backends) {
            Ok(r) => routes.push(r),
            Err(m) => diag.err(e.line, format!("route: {m}")),
        }
    }
    routes
}

fn regex_route(value: &str, backends: &HashMap<String, Target>) -> Result<RegexRoute, String> {
    let fields: Vec<&str> = value.split_whitespace().collect();
    let (pattern, backend, user) = match fields[..] {
        [p, b] => (p, b, None),
        [p, b, u] => (p, b, Some(u)),
        _ => return Err("expected \"REGEX BACKEND [USER]\"".to_string()),
    };
    let regex =
        Regex::new(pattern).map_err(|e| format!("invalid regex {pattern:?}: {}", regex_msg(&e)))?;
    match template::check(backend, &regex) {
        Err(m) => return Err(format!("backend template: {m}")),
        Ok(Some(name)) => {
            backend_ref(&name, backends)?;
        }
        Ok(None) => {}
    }
    if let Some(u) = user {
        template::check(u, &regex).map_err(|m| format!("user template: {m}"))?;
    }
    Ok(RegexRoute { regex, backend: backend.to_string(), user: user.map(str::to_string) })
}

/// The one-line reason out of the regex crate's multi-line message.
fn regex_msg(e: &regex::Error) -> String {
    let full = e.to_string();
    let line = full
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .or_else(|| full.lines().next())
        .unwrap_or("invalid regex");
    line.trim_end_matches('.').to_string()
}
