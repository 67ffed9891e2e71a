//! `$`-templates of regex routes: `$1`, `${1}`, `$name`, `${name}` insert a capture
//! group, `$$` is a literal `$`. As in the regex crate, `$` takes the longest run of
//! letters, digits and `_`, so `$1a` means the group named `1a`; write `${1}a` instead.
//! Templates are checked strictly against their regex at load time, and expanded leniently
//! at lookup (a group that did not take part in the match expands to nothing).

use regex::{Captures, Regex};

/// Reference to a capture group.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Group {
    Index(usize),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Group(Group),
}

fn parse(t: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = t;
    while let Some(pos) = rest.find('$') {
        lit.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(r) = after.strip_prefix('$') {
            lit.push('$');
            rest = r;
            continue;
        }
        let (name, r) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').ok_or_else(|| format!("unterminated \"${{\" in {t:?}"))?;
            (&braced[..end], &braced[end + 1..])
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "invalid \"$\" in {t:?} (use $1, ${{1}}, $name or $$ for a literal $)"
            ));
        }
        let group = if name.bytes().all(|b| b.is_ascii_digit()) {
            let n = name.parse().map_err(|_| format!("group number ${name} is too large"))?;
            Group::Index(n)
        } else {
            Group::Name(name.to_string())
        };
        if !lit.is_empty() {
            out.push(Piece::Lit(std::mem::take(&mut lit)));
        }
        out.push(Piece::Group(group));
        rest = r;
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        out.push(Piece::Lit(lit));
    }
    Ok(out)
}

/// Checks `t` against `re`. Returns `Some(text)` when the template references no group
/// (its expansion is always `text`), `None` when it depends on the match.
pub(crate) fn check(t: &str, re: &Regex) -> Result<Option<String>, String> {
    let pieces = parse(t)?;
    let groups = re.captures_len() - 1;
    let mut constant = String::new();
    let mut is_constant = true;
    for p in &pieces {
        match p {
            Piece::Lit(s) => constant.push_str(s),
            Piece::Group(Group::Index(i)) if *i > groups => {
                return Err(format!(
                    "${i} refers to group {i}, but the regex has {groups} group(s)"
                ));
            }
            Piece::Group(Group::Name(n)) if !re.capture_names().any(|c| c == Some(n)) => {
                let rest = n.trim_start_matches(|c: char| c.is_ascii_digit());
                let digits = &n[..n.len() - rest.len()];
                let hint = if digits.is_empty() {
                    String::new()
                } else {
                    format!(" (write ${{{digits}}}{rest} for group {digits} followed by {rest:?})")
                };
                return Err(format!("${n} names no capture group of the regex{hint}"));
            }
            Piece::Group(_) => is_constant = false,
        }
    }
    Ok(is_constant.then_some(constant))
}

/// Expands `t` with `caps`. Unknown or non-participating groups expand to nothing; a
/// template that does not parse (never the case after `check`) is returned unchanged.
pub(crate) fn expand(t: &str, caps: &Captures<'_>) -> String {
    let Ok(pieces) = parse(t) else {
        return t.to_string();
    };
    let mut out = String::new();
    for p in &pieces {
        let m = match p {
            Piece::Lit(s) => {
                out.push_str(s);
                continue;
            }
            Piece::Group(Group::Index(i)) => caps.get(*i),
            Piece::Group(Group::Name(n)) => caps.name(n),
        };
        out.push_str(m.map_or("", |m| m.as_str()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(s: &str) -> Regex {
        Regex::new(s).unwrap()
    }

    #[test]
    fn constant_templates_are_recognised() {
        let r = re("^(a)$");
        assert_eq!(check("b1", &r), Ok(Some("b1".into())));
        assert_eq!(check("cost$$", &r), Ok(Some("cost$".into())));
        assert_eq!(check("b$1", &r), Ok(None));
    }

    #[test]
    fn references_are_checked_against_the_regex() {
        let r = re("^(?P<user>[^@]+)@(.+)$");
        assert_eq!(check("$0-$1-${2}-$user-${user}x", &r), Ok(None));
        assert!(check("$3", &r).unwrap_err().contains("2 group(s)"));
        assert!(check("$nope", &r).is_err());
        let e = check("$1a", &r).unwrap_err();
        assert!(e.contains("${1}a"), "{e}");
        for t in ["$", "a$", "${", "${1", "${}", "$-", "${a-b}", "$99999999999999999999999"] {
            assert!(check(t, &r).is_err(), "{t:?}");
        }
    }

    #[test]
    fn expansion_fills_groups() {
        let r = re("^(?P<user>[^@]+)@(?:(x)|(.+))$");
        let caps = r.captures("alice@example.org").unwrap();
        assert_eq!(expand("b-$3", &caps), "b-example.org");
        assert_eq!(expand("${user}_$$[$2]", &caps), "alice_$[]");
        assert_eq!(expand("$", &caps), "$");
    }
}
