//! Where a login goes, asked of the place a site already keeps it: the maps written into
//! imapgate.ini (`inline`: static and regex), a text file or a CDB of records, an nginx
//! `auth_http` service, an LDAP directory, an SQL database, or a chain of maps.
//!
//! Every source answers in one shape (`Found`, built from Dovecot's proxy field names in
//! `fields.rs`): a backend or pool, or a host inside the map's `allow_hosts`; `destuser`;
//! `master` + `pass`; `nologin` + `reason`; `wait`. A [`Lookup`] wraps a source with what
//! every map has: its `default` (for users the source does not know, and only for them),
//! a cache, and the policy that credentials are substituted (a master user, another
//! password) only when the source verified the user's own password first. A source that
//! fails is never papered over: the client gets `NO [UNAVAILABLE]`, nothing falls through.
//!
//! Sources do blocking I/O bounded by their `timeout`, on the session's own thread, so a
//! slow directory holds back only the logins that wait for it.

mod cache;
mod cdb;
mod fields;
mod file;
mod http;
pub mod inline;
mod ldap;
pub(crate) mod load;
mod password;
mod sql;
mod template;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::config::{Cidr, Target, TlsMode};
use crate::imap::sasl::Secret;
use crate::metrics::{self, Metric};

pub use load::load;

/// What a lookup knows about the login being routed.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// The login name as the client gave it.
    pub user: &'a str,
    /// The client's password, when it logged in with one (not for bearer tokens).
    pub password: Option<&'a Secret>,
    /// The client's address, when it has one.
    pub client: Option<SocketAddr>,
    /// The client connection is TLS.
    pub tls: bool,
    /// The client certificate's subject, when it sent one.
    pub client_cert: Option<&'a str>,
    /// This is the client's Nth login attempt in the connection (from 1).
    pub attempt: u32,
}

/// What a source found for a user.
#[derive(Debug, Clone)]
pub enum Found {
    /// Log in there.
    Route(Answer),
    /// `nologin`: the user may not log in through this proxy; `reason` goes to the client.
    Refused {
        /// Shown to the client as `NO [ALERT] reason`; none means `NO [UNAVAILABLE]`.
        reason: Option<String>,
        /// Hold the answer back this long (nginx's Auth-Wait).
        wait: Option<Duration>,
    },
    /// The source checked the password, and it is wrong.
    Rejected {
        /// The source's words for it (auth_http's Auth-Status).
        text: Option<String>,
        /// Hold the answer back this long.
        wait: Option<Duration>,
    },
}

/// Where and as whom to log in.
#[derive(Debug, Clone)]
pub struct Answer {
    pub to: Destination,
    /// The login to present to the backend, when not the client's.
    pub destuser: Option<String>,
    /// Log in as this master user, with the user as authorization identity.
    pub master: Option<(String, Secret)>,
    /// The password to present to the backend instead of the client's.
    pub pass: Option<Secret>,
    /// The source verified the client's own password.
    pub verified: bool,
    /// For a `host` answer: the backend whose settings it takes, the `host_defaults` of
    /// the map that answered (the one whose `allow_hosts` let the host through), set
    /// when the map settles the answer.
    pub host_defaults: Option<usize>,
}

/// Where an answer sends a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A configured backend or pool.
    Target(Target),
    /// A server the configuration does not name (allowed by the map's `allow_hosts`).
    Host { host: String, port: Option<u16>, tls: Option<TlsMode> },
    /// The answer names none: the map's `default`.
    Default,
}

/// The result of asking a map.
#[derive(Debug, Clone)]
pub enum Outcome {
    Found(Found),
    /// The map does not know the user and has no default.
    NotFound,
    /// The source could not answer (down, slow, garbage): the reason, for the log.
    Failed(String),
}

/// A place logins are looked up in.
pub(crate) trait Source: Send + Sync {
    /// `Ok(None)` when the source does not know the user.
    fn find(&self, q: &Query<'_>) -> Result<Option<Found>, String>;

    /// True when `find` checks the user's own password (only then may an answer
    /// substitute a master user or another password).
    fn verifies(&self) -> bool {
        false
    }

    /// What the answer depends on, for the cache key: the login name, and the password
    /// for a source that checks it.
    fn depends_on(&self, q: &Query<'_>) -> Vec<Secret> {
        let mut parts = vec![Secret::new(q.user.as_bytes().to_vec())];
        if self.verifies() {
            parts.push(q.password.cloned().unwrap_or_else(|| Secret::new(Vec::new())));
        }
        parts
    }
}

/// One `[map NAME]`: a source with the settings every map has.
pub struct Lookup {
    pub name: String,
    source: Kind,
    default: Option<Target>,
    allow_hosts: Vec<Cidr>,
    /// The configured backend whose settings ad-hoc hosts take (port, TLS, login).
    host_defaults: Option<usize>,
    /// `master_user` and `master_password` of the map.
    master: Option<(String, Secret)>,
    cache: Option<cache::Cache>,
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lookup({})", self.name)
    }
}

