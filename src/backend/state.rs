//! What imapgate knows about its backends while it runs: which are up (a backend that
//! fails to connect or greet is skipped for its `down_time`; every transition is one log
//! line), and their capabilities before and after login, learned by discovery and from
//! real logins. Shared by all sessions of a process.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::{Config, MapKind, Target};
use crate::imap::capability;
use crate::metrics::{self, Metric};

#[derive(Debug, Default, Clone)]
struct Known {
    down_until: Option<Instant>,
    pre_login: Option<Vec<String>>,
    post_login: Option<Vec<String>>,
}

/// The state of every backend, indexed like `Config::backends`.
#[derive(Debug)]
pub struct Backends {
    known: Vec<Mutex<Known>>,
    names: Vec<String>,
    turn: AtomicUsize,
}

impl Backends {
    /// Nothing known yet: every backend counts as up.
    pub fn new(config: &Config) -> Backends {
        let names: Vec<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
        let registry = metrics::global();
        registry.retain(Metric::BackendUp, &names);
        for name in &names {
            registry.set(Metric::BackendUp, &[name], 1);
        }
        Backends {
            known: config.backends.iter().map(|_| Mutex::default()).collect(),
            names: config.backends.iter().map(|b| b.name.clone()).collect(),
            turn: AtomicUsize::new(0),
        }
    }

    /// After a reload (`self` built for `config`): what `old` knew about the backends
    /// still there unchanged (same name, address and TLS), so new sessions do not start
    /// from nothing while discovery probes again. A changed backend starts unknown.
    pub fn carry_over(&self, config: &Config, old: &Backends, old_config: &Config) {
        for (i, b) in config.backends.iter().enumerate() {
            let Some(j) = old_config.backend_index(&b.name) else { continue };
            let was = &old_config.backends[j];
            if (&was.host, was.port, was.tls, &was.tls_name)
                != (&b.host, b.port, b.tls, &b.tls_name)
            {
                continue;
            }
            let known = old.with(j, |k| k.clone());
            self.with(i, |k| *k = known);
        }
    }

