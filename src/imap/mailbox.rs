//! Mailbox names: modified UTF-7 (RFC 3501 §5.1.3), the case rule of INBOX, hierarchy
//! delimiters and LIST-style patterns (`*` matches anything, `%` anything but the
//! delimiter). Rules compare names in one canonical form, so a hidden folder cannot be
//! reached by spelling it differently: in modified UTF-7, as `inbox`, or with a trailing
//! delimiter. No I/O.

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/// Decodes a wire name: modified UTF-7 when it is 7-bit, else UTF-8 (RFC 6855 UTF8=ACCEPT).
/// An invalid encoding gives `None`; callers must then treat the name with suspicion.
pub fn decode(wire: &[u8]) -> Option<String> {
    if !wire.is_ascii() {
        return String::from_utf8(wire.to_vec()).ok();
    }
    let mut out = String::new();
    let mut rest = wire;
    while let Some((&b, after)) = rest.split_first() {
        rest = after;
        if b != b'&' {
            out.push(char::from(b));
            continue;
        }
        let end = rest.iter().position(|&c| c == b'-')?;
        let (encoded, after) = rest.split_at(end);
        rest = &after[1..];
        if encoded.is_empty() {
            out.push('&');
            continue;
        }
        let mut bits = 0u32;
        let mut nbits = 0;
        let mut units = Vec::new();
        for &c in encoded {
            let v = B64.iter().position(|&x| x == c)? as u32;
            bits = bits << 6 | v;
            nbits += 6;
            if nbits >= 16 {
                nbits -= 16;
                units.push((bits >> nbits) as u16);
                bits &= (1 << nbits) - 1;
            }
        }
        if bits != 0 {
            return None; // leftover bits must be zero
        }
        out.push_str(&String::from_utf16(&units).ok()?);
    }
    Some(out)
}

/// Encodes a name in modified UTF-7.
pub fn encode(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut Vec<u8>| {
        if pending.is_empty() {
            return;
        }
        out.push(b'&');
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        for chunk in bytes.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |n, &b| n << 8 | u32::from(b)) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize]);
            }
        }
        out.push(b'-');
        pending.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.extend_from_slice(b"&-");
            } else {
                out.push(c as u8);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// The canonical form of a decoded name: without trailing delimiters, with INBOX (and
/// the INBOX part of its children) in upper case, since INBOX is case-insensitive.
pub fn canonical(name: &str, delimiter: char) -> String {
    let trimmed = name.trim_end_matches(delimiter);
    let first_end = trimmed.find(delimiter).unwrap_or(trimmed.len());
    if trimmed[..first_end].eq_ignore_ascii_case("INBOX") {
        format!("INBOX{}", &trimmed[first_end..])
    } else {
        trimmed.to_string()
    }
}

/// True when `child` (canonical) lies below `parent` (canonical).
pub fn is_below(child: &str, parent: &str, delimiter: char) -> bool {
    child.strip_prefix(parent).is_some_and(|rest| rest.starts_with(delimiter))
}

/// LIST-style pattern match: `*` matches any run, `%` any run without the delimiter.
pub fn pattern_match(pattern: &str, name: &str, delimiter: char) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    matches_from(&p, &n, delimiter)
}

fn matches_from(p: &[char], n: &[char], delimiter: char) -> bool {
    match p.split_first() {
        None => n.is_empty(),
        Some(('*', rest)) => (0..=n.len()).any(|i| matches_from(rest, &n[i..], delimiter)),
        Some(('%', rest)) => {
            let limit = n.iter().position(|&c| c == delimiter).unwrap_or(n.len());
            (0..=limit).any(|i| matches_from(rest, &n[i..], delimiter))
        }
        Some((&c, rest)) => n.first() == Some(&c) && matches_from(rest, &n[1..], delimiter),
    }
}

/// A set of folder patterns where each pattern also covers the children of what it
/// matches (hiding `Calendar` hides `Calendar/Personal`).
#[derive(Clone, Debug, Default)]
pub struct FolderSet {
    patterns: Vec<String>,
}

impl FolderSet {
    /// A set from UTF-8 patterns as written in the configuration.
    pub fn new(patterns: Vec<String>) -> FolderSet {
        FolderSet { patterns }
    }