/// Where a map's answers come from.
enum Kind {
    One(Box<dyn Source>),
    /// `type = chain`: the maps in order; the first that knows the user answers, and one
    /// that fails ends the lookup (nothing falls through to the next).
    Chain(Vec<std::sync::Arc<Lookup>>),
}

impl Lookup {
    /// Asks the map about `q`: the cache, then the source; the map's default when the
    /// source does not know the user; the policy on every answer.
    pub fn find(&self, q: &Query<'_>) -> Outcome {
        let outcome = self.ask(q);
        let result = match &outcome {
            Outcome::Found(Found::Route(_)) => "found",
            Outcome::Found(Found::Refused { .. }) => "refused",
            Outcome::Found(Found::Rejected { .. }) => "rejected",
            Outcome::NotFound => "not-found",
            Outcome::Failed(_) => "failed",
        };
        metrics::add(Metric::Lookups, &[&self.name, result], 1);
        outcome
    }

    /// `find` without the counting.
    fn ask(&self, q: &Query<'_>) -> Outcome {
        let source = match &self.source {
            Kind::One(source) => source,
            Kind::Chain(maps) => {
                for map in maps {
                    match map.find(q) {
                        Outcome::NotFound => continue,
                        decided => return decided,
                    }
                }
                return self.settle(None);
            }
        };
        let key = self.cache.as_ref().map(|cache| {
            let parts = source.depends_on(q);
            cache.key(&parts.iter().map(Secret::expose).collect::<Vec<_>>())
        });
        if let (Some(cache), Some(key)) = (&self.cache, &key) {
            if let Some(hit) = cache.fresh(key) {
                metrics::add(Metric::CacheHits, &[&self.name], 1);
                return self.settle(hit);
            }
        }
        let found = match source.find(q) {
            Ok(found) => found,
            Err(why) => {
                let stale = match (&self.cache, &key) {
                    (Some(cache), Some(key)) => cache.stale(key),
                    _ => None,
                };
                return match stale {
                    Some(entry) => {
                        log::warn!("map {}: {why}; answering from the cache", self.name);
                        metrics::add(Metric::CacheHits, &[&self.name], 1);
                        self.settle(entry)
                    }
                    None => Outcome::Failed(why),
                };
            }
        };
        if let (Some(cache), Some(key)) = (&self.cache, key) {
            cache.store(key, found.clone());
        }
        self.settle(found)
    }

    /// The map's policy on what a source found.
    fn settle(&self, found: Option<Found>) -> Outcome {
        let Some(found) = found else {
            return match self.default {
                Some(target) => Outcome::Found(Found::Route(Answer::to(target))),
                None => Outcome::NotFound,
            };
        };
        let Found::Route(mut answer) = found else { return Outcome::Found(found) };
        if answer.to == Destination::Default {
            match self.default {
                Some(target) => answer.to = Destination::Target(target),
                None => return Outcome::Failed("the answer names no backend or host".into()),
            }
        }
        if let Destination::Host { host, .. } = &answer.to {
            if let Err(why) = self.host_allowed(host) {
                return Outcome::Failed(why);
            }
            answer.host_defaults = self.host_defaults;
        }
        if answer.master.is_none() {
            answer.master = self.master.clone();
        }
        if (answer.master.is_some() || answer.pass.is_some()) && !answer.verified {
            return Outcome::Failed(
                "the answer substitutes credentials (master or pass) but nothing verified \
                 the user's own password"
                    .into(),
            );
        }
        Outcome::Found(Found::Route(answer))
    }

    /// A host answer must lie inside `allow_hosts`: every address it resolves to, so a
    /// directory that was tampered with cannot send passwords elsewhere.
    fn host_allowed(&self, host: &str) -> Result<(), String> {
        if self.allow_hosts.is_empty() {
            return Err(format!("the answer names host {host:?}, but the map has no allow_hosts"));
        }
        let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => (host, 0)
                .to_socket_addrs()
                .map_err(|e| format!("host {host:?} does not resolve: {e}"))?
                .map(|a| a.ip())
                .collect(),
        };
        let inside = |ip: &IpAddr| self.allow_hosts.iter().any(|c| c.contains(*ip));
        if addrs.is_empty() || !addrs.iter().all(inside) {
            return Err(format!("the answer names host {host:?}, outside allow_hosts"));
        }
        Ok(())
    }
}

