//! The one place that knows every rule kind: `type = NAME` in a `[rule NAME]` section
//! selects a constructor here, with the keys it takes (which the manual and the example
//! configuration must document: `crate::docs`). Adding a kind means adding its module and
//! one line below.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::RuleKind;

/// The keys of one `[rule NAME]` section that belong to its kind (conditions and `type`
/// are handled by the configuration loader), with their lines, and the problems found.
#[derive(Debug, Default)]
pub struct Settings {
    entries: Vec<(String, String, usize)>,
    used: Vec<bool>,
    /// The keys the kind declared; reading another is a bug the tests catch.
    declared: &'static [&'static str],
    /// Problems as (line, message).
    pub errors: Vec<(usize, String)>,
    /// Line of the section header, for problems that concern the whole section.
    pub line: usize,
    /// The configuration file's directory, which relative file names are taken from.
    base: PathBuf,
}

impl Settings {
    /// Settings from (key, value, line) entries.
    pub fn new(entries: Vec<(String, String, usize)>, line: usize) -> Settings {
        let used = vec![false; entries.len()];
        Settings { entries, used, declared: &[], errors: Vec::new(), line, base: PathBuf::new() }
    }

    /// Relative file names are taken relative to `base` (the configuration's directory).
    pub fn relative_to(mut self, base: &Path) -> Settings {
        self.base = base.to_path_buf();
        self
    }

    /// A file name as given in a value: relative to the configuration file's directory,
    /// like every file the configuration names.
    pub fn path(&self, value: &str) -> PathBuf {
        self.base.join(value)
    }

    /// The value and line of `key`, if given (a second occurrence is an error).
    pub fn get(&mut self, key: &str) -> Option<(String, usize)> {
        self.check_declared(key);
        let mut found = None;
        for (i, (k, v, line)) in self.entries.iter().enumerate() {
            if k == key {
                self.used[i] = true;
                if found.is_some() {
                    self.errors.push((*line, format!("{key}: given twice")));
                } else {
                    found = Some((v.clone(), *line));
                }
            }
        }
        found
    }

    /// Every value of a repeatable `key`, with its line.
    pub fn all(&mut self, key: &str) -> Vec<(String, usize)> {
        self.check_declared(key);
        let mut out = Vec::new();
        for (i, (k, v, line)) in self.entries.iter().enumerate() {
            if k == key {
                self.used[i] = true;
                out.push((v.clone(), *line));
            }
        }
        out
    }

    /// A kind built through `build` reads only the keys `KINDS` declares for it (a kind's
    /// own unit tests call its constructor directly, with nothing declared).
    fn check_declared(&self, key: &str) {
        debug_assert!(
            self.declared.is_empty() || self.declared.contains(&key),
            "rule kind reads undeclared key {key}"
        );
    }

    /// Records a problem.
    pub fn error(&mut self, line: usize, msg: impl Into<String>) {
        self.errors.push((line, msg.into()));
    }

    /// Reports every key the kind did not ask for.
    pub fn finish(&mut self, kind: &str) {
        for (i, (k, _, line)) in self.entries.iter().enumerate() {
            if !self.used[i] {
                self.errors.push((*line, format!("unknown key {k:?} for type = {kind}")));
            }
        }
    }
}

type Constructor = fn(&mut Settings) -> Option<Arc<dyn RuleKind>>;

/// Every rule kind: its `type` name, its constructor and the keys it takes.
pub const KINDS: &[(&str, Constructor, &[&str])] = &[
    ("commands", super::commands::build, &["deny", "allow", "implicit_expunge"]),
    ("capabilities", super::capabilities::build, &["remove", "keep"]),
    ("hide_folders", super::hide_folders::build, &["folders", "metadata", "types"]),
    (
        "limits",
        super::limits::build,
        &[
            "max_bytes_from_client",
            "max_bytes_to_client",
            "max_append_size",
            "max_literal_to_client",
            "max_session_time",
            "idle_timeout",
            "idle_command_timeout",
            "max_commands",
        ],
    ),
    ("audit", super::audit::build, &["file"]),
    ("rewrite_folders", super::rewrite_folders::build, &["folder"]),
];

/// Builds the kind `name` from its settings; `None` when there were errors (in
/// `settings.errors`) or the kind is unknown (the caller reports that).
pub fn build(name: &str, settings: &mut Settings) -> Result<Option<Arc<dyn RuleKind>>, String> {
    let Some((_, constructor, keys)) = KINDS.iter().find(|(n, _, _)| *n == name) else {
        let known: Vec<&str> = KINDS.iter().map(|(n, _, _)| *n).collect();
        return Err(format!("unknown rule type {name:?} (known: {})", known.join(", ")));
    };
    settings.declared = keys;
    debug_assert!(!keys.is_empty());
    let kind = constructor(settings);
    settings.finish(name);
    Ok(kind.filter(|_| settings.errors.is_empty()))
}
