//! `type = commands`: an allow-list or deny-list of commands, answered by imapgate with a
//! tagged NO. A listed name covers its `UID` form too (`MOVE` denies `UID MOVE`); `UID`
//! itself covers every UID command. The relay guarantees a refused command's literals
//! never reach the backend.
//!
//! Expunging has more names than EXPUNGE: CLOSE expunges the selected mailbox, MOVE
//! (RFC 6851) and REPLACE (RFC 8508) expunge what they move or replace. When EXPUNGE is
//! not permitted, `implicit_expunge = deny` (the default) keeps it so: CLOSE becomes
//! UNSELECT where the backend offers it (and is refused where it does not), MOVE and
//! REPLACE are refused. `implicit_expunge = allow` lets them through.

use std::sync::Arc;

use super::registry::Settings;
use super::{Command, Context, Rule, RuleKind, Verdict};
use crate::config::words;

/// Commands every allow-list permits: a client must always be able to leave.
const ALWAYS_ALLOWED: &[&str] = &["LOGOUT"];

#[derive(Debug, Clone)]
struct Commands {
    allow: bool,
    names: Vec<String>,
    /// Commands that expunge implicitly follow EXPUNGE's verdict.
    guard_implicit: bool,
}

/// Commands that expunge without being EXPUNGE; CLOSE is handled apart (it can be made
/// safe by turning it into UNSELECT).
const EXPUNGING: &[&str] = &["MOVE", "UID MOVE", "REPLACE", "UID REPLACE"];

