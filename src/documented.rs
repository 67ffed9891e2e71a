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
const README: &str = include_str!("../README.md");
const MANUAL_8: &str = include_str!("../doc/imapgate.8");

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

#[test]
fn the_readme_and_imapgate_8_give_every_exit_code() {
    use crate::daemon::exit::ALL;
    let codes = |text: &str| -> BTreeSet<i32> {
        let number = Regex::new(r"\b(\d+)\b").expect("regex");
        number.captures_iter(text).filter_map(|c| c[1].parse().ok()).collect()
    };
    let start = README.find("Exit codes follow sysexits(3)").expect("README: exit codes");
    let paragraph = README[start..].split("\n\n").next().unwrap_or_default();
    let in_readme = codes(&paragraph.replace("sysexits(3)", ""));
    assert_eq!(in_readme, ALL.into_iter().collect(), "README.md: {paragraph}");
    let chapter = MANUAL_8.split(".Sh EXIT STATUS").nth(1).expect("imapgate.8: EXIT STATUS");
    let chapter = chapter.split("\n.Sh ").next().unwrap_or_default();
    let items: BTreeSet<i32> =
        chapter.lines().filter_map(|l| l.strip_prefix(".It ")?.trim().parse().ok()).collect();
    let expected: BTreeSet<i32> = [0].into_iter().chain(ALL).collect();
    assert_eq!(items, expected, "doc/imapgate.8, EXIT STATUS");
}

/// The comment lines of the example right above `line_start` (a setting), joined.
fn comment_above(text: &str, line_start: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines.iter().position(|l| l.starts_with(line_start)).expect("the setting");
    let mut comment: Vec<&str> = lines[..at]
        .iter()
        .rev()
        .take_while(|l| l.starts_with(';'))
        .map(|l| l.trim_start_matches(';').trim())
        .collect();
    comment.reverse();
    comment.join(" ")
}

#[test]
fn the_example_configuration_overview_is_complete() {
    let intro: Vec<&str> = EXAMPLE
        .lines()
        .take_while(|l| !l.starts_with("; Format"))
        .map(|l| l.trim_start_matches(';').trim())
        .collect();
    let intro = intro.join(" ");
    for mechanism in crate::imap::sasl::Mechanism::ALL {
        assert!(
            intro.contains(mechanism.name()),
            "etc/imapgate.ini, line 3: no {}",
            mechanism.name()
        );
    }
    let headers = EXAMPLE.split("headers:").nth(1).expect("the headers line");
    let headers = headers.split("NAME is made").next().unwrap_or_default();
    for (section, _) in section_keys() {
        let header =
            if section == "global" { "[global]".to_string() } else { format!("[{section} NAME]") };
        assert!(headers.contains(&header), "etc/imapgate.ini: headers: lacks {header}");
    }
    let levels = comment_above(EXAMPLE, "log_level =");
    for level in log::LevelFilter::iter() {
        let name = level.as_str().to_ascii_lowercase();
        assert!(crate::config::parse_log_filter(&name).is_ok(), "{name}");
        let word = Regex::new(&format!(r"\b{name}\b")).expect("regex");
        assert!(word.is_match(&levels), "etc/imapgate.ini, log_level: no {name} in {levels:?}");
    }
    assert!(levels.contains("MODULE=LEVEL"), "etc/imapgate.ini, log_level: {levels:?}");
}