    fn with<T>(&self, i: usize, f: impl FnOnce(&mut Known) -> T) -> T {
        // A poisoned lock only means a panicking thread held it; the data is plain values.
        let mut guard = self.known[i].lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// A counter for round-robin pools.
    pub fn next_turn(&self) -> usize {
        self.turn.fetch_add(1, Ordering::Relaxed)
    }

    /// False while a backend is marked down.
    pub fn is_up(&self, i: usize) -> bool {
        self.with(i, |k| k.down_until.is_none_or(|t| Instant::now() >= t))
    }

    /// Marks a backend down for `time`; logs BACKEND-DOWN when it was up.
    pub fn mark_down(&self, i: usize, time: Duration, why: &str) {
        let was_down = self.with(i, |k| k.down_until.replace(Instant::now() + time).is_some());
        metrics::global().set(Metric::BackendUp, &[&self.names[i]], 0);
        if !was_down {
            log::warn!(
                "BACKEND-DOWN backend={} for={}s reason={why}",
                self.names[i],
                time.as_secs()
            );
        }
    }

    /// Marks a backend up; logs BACKEND-UP when it was down.
    pub fn mark_up(&self, i: usize) {
        metrics::global().set(Metric::BackendUp, &[&self.names[i]], 1);
        if self.with(i, |k| k.down_until.take().is_some()) {
            log::info!("BACKEND-UP backend={}", self.names[i]);
        }
    }

    /// Records capabilities seen before and/or after login.
    pub fn learn(&self, i: usize, pre_login: Option<Vec<String>>, post_login: Option<Vec<String>>) {
        self.with(i, |k| {
            if pre_login.is_some() {
                k.pre_login = pre_login;
            }
            if post_login.is_some() {
                k.post_login = post_login;
            }
        });
    }

    /// Backend capabilities worth announcing before login on a listener that routes to
    /// `reachable`: what all of them that are known offer (empty until one is known).
    pub fn before_login(&self, reachable: &[usize]) -> Vec<String> {
        let sets: Vec<Vec<String>> =
            reachable.iter().filter_map(|&i| self.with(i, |k| k.pre_login.clone())).collect();
        let refs: Vec<&[String]> = sets.iter().map(Vec::as_slice).collect();
        capability::intersect(&refs)
            .into_iter()
            .filter(|c| capability::relevant_before_login(c))
            .collect()
    }

    /// True when every backend in `reachable` is known to offer `cap` before login (an
    /// SASL mechanism imapgate passes through); false while any of them is not known yet.
    pub fn all_offer(&self, reachable: &[usize], cap: &str) -> bool {
        !reachable.is_empty()
            && reachable.iter().all(|&i| {
                self.with(i, |k| k.pre_login.as_deref().is_some_and(|c| capability::has(c, cap)))
            })
    }

    /// What a client logged in to backend `this` (whose capabilities are `this_caps`) is
    /// shown: the intersection over every backend of the listener whose post-login
    /// capabilities are known, so a client sees the same set wherever it lands.
    pub fn after_login(
        &self,
        reachable: &[usize],
        this: usize,
        this_caps: &[String],
    ) -> Vec<String> {
        let mut sets = vec![this_caps.to_vec()];
        sets.extend(
            reachable
                .iter()
                .filter(|&&i| i != this)
                .filter_map(|&i| self.with(i, |k| k.post_login.clone())),
        );
        let refs: Vec<&[String]> = sets.iter().map(Vec::as_slice).collect();
        capability::after_login(&capability::intersect(&refs))
    }

    /// The backends for a status report: `name:up,name:down`.
    pub fn status(&self) -> String {
        let states = (0..self.names.len())
            .map(|i| format!("{}:{}", self.names[i], if self.is_up(i) { "up" } else { "down" }));
        states.collect::<Vec<_>>().join(",")
    }
}

/// The backends a listener can route to: every target of its map, pools expanded; a
/// regex route whose backend is a template, and a map whose answers come from a lookup,
/// can reach any backend.
pub fn reachable(config: &Config, listener: usize) -> Vec<usize> {
    let map = &config.maps[config.listeners[listener].map];
    let mut targets = Vec::new();
    match &map.kind {
        MapKind::Static { default, users } => {
            targets.extend(default.iter().copied());
            targets.extend(users.values().copied());
        }
        MapKind::Regex { routes, default } => {
            targets.extend(default.iter().copied());
            for route in routes {
                match config.target_index(&route.backend) {
                    Some(t) if !route.backend.contains('$') => targets.push(t),
                    _ => targets.extend((0..config.backends.len()).map(Target::Backend)),
                }
            }
        }
        MapKind::Source { .. } => targets.extend((0..config.backends.len()).map(Target::Backend)),
    }
    let mut out: Vec<usize> = Vec::new();
    for t in targets {
        for b in config.candidates(t, "", 0) {
            if !out.contains(&b) {
                out.push(b);
            }
        }
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(backends: &str) -> Config {
        let text = format!(
            "{backends}[map m]\ntype = static\ndefault = a\n\
             [listener l]\nlisten = 127.0.0.1:1\nmap = m\n"
        );
        Config::parse(&text, Path::new("x.ini")).expect("config parses")
    }

    #[test]
    fn the_status_names_each_backend_up_or_down() {
        let c = config("[backend a]\nhost = 127.0.0.1\n[backend b]\nhost = 127.0.0.2\n");
        let states = Backends::new(&c);
        states.mark_down(1, Duration::from_secs(60), "test");
        assert_eq!(states.status(), "a:up,b:down");
    }

    #[test]
    fn a_reload_keeps_what_is_known_about_unchanged_backends() {
        let old_config = config(
            "[backend a]\nhost = 127.0.0.1\n[backend b]\nhost = 127.0.0.2\n\
             [backend c]\nhost = 127.0.0.3\n",
        );
        let old = Backends::new(&old_config);
        for i in 0..3 {
            old.mark_down(i, Duration::from_secs(60), "test");
            old.learn(i, Some(vec!["IMAP4rev1".into(), "SASL-IR".into()]), None);
        }
        // b moved to another address, c is gone, d is new, a stays (on another line).
        let new_config = config(
            "[backend d]\nhost = 127.0.0.4\n[backend b]\nhost = 127.0.0.9\n\
             [backend a]\nhost = 127.0.0.1\n",
        );
        let new = Backends::new(&new_config);
        new.carry_over(&new_config, &old, &old_config);
        assert_eq!(new.status(), "d:up,b:up,a:down");
        assert!(new.all_offer(&[2], "SASL-IR"));
        assert!(!new.all_offer(&[1], "SASL-IR") && !new.all_offer(&[0], "SASL-IR"));
    }
}
