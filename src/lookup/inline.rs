//! `type = static` and `type = regex`: maps written into imapgate.ini. Login name →
//! backend (and the login to present to it), a pure function of the map. No I/O.

use std::collections::HashMap;
use std::fmt;

use super::{Answer, Found, Query, Source};
use crate::config::{template, MapKind, Target};

/// Where a login goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The map target: a backend, or a pool (see [`Config::candidates`]).
    pub target: Target,
    /// Login to present to the backend (rewritten by a regex route, else unchanged).
    pub user: String,
}

/// Why a login could not be routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No entry or route matches and the map has no default.
    NoMatch,
    /// A backend template expanded to a name no `[backend]` section defines.
    UnknownBackend(String),
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::NoMatch => f.write_str("no route matches the login"),
            RouteError::UnknownBackend(name) => {
                write!(f, "route leads to undefined backend {name:?}")
            }
        }
    }
}

impl std::error::Error for RouteError {}

/// A static or regex map as a lookup source.
pub struct Inline {
    kind: MapKind,
    targets: HashMap<String, Target>,
}

impl Inline {
    pub fn new(kind: MapKind, targets: HashMap<String, Target>) -> Inline {
        Inline { kind, targets }
    }
}

impl Source for Inline {
    fn find(&self, q: &Query<'_>) -> Result<Option<Found>, String> {
        match lookup(&self.kind, &self.targets, q.user) {
            Ok(route) => {
                let mut answer = Answer::to(route.target);
                answer.destuser = (route.user != q.user).then_some(route.user);
                Ok(Some(Found::Route(answer)))
            }
            Err(RouteError::NoMatch) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Routes `login` through a static or regex map; `targets` names every backend and pool.
///
/// Static maps: the exact (case-sensitive) user entry, else the default. Regex maps: the
/// first route whose regex matches (unanchored unless the pattern says otherwise) decides;
/// its templates are expanded with the match. If nothing matches, the default takes the
/// login unchanged.
pub fn lookup(
    kind: &MapKind,
    targets: &HashMap<String, Target>,
    login: &str,
) -> Result<Route, RouteError> {
    let (target, user) = match kind {
        MapKind::Static { default, users } => {
            let backend = users.get(login).or(default.as_ref());
            (*backend.ok_or(RouteError::NoMatch)?, login.to_string())
        }
        MapKind::Regex { routes, default } => {
            let hit = routes.iter().find_map(|r| r.regex.captures(login).map(|caps| (r, caps)));
            match hit {
                Some((r, caps)) => {
                    let name = template::expand(&r.backend, &caps);
                    let Some(&i) = targets.get(&name) else {
                        return Err(RouteError::UnknownBackend(name));
                    };
                    let user = r.user.as_ref().map(|u| template::expand(u, &caps));
                    (i, user.unwrap_or_else(|| login.to_string()))
                }
                None => (default.ok_or(RouteError::NoMatch)?, login.to_string()),
            }
        }
        MapKind::Source { .. } => return Err(RouteError::NoMatch),
    };
    // A user template whose groups matched nothing leaves no name to log in with.
    if user.is_empty() {
        return Err(RouteError::NoMatch);
    }
    Ok(Route { target, user })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    const CONF: &str = "\
[backend b1]
host = 10.0.0.1
[backend b2]
host = 10.0.0.2
[backend shard-x]
host = 10.0.0.3
[map s]
type = static
user = alice b2
user = Bob b1
[map s-nodefault]
type = static
user = alice b2
[map r]
type = regex
route = ^admin$ b1 root
route = ^([^@]+)@(?P<dom>[a-z]+)\\.example$ shard-$dom ${1}
route = ^shard-(\\w+)$ shard-$1
[map r-default]
type = regex
route = a b2
default = b1
[listener l]
listen = 127.0.0.1:1143
map = s
";

    fn setup() -> Config {
        Config::parse(CONF, Path::new("t.ini")).unwrap()
    }

    fn route(c: &Config, map: &str, login: &str) -> Result<(String, String), RouteError> {
        let m = &c.maps[c.map_index(map).unwrap()];
        lookup(&m.kind, &c.targets(), login).map(|r| (c.target_name(r.target), r.user))
    }

    fn ok(b: &str, u: &str) -> Result<(String, String), RouteError> {
        Ok((b.to_string(), u.to_string()))
    }

    #[test]
    fn static_map_uses_exact_entry_then_default() {
        let c = setup();
        assert_eq!(route(&c, "s", "alice"), ok("b2", "alice"));
        assert_eq!(route(&c, "s", "Bob"), ok("b1", "Bob"));
        assert_eq!(route(&c, "s", "bob"), Err(RouteError::NoMatch));
        assert_eq!(route(&c, "s-nodefault", "carol"), Err(RouteError::NoMatch));
    }

    #[test]
    fn regex_route_rewrites_user() {
        let c = setup();
        assert_eq!(route(&c, "r", "admin"), ok("b1", "root"));
        assert_eq!(route(&c, "r", "xadmin"), Err(RouteError::NoMatch));
    }

    #[test]
    fn regex_route_expands_backend_and_user_templates() {
        let c = setup();
        assert_eq!(route(&c, "r", "carol@x.example"), ok("shard-x", "carol"));
        assert_eq!(route(&c, "r", "shard-x"), ok("shard-x", "shard-x"));
    }

    #[test]
    fn expansion_to_an_undefined_backend_is_an_error() {
        let c = setup();
        assert_eq!(
            route(&c, "r", "carol@y.example"),
            Err(RouteError::UnknownBackend("shard-y".into()))
        );
        assert_eq!(
            RouteError::UnknownBackend("shard-y".into()).to_string(),
            "route leads to undefined backend \"shard-y\""
        );
    }

    #[test]
    fn regex_map_is_unanchored_and_falls_back_to_default() {
        let c = setup();
        assert_eq!(route(&c, "r-default", "xax"), ok("b2", "xax"));
        assert_eq!(route(&c, "r-default", "bob"), ok("b1", "bob"));
        assert_eq!(route(&c, "r", "nobody"), Err(RouteError::NoMatch));
    }
}