/// Builds the kind from `deny = NAMES` or `allow = NAMES`.
pub fn build(settings: &mut Settings) -> Option<Arc<dyn RuleKind>> {
    // Every key is read before any is judged: one mistake must not leave another key
    // unread, to be reported as unknown too.
    let (deny, allow) = (settings.get("deny"), settings.get("allow"));
    let guard_implicit = match settings.get("implicit_expunge") {
        None => Some(true),
        Some((v, line)) => match v.to_ascii_lowercase().as_str() {
            "deny" => Some(true),
            "allow" => Some(false),
            _ => {
                settings.error(line, format!("implicit_expunge: {v:?} is not deny or allow"));
                None
            }
        },
    };
    let (list, allow, line) = match (deny, allow) {
        (Some((v, l)), None) => (v, false, l),
        (None, Some((v, l))) => (v, true, l),
        (Some(_), Some((_, l))) => {
            settings.error(l, "give either deny or allow, not both");
            return None;
        }
        (None, None) => {
            settings.error(settings.line, "type = commands needs deny = NAMES or allow = NAMES");
            return None;
        }
    };
    let names: Vec<String> = match words(&list) {
        Ok(w) => w.iter().map(|n| n.to_ascii_uppercase()).collect(),
        Err(e) => {
            settings.error(line, e);
            return None;
        }
    };
    if let Some(bad) =
        names.iter().find(|n| !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    {
        settings.error(line, format!("{bad:?} is not a command name"));
        return None;
    }
    Some(Arc::new(Commands { allow, names, guard_implicit: guard_implicit? }))
}

impl RuleKind for Commands {
    fn start(&self) -> Box<dyn Rule> {
        Box::new(self.clone())
    }
}

impl Commands {
    fn listed(&self, name: &str) -> bool {
        let base = name.strip_prefix("UID ").unwrap_or(name);
        let uid = name.starts_with("UID ");
        self.names.iter().any(|n| n == base || (uid && n == "UID"))
    }

    fn permitted(&self, name: &str) -> bool {
        if self.allow {
            self.listed(name) || ALWAYS_ALLOWED.contains(&name)
        } else {
            !self.listed(name)
        }
    }
}

impl Rule for Commands {
    fn on_command(&mut self, cmd: &mut Command, cx: &mut Context) -> Verdict {
        if !self.permitted(&cmd.name) {
            return Verdict::Reply(format!("NO [NOPERM] {} is not permitted here.", cmd.name));
        }
        if !self.guard_implicit || self.permitted("EXPUNGE") {
            return Verdict::Pass;
        }
        if cmd.name == "CLOSE" {
            if crate::imap::capability::has(&cx.capabilities, "UNSELECT") {
                // Leaves the mailbox like CLOSE, without expunging it.
                cmd.name = "UNSELECT".into();
                return Verdict::Pass;
            }
            return Verdict::Reply(
                "NO [NOPERM] CLOSE would expunge; EXPUNGE is not permitted here.".into(),
            );
        }
        if EXPUNGING.contains(&cmd.name.as_str()) {
            return Verdict::Reply(format!(
                "NO [NOPERM] {} expunges; EXPUNGE is not permitted here.",
                cmd.name
            ));
        }
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(kind: &Arc<dyn RuleKind>, name: &str) -> Verdict {
        let mut cmd = Command::parse(format!("a {name} x\r\n").as_bytes()).unwrap();
        kind.start().on_command(&mut cmd, &mut Context::default())
    }

    fn kind(key: &str, value: &str) -> Arc<dyn RuleKind> {
        let mut s = Settings::new(vec![(key.into(), value.into(), 3)], 1);
        build(&mut s).unwrap()
    }

    #[test]
    fn deny_lists_cover_case_and_uid_forms() {
        let k = kind("deny", "delete Move");
        assert_eq!(
            verdict(&k, "DELETE"),
            Verdict::Reply("NO [NOPERM] DELETE is not permitted here.".into())
        );
        assert_ne!(verdict(&k, "uid move"), Verdict::Pass);
        assert_eq!(verdict(&k, "SELECT"), Verdict::Pass);
        let k = kind("deny", "UID");
        assert_ne!(verdict(&k, "UID FETCH"), Verdict::Pass);
        assert_eq!(verdict(&k, "FETCH"), Verdict::Pass);
    }

    #[test]
    fn commands_that_expunge_follow_expunge_unless_allowed() {
        let k = kind("deny", "EXPUNGE");
        let mut cx = Context { capabilities: vec!["UNSELECT".into()], ..Context::default() };
        let mut close = Command::parse(b"a CLOSE\r\n").unwrap();
        assert_eq!(k.start().on_command(&mut close, &mut cx), Verdict::Pass);
        assert_eq!(close.name, "UNSELECT");
        let mut close = Command::parse(b"a CLOSE\r\n").unwrap();
        assert_ne!(k.start().on_command(&mut close, &mut Context::default()), Verdict::Pass);
        for name in ["UID MOVE 1 x", "MOVE 1 x", "REPLACE 1 x {1}\r\nz"] {
            let mut cmd = Command::parse(format!("a {name}\r\n").as_bytes()).unwrap();
            assert_ne!(k.start().on_command(&mut cmd, &mut cx), Verdict::Pass, "{name}");
        }
        let mut s = Settings::new(
            vec![
                ("deny".into(), "EXPUNGE".into(), 3),
                ("implicit_expunge".into(), "allow".into(), 4),
            ],
            1,
        );
        let lax = build(&mut s).unwrap();
        let mut mv = Command::parse(b"a MOVE 1 x\r\n").unwrap();
        assert_eq!(lax.start().on_command(&mut mv, &mut cx), Verdict::Pass);
        let allow = kind("allow", "SELECT CLOSE");
        let mut close = Command::parse(b"a CLOSE\r\n").unwrap();
        assert_eq!(allow.start().on_command(&mut close, &mut cx), Verdict::Pass);
        assert_eq!(close.name, "UNSELECT", "an allow-list without EXPUNGE guards CLOSE too");
    }

    #[test]
    fn allow_lists_always_let_the_client_leave() {
        let k = kind("allow", "SELECT FETCH");
        assert_eq!(verdict(&k, "UID FETCH"), Verdict::Pass);
        assert_eq!(verdict(&k, "LOGOUT"), Verdict::Pass);
        assert_ne!(verdict(&k, "EXPUNGE"), Verdict::Pass);
    }

    #[test]
    fn bad_settings_are_reported() {
        let mut s = Settings::new(
            vec![("deny".into(), "A B".into(), 3), ("allow".into(), "C".into(), 4)],
            1,
        );
        assert!(build(&mut s).is_none());
        assert_eq!(s.errors, vec![(4, "give either deny or allow, not both".to_string())]);
        let mut s = Settings::new(vec![], 7);
        assert!(build(&mut s).is_none());
        assert_eq!(s.errors[0].0, 7);
        // Through the registry, which reports the keys a kind left unread: the one
        // mistake is the only error.
        let mut s = Settings::new(
            vec![
                ("deny".into(), "A".into(), 3),
                ("allow".into(), "B".into(), 4),
                ("implicit_expunge".into(), "allow".into(), 5),
            ],
            1,
        );
        assert!(matches!(super::super::registry::build("commands", &mut s), Ok(None)));
        assert_eq!(s.errors, vec![(4, "give either deny or allow, not both".to_string())]);
        let mut s = Settings::new(vec![("implicit_expunge".into(), "never".into(), 5)], 1);
        assert!(build(&mut s).is_none());
        assert!(s.errors.contains(&(5, "implicit_expunge: \"never\" is not deny or allow".into())));
    }

    #[test]
    fn implicit_expunge_is_read_in_any_case() {
        let mut s = Settings::new(
            vec![
                ("deny".into(), "EXPUNGE".into(), 3),
                ("implicit_expunge".into(), "Allow".into(), 4),
            ],
            1,
        );
        let lax = build(&mut s).expect("implicit_expunge = Allow is allow");
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        let mut mv = Command::parse(b"a MOVE 1 x\r\n").unwrap();
        assert_eq!(lax.start().on_command(&mut mv, &mut Context::default()), Verdict::Pass);
        let mut s = Settings::new(
            vec![
                ("deny".into(), "EXPUNGE".into(), 3),
                ("implicit_expunge".into(), "DENY".into(), 4),
            ],
            1,
        );
        let strict = build(&mut s).expect("implicit_expunge = DENY is deny");
        let mut mv = Command::parse(b"a MOVE 1 x\r\n").unwrap();
        assert_ne!(strict.start().on_command(&mut mv, &mut Context::default()), Verdict::Pass);
    }
}
