//! `[rule NAME]` sections: `type` picks the kind (`rules::registry`), condition keys
//! (`rules::condition`) say when the rule applies, and the remaining keys belong to the
//! kind, which reports its own problems with their lines.

use std::sync::Arc;

use super::error::Diag;
use super::ini::Section;
use crate::rules::registry::{self, Settings};
use crate::rules::{Conditions, RuleDef};

/// Parses one rule section; `None` after reporting problems.
pub(crate) fn parse(name: &str, sec: &Section, diag: &mut Diag) -> Option<Arc<RuleDef>> {
    let before = diag.count();
    let mut conditions = Conditions::default();
    let mut kind_entries = Vec::new();
    let mut kind_name = None;
    for e in &sec.entries {
        if e.key == "type" {
            if kind_name.is_some() {
                diag.err(e.line, "type: given twice");
            }
            kind_name = Some((e.value.trim().to_string(), e.line));
        } else if Conditions::is_condition_key(&e.key) {
            if let Err(m) = conditions.add(&e.key, &e.value) {
                diag.err(e.line, format!("{}: {m}", e.key));
            }
        } else {
            kind_entries.push((e.key.clone(), e.value.clone(), e.line));
        }
    }
    let Some((kind_name, type_line)) = kind_name else {
        diag.err(sec.line, format!("[rule {name}]: missing required key \"type\""));
        return None;
    };
    let mut settings = Settings::new(kind_entries, sec.line);
    let kind = match registry::build(&kind_name, &mut settings) {
        Ok(kind) => kind,
        Err(m) => {
            diag.err(type_line, format!("type: {m}"));
            None
        }
    };
    for (line, msg) in settings.errors {
        diag.err(line, msg);
    }
    let def = RuleDef { name: name.to_string(), line: sec.line, conditions, kind: kind? };
    (diag.count() == before).then(|| Arc::new(def))
}
