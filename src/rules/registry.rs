//! The one place that knows every rule kind: `type = NAME` in a `[rule NAME]` section
//! selects a constructor here. Adding a kind means adding its module and one line below.

use std::sync::Arc;

use super::RuleKind;

/// The keys of one `[rule NAME]` section that belong to its kind (conditions and `type`
/// are handled by the configuration loader), with their lines, and the problems found.
#[derive(Debug, Default)]
pub struct Settings {
    entries: Vec<(String, String, usize)>,
    used: Vec<bool>,
    /// Problems as (line, message).
    pub errors: Vec<(usize, String)>,
    /// Line of the section header, for problems that concern the whole section.
    pub line: usize,
}

impl Settings {
    /// Settings from (key, value, line) entries.
    pub fn new(entries: Vec<(String, String, usize)>, line: usize) -> Settings {
        let used = vec![false; entries.len()];
        Settings { entries, used, errors: Vec::new(), line }
    }

    /// The value and line of `key`, if given (a second occurrence is an error).
    pub fn get(&mut self, key: &str) -> Option<(String, usize)> {
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
        let mut out = Vec::new();
        for (i, (k, v, line)) in self.entries.iter().enumerate() {
            if k == key {
                self.used[i] = true;
                out.push((v.clone(), *line));
            }
        }
        out
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

/// Every rule kind: its `type` name and its constructor.
const KINDS: &[(&str, Constructor)] = &[
    ("commands", super::commands::build),
    ("capabilities", super::capabilities::build),
    ("hide_folders", super::hide_folders::build),
    ("limits", super::limits::build),
    ("audit", super::audit::build),
    ("rewrite_folders", super::rewrite_folders::build),
];

/// Builds the kind `name` from its settings; `None` when there were errors (in
/// `settings.errors`) or the kind is unknown (the caller reports that).
pub fn build(name: &str, settings: &mut Settings) -> Result<Option<Arc<dyn RuleKind>>, String> {
    let Some((_, constructor)) = KINDS.iter().find(|(n, _)| *n == name) else {
        let known: Vec<&str> = KINDS.iter().map(|(n, _)| *n).collect();
        return Err(format!("unknown rule type {name:?} (known: {})", known.join(", ")));
    };
    let kind = constructor(settings);
    settings.finish(name);
    Ok(kind.filter(|_| settings.errors.is_empty()))
}
