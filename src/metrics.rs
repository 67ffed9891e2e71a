//! The metrics registry: labelled counters and gauges any module may add to, rendered
//! in the Prometheus text format (0.0.4) by the `[global] metrics` listener
//! (`daemon/scrape.rs`). It depends on nothing, so `lookup`, `rules`, `backend` and
//! `session` count where things happen without knowing the process model.
//!
//! Label values are configuration names (listener, backend, rule, map) and the fixed
//! words of typed enums (login reasons, refusal reasons, SESSION-END reasons), never a
//! user name or a client address: the set of series stays finite and private. The
//! registry is one mutex over a sorted map; it is touched per session, login, lookup
//! and rule decision, never per byte.
//!
//! A fork-mode session process starts from an empty registry (`reset` after the fork)
//! and sends what it counted to the listener process (`drain`, `report_line`), which
//! adds it to its own (`apply_report`). Series a report can create are bounded
//! ([`MAX_SERIES`]), so a misbehaving session process cannot grow the listener.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// More series than this are not created (a bound on memory, whoever reports).
pub const MAX_SERIES: usize = 10_000;

/// Upper bounds of the backend login latency histogram, in seconds.
pub const LOGIN_BUCKETS: [f64; 11] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// One series family's sample: what it is called and which labels it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    /// Gauge, kept by the process that accepts: sessions running now.
    SessionsOpen,
    /// Sessions begun (admitted connections), per listener.
    SessionsTotal,
    /// Sessions ended, per listener and SESSION-END reason.
    SessionsEnded,
    /// Login attempts, per listener, result and reason.
    Logins,
    /// Bytes read from clients, per listener.
    BytesFromClients,
    /// Bytes written to clients, per listener.
    BytesToClients,
    /// Gauge: 1 while a backend counts as up.
    BackendUp,
    /// Histogram buckets (cumulative) of backend login time.
    BackendLoginBucket,
    /// Histogram sum, in microseconds.
    BackendLoginSum,
    /// Histogram count.
    BackendLoginCount,
    /// Decisions of rules other than "pass", per rule and decision.
    RuleDecisions,
    /// Lookups per map and result.
    Lookups,
    /// Answers a map gave from its cache.
    CacheHits,
    /// Connections refused before the greeting, per reason.
    Refused,
}

/// Every metric, in the order they are rendered.
const ALL: [Metric; 14] = [
    Metric::SessionsOpen,
    Metric::SessionsTotal,
    Metric::SessionsEnded,
    Metric::Logins,
    Metric::BytesFromClients,
    Metric::BytesToClients,
    Metric::BackendUp,
    Metric::BackendLoginBucket,
    Metric::BackendLoginSum,
    Metric::BackendLoginCount,
    Metric::RuleDecisions,
    Metric::Lookups,
    Metric::CacheHits,
    Metric::Refused,
];