    /// True when the wire name (or one of its ancestors) matches a pattern. `delimiter`
    /// is the server's, when known; until then both `/` and `.` are tried, which can only
    /// hide more, never less. Undecodable names count as matching: a name we cannot read
    /// is never let through to a folder we must hide.
    pub fn contains_wire(&self, wire: &[u8], delimiter: Option<char>) -> bool {
        let Some(name) = decode(wire) else { return true };
        let delimiters = match delimiter {
            Some(d) => vec![d],
            None => vec!['/', '.'],
        };
        delimiters.into_iter().any(|d| self.contains(&name, d))
    }

    /// True when a pattern may match a descendant of the wire name (`INBOX` for a hidden
    /// `INBOX/Tasks`, any name for `*/Calendar`): its child attributes could betray a
    /// hidden folder. Patterns whose `*` spans levels inside one component are not seen.
    pub fn may_hide_children_of(&self, wire: &[u8], delimiter: Option<char>) -> bool {
        let Some(name) = decode(wire) else { return true };
        let d = delimiter.unwrap_or('/');
        let name = canonical(&name, d);
        self.patterns.iter().any(|p| {
            let p = canonical(p, d);
            let parts: Vec<&str> = p.split(d).collect();
            (1..parts.len()).any(|k| pattern_match(&parts[..k].join(&d.to_string()), &name, d))
        })
    }

    fn contains(&self, name: &str, delimiter: char) -> bool {
        let name = canonical(name, delimiter);
        let mut candidates = vec![name.as_str()];
        candidates.extend(name.match_indices(delimiter).map(|(i, _)| &name[..i]));
        self.patterns.iter().any(|p| {
            let p = canonical(p, delimiter);
            candidates.iter().any(|c| pattern_match(&p, c, delimiter))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modified_utf7_round_trips() {
        for name in ["INBOX", "Entwürfe", "A&B", "日本語/メール", "~peter/mail/台北", "a😀b"]
        {
            let wire = encode(name);
            assert!(wire.is_ascii());
            assert_eq!(decode(&wire).as_deref(), Some(name), "{}", String::from_utf8_lossy(&wire));
        }
        assert_eq!(decode(b"Entw&APw-rfe").as_deref(), Some("Entwürfe"));
        assert_eq!(decode(b"&AEM-alendar").as_deref(), Some("Calendar"));
        assert_eq!(decode(b"a&-b").as_deref(), Some("a&b"));
        assert_eq!(decode(b"bad&AEM"), None);
        assert_eq!(decode("Kalender ü".as_bytes()).as_deref(), Some("Kalender ü"));
    }

    #[test]
    fn inbox_is_case_insensitive_and_trailing_delimiters_do_not_count() {
        assert_eq!(canonical("inbox/Calendar//", '/'), "INBOX/Calendar");
        assert_eq!(canonical("InBoX", '.'), "INBOX");
        assert_eq!(canonical("inboxes", '/'), "inboxes");
    }

    #[test]
    fn patterns_follow_list_rules() {
        assert!(pattern_match("Cal*", "Calendar/Work", '/'));
        assert!(!pattern_match("Cal%", "Calendar/Work", '/'));
        assert!(pattern_match("%/Work", "Calendar/Work", '/'));
        assert!(!pattern_match("Calendar", "Calendars", '/'));
    }

    #[test]
    fn a_folder_set_hides_children_and_every_spelling() {
        let set = FolderSet::new(vec!["Calendar".into(), "INBOX/Tasks".into(), "Shared*".into()]);
        for wire in [
            &b"Calendar"[..],
            b"Calendar/Personal",
            b"Calendar/",
            b"&AEM-alendar",
            b"inbox/Tasks",
            b"Shared Folders",
        ] {
            assert!(set.contains_wire(wire, Some('/')), "{}", String::from_utf8_lossy(wire));
        }
        for wire in [&b"Calendars"[..], b"INBOX", b"Work/Calendar", b"Tasks"] {
            assert!(!set.contains_wire(wire, Some('/')), "{}", String::from_utf8_lossy(wire));
        }
        assert!(set.contains_wire(b"Calendar.Personal", None), "unknown delimiter: both tried");
        assert!(set.contains_wire(b"&AEM", Some('/')), "undecodable names are treated as hidden");
        assert!(set.may_hide_children_of(b"inbox", Some('/')));
        assert!(!set.may_hide_children_of(b"Work", Some('/')));
        let deep = FolderSet::new(vec!["*/Calendar".into()]);
        assert!(deep.may_hide_children_of(b"Work", Some('/')));
    }
}
