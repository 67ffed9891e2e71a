//! Building the rules from the configuration's `[rule NAME]` sections, the way TLS
//! contexts are built from its TLS keys: condition keys go to `Conditions`, the rest to
//! the kind named by `type` (`registry.rs`), and every problem is reported as
//! `PATH:LINE: message` at its key, all of them before failing.

use std::sync::Arc;

use super::registry::{self, Settings};
use super::{condition, Conditions, RuleDef};
use crate::config::{Config, ConfigError, ConfigErrors, RuleSection};

/// The rules of `config`, in file order (a listener's `rules` index into them).
pub fn load(config: &Config) -> Result<Vec<Arc<RuleDef>>, ConfigErrors> {
    let mut errors = Vec::new();
    let mut err = |line: usize, msg: String| {
        errors.push(ConfigError { path: config.path.clone(), line, msg });
    };
    let mut rules = Vec::new();
    for section in &config.rules {
        if let Some(rule) = build(section, config, &mut err) {
            rules.push(Arc::new(rule));
        }
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        errors.sort_by_key(|e| e.line);
        Err(ConfigErrors(errors))
    }
}

fn build(
    section: &RuleSection,
    config: &Config,
    err: &mut impl FnMut(usize, String),
) -> Option<RuleDef> {
    let mut conditions = Conditions::default();
    let mut kind_keys = Vec::new();
    let mut failed = false;
    for (key, value, line) in &section.keys {
        if !Conditions::is_condition_key(key) {
            kind_keys.push((key.clone(), value.clone(), *line));
        } else if let Err(m) = conditions.add(key, value) {
            err(*line, format!("{key}: {m}"));
            failed = true;
        } else if let Some(m) = undefined(key, value, config) {
            err(*line, format!("{key}: {m}"));
            failed = true;
        }
    }
    let (kind_name, kind_line) = &section.kind;
    let base = config.path.parent().unwrap_or(std::path::Path::new(""));
    let mut settings = Settings::new(kind_keys, section.line).relative_to(base);
    let kind = match registry::build(kind_name, &mut settings) {
        Ok(kind) => kind,
        Err(m) => {
            err(*kind_line, format!("type: {m}"));
            None
        }
    };
    for (line, msg) in settings.errors {
        err(line, msg);
        failed = true;
    }
    let kind = kind?;
    (!failed).then(|| RuleDef { name: section.name.clone(), line: section.line, conditions, kind })
}

/// A `backend` or `listener` condition naming a section the configuration lacks: a typo
/// there would make the rule silently never (or, negated, always) apply.
fn undefined(key: &str, value: &str, config: &Config) -> Option<String> {
    let (kind, names) = condition::references(key, value)?;
    let defined = |name: &str| match kind {
        "backend" => config.backend_index(name).is_some(),
        _ => config.listeners.iter().any(|l| l.name == name),
    };
    let name = names.into_iter().find(|n| !defined(n))?;
    Some(format!("undefined {kind} {name:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn errors(rules: &str) -> Vec<String> {
        let text = format!(
            "[backend d]\nhost = 127.0.0.1\n[map m]\ntype = static\ndefault = d\n\
             [listener l]\nlisten = 127.0.0.1:1143\nmap = m\n{rules}"
        );
        let config = Config::parse(&text, Path::new("x.ini")).expect("config parses");
        match load(&config) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn an_audit_file_is_taken_relative_to_the_configuration_file() {
        let dir = std::env::temp_dir().join(format!("imapgate-rules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = "[backend d]\nhost = 127.0.0.1\n[map m]\ntype = static\ndefault = d\n\
                    [listener l]\nlisten = 127.0.0.1:1143\nmap = m\n\
                    [rule a]\ntype = audit\nfile = audit.log\n";
        let config = Config::parse(text, &dir.join("x.ini")).expect("config parses");
        let rules = load(&config).expect("rules load");
        rules[0].kind.prepare().expect("audit file opens");
        let made = dir.join("audit.log").exists();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(made, "audit.log not made next to x.ini");
    }

    #[test]
    fn problems_point_at_their_lines() {
        assert_eq!(errors("[rule r]\ntype = commands\ndeny = DELETE\n"), Vec::<String>::new());
        assert_eq!(
            errors("[rule r]\ntype = nonsense\n"),
            vec!["x.ini:10: type: unknown rule type \"nonsense\" (known: commands, capabilities, hide_folders, limits, audit, rewrite_folders)"]
        );
        assert_eq!(
            errors("[rule r]\ntype = commands\ndeny = DELETE\nclient = 10.0.0.0/99\nbogus = 1\n"),
            vec![
                "x.ini:12: client: invalid address block \"10.0.0.0/99\" (expected e.g. 192.0.2.0/24 or ::1)",
                "x.ini:13: unknown key \"bogus\" for type = commands"
            ]
        );
        assert_eq!(
            errors("[rule r]\ntype = commands\ndeny = X\nbackend = d nowhere\n"),
            vec!["x.ini:12: backend: undefined backend \"nowhere\""]
        );
        assert_eq!(
            errors("[rule r]\ntype = commands\ndeny = X\nlistener = l\nnot_listener = imap\n"),
            vec!["x.ini:13: not_listener: undefined listener \"imap\""]
        );
        assert_eq!(
            errors("[rule r]\ntype = commands\ndeny = X\nlistener = l\nnot_backend = d\n"),
            Vec::<String>::new()
        );
    }
}
