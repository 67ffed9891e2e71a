//! Building every map's lookup from the configuration, the way TLS contexts and rules are
//! built: at start-up, on SIGHUP and for `-t`, before any privilege drop (files are read,
//! host names resolved, CA files loaded now). Every problem is reported at its key's line
//! (`CONFIG:LINE: message`), or at the data file's own line (`users.map:3: message`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::cache::Cache;
use super::cdb::CdbMap;
use super::file::FileMap;
use super::http::HttpMap;
use super::inline::Inline;
use super::ldap::{self, LdapMap, Scope};
use super::sql::SqlMap;
use super::template::Template;
use super::{fields, Kind, Lookup, Place};
use crate::config::{
    parse_duration, parse_yes_no, Cidr, Config, ConfigError, ConfigErrors, MapKind,
};
use crate::imap::sasl::Secret;

/// Keys every map of the lookup types takes.
pub(crate) const COMMON: [&str; 8] = [
    "allow_hosts",
    "host_defaults",
    "cache_ttl",
    "negative_ttl",
    "stale_if_error",
    "timeout",
    "master_user",
    "master_password",
];

/// The keys of each lookup type, beside the common ones.
pub(crate) fn keys_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "file" | "cdb" => &["path"],
        "http" => &["url", "header"],
        "ldap" => &[
            "url",
            "base",
            "scope",
            "filter",
            "bind_dn",
            "bind_password",
            "ca",
            "verify_password",
            "field",
        ],
        "sql" => &["database", "query", "verify_password"],
        _ => &["maps"],
    }
}

/// The keys a lookup map may give more than once; any other key given twice is an error.
const REPEATABLE: [&str; 2] = ["field", "header"];

/// Common keys that mean nothing on a chain: each answer is the answering map's, settled
/// by that map's own cache, `allow_hosts`, `host_defaults`, master user and `timeout`.
const NOT_FOR_CHAIN: [&str; 7] = [
    "cache_ttl",
    "negative_ttl",
    "stale_if_error",
    "master_user",
    "allow_hosts",
    "host_defaults",
    "timeout",
];

/// Every map's lookup, indexed like `Config::maps`.
pub fn load(config: &Config) -> Result<Vec<Arc<Lookup>>, ConfigErrors> {
    let mut loader = Loader { config, errors: Vec::new(), built: vec![None; config.maps.len()] };
    for i in 0..config.maps.len() {
        loader.build(i, &mut Vec::new());
    }
    if !loader.errors.is_empty() {
        loader.errors.sort_by(|a, b| (&a.path, a.line).cmp(&(&b.path, b.line)));
        return Err(ConfigErrors(loader.errors));
    }
    Ok(loader
        .built
        .into_iter()
        .map(|b| b.expect("every map built when there are no errors"))
        .collect())
}

struct Loader<'a> {
    config: &'a Config,
    errors: Vec<ConfigError>,
    built: Vec<Option<Arc<Lookup>>>,
}

/// A map section's keys, each taken once; what is left over is an unknown key.
struct Keys<'a> {
    keys: &'a [(String, String, usize)],
    taken: Vec<bool>,
}

impl<'a> Keys<'a> {
    fn get(&mut self, name: &str) -> Option<(&'a str, usize)> {
        let i = self.keys.iter().position(|(k, _, _)| k == name)?;
        self.taken[i] = true;
        Some((self.keys[i].1.as_str(), self.keys[i].2))
    }

    fn all(&mut self, name: &str) -> Vec<(&'a str, usize)> {
        let mut out = Vec::new();
        for (i, (k, v, line)) in self.keys.iter().enumerate() {
            if k == name {
                self.taken[i] = true;
                out.push((v.as_str(), *line));
            }
        }
        out
    }
}