impl Metric {
    /// The family name (HELP and TYPE lines).
    pub fn family(self) -> &'static str {
        match self {
            Metric::SessionsOpen => "imapgate_sessions_open",
            Metric::SessionsTotal => "imapgate_sessions_total",
            Metric::SessionsEnded => "imapgate_sessions_ended_total",
            Metric::Logins => "imapgate_logins_total",
            Metric::BytesFromClients => "imapgate_bytes_from_clients_total",
            Metric::BytesToClients => "imapgate_bytes_to_clients_total",
            Metric::BackendUp => "imapgate_backend_up",
            Metric::BackendLoginBucket | Metric::BackendLoginSum | Metric::BackendLoginCount => {
                "imapgate_backend_login_seconds"
            }
            Metric::RuleDecisions => "imapgate_rule_decisions_total",
            Metric::Lookups => "imapgate_lookups_total",
            Metric::CacheHits => "imapgate_lookup_cache_hits_total",
            Metric::Refused => "imapgate_refused_total",
        }
    }

    /// The suffix of histogram samples.
    fn suffix(self) -> &'static str {
        match self {
            Metric::BackendLoginBucket => "_bucket",
            Metric::BackendLoginSum => "_sum",
            Metric::BackendLoginCount => "_count",
            _ => "",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Metric::SessionsOpen | Metric::BackendUp => "gauge",
            Metric::BackendLoginBucket | Metric::BackendLoginSum | Metric::BackendLoginCount => {
                "histogram"
            }
            _ => "counter",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Metric::SessionsOpen => "Sessions open now, per listener.",
            Metric::SessionsTotal => "Sessions begun (connections admitted), per listener.",
            Metric::SessionsEnded => "Sessions ended, per listener and SESSION-END reason.",
            Metric::Logins => "Login attempts, per listener, result (ok, failed) and reason.",
            Metric::BytesFromClients => "Bytes read from clients, per listener.",
            Metric::BytesToClients => "Bytes written to clients, per listener.",
            Metric::BackendUp => "1 while a configured backend counts as up, 0 while marked down.",
            Metric::BackendLoginBucket | Metric::BackendLoginSum | Metric::BackendLoginCount => {
                "Time from connecting to a configured backend to its answer to the login."
            }
            Metric::RuleDecisions => "Rule decisions other than pass, per rule and decision.",
            Metric::Lookups => "Map lookups, per map and result.",
            Metric::CacheHits => "Map answers served from the map's cache, per map.",
            Metric::Refused => "Connections refused before the greeting, per reason.",
        }
    }

    /// The label names, in the order values are given.
    pub fn labels(self) -> &'static [&'static str] {
        match self {
            Metric::SessionsOpen
            | Metric::SessionsTotal
            | Metric::BytesFromClients
            | Metric::BytesToClients => &["listener"],
            Metric::SessionsEnded => &["listener", "reason"],
            Metric::Logins => &["listener", "result", "reason"],
            Metric::BackendUp | Metric::BackendLoginSum | Metric::BackendLoginCount => &["backend"],
            Metric::BackendLoginBucket => &["backend", "le"],
            Metric::RuleDecisions => &["rule", "decision"],
            Metric::Lookups => &["map", "result"],
            Metric::CacheHits => &["map"],
            Metric::Refused => &["reason"],
        }
    }

    /// The word for a report line.
    fn code(self) -> &'static str {
        match self {
            Metric::SessionsOpen => "open",
            Metric::SessionsTotal => "sessions",
            Metric::SessionsEnded => "ended",
            Metric::Logins => "logins",
            Metric::BytesFromClients => "from",
            Metric::BytesToClients => "to",
            Metric::BackendUp => "up",
            Metric::BackendLoginBucket => "bucket",
            Metric::BackendLoginSum => "sum",
            Metric::BackendLoginCount => "count",
            Metric::RuleDecisions => "rule",
            Metric::Lookups => "lookup",
            Metric::CacheHits => "hit",
            Metric::Refused => "refused",
        }
    }

    /// A gauge is set, not added to; reports carry its value.
    fn is_gauge(self) -> bool {
        matches!(self, Metric::SessionsOpen | Metric::BackendUp)
    }

    /// What a session process may report: everything but the listener's own gauge.
    fn reportable(self) -> bool {
        self != Metric::SessionsOpen
    }
}

type Key = (Metric, Vec<String>);

/// Labelled values. One global instance ([`global`]); tests build their own.
#[derive(Default)]
pub struct Registry {
    values: Mutex<BTreeMap<Key, u64>>,
}

