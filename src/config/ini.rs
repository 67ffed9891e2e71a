//! Reads the INI text into sections of `key = value` entries that remember their line.
//!
//! A small line-oriented reader of its own: every error must name its line, which
//! rust-ini does not record, and rust-ini's corners (a line without `=` glued to the next
//! one as a key, a trailing `\` continuing the line, `;` after a section header an error
//! unless a feature is on) would accept files an administrator did not mean. Comments are
//! full lines starting with `;` or `#`, or start at whitespace followed by one of them;
//! no quoting, no escapes: values are taken as written. No semantics here: what the
//! sections mean is decided in `config/mod.rs`.

use super::error::Diag;

/// One `key = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(crate) value: String,
    pub(crate) line: usize,
}

/// One occurrence of a section. `name` is `None` for the lines before the first header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Section {
    pub(crate) name: Option<String>,
    pub(crate) line: usize,
    pub(crate) entries: Vec<Entry>,
}

/// Splits `text` into sections. Syntax errors go to `diag`; the offending lines are skipped.
pub(crate) fn read(text: &str, diag: &mut Diag) -> Vec<Section> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut sections = vec![Section { name: None, line: 0, entries: Vec::new() }];
    // After a broken header, its keys are skipped rather than blamed on the section above.
    let mut skipping = false;
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        match classify(raw) {
            Ok(Line::Blank) => {}
            Ok(Line::Header(name)) => {
                skipping = false;
                sections.push(Section { name: Some(name), line, entries: Vec::new() });
            }
            Ok(Line::Entry(..)) if skipping => {}
            Ok(Line::Entry(key, value)) => {
                if let Some(last) = sections.last_mut() {
                    last.entries.push(Entry { key, value, line });
                }
            }
            Err(Bad::Header(msg)) => {
                skipping = true;
                diag.err(line, msg);
            }
            Err(Bad::Line(msg)) => diag.err(line, msg),
        }
    }
    sections
}

/// Number of lines in `text`, as reported for file-level problems found at the end.
pub(crate) fn line_count(text: &str) -> usize {
    text.lines().count()
}

/// A line that cannot be used; a broken header also hides the keys below it.
enum Bad {
    Header(String),
    Line(String),
}

enum Line {
    Blank,
    Header(String),
    Entry(String, String),
}

/// Classifies one line. Comments are full lines starting with `;` or `#`; inline comments
/// start at whitespace followed by `;` or `#`.
fn classify(raw: &str) -> Result<Line, Bad> {
    if raw.chars().any(|c| c.is_control() && c != '\t') {
        return Err(Bad::Line("control character in line".into()));
    }
    let t = raw.trim();
    if t.is_empty() || t.starts_with(';') || t.starts_with('#') {
        return Ok(Line::Blank);
    }
    if let Some(rest) = t.strip_prefix('[') {
        return header(rest).map_err(Bad::Header);
    }
    let Some((key, value)) = t.split_once('=') else {
        return Err(Bad::Line("syntax error: expected \"[section]\" or \"key = value\"".into()));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(Bad::Line("syntax error: missing key before \"=\"".into()));
    }
    // "." appears in ID conditions of rules: id.name, not_id.vendor.
    if !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.') {
        return Err(Bad::Line(format!(
            "syntax error: invalid key {key:?} (letters, digits, _, - and . only)"
        )));
    }
    let value = strip_comment(value).trim();
    if value.ends_with('\\') {
        // Other INI readers continue such a line; nobody should believe this one does.
        return Err(Bad::Line(format!("{key}: value must not end with a backslash")));
    }
    Ok(Line::Entry(key.to_string(), value.to_string()))
}

/// Parses the rest of a header line after `[`.
fn header(rest: &str) -> Result<Line, String> {
    let Some((name, after)) = rest.split_once(']') else {
        return Err("syntax error: section header without closing \"]\"".into());
    };
    if !strip_comment(after).trim().is_empty() {
        return Err("syntax error: text after section header".into());
    }
    if name.contains(['[', '\\']) {
        return Err(format!("syntax error: invalid section header [{name}]"));
    }
    Ok(Line::Header(name.trim().to_string()))
}

/// Cuts an inline comment: the first `;` or `#` that follows whitespace (or starts `s`).
fn strip_comment(s: &str) -> &str {
    let mut prev_ws = true;
    for (i, c) in s.char_indices() {
        if prev_ws && (c == ';' || c == '#') {
            return &s[..i];
        }
        prev_ws = c.is_whitespace();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn read_ok(text: &str) -> Vec<Section> {
        let mut d = Diag::new(Path::new("t.ini"));
        let s = read(text, &mut d);
        assert!(d.is_empty(), "{}", d.into_errors());
        s
    }

    fn read_err(text: &str) -> String {
        let mut d = Diag::new(Path::new("t.ini"));
        read(text, &mut d);
        d.into_errors().to_string()
    }

    #[test]
    fn lines_of_sections_and_repeated_keys_are_kept() {
        let s = read_ok("; c\n[a x]  ; hdr\nk = 1 ; c\n\n  k=2\n[a x]\nk = 3 #c\n");
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, None);
        assert_eq!(s[1].name.as_deref(), Some("a x"));
        assert_eq!(s[1].line, 2);
        let e: Vec<_> = s[1].entries.iter().map(|e| (&*e.value, e.line)).collect();
        assert_eq!(e, [("1", 3), ("2", 5)]);
        assert_eq!(s[2].line, 6);
        assert_eq!(s[2].entries[0].value, "3");
        assert_eq!(s[2].entries[0].line, 7);
    }

    #[test]
    fn backslashes_quotes_and_hashes_inside_values_survive() {
        let s = read_ok("[m]\nroute = ^a\\d#x;y$ \"b\" 'c'\ngreeting = \"hi\"\n");
        assert_eq!(s[1].entries[0].value, "^a\\d#x;y$ \"b\" 'c'");
        assert_eq!(s[1].entries[1].value, "\"hi\"");
    }

    #[test]
    fn crlf_and_bom_are_accepted() {
        let s = read_ok("\u{feff}[a]\r\nk = v\r\n");
        assert_eq!(s[1].entries[0].value, "v");
        assert_eq!(s[1].entries[0].line, 2);
    }

    #[test]
    fn syntax_errors_are_all_reported_with_lines() {
        let e = read_err("[a]\njunk\nk = v\\\n[b\n= x\n[c] d\nk\x01 = 1\n");
        assert_eq!(
            e,
            "t.ini:2: syntax error: expected \"[section]\" or \"key = value\"\n\
             t.ini:3: k: value must not end with a backslash\n\
             t.ini:4: syntax error: section header without closing \"]\"\n\
             t.ini:5: syntax error: missing key before \"=\"\n\
             t.ini:6: syntax error: text after section header\n\
             t.ini:7: control character in line"
        );
    }

    #[test]
    fn lines_after_a_bad_line_keep_their_numbers() {
        let mut d = Diag::new(Path::new("t.ini"));
        let s = read("[a]\nbad line\nk = v\n", &mut d);
        assert_eq!(s[1].entries[0].line, 3);
    }
}
