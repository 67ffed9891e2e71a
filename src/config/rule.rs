//! `[rule NAME]` sections as the configuration keeps them: the kind (`type`) and every
//! other key with its line. What the keys mean is the rules' business: `rules::load`
//! builds the rules from these sections, the way `net::tls::load` opens the files TLS
//! keys name, so the configuration depends on no other module.

use super::error::Diag;
use super::ini::Section;

/// One `[rule NAME]` section, not yet interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSection {
    /// NAME from the section header.
    pub name: String,
    /// Line of the section header.
    pub line: usize,
    /// `type`, and its line.
    pub kind: (String, usize),
    /// Every other key: (key, value, line), in file order.
    pub keys: Vec<(String, String, usize)>,
}

/// Reads one rule section; `None` after reporting a missing or repeated `type`.
pub(crate) fn parse(name: &str, sec: &Section, diag: &mut Diag) -> Option<RuleSection> {
    let before = diag.count();
    let mut kind = None;
    let mut keys = Vec::new();
    for e in &sec.entries {
        if e.key != "type" {
            keys.push((e.key.clone(), e.value.clone(), e.line));
        } else if kind.is_some() {
            diag.err(e.line, "type: given twice");
        } else {
            kind = Some((e.value.trim().to_string(), e.line));
        }
    }
    let Some(kind) = kind else {
        diag.err(sec.line, format!("[rule {name}]: missing required key \"type\""));
        return None;
    };
    let rule = RuleSection { name: name.to_string(), line: sec.line, kind, keys };
    (diag.count() == before).then_some(rule)
}
