//! `type = file`: a text file of records, one per line, Perdition's popmap style:
//!
//! ```text
//! # LOGIN         BACKEND-or-HOST[:PORT]   [FIELD=VALUE ...]
//! alice           dovecot-a
//! bob@example.org 192.0.2.10:143           destuser=bob tls=starttls
//! *@example.net   dovecot-b
//! carol           nologin reason="Your mailbox moved to imap.example.com"
//! *               dovecot-a
//! ```
//!
//! A login is looked up as written, then as `*@DOMAIN` (the domain in any case), then as
//! `*`. The second column names a configured backend or pool, or else a host; the fields
//! are `lookup/fields.rs`'s. The file is read again when it changes (checked at every
//! lookup: one `stat`), and on SIGHUP; a file that no longer parses is logged with
//! `FILE:LINE` and the last good one stays in use.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::sync::RwLock;

use super::fields::Fields;
use super::{Found, Place, Query, Source};
use crate::config::Target;

/// Records keyed by login (`*@domain` keys in lower case).
pub type Table = HashMap<String, Found>;

pub struct FileMap {
    place: Place,
    targets: HashMap<String, Target>,
    loaded: RwLock<(Stamp, Table)>,
}

/// What tells a changed file: inode, size and modification time.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp(u64, u64, i64, i64);

