//! `type = commands`: an allow-list or deny-list of commands, answered by imapgate with a
//! tagged NO. A listed name covers its `UID` form too (`MOVE` denies `UID MOVE`); `UID`
//! itself covers every UID command. The relay guarantees a refused command's literals
//! never reach the backend.

use std::sync::Arc;

use super::registry::{words, Settings};
use super::{Command, Context, Rule, RuleKind, Verdict};

/// Commands every allow-list permits: a client must always be able to leave.
const ALWAYS_ALLOWED: &[&str] = &["LOGOUT"];

#[derive(Debug)]
struct Commands {
    allow: bool,
    names: Vec<String>,
}

/// Builds the kind from `deny = NAMES` or `allow = NAMES`.
pub fn build(settings: &mut Settings) -> Option<Arc<dyn RuleKind>> {
    let (deny, allow) = (settings.get("deny"), settings.get("allow"));
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
    Some(Arc::new(Commands { allow, names }))
}

impl RuleKind for Commands {
    fn start(&self) -> Box<dyn Rule> {
        Box::new(Session { allow: self.allow, names: self.names.clone() })
    }
}

struct Session {
    allow: bool,
    names: Vec<String>,
}

impl Session {
    fn listed(&self, name: &str) -> bool {
        let base = name.strip_prefix("UID ").unwrap_or(name);
        let uid = name.starts_with("UID ");
        self.names.iter().any(|n| n == base || (uid && n == "UID"))
    }
}

impl Rule for Session {
    fn on_command(&mut self, cmd: &mut Command, _cx: &mut Context) -> Verdict {
        let permitted = if self.allow {
            self.listed(&cmd.name) || ALWAYS_ALLOWED.contains(&cmd.name.as_str())
        } else {
            !self.listed(&cmd.name)
        };
        if permitted {
            return Verdict::Pass;
        }
        Verdict::Reply(format!("NO [NOPERM] {} is not permitted here.", cmd.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(kind: &Arc<dyn RuleKind>, name: &str) -> Verdict {
        let mut cmd = Command::parse(format!("a {name} x\r\n").as_bytes(), vec![], true).unwrap();
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
    }
}
