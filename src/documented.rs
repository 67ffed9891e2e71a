//! The manual (doc/imapgate.ini.5) and the example configuration (etc/imapgate.ini)
//! document exactly the keys the configuration accepts: a key the parser takes and no
//! document names, or one a document names and the parser refuses, fails these tests.
//! The parser's side comes from the lists its modules check keys against, so a new key
//! cannot be added without being documented.

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;

use crate::config::{section_keys, SOURCE_TYPES};
use crate::lookup::load::{keys_of, COMMON};
use crate::rules::condition::{CONDITION_KEYS, ID_PREFIX};
use crate::rules::registry::KINDS;

const MANUAL: &str = include_str!("../doc/imapgate.ini.5");
const EXAMPLE: &str = include_str!("../etc/imapgate.ini");
const PACKAGED: &str = include_str!("../etc/packaged.ini");

/// The `.Ss` headings of the manual's SECTIONS chapter, each with the keys the parser
/// accepts under it. `id.` stands for `id.FIELD`.
fn accepted() -> BTreeMap<String, BTreeSet<&'static str>> {
    let mut out = BTreeMap::new();
    for (section, keys) in section_keys() {
        let heading = match section {
            "global" => "[global]".to_string(),
            other => format!("[{other} NAME]"),
        };
        out.insert(heading, keys.into_iter().collect::<BTreeSet<_>>());
    }
    out.get_mut("[rule NAME]")
        .expect("rule section")
        .extend(CONDITION_KEYS.iter().copied().chain([ID_PREFIX]));
    out.insert("Lookup maps".into(), COMMON.into_iter().collect());
    for kind in SOURCE_TYPES {
        out.insert(format!("Map type {kind}"), keys_of(kind).iter().copied().collect());
    }
    for (kind, _, keys) in KINDS {
        out.insert(format!("Rule type {kind}"), keys.iter().copied().collect());
    }
    out
}

/// The keys the manual lists (`.It Cm KEY ...`) under each `.Ss` heading of SECTIONS.
fn in_manual() -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut chapter = "";
    let mut heading: Option<String> = None;
    for line in MANUAL.lines() {
        if let Some(name) = line.strip_prefix(".Sh ") {
            chapter = name;
            heading = None;
        } else if let Some(name) = line.strip_prefix(".Ss ").filter(|_| chapter == "SECTIONS") {
            let name = name.trim_matches('"').to_string();
            out.entry(name.clone()).or_default();
            heading = Some(name);
        } else if let (Some(h), Some(item)) = (&heading, line.strip_prefix(".It Cm ")) {
            let key = item.split_whitespace().next().unwrap_or_default();
            out.get_mut(h).expect("heading").insert(key.to_string());
        }
    }
    out
}

#[test]
fn the_manual_lists_exactly_the_accepted_keys_under_each_heading() {
    let accepted = accepted();
    let manual = in_manual();
    let headings = |m: Vec<&String>| m.into_iter().cloned().collect::<BTreeSet<_>>();
    assert_eq!(
        headings(manual.keys().collect()),
        headings(accepted.keys().collect()),
        "the .Ss headings of SECTIONS in doc/imapgate.ini.5"
    );
    for (heading, keys) in &accepted {
        let documented: BTreeSet<&str> = manual[heading].iter().map(String::as_str).collect();
        let missing: Vec<_> = keys.difference(&documented).collect();
        let unknown: Vec<_> = documented.difference(keys).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "doc/imapgate.ini.5, {heading}: undocumented keys {missing:?}, unknown keys {unknown:?}"
        );
    }
}

#[test]
fn the_example_configuration_shows_every_key_and_no_other() {
    let mut all: BTreeSet<&str> = accepted().into_values().flatten().collect();
    all.remove(ID_PREFIX);
    let mentioned = |pattern: &str| {
        Regex::new(&format!(r"(?m)^;?\s*(not_)?{pattern}\s*=")).expect("regex").is_match(EXAMPLE)
    };
    let missing: Vec<_> = all.iter().filter(|k| !mentioned(&regex::escape(k))).collect();
    assert!(missing.is_empty(), "etc/imapgate.ini never shows {missing:?}");
    assert!(mentioned(r"id\.[a-z]+"), "etc/imapgate.ini never shows an id.FIELD condition");
    // A setting, or one commented out with a bare ";" in front: every such key is real,
    // in the annotated example and in the configuration the packages install.
    let setting = Regex::new(r"(?m)^;?([a-z][a-z0-9_.]*)\s*=").expect("regex");
    for (file, text) in [("etc/imapgate.ini", EXAMPLE), ("etc/packaged.ini", PACKAGED)] {
        for found in setting.captures_iter(text) {
            let key = &found[1];
            let bare = key.strip_prefix("not_").unwrap_or(key);
            assert!(
                all.contains(bare) || bare.strip_prefix(ID_PREFIX).is_some_and(|f| !f.is_empty()),
                "{file} sets {key}, which no section accepts"
            );
        }
    }
}