fn stamp(place: &Place) -> std::io::Result<Stamp> {
    let m = place.with(|p| std::fs::metadata(p))?;
    Ok(Stamp(m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

impl FileMap {
    /// Reads `path`; errors are `(line, message)` of the data file.
    pub fn open(
        place: Place,
        targets: HashMap<String, Target>,
    ) -> Result<FileMap, Vec<(usize, String)>> {
        let (stamp, table) = read(&place, &targets)?;
        Ok(FileMap { place, targets, loaded: RwLock::new((stamp, table)) })
    }

    /// Reads the file again if it changed since it was read.
    fn refresh(&self) {
        let Ok(now) = stamp(&self.place) else { return };
        if self.loaded.read().unwrap_or_else(|p| p.into_inner()).0 == now {
            return;
        }
        match read(&self.place, &self.targets) {
            Ok(fresh) => {
                log::info!(
                    "map file {}: read again ({} records)",
                    self.place.path.display(),
                    fresh.1.len()
                );
                *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = fresh;
            }
            Err(errors) => {
                for (line, msg) in errors {
                    log::error!(
                        "{}:{line}: {msg} (the previous version stays in use)",
                        self.place.path.display()
                    );
                }
                // Not reported again until the file changes once more.
                self.loaded.write().unwrap_or_else(|p| p.into_inner()).0 = now;
            }
        }
    }
}

impl Source for FileMap {
    fn find(&self, q: &Query<'_>) -> Result<Option<Found>, String> {
        self.refresh();
        let loaded = self.loaded.read().unwrap_or_else(|p| p.into_inner());
        Ok(find(&loaded.1, q.user).cloned())
    }
}

/// The record for `user`: exact, then `*@domain`, then `*`.
pub fn find<'t>(table: &'t Table, user: &str) -> Option<&'t Found> {
    let wildcard =
        user.rsplit_once('@').map(|(_, domain)| format!("*@{}", domain.to_ascii_lowercase()));
    table.get(user).or_else(|| wildcard.and_then(|w| table.get(&w))).or_else(|| table.get("*"))
}

fn read(
    place: &Place,
    targets: &HashMap<String, Target>,
) -> Result<(Stamp, Table), Vec<(usize, String)>> {
    let io = |e: std::io::Error| vec![(0, format!("cannot read: {e}"))];
    let before = stamp(place).map_err(io)?;
    let text = place.with(|p| std::fs::read_to_string(p)).map_err(io)?;
    let mut table = Table::new();
    let mut lines: HashMap<String, usize> = HashMap::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (login, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let key = match login.strip_prefix("*@") {
            Some(domain) => format!("*@{}", domain.to_ascii_lowercase()),
            None => login.to_string(),
        };
        if let Some(first) = lines.get(&key) {
            errors.push((n, format!("{login:?} is listed twice (first at line {first})")));
            continue;
        }
        match parse_record(rest, targets) {
            Ok(found) => {
                lines.insert(key.clone(), n);
                table.insert(key, found);
            }
            Err(msg) => errors.push((n, msg)),
        }
    }
    if errors.is_empty() {
        Ok((before, table))
    } else {
        Err(errors)
    }
}

/// `BACKEND-or-HOST[:PORT] [FIELD=VALUE ...]`, or fields alone (a `nologin` record).
/// A value may be quoted: `reason="Moved to imap.example.com"`.
pub fn parse_record(rest: &str, targets: &HashMap<String, Target>) -> Result<Found, String> {
    let words = split(rest)?;
    let mut fields = Fields::default();
    for (i, word) in words.iter().enumerate() {
        match word.split_once('=') {
            None if word == "nologin" => fields.set("nologin", "yes", targets)?,
            None if i == 0 && targets.contains_key(word.as_str()) => {
                fields.set("backend", word, targets)?
            }
            None if i == 0 => fields.set_host_port(word)?,
            None => return Err(format!("{word:?} is not FIELD=VALUE")),
            Some(("master" | "pass", _)) => {
                return Err("master, pass: a file cannot verify passwords, so it cannot give a \
                            master user or a password (use an ldap map with verify_password, \
                            http or sql)"
                    .into())
            }
            Some((name, value)) => fields.set(name, value, targets)?,
        }
    }
    if fields.is_empty() {
        return Err("no backend, host or field for this login".into());
    }
    fields.into_found(false)
}

/// Whitespace-separated words; `"..."` keeps spaces (in a value: `key="a b"`).
fn split(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if quoted {
        return Err("unbalanced double quote".into());
    }
    if !word.is_empty() {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::Destination;
    use std::path::{Path, PathBuf};

    fn targets() -> HashMap<String, Target> {
        [("a".to_string(), Target::Backend(0)), ("b".to_string(), Target::Backend(1))].into()
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("users.map");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn route(map: &FileMap, user: &str) -> Option<Destination> {
        let q =
            Query { user, password: None, client: None, tls: false, client_cert: None, attempt: 1 };
        match map.find(&q).unwrap()? {
            Found::Route(a) => Some(a.to),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exact_then_domain_then_star_and_a_changed_file_is_read_again() {
        let dir = std::env::temp_dir().join(format!("imapgate-filemap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = write(
            &dir,
            "# comment\nalice a\n*@Example.ORG b\nbob@example.org 10.0.0.9:1143 tls=starttls\n",
        );
        let map = FileMap::open(Place::new(&path, None), targets()).unwrap();
        assert_eq!(route(&map, "alice"), Some(Destination::Target(Target::Backend(0))));
        assert_eq!(route(&map, "x@EXAMPLE.org"), Some(Destination::Target(Target::Backend(1))));
        assert_eq!(
            route(&map, "bob@example.org"),
            Some(Destination::Host {
                host: "10.0.0.9".into(),
                port: Some(1143),
                tls: Some(crate::config::TlsMode::Starttls)
            })
        );
        assert_eq!(route(&map, "carol"), None);
        std::fs::write(&path, "alice b\n* a\n").unwrap();
        assert_eq!(route(&map, "alice"), Some(Destination::Target(Target::Backend(1))));
        assert_eq!(route(&map, "carol"), Some(Destination::Target(Target::Backend(0))));
        // A broken file leaves the last good one in use.
        std::fs::write(&path, "alice\n").unwrap();
        assert_eq!(route(&map, "alice"), Some(Destination::Target(Target::Backend(1))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn records_are_checked_line_by_line() {
        let dir = std::env::temp_dir().join(format!("imapgate-filemap-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = write(
            &dir,
            "alice a\nalice b\nbob a colour=red\ncarol a master=admin pass=x\ndave\n\
             erin nologin reason=\"Moved away\"\nfrank a reason=\"open\n",
        );
        let errors = FileMap::open(Place::new(&path, None), targets()).err().unwrap();
        let lines: Vec<usize> = errors.iter().map(|e| e.0).collect();
        assert_eq!(lines, [2, 3, 4, 5, 7], "{errors:?}");
        assert!(errors[0].1.contains("listed twice (first at line 1)"));
        assert!(errors[2].1.contains("cannot verify passwords"), "{errors:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