impl Loader<'_> {
    fn err(&mut self, line: usize, msg: String) {
        self.errors.push(ConfigError { path: self.config.path.clone(), line, msg });
    }

    fn path(&self, value: &str) -> PathBuf {
        let base = self.config.path.parent().unwrap_or(Path::new(""));
        base.join(value)
    }

    /// The chroot imapgate will run in, for paths it opens after the drop.
    fn chroot(&self) -> Option<&Path> {
        self.config.global.daemon.chroot.as_ref().map(|c| c.value.as_path())
    }

    fn build(&mut self, i: usize, stack: &mut Vec<usize>) -> Option<Arc<Lookup>> {
        if let Some(done) = &self.built[i] {
            return Some(Arc::clone(done));
        }
        let map = &self.config.maps[i];
        let targets = self.config.targets();
        let (kind, keys, default, line) = match &map.kind {
            MapKind::Static { .. } | MapKind::Regex { .. } => {
                let lookup = Lookup {
                    name: map.name.clone(),
                    source: Kind::One(Box::new(Inline::new(map.kind.clone(), targets))),
                    default: None,
                    allow_hosts: Vec::new(),
                    host_defaults: None,
                    master: None,
                    cache: None,
                };
                let lookup = Arc::new(lookup);
                self.built[i] = Some(Arc::clone(&lookup));
                return Some(lookup);
            }
            MapKind::Source { kind, keys, default, line } => (kind, keys, *default, *line),
        };
        let before = self.errors.len();
        let mut keys = Keys { keys, taken: vec![false; keys.len()] };
        let kind_name = kind.0.as_str();
        let allowed: Vec<&str> = COMMON.iter().chain(keys_of(kind_name)).copied().collect();
        self.duplicates(&mut keys, &allowed);
        let timeout = self.duration(&mut keys, "timeout").unwrap_or(Duration::from_secs(5));
        let source = match kind_name {
            "file" => self.file(&mut keys, line, targets),
            "cdb" => self.cdb(&mut keys, line, targets),
            "http" => self.http(&mut keys, line, timeout, targets),
            "ldap" => self.ldap(&mut keys, line, timeout, targets),
            "sql" => self.sql(&mut keys, line, timeout, targets),
            _ => {
                stack.push(i);
                let chain = self.chain(&mut keys, line, stack);
                stack.pop();
                chain
            }
        };
        let allow_hosts = match keys.get("allow_hosts") {
            Some((v, l)) => {
                let blocks: Result<Vec<Cidr>, String> =
                    v.split_whitespace().map(Cidr::parse).collect();
                blocks.map_err(|m| self.err(l, format!("allow_hosts: {m}"))).unwrap_or_default()
            }
            None => Vec::new(),
        };
        let host_defaults = keys.get("host_defaults").and_then(|(v, l)| {
            let b = self.config.backend_index(v);
            if b.is_none() {
                self.err(l, format!("host_defaults: undefined backend {v:?}"));
            }
            b
        });
        let ttl = self.duration(&mut keys, "cache_ttl").unwrap_or_default();
        let negative = self.duration(&mut keys, "negative_ttl").unwrap_or_default();
        let stale = self.duration(&mut keys, "stale_if_error").unwrap_or_default();
        let verifies = match kind_name {
            "http" => true,
            "ldap" | "sql" => keys
                .keys
                .iter()
                .any(|(k, v, _)| k == "verify_password" && parse_yes_no(v) == Ok(true)),
            _ => false,
        };
        let master = self.master(&mut keys, verifies, line);
        if kind_name == "chain" {
            for key in NOT_FOR_CHAIN {
                if let Some((_, l)) =
                    keys.keys.iter().find(|(k, _, _)| k == key).map(|(_, v, l)| (v, *l))
                {
                    self.err(
                        l,
                        format!("{key}: not for type = chain (set it on the maps it chains)"),
                    );
                }
            }
        }
        for (j, (k, _, l)) in keys.keys.iter().enumerate() {
            if !keys.taken[j] {
                self.err(
                    *l,
                    format!(
                        "unknown key {k:?} for type = {kind_name} (known: {})",
                        allowed.join(", ")
                    ),
                );
            }
        }
        let source = source?;
        if self.errors.len() != before {
            return None;
        }
        let lookup = Arc::new(Lookup {
            name: self.config.maps[i].name.clone(),
            source,
            default,
            allow_hosts,
            host_defaults,
            master,
            cache: Cache::new(ttl, negative, stale),
        });
        self.built[i] = Some(Arc::clone(&lookup));
        Some(lookup)
    }

    /// Reports a known key given again (`field` and `header` may be) at its line, like
    /// `config::check_keys` does for the other sections; the repeat is then taken, so it
    /// is not reported as unknown too.
    fn duplicates(&mut self, keys: &mut Keys<'_>, allowed: &[&str]) {
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (j, (k, _, l)) in keys.keys.iter().enumerate() {
            if !allowed.contains(&k.as_str()) || REPEATABLE.contains(&k.as_str()) {
                continue;
            }
            match first.get(k.as_str()) {
                Some(at) => {
                    self.err(*l, format!("duplicate key {k:?} (first at line {at})"));
                    keys.taken[j] = true;
                }
                None => {
                    first.insert(k, *l);
                }
            }
        }
    }

    fn duration(&mut self, keys: &mut Keys<'_>, name: &str) -> Option<Duration> {
        let (v, l) = keys.get(name)?;
        parse_duration(v).map_err(|m| self.err(l, format!("{name}: {m}"))).ok()
    }

    fn yes_no(&mut self, keys: &mut Keys<'_>, name: &str) -> bool {
        match keys.get(name) {
            Some((v, l)) => {
                parse_yes_no(v).map_err(|m| self.err(l, format!("{name}: {m}"))).unwrap_or(false)
            }
            None => false,
        }
    }

    fn required<'k>(
        &mut self,
        keys: &mut Keys<'k>,
        name: &str,
        line: usize,
    ) -> Option<(&'k str, usize)> {
        let found = keys.get(name);
        if found.is_none() {
            self.err(line, format!("missing required key {name:?}"));
        }
        found
    }

    fn file(
        &mut self,
        keys: &mut Keys<'_>,
        line: usize,
        targets: HashMap<String, crate::config::Target>,
    ) -> Option<Kind> {
        let (v, _) = self.required(keys, "path", line)?;
        let path = self.path(v);
        match FileMap::open(Place::new(&path, self.chroot()), targets) {
            Ok(map) => Some(Kind::One(Box::new(map))),
            Err(errors) => {
                for (l, msg) in errors {
                    self.errors.push(ConfigError { path: path.clone(), line: l, msg });
                }
                None
            }
        }
    }

    fn cdb(
        &mut self,
        keys: &mut Keys<'_>,
        line: usize,
        targets: HashMap<String, crate::config::Target>,
    ) -> Option<Kind> {
        let (v, l) = self.required(keys, "path", line)?;
        let path = self.path(v);
        match CdbMap::open(Place::new(&path, self.chroot()), targets) {
            Ok(map) => Some(Kind::One(Box::new(map))),
            Err(m) => {
                self.err(l, format!("path: {}: {m}", path.display()));
                None
            }
        }
    }

    fn http(
        &mut self,
        keys: &mut Keys<'_>,
        line: usize,
        timeout: Duration,
        targets: HashMap<String, crate::config::Target>,
    ) -> Option<Kind> {
        let url = self.required(keys, "url", line);
        let mut headers = Vec::new();
        for (v, l) in keys.all("header") {
            match v.split_once(':') {
                Some((name, value))
                    if !name.trim().is_empty()
                        && name.trim().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
                {
                    headers.push((name.trim().to_string(), value.trim().to_string()))
                }
                _ => self.err(l, format!("header: expected \"Name: value\", got {v:?}")),
            }
        }
        let (url, l) = url?;
        match HttpMap::new(url, self.chroot(), headers, timeout, targets) {
            Ok(map) => Some(Kind::One(Box::new(map))),
            Err(m) => {
                self.err(l, format!("url: {m}"));
                None
            }
        }
    }

    fn ldap(
        &mut self,
        keys: &mut Keys<'_>,
        line: usize,
        timeout: Duration,
        targets: HashMap<String, crate::config::Target>,
    ) -> Option<Kind> {
        let url = self.required(keys, "url", line);
        let base = self.required(keys, "base", line);
        let scope = match keys.get("scope") {
            None => Some(Scope::Sub),
            Some((v, l)) => match v.to_ascii_lowercase().as_str() {
                "sub" | "subtree" => Some(Scope::Sub),
                "one" | "onelevel" => Some(Scope::One),
                "base" => Some(Scope::Base),
                _ => {
                    self.err(l, format!("scope: {v:?} is not sub, one or base"));
                    None
                }
            },
        };
        let (filter_text, filter_line) = keys.get("filter").unwrap_or(("(uid=%u)", line));
        let filter = match Template::parse(filter_text) {
            Ok(t) => {
                // The template must make a valid filter whatever the login.
                match ldap::filter::encode(
                    &filter_text
                        .replace("%u", "x")
                        .replace("%n", "x")
                        .replace("%d", "x")
                        .replace("%r", "x")
                        .replace("%%", "%"),
                ) {
                    Ok(_) => Some(t),
                    Err(m) => {
                        self.err(filter_line, format!("filter: {m}"));
                        None
                    }
                }
            }
            Err(m) => {
                self.err(filter_line, format!("filter: {m}"));
                None
            }
        };
        let bind = match (keys.get("bind_dn"), keys.get("bind_password")) {
            (Some((dn, _)), pw) => {
                Some((dn.to_string(), Secret::new(pw.map_or("", |p| p.0).as_bytes().to_vec())))
            }
            (None, Some((_, l))) => {
                self.err(l, "bind_password: needs bind_dn".into());
                None
            }
            (None, None) => None,
        };
        let ca = keys.get("ca").map(|(v, l)| (self.path(v), l));
        // No StartTLS: only ldaps:// uses TLS, so a CA elsewhere would be ignored.
        if let (Some((_, l)), Some((u, _))) = (&ca, &url) {
            if !u.starts_with("ldaps://") {
                self.err(*l, "ca: only used with ldaps:// URLs".into());
            }
        }
        let verify_password = self.yes_no(keys, "verify_password");
        let mut fields = Vec::new();
        for (v, l) in keys.all("field") {
            match v.split_whitespace().collect::<Vec<_>>()[..] {
                [field, attr] if fields::NAMES.contains(&field) => {
                    fields.push((field.to_string(), attr.to_string()))
                }
                [field, _] => self.err(
                    l,
                    format!("field: unknown field {field:?} (known: {})", fields::NAMES.join(", ")),
                ),
                _ => self.err(l, format!("field: expected \"FIELD ATTRIBUTE\", got {v:?}")),
            }
        }
        if fields.is_empty() {
            self.err(line, "an ldap map needs at least one field = FIELD ATTRIBUTE line (e.g. field = host mailHost)".into());
        }
        let (url, url_line) = url?;
        let tls = || match &ca {
            Some((path, _)) => crate::net::tls::lookup_client(Some(path)),
            None => crate::net::tls::lookup_client(None),
        };
        let endpoint = match ldap::parse_url(url, self.chroot(), tls) {
            Ok(e) => e,
            Err(m) => {
                self.err(ca.as_ref().map_or(url_line, |c| c.1).max(url_line), format!("url: {m}"));
                return None;
            }
        };
        Some(Kind::One(Box::new(LdapMap {
            endpoint,
            base: base?.0.to_string(),
            scope: scope?,
            filter: filter?,
            bind,
            verify_password,
            fields,
            timeout,
            targets,
        })))
    }

    fn sql(
        &mut self,
        keys: &mut Keys<'_>,
        line: usize,
        timeout: Duration,
        targets: HashMap<String, crate::config::Target>,
    ) -> Option<Kind> {
        let database = self.required(keys, "database", line);
        let query = self.required(keys, "query", line);
        let verify_password = self.yes_no(keys, "verify_password");
        let ((database, dl), (query, ql)) = (database?, query?);
        let database = match database.strip_prefix("sqlite:") {
            Some(path) if !path.starts_with('/') => format!("sqlite:{}", self.path(path).display()),
            _ => database.to_string(),
        };
        match SqlMap::new(&database, self.chroot(), query, verify_password, timeout, targets) {
            Ok(map) => Some(Kind::One(Box::new(map))),
            Err(m) => {
                let at = if m.contains("query") || m.contains('%') { ql } else { dl };
                self.err(at, m);
                None
            }
        }
    }

    fn chain(&mut self, keys: &mut Keys<'_>, line: usize, stack: &mut Vec<usize>) -> Option<Kind> {
        let (v, l) = self.required(keys, "maps", line)?;
        let mut maps = Vec::new();
        for name in v.split(|c: char| c == ',' || c.is_whitespace()).filter(|w| !w.is_empty()) {
            let Some(j) = self.config.maps.iter().position(|m| m.name == name) else {
                self.err(l, format!("maps: undefined map {name:?}"));
                continue;
            };
            if stack.contains(&j) {
                self.err(l, format!("maps: {name:?} leads back to this chain"));
                continue;
            }
            if let Some(m) = self.build(j, stack) {
                maps.push(m);
            }
        }
        if maps.is_empty() {
            return None;
        }
        Some(Kind::Chain(maps))
    }

    /// `master_user` + `master_password`, allowed only on a map that verifies passwords.
    fn master(
        &mut self,
        keys: &mut Keys<'_>,
        verifies: bool,
        line: usize,
    ) -> Option<(String, Secret)> {
        let user = keys.get("master_user");
        let pass = keys.get("master_password");
        match (user, pass) {
            (None, None) => None,
            (Some((_, l)), None) | (None, Some((_, l))) => {
                self.err(l, "master_user and master_password go together".into());
                None
            }
            (Some((u, l)), Some((p, _))) => {
                if !verifies {
                    self.err(
                        l.max(line),
                        "master_user: a master-user login needs a map that verifies the user's own \
                         password first (ldap or sql with verify_password = yes, or http)"
                            .into(),
                    );
                    return None;
                }
                Some((u.to_string(), Secret::new(p.as_bytes().to_vec())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::{Found, Outcome, Query};

    /// The problems `load` reports for the map sections `maps`, beside a backend `a` and
    /// a listener on the map `m`.
    fn errors(maps: &str) -> Vec<String> {
        let text = format!(
            "[backend a]\nhost = 127.0.0.1\nport = 1143\n\
             [listener l]\nlisten = 127.0.0.1:1\nmap = m\n{maps}"
        );
        let config = Config::parse(&text, Path::new("x.ini")).expect("config parses");
        match load(&config) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    const HTTP: &str = "[map m]\ntype = http\nurl = http://127.0.0.1:1/auth\n";

    #[test]
    fn a_repeated_key_is_a_duplicate_and_repeatable_ones_repeat() {
        assert_eq!(
            errors(&format!("{HTTP}timeout = 1s\ntimeout = 2s\n")),
            vec!["x.ini:11: duplicate key \"timeout\" (first at line 10)"]
        );
        assert_eq!(
            errors(&format!("{HTTP}url = http://127.0.0.1:2/\n")),
            vec!["x.ini:10: duplicate key \"url\" (first at line 9)"]
        );
        // Unknown stays unknown, however often.
        let bogus = errors(&format!("{HTTP}bogus = 1\nbogus = 2\n"));
        assert_eq!(bogus.len(), 2, "{bogus:?}");
        assert!(bogus.iter().all(|e| e.contains("unknown key \"bogus\"")), "{bogus:?}");
        assert_eq!(errors(&format!("{HTTP}header = A: 1\nheader = B: 2\n")), Vec::<String>::new());
        let ldap = "[map m]\ntype = ldap\nurl = ldap://127.0.0.1:1\nbase = dc=x\n\
                    field = backend mailHost\nfield = destuser uid\n";
        assert_eq!(errors(ldap), Vec::<String>::new());
    }

    #[test]
    fn a_chain_takes_no_key_that_its_maps_settle() {
        let chain = "[map m]\ntype = chain\nmaps = h\n";
        let inner = "[map h]\ntype = http\nurl = http://127.0.0.1:1/auth\n\
                     allow_hosts = 127.0.0.1/32\nhost_defaults = a\ntimeout = 2s\n";
        assert_eq!(errors(&format!("{chain}{inner}")), Vec::<String>::new());
        assert_eq!(
            errors(&format!("{chain}timeout = 10s\nhost_defaults = a\n{inner}")),
            vec![
                "x.ini:10: timeout: not for type = chain (set it on the maps it chains)",
                "x.ini:11: host_defaults: not for type = chain (set it on the maps it chains)",
            ]
        );
    }

    #[test]
    fn an_ldap_ca_needs_an_ldaps_url() {
        let map = |url: &str| {
            format!(
                "[map m]\ntype = ldap\nurl = {url}\nbase = dc=x\nfield = backend mailHost\n\
                 ca = no-such-ca.pem\n"
            )
        };
        for url in ["ldap://127.0.0.1:1", "ldapi://%2Frun%2Fslapd%2Fldapi"] {
            assert_eq!(
                errors(&map(url)),
                vec!["x.ini:12: ca: only used with ldaps:// URLs"],
                "{url}"
            );
        }
        // With ldaps:// the file is read, and a missing one is reported.
        let ldaps = errors(&map("ldaps://127.0.0.1:1"));
        assert!(ldaps.len() == 1 && ldaps[0].contains("no-such-ca.pem"), "{ldaps:?}");
    }

    #[test]
    fn each_host_answer_takes_the_host_defaults_of_the_map_that_gave_it() {
        let dir = std::env::temp_dir().join(format!("imapgate-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("users.map"), "u1 127.0.0.1\n").unwrap();
        let text = "[backend a]\nhost = 127.0.0.1\nport = 1143\n\
                    [backend b]\nhost = 127.0.0.1\nport = 2143\n\
                    [listener l]\nlisten = 127.0.0.1:1\nmap = m\n\
                    [map m]\ntype = chain\nmaps = f\n\
                    [map f]\ntype = file\npath = users.map\nallow_hosts = 127.0.0.1/32\n\
                    host_defaults = b\n";
        let config = Config::parse(text, &dir.join("x.ini")).expect("config parses");
        let maps = load(&config).expect("maps load");
        let _ = std::fs::remove_dir_all(&dir);
        let m = config.maps.iter().position(|m| m.name == "m").unwrap();
        let q = Query {
            user: "u1",
            password: None,
            client: None,
            tls: false,
            client_cert: None,
            attempt: 1,
        };
        match maps[m].find(&q) {
            Outcome::Found(Found::Route(answer)) => {
                assert_eq!(answer.host_defaults, config.backend_index("b"));
            }
            other => panic!("{other:?}"),
        }
    }
}