impl Registry {
    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<Key, u64>) -> T) -> T {
        // A poisoned lock only means a panicking thread held it; the data is plain values.
        let mut guard = self.values.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    fn update(&self, metric: Metric, labels: &[&str], f: impl FnOnce(&mut u64)) {
        debug_assert_eq!(labels.len(), metric.labels().len(), "{metric:?}");
        let key = (metric, labels.iter().map(|l| (*l).to_string()).collect());
        self.with(|values| {
            let full = values.len() >= MAX_SERIES;
            match values.get_mut(&key) {
                Some(v) => f(v),
                None if full => {}
                None => f(values.entry(key).or_insert(0)),
            }
        });
    }

    /// Adds `n` to a counter (or a gauge).
    pub fn add(&self, metric: Metric, labels: &[&str], n: u64) {
        self.update(metric, labels, |v| *v = v.saturating_add(n));
    }

    /// Takes one from a gauge, never below zero.
    pub fn sub(&self, metric: Metric, labels: &[&str]) {
        self.update(metric, labels, |v| *v = v.saturating_sub(1));
    }

    /// Sets a gauge.
    pub fn set(&self, metric: Metric, labels: &[&str], n: u64) {
        self.update(metric, labels, |v| *v = n);
    }

    /// Removes every series of `metric` whose first label is not in `keep`.
    pub fn retain(&self, metric: Metric, keep: &[&str]) {
        self.with(|values| {
            values.retain(|(m, labels), _| {
                *m != metric || labels.first().is_some_and(|l| keep.contains(&l.as_str()))
            })
        });
    }

    /// Counts one backend login that took `took`.
    pub fn observe_login(&self, backend: &str, took: Duration) {
        let seconds = took.as_secs_f64();
        // Every bucket exists from the first observation on, as Prometheus expects.
        for bound in LOGIN_BUCKETS {
            let n = u64::from(seconds <= bound);
            self.add(Metric::BackendLoginBucket, &[backend, &format_value(bound)], n);
        }
        self.add(Metric::BackendLoginBucket, &[backend, "+Inf"], 1);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.add(Metric::BackendLoginSum, &[backend], micros);
        self.add(Metric::BackendLoginCount, &[backend], 1);
    }

    /// One value.
    #[cfg(test)]
    pub fn get(&self, metric: Metric, labels: &[&str]) -> u64 {
        let key = (metric, labels.iter().map(|l| (*l).to_string()).collect());
        self.with(|values| values.get(&key).copied().unwrap_or(0))
    }

    /// Forgets everything (a fork-mode session process, right after the fork: what it
    /// inherited is the listener's to show).
    pub fn reset(&self) {
        self.with(BTreeMap::clear);
    }

    /// What was counted since the last drain, as report lines; counters start again at
    /// zero (those still at zero are left out), gauges are reported with their value and
    /// forgotten.
    pub fn drain(&self) -> Vec<String> {
        let taken = self.with(std::mem::take);
        taken
            .into_iter()
            .filter(|((m, _), v)| m.reportable() && (*v != 0 || m.is_gauge()))
            .map(|((m, labels), v)| report_line(m, &labels, v))
            .collect()
    }

    /// Applies a report line from a session process; false when it is not one.
    pub fn apply_report(&self, line: &str) -> bool {
        let mut words = line.split(' ');
        let Some(code) = words.next() else { return false };
        let Some(metric) = ALL.into_iter().find(|m| m.code() == code && m.reportable()) else {
            return false;
        };
        let rest: Vec<&str> = words.collect();
        let Some((value, labels)) = rest.split_last() else { return false };
        let Ok(value) = value.parse::<u64>() else { return false };
        if labels.len() != metric.labels().len() {
            return false;
        }
        let Some(labels) = labels.iter().map(|l| unescape_word(l)).collect::<Option<Vec<_>>>()
        else {
            return false;
        };
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        if metric == Metric::BackendLoginBucket {
            // Reports leave out empty buckets; every bucket exists here all the same.
            for bound in LOGIN_BUCKETS.iter().map(|b| format_value(*b)) {
                self.add(metric, &[labels[0], &bound], 0);
            }
            self.add(metric, &[labels[0], "+Inf"], 0);
        }
        if metric.is_gauge() {
            self.set(metric, &labels, value);
        } else {
            self.add(metric, &labels, value);
        }
        true
    }

    /// Everything, in the Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let values = self.with(|values| values.clone());
        let mut out = String::new();
        let mut family = "";
        for metric in ALL {
            if metric.family() != family {
                family = metric.family();
                let _ = writeln!(out, "# HELP {family} {}", metric.help());
                let _ = writeln!(out, "# TYPE {family} {}", metric.kind());
            }
            let mut samples: Vec<(&Vec<String>, &u64)> = values
                .range((metric, Vec::new())..)
                .take_while(|((m, _), _)| *m == metric)
                .map(|((_, labels), value)| (labels, value))
                .collect();
            if metric == Metric::BackendLoginBucket {
                // Buckets in increasing order of `le`, +Inf last.
                let le = |l: &Vec<String>| l.get(1).and_then(|v| parse_le(v)).unwrap_or(f64::MAX);
                samples.sort_by(|a, b| a.0[0].cmp(&b.0[0]).then(le(a.0).total_cmp(&le(b.0))));
            }
            for (labels, value) in samples {
                out.push_str(family);
                out.push_str(metric.suffix());
                let pairs: Vec<String> = metric
                    .labels()
                    .iter()
                    .zip(labels)
                    .map(|(name, v)| format!("{name}=\"{}\"", escape_label(v)))
                    .collect();
                if !pairs.is_empty() {
                    let _ = write!(out, "{{{}}}", pairs.join(","));
                }
                let shown = if metric == Metric::BackendLoginSum {
                    format_value(*value as f64 / 1e6)
                } else {
                    value.to_string()
                };
                let _ = writeln!(out, " {shown}");
            }
        }
        out
    }
}

