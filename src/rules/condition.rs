//! When a rule applies: a conjunction of tests on the session, each optionally negated
//! with a `not_` prefix on its key. A test on data the session has not seen (no ID sent)
//! is false, so `not_id.name = ...` holds for clients that send no ID at all.
//!
//! Keys: `client` (CIDR list), `listener` (names), `tls` (yes/no), `client_cert` (regex
//! on the subject), `user` (globs with `*` and `?`), `user_regex`, `backend` (names),
//! `id.FIELD` (regex on an ID parameter, field name in any case).

use regex::Regex;

use super::Context;
use crate::config::{parse_yes_no, Cidr};

/// Glob match with `*` (any run) and `?` (one character).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[derive(Clone, Debug)]
enum Test {
    Client(Vec<Cidr>),
    Listener(Vec<String>),
    Tls(bool),
    ClientCert(Regex),
    User(Vec<String>),
    UserRegex(Regex),
    Backend(Vec<String>),
    Id(String, Regex),
}

impl Test {
    fn holds(&self, cx: &Context) -> bool {
        match self {
            Test::Client(blocks) => {
                cx.client_ip.is_some_and(|ip| blocks.iter().any(|b| b.contains(ip)))
            }
            Test::Listener(names) => names.contains(&cx.listener),
            Test::Tls(on) => cx.tls == *on,
            Test::ClientCert(re) => cx.client_cert.as_deref().is_some_and(|s| re.is_match(s)),
            Test::User(globs) => globs.iter().any(|g| glob_match(g, &cx.user)),
            Test::UserRegex(re) => re.is_match(&cx.user),
            Test::Backend(names) => names.contains(&cx.backend),
            Test::Id(field, re) => cx.client_id.as_ref().is_some_and(|params| {
                params.iter().any(|(f, v)| {
                    f.eq_ignore_ascii_case(field) && v.as_deref().is_some_and(|v| re.is_match(v))
                })
            }),
        }
    }
}

/// The condition keys (each also with `not_`), beside `id.FIELD`.
pub const CONDITION_KEYS: &[&str] =
    &["client", "listener", "tls", "client_cert", "user", "user_regex", "backend"];

/// The prefix of conditions on an ID parameter: `id.name`, `id.vendor`.
pub const ID_PREFIX: &str = "id.";

/// The conditions of one rule; empty means "every session".
#[derive(Clone, Debug, Default)]
pub struct Conditions {
    tests: Vec<(bool, Test)>,
}

impl Conditions {
    /// True when a key names a condition (so a rule section may hold it).
    pub fn is_condition_key(key: &str) -> bool {
        let key = key.strip_prefix("not_").unwrap_or(key);
        CONDITION_KEYS.contains(&key) || key.strip_prefix(ID_PREFIX).is_some_and(|f| !f.is_empty())
    }

    /// Adds the condition `key = value`; the error text is for `PATH:LINE: key: ...`.
    pub fn add(&mut self, key: &str, value: &str) -> Result<(), String> {
        let (negated, bare) = match key.strip_prefix("not_") {
            Some(rest) => (true, rest),
            None => (false, key),
        };
        let words = || value.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        let regex = |v: &str| Regex::new(v).map_err(|e| format!("bad regex: {e}"));
        let test = match bare {
            "client" => {
                Test::Client(value.split_whitespace().map(Cidr::parse).collect::<Result<_, _>>()?)
            }
            "listener" => Test::Listener(words()),
            "tls" => Test::Tls(parse_yes_no(value.trim())?),
            "client_cert" => Test::ClientCert(regex(value)?),
            "user" => Test::User(words()),
            "user_regex" => Test::UserRegex(regex(value)?),
            "backend" => Test::Backend(words()),
            _ => match bare.strip_prefix(ID_PREFIX) {
                Some(field) if !field.is_empty() => Test::Id(field.to_string(), regex(value)?),
                _ => return Err("unknown condition".into()),
            },
        };
        if value.trim().is_empty() {
            return Err("empty value".into());
        }
        self.tests.push((negated, test));
        Ok(())
    }

    /// True when every test holds (negated tests must fail).
    pub fn matches(&self, cx: &Context) -> bool {
        self.tests.iter().all(|(negated, test)| test.holds(cx) != *negated)
    }

    /// True when a test looks at ID parameters.
    pub fn tests_id(&self) -> bool {
        self.tests.iter().any(|(_, t)| matches!(t, Test::Id(..)))
    }
}

/// The sections a `backend` or `listener` condition (or its `not_` form) names, for the
/// configuration check: the kind of section and the names, split as the test splits them.
pub fn references<'v>(key: &str, value: &'v str) -> Option<(&'static str, Vec<&'v str>)> {
    let kind = match key.strip_prefix("not_").unwrap_or(key) {
        "backend" => "backend",
        "listener" => "listener",
        _ => return None,
    };
    Some((kind, value.split_whitespace().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx() -> Context {
        Context {
            client_ip: Some("192.0.2.7".parse().unwrap()),
            listener: "imap".into(),
            user: "alice@example.com".into(),
            backend: "d1".into(),
            ..Context::default()
        }
    }

    #[test]
    fn cidr_blocks() {
        let b = Cidr::parse("192.0.2.0/24").unwrap();
        assert!(b.contains("192.0.2.200".parse().unwrap()));
        assert!(b.contains("::ffff:192.0.2.1".parse().unwrap()));
        assert!(!b.contains("192.0.3.1".parse().unwrap()));
        assert!(Cidr::parse("::/0").unwrap().contains("2001:db8::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("10.1.1.1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nonsense").is_err());
    }

    #[test]
    fn globs() {
        assert!(glob_match("*@example.com", "alice@example.com"));
        assert!(glob_match("a?ice*", "alice@x"));
        assert!(!glob_match("bob*", "alice"));
        assert!(glob_match("*", ""));
    }

    #[test]
    fn id_conditions_and_negation_for_clients_without_id() {
        let mut c = Conditions::default();
        c.add("not_id.name", "(?i)^kontact$").unwrap();
        let mut session = cx();
        assert!(c.matches(&session), "no ID at all: the negated test holds");
        session.client_id = Some(vec![("NAME".into(), Some("Kontact".into()))]);
        assert!(!c.matches(&session));
        session.client_id = Some(vec![("name".into(), Some("Thunderbird".into()))]);
        assert!(c.matches(&session));
    }

    #[test]
    fn every_test_must_hold() {
        let mut c = Conditions::default();
        c.add("client", "192.0.2.0/24 198.51.100.0/24").unwrap();
        c.add("user", "*@example.com").unwrap();
        c.add("not_backend", "d2").unwrap();
        c.add("tls", "no").unwrap();
        assert!(c.matches(&cx()));
        c.add("listener", "imaps").unwrap();
        assert!(!c.matches(&cx()));
        assert!(Conditions::default().add("user_regex", "(").is_err());
        assert!(Conditions::is_condition_key("not_id.vendor"));
        assert!(!Conditions::is_condition_key("id."));
    }
}