/// A file or socket a source opens while imapgate runs: by its path, and once imapgate
/// runs inside its chroot, by the same path seen from inside (the chroot's prefix
/// removed). So a map file or socket under the chroot is named by its full path and
/// works before and after the privilege drop, in both process models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub path: std::path::PathBuf,
    inside: Option<std::path::PathBuf>,
}

impl Place {
    pub fn new(path: &std::path::Path, chroot: Option<&std::path::Path>) -> Place {
        let inside = chroot
            .and_then(|root| path.strip_prefix(root).ok())
            .map(|rest| std::path::Path::new("/").join(rest));
        Place { path: path.to_path_buf(), inside }
    }

    /// `f` on the path, or on the path inside the chroot when the first is not there.
    pub fn with<T>(
        &self,
        f: impl Fn(&std::path::Path) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        match (f(&self.path), &self.inside) {
            (Err(e), Some(inside)) if e.kind() == std::io::ErrorKind::NotFound => {
                f(inside).map_err(|_| e)
            }
            (result, _) => result,
        }
    }
}

impl Answer {
    /// A plain route to `target`, nothing substituted.
    pub fn to(target: Target) -> Answer {
        Answer {
            to: Destination::Target(target),
            destuser: None,
            master: None,
            pass: None,
            verified: false,
            host_defaults: None,
        }
    }
}

/// The `lookup` fuzz target: every parser of what a lookup source sends back, and the
/// filter escaping, must not panic and must keep its promises. The first byte picks the
/// parser.
#[cfg(any(test, fuzzing))]
pub fn fuzz(data: &[u8]) {
    let Some((&which, data)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(data);
    match which % 6 {
        0 => ldap::filter::fuzz(&text),
        1 => ldap::fuzz(data),
        2 => {
            use crate::imap::bearer;
            use crate::imap::sasl::{base64_decode, Mechanism};
            for mechanism in [Mechanism::XOAuth2, Mechanism::OAuthBearer] {
                if let Ok(token) = bearer::decode(mechanism, data) {
                    let again = token.encode(&token.user).expect("a parsed user name can be sent");
                    let raw = base64_decode(again.expose()).expect("base64");
                    let back = bearer::decode(mechanism, &raw).expect("imapgate's encoding parses");
                    assert_eq!(back.user, token.user);
                }
            }
        }
        3 => {
            let targets = [("a".to_string(), Target::Backend(0))].into();
            let _ = file::parse_record(&text, &targets);
        }
        4 => http::fuzz(data),
        _ => sql::fuzz(data),
    }
}

/// What a failed read from a map's source is called in the log: a read timeout
/// (`WouldBlock` or `TimedOut`, as the socket option reports it) is "timed out".
pub(crate) fn read_failure(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "timed out".into(),
        _ => format!("read: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_place_is_found_from_inside_the_chroot_when_its_path_is_not_there() {
        let place = Place::new(Path::new("/no-such-jail/tmp"), Some(Path::new("/no-such-jail")));
        assert!(place.with(|p| std::fs::metadata(p)).is_ok_and(|m| m.is_dir()));
        let outside = Place::new(Path::new("/no-such-dir/x"), Some(Path::new("/srv/jail")));
        let e = outside.with(|p| std::fs::metadata(p)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }

    struct OnlyX;

    impl Source for OnlyX {
        fn find(&self, q: &Query<'_>) -> Result<Option<Found>, String> {
            match q.user {
                "x" => Ok(Some(Found::Route(Answer::to(Target::Backend(0))))),
                "down" => Err("down".into()),
                _ => Ok(None),
            }
        }
    }

    #[test]
    fn lookups_and_cache_hits_are_counted_per_map_and_result() {
        let name = "lookup-metrics-test";
        let map = Lookup {
            name: name.into(),
            source: Kind::One(Box::new(OnlyX)),
            default: None,
            allow_hosts: Vec::new(),
            host_defaults: None,
            master: None,
            cache: cache::Cache::new(Duration::from_secs(60), Duration::ZERO, Duration::ZERO),
        };
        let q = |user| Query {
            user,
            password: None,
            client: None,
            tls: false,
            client_cert: None,
            attempt: 1,
        };
        for user in ["x", "x", "x", "y", "down"] {
            map.find(&q(user));
        }
        let registry = metrics::global();
        assert_eq!(registry.get(Metric::Lookups, &[name, "found"]), 3);
        assert_eq!(registry.get(Metric::Lookups, &[name, "not-found"]), 1);
        assert_eq!(registry.get(Metric::Lookups, &[name, "failed"]), 1);
        assert_eq!(registry.get(Metric::CacheHits, &[name]), 2);
    }
}