/// The process's registry.
pub fn global() -> &'static Registry {
    static GLOBAL: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    GLOBAL.get_or_init(Registry::default)
}

/// Adds `n` to a counter of the process's registry.
pub fn add(metric: Metric, labels: &[&str], n: u64) {
    global().add(metric, labels, n);
}

/// A label value in the text format: backslash, double quote and line feed escaped.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value: integers without a fraction, `+Inf` as Prometheus writes it.
fn format_value(v: f64) -> String {
    if v.is_infinite() {
        "+Inf".into()
    } else {
        format!("{v}")
    }
}

fn parse_le(v: &str) -> Option<f64> {
    if v == "+Inf" {
        Some(f64::INFINITY)
    } else {
        v.parse().ok()
    }
}

/// One report line: `CODE LABEL... VALUE`, labels with `%`, space and controls as `%XX`.
fn report_line(metric: Metric, labels: &[String], value: u64) -> String {
    let mut line = metric.code().to_string();
    for label in labels {
        line.push(' ');
        line.push_str(&escape_word(label));
    }
    let _ = write!(line, " {value}");
    line
}

fn escape_word(s: &str) -> String {
    if s.is_empty() {
        return "%".into();
    }
    let mut out = String::new();
    for c in s.chars() {
        if c == '%' || c <= ' ' || c == '\x7f' {
            let _ = write!(out, "%{:02X}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

fn unescape_word(s: &str) -> Option<String> {
    if s == "%" {
        return Some(String::new());
    }
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_help_type_and_samples_in_order() {
        let r = Registry::default();
        r.add(Metric::Logins, &["imap", "failed", "rejected"], 2);
        r.add(Metric::Logins, &["imap", "ok", "none"], 3);
        r.set(Metric::BackendUp, &["dovecot"], 1);
        r.add(Metric::Refused, &["max-sessions"], 1);
        let text = r.render();
        assert!(text.contains(
            "# HELP imapgate_logins_total Login attempts, per listener, result (ok, failed) and reason.\n\
             # TYPE imapgate_logins_total counter\n\
             imapgate_logins_total{listener=\"imap\",result=\"failed\",reason=\"rejected\"} 2\n\
             imapgate_logins_total{listener=\"imap\",result=\"ok\",reason=\"none\"} 3\n"
        ), "{text}");
        assert!(text.contains(
            "# TYPE imapgate_backend_up gauge\nimapgate_backend_up{backend=\"dovecot\"} 1\n"
        ));
        assert!(text.contains("imapgate_refused_total{reason=\"max-sessions\"} 1\n"));
        // Every family has HELP and TYPE, even with no sample yet, each once.
        for m in ALL {
            assert_eq!(text.matches(&format!("# TYPE {} ", m.family())).count(), 1, "{m:?}");
            assert_eq!(text.matches(&format!("# HELP {} ", m.family())).count(), 1, "{m:?}");
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("a\nb"), "a\\nb");
        let r = Registry::default();
        r.add(Metric::RuleDecisions, &["x\"y", "refuse"], 1);
        assert!(r
            .render()
            .contains("imapgate_rule_decisions_total{rule=\"x\\\"y\",decision=\"refuse\"} 1\n"));
    }

    #[test]
    fn the_histogram_is_cumulative_with_sum_in_seconds() {
        let r = Registry::default();
        r.observe_login("b", Duration::from_millis(30));
        r.observe_login("b", Duration::from_millis(300));
        let text = r.render();
        assert!(text.contains("# TYPE imapgate_backend_login_seconds histogram\n"));
        assert!(
            text.contains("imapgate_backend_login_seconds_bucket{backend=\"b\",le=\"0.025\"} 0"),
            "{text}"
        );
        assert!(text.contains("imapgate_backend_login_seconds_bucket{backend=\"b\",le=\"0.05\"} 1"));
        assert!(text.contains("imapgate_backend_login_seconds_bucket{backend=\"b\",le=\"0.5\"} 2"));
        assert!(text.contains("imapgate_backend_login_seconds_bucket{backend=\"b\",le=\"+Inf\"} 2"));
        let order: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("imapgate_backend_login_seconds_bucket"))
            .map(|l| l.split("le=\"").nth(1).and_then(|v| v.split('"').next()).unwrap_or(""))
            .collect();
        assert_eq!(
            order,
            ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]
        );
        assert!(text.contains("imapgate_backend_login_seconds_sum{backend=\"b\"} 0.33\n"));
        assert!(text.contains("imapgate_backend_login_seconds_count{backend=\"b\"} 2\n"));
    }

    #[test]
    fn reports_carry_deltas_and_gauges_to_another_registry() {
        let child = Registry::default();
        let parent = Registry::default();
        parent.add(Metric::Lookups, &["users", "found"], 5);
        parent.add(Metric::SessionsOpen, &["imap"], 1);
        child.add(Metric::Lookups, &["users", "found"], 2);
        child.add(Metric::Logins, &["my listener", "failed", "100%"], 1);
        child.set(Metric::BackendUp, &["dovecot"], 0);
        child.add(Metric::SessionsOpen, &["imap"], 7);
        let lines = child.drain();
        assert!(lines.iter().all(|l| !l.starts_with("open ")), "{lines:?}");
        for line in &lines {
            assert!(parent.apply_report(line), "{line}");
        }
        assert_eq!(parent.get(Metric::Lookups, &["users", "found"]), 7);
        assert_eq!(parent.get(Metric::Logins, &["my listener", "failed", "100%"]), 1);
        assert_eq!(parent.get(Metric::SessionsOpen, &["imap"]), 1);
        assert_eq!(parent.get(Metric::BackendUp, &["dovecot"]), 0);
        assert!(child.drain().is_empty(), "drained twice");
        // A slow login leaves the low buckets at zero: not reported, still rendered.
        child.observe_login("dovecot", Duration::from_secs(3));
        let lines = child.drain();
        assert_eq!(lines.len(), 5, "{lines:?}");
        for line in &lines {
            assert!(parent.apply_report(line), "{line}");
        }
        let text = parent.render();
        assert_eq!(text.matches("imapgate_backend_login_seconds_bucket{").count(), 12, "{text}");
        assert!(text.contains("_bucket{backend=\"dovecot\",le=\"2.5\"} 0\n"), "{text}");
        assert!(text.contains("_bucket{backend=\"dovecot\",le=\"5\"} 1\n"), "{text}");
        // A session process cannot set the listener's gauge, nor send garbage.
        for bad in
            ["open imap 9", "lookup users 1", "lookup users found x", "nope 1", "", "hit %zz 1"]
        {
            assert!(!parent.apply_report(bad), "{bad}");
        }
        assert_eq!(parent.get(Metric::SessionsOpen, &["imap"]), 1);
    }

    #[test]
    fn series_are_bounded() {
        let r = Registry::default();
        for i in 0..MAX_SERIES + 10 {
            r.add(Metric::CacheHits, &[&i.to_string()], 1);
        }
        assert_eq!(r.with(|v| v.len()), MAX_SERIES);
        // Existing series still count.
        r.add(Metric::CacheHits, &["0"], 1);
        assert_eq!(r.get(Metric::CacheHits, &["0"]), 2);
    }

    #[test]
    fn retain_forgets_removed_backends() {
        let r = Registry::default();
        r.set(Metric::BackendUp, &["a"], 1);
        r.set(Metric::BackendUp, &["b"], 0);
        r.add(Metric::Refused, &["b"], 1);
        r.retain(Metric::BackendUp, &["a"]);
        assert_eq!(r.get(Metric::BackendUp, &["a"]), 1);
        assert!(!r.render().contains("backend=\"b\""));
        assert_eq!(r.get(Metric::Refused, &["b"]), 1);
    }
}
