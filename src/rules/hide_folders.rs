//! `type = hide_folders`: mailboxes matching the patterns (and their children) do not
//! exist for the client: they vanish from LIST, LSUB, XLIST, extended LIST and
//! LIST-STATUS responses, from STATUS, NOTIFY and multi-mailbox ESEARCH data, and every
//! command naming one (as an argument, an IMAP URL or a NOTIFY/SEARCH mailbox filter) is
//! answered `NO [NONEXISTENT]`. Names are compared in canonical form (`imap::mailbox`), so
//! a literal, modified UTF-7, another case of INBOX or a trailing delimiter reach nothing.
//! A mailbox command whose arguments cannot be read is refused rather than guessed at.
//!
//! Nor do hidden folders show through their neighbours: a rename's `OLDNAME` (RFC 5465)
//! naming one is removed, and a parent whose children may be hidden loses `\HasChildren`
//! and `CHILDINFO` unless a visible child shows up in the same listing. Such a parent is
//! held until the LIST command completes; when its pattern covered the children and none
//! was visible, it says `\HasNoChildren`, else it says nothing about children.
//!
//! Folders can also be hidden by type, the way Kolab marks groupware folders:
//! `metadata = /shared/vendor/kolab/folder-type` with `types = event contact task ...`
//! hides every folder whose annotation (RFC 5464) starts with one of the types
//! (`event.default` is an `event`), whatever its name or language. The rule asks the
//! backend itself (`Rule::asks`: `LIST "" "*"`, then one GETMETADATA per folder) when the
//! session starts and again after a CREATE, RENAME, DELETE or SETMETADATA succeeds; no
//! client command is judged while the answer is out.

use std::sync::Arc;

use super::registry::Settings;
use super::{mailbox_args, Ask, Command, Context, Response, Rule, RuleKind, Verdict};
use crate::config::words;
use crate::imap::command::{self, Arg};
use crate::imap::mailbox::{self, FolderSet};

#[derive(Debug, Clone)]
struct HideFolders {
    /// `folders`: name patterns.
    patterns: Vec<String>,
    /// `metadata` and `types`: hide folders whose annotation starts with a type.
    by_type: Option<(String, Vec<String>)>,
}

/// Builds the kind from `folders = PATTERNS` (words; `"..."` for names with spaces)
/// and/or `metadata = ENTRY` with `types = TYPES`.
pub fn build(settings: &mut Settings) -> Option<Arc<dyn RuleKind>> {
    let folders = settings.get("folders");
    let metadata = settings.get("metadata");
    let types = settings.get("types");
    if folders.is_none() && metadata.is_none() {
        settings
            .error(settings.line, "type = hide_folders needs folders = NAMES or metadata = ENTRY");
        return None;
    }
    let mut patterns = Vec::new();
    if let Some((value, line)) = folders {
        match words(&value) {
            Ok(w) if !w.is_empty() => patterns = w,
            Ok(_) => settings.error(line, "folders: empty list"),
            Err(e) => settings.error(line, format!("folders: {e}")),
        }
    }
    let by_type = match (metadata, types) {
        (None, None) => None,
        (None, Some((_, line))) => {
            settings.error(line, "types: needs metadata = ENTRY");
            None
        }
        (Some((_, line)), None) => {
            settings.error(line, "metadata: needs types = TYPES (e.g. event contact task)");
            None
        }
        (Some((entry, line)), Some((types, tline))) => {
            let lower = entry.to_ascii_lowercase();
            let valid = (lower.starts_with("/shared/") || lower.starts_with("/private/"))
                && entry.bytes().all(|b| b.is_ascii_graphic() && !b"*%\"\\".contains(&b));
            if !valid {
                settings.error(
                    line,
                    format!(
                        "metadata: {entry:?} is not an entry name (/shared/... or /private/...)"
                    ),
                );
            }
            let types: Vec<String> =
                types.split_whitespace().map(str::to_ascii_lowercase).collect();
            if types.is_empty() {
                settings.error(tline, "types: empty list");
            }
            valid.then_some((entry, types))
        }
    };
    Some(Arc::new(HideFolders { patterns, by_type }))
}

impl RuleKind for HideFolders {
    fn start(&self) -> Box<dyn Rule> {
        let typed = self.by_type.as_ref().map(|(entry, types)| Typed {
            entry: entry.clone(),
            types: types.clone(),
            refresh: Refresh::Wanted,
            listed: Vec::new(),
            found: Vec::new(),
            changes: Vec::new(),
        });
        Box::new(Session {
            folders: FolderSet::new(self.patterns.clone()),
            patterns: self.patterns.clone(),
            typed,
            listings: Vec::new(),
            held: Vec::new(),
        })
    }
}

/// Hiding by folder type: what the rule learned from the backend, and where the asking
/// stands.
struct Typed {
    entry: String,
    types: Vec<String>,
    refresh: Refresh,
    /// Folders listed by the current round (wire names).
    listed: Vec<Vec<u8>>,
    /// Folders found to have a hidden type in the current round (decoded names).
    found: Vec<String>,
    /// Client commands in flight that change folders or their annotations (client tags).
    changes: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refresh {
    /// The folder types must be learned (again).
    Wanted,
    /// `LIST "" "*"` is out.
    Listing,
    /// Listed: the GETMETADATA round is next.
    Listed,
    /// GETMETADATA is out for every listed folder.
    Fetching,
    Done,
}

/// Folders asked about in one GETMETADATA round at most (a session with more is
/// unusual; the rest stay unhidden by type and a warning says so).
const MAX_TYPED_FOLDERS: usize = 10_000;

/// Parents held back at once; more are passed on without child attributes.
const MAX_HELD: usize = 1000;

struct Session {
    /// The patterns, and the folders hidden by type.
    folders: FolderSet,
    /// `folders` of the rule, as configured.
    patterns: Vec<String>,
    typed: Option<Typed>,
    /// LIST-like commands in flight: client tag and the names they ask for (reference and
    /// pattern joined, decoded).
    listings: Vec<(String, Vec<String>)>,
    /// Parents of possibly hidden folders, held until the listing completes.
    held: Vec<Held>,
}

struct Held {
    /// The response's name and arguments.
    name: String,
    args: Vec<Arg>,
    /// The mailbox, decoded and canonical.
    mailbox: String,
    /// A visible child was listed since.
    child_seen: bool,
}

fn not_found() -> Verdict {
    Verdict::Reply("NO [NONEXISTENT] Mailbox doesn't exist.".into())
}

impl Rule for Session {
    fn on_command(&mut self, cmd: &mut Command, cx: &mut Context) -> Verdict {
        if matches!(cmd.name.as_str(), "LIST" | "LSUB" | "XLIST") && cmd.complete {
            self.listings.push((cmd.tag.clone(), listed_names(&cmd.args)));
        }
        if let Some(typed) = &mut self.typed {
            let changes =
                matches!(cmd.name.as_str(), "CREATE" | "RENAME" | "DELETE" | "SETMETADATA");
            if changes && cmd.complete && !cmd.preview {
                typed.changes.push(cmd.tag.clone());
            }
        }
        let hidden = |wire: &[u8]| self.folders.contains_wire(wire, cx.delimiter);
        if filter_mailboxes(&cmd.args).into_iter().any(hidden) {
            return not_found();
        }
        let uses_urls =
            matches!(cmd.name.as_str(), "APPEND" | "URLFETCH" | "GENURLAUTH" | "RESETKEY");
        if mailbox_args(&cmd.name).is_empty() && !uses_urls {
            return Verdict::Pass;
        }
        let named = cmd.mailboxes();
        if named.len() < mailbox_args(&cmd.name).len() {
            if !cmd.complete {
                return Verdict::Pass; // the mailbox is in the literal still to come
            }
            return Verdict::Reply(format!("BAD Invalid arguments to {}.", cmd.name));
        }
        if named.iter().any(|(_, wire)| hidden(wire)) {
            return not_found();
        }
        // IMAP URLs name mailboxes too (CATENATE, URLAUTH): a hidden one cannot be read
        // through them either. A URL that cannot be read is refused.
        let args = if uses_urls { &cmd.args[..] } else { &[] };
        for url in urls(args) {
            match url_mailbox(url) {
                Some(name) if hidden(&mailbox::encode(&name)) => return not_found(),
                Some(_) => {}
                None => return Verdict::Reply("BAD Unreadable IMAP URL.".into()),
            }
        }
        Verdict::Pass
    }

    fn on_response(&mut self, resp: &mut Response, cx: &mut Context) -> Verdict {
        if !resp.raw.starts_with(b"* ") {
            self.listing_done(resp, cx);
            self.change_done(resp);
            return Verdict::Pass;
        }
        let Some((name, args)) = resp.untagged() else { return Verdict::Pass };
        let hidden = |wire: &[u8]| self.folders.contains_wire(wire, cx.delimiter);
        match name.as_str() {
            "LIST" | "LSUB" | "XLIST" => self.listed(resp, name, args, cx),
            "STATUS" => match args.first().and_then(Arg::astring) {
                Some(wire) if hidden(wire) => Verdict::Drop,
                _ => Verdict::Pass,
            },
            // RFC 7377: results of a search in several mailboxes name each.
            "ESEARCH" => match args.first() {
                Some(Arg::List(items)) if search_mailbox(items).is_some_and(hidden) => {
                    Verdict::Drop
                }
                _ => Verdict::Pass,
            },
            _ => Verdict::Pass,
        }
    }

    /// Also while a command that changes folders is out: the next client command waits
    /// for its answer and the new types, so it is judged with them.
    fn wants_to_ask(&self) -> bool {
        self.typed.as_ref().is_some_and(|t| {
            matches!(t.refresh, Refresh::Wanted | Refresh::Listed) || !t.changes.is_empty()
        })
    }

    fn asks(&mut self, _cx: &Context) -> Vec<Ask> {
        let Some(typed) = &mut self.typed else { return Vec::new() };
        let string = |s: &[u8]| Arg::String(s.to_vec());
        match typed.refresh {
            Refresh::Wanted => {
                typed.refresh = Refresh::Listing;
                typed.listed.clear();
                vec![Ask { name: "LIST".into(), args: vec![string(b""), string(b"*")] }]
            }
            Refresh::Listed => {
                typed.refresh = Refresh::Fetching;
                typed.found.clear();
                if typed.listed.len() > MAX_TYPED_FOLDERS {
                    log::warn!(
                        "hide_folders: {} folders; only the first {MAX_TYPED_FOLDERS} are checked for their type",
                        typed.listed.len()
                    );
                }
                let entry = typed.entry.as_bytes();
                (typed.listed.iter().take(MAX_TYPED_FOLDERS))
                    .map(|wire| Ask {
                        name: "GETMETADATA".into(),
                        args: vec![string(wire), string(entry)],
                    })
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    fn on_answer(&mut self, resp: &Response, cx: &mut Context) {
        let Some(typed) = &mut self.typed else { return };
        let Some((name, args)) = resp.untagged() else { return };
        match (name.as_str(), typed.refresh) {
            ("LIST", Refresh::Listing) => {
                let delimiter = args.get(1).and_then(Arg::astring).filter(|d| d.len() == 1);
                if let (None, Some(d)) = (cx.delimiter, delimiter) {
                    cx.delimiter = Some(char::from(d[0]));
                }
                if let Some(wire) = args.get(2).and_then(Arg::astring) {
                    typed.listed.push(wire.to_vec());
                }
            }
            // `* METADATA mailbox (entry value)`.
            ("METADATA", Refresh::Fetching) => {
                let (Some(wire), Some(Arg::List(pairs))) =
                    (args.first().and_then(Arg::astring), args.get(1))
                else {
                    return;
                };
                let entry = typed.entry.as_bytes();
                let value = pairs.chunks(2).find_map(|pair| match pair {
                    [e, v] if e.astring().is_some_and(|e| e.eq_ignore_ascii_case(entry)) => {
                        v.astring()
                    }
                    _ => None,
                });
                let value = value.map(|v| String::from_utf8_lossy(v).to_ascii_lowercase());
                if value.is_some_and(|v| typed.types.iter().any(|t| v.starts_with(t.as_str()))) {
                    // An undecodable name is hidden all the same: it cannot be named safely.
                    typed.found.push(
                        mailbox::decode(wire)
                            .unwrap_or_else(|| String::from_utf8_lossy(wire).into_owned()),
                    );
                }
            }
            _ => {}
        }
    }

    fn answered(&mut self, ok: bool, cx: &mut Context) {
        let Some(typed) = &mut self.typed else { return };
        match typed.refresh {
            Refresh::Listing if ok && !typed.listed.is_empty() => typed.refresh = Refresh::Listed,
            Refresh::Listing => {
                if !ok {
                    log::warn!("id={} hide_folders: the backend would not list folders; none is hidden by type", cx.session);
                }
                typed.refresh = Refresh::Done;
                typed.found.clear();
                self.rebuild();
            }
            Refresh::Fetching => {
                if !ok {
                    log::warn!(
                        "id={} hide_folders: GETMETADATA {} failed for some folders (does the backend offer METADATA?)",
                        cx.session, typed.entry
                    );
                }
                typed.refresh = Refresh::Done;
                self.rebuild();
            }
            _ => {}
        }
    }
}

impl Session {
    /// A tagged answer to a command that changes folders: their types are learned again.
    fn change_done(&mut self, resp: &Response) {
        let Some(typed) = &mut self.typed else { return };
        let mut words = resp.raw.split(|&b| b == b' ');
        let (tag, status) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
        if let Some(at) = typed.changes.iter().position(|t| t.as_bytes() == tag) {
            typed.changes.remove(at);
            if status.eq_ignore_ascii_case(b"OK") {
                typed.refresh = Refresh::Wanted;
            }
        }
    }

    /// The folders to hide: the patterns and the folders found by type.
    fn rebuild(&mut self) {
        let mut all = self.patterns.clone();
        if let Some(typed) = &self.typed {
            all.extend(typed.found.iter().cloned());
        }
        self.folders = FolderSet::new(all);
    }

    /// A `* LIST (attributes) delimiter name [extended data]` response.
    fn listed(
        &mut self,
        resp: &mut Response,
        name: String,
        mut args: Vec<Arg>,
        cx: &Context,
    ) -> Verdict {
        let Some(wire) = args.get(2).and_then(Arg::astring).map(<[u8]>::to_vec) else {
            return Verdict::Pass;
        };
        if self.folders.contains_wire(&wire, cx.delimiter) {
            return Verdict::Drop;
        }
        let delimiter = cx.delimiter.unwrap_or('/');
        let mailbox = mailbox::decode(&wire).map(|n| mailbox::canonical(&n, delimiter));
        for held in &mut self.held {
            if mailbox.as_deref().is_some_and(|m| mailbox::is_below(m, &held.mailbox, delimiter)) {
                held.child_seen = true;
            }
        }
        if !resp.complete {
            return Verdict::Pass; // a streamed response is only its head: not rewritten
        }
        let mut changed =
            drop_hidden_oldname(&mut args, |w| self.folders.contains_wire(w, cx.delimiter));
        let betrays = has_attribute(&args, "\\HasChildren") || has_childinfo(&args);
        if betrays && self.folders.may_hide_children_of(&wire, cx.delimiter) {
            match mailbox {
                Some(mailbox) if !self.listings.is_empty() && self.held.len() < MAX_HELD => {
                    self.held.push(Held { name, args, mailbox, child_seen: false });
                    return Verdict::Drop;
                }
                _ => {
                    forget_children(&mut args, false);
                    changed = true;
                }
            }
        }
        if changed {
            resp.raw = command::encode_untagged(&name, &args);
        }
        Verdict::Pass
    }

    /// A tagged answer: if it completes a listing, the held parents go out before it.
    fn listing_done(&mut self, resp: &mut Response, cx: &Context) {
        let tag = resp.raw.split(|&b| b == b' ').next().unwrap_or_default();
        let Some(at) = self.listings.iter().position(|(t, _)| t.as_bytes() == tag) else {
            return;
        };
        let (_, patterns) = self.listings.remove(at);
        let delimiter = cx.delimiter.unwrap_or('/');
        let mut out = Vec::new();
        for mut held in self.held.drain(..) {
            if !held.child_seen {
                let probe = format!("{}{delimiter}x", held.mailbox);
                let covered = patterns.iter().any(|p| {
                    let last = p.rfind(['*', '%']).unwrap_or(0);
                    p.ends_with(['*', '%'])
                        && !p[..last].contains(['*', '%'])
                        && mailbox::pattern_match(p, &probe, delimiter)
                });
                forget_children(&mut held.args, covered);
            }
            out.extend_from_slice(&command::encode_untagged(&held.name, &held.args));
        }
        if !out.is_empty() {
            out.extend_from_slice(&resp.raw);
            resp.raw = out;
        }
    }
}

/// The names a LIST command asks for: reference joined with each pattern, decoded.
fn listed_names(args: &[Arg]) -> Vec<String> {
    let args = match args.first() {
        Some(Arg::List(_)) => &args[1..], // LIST-EXTENDED selection options
        _ => args,
    };
    let text = |a: &Arg| a.astring().and_then(mailbox::decode).unwrap_or_default();
    let reference = args.first().map(text).unwrap_or_default();
    match args.get(1) {
        Some(Arg::List(patterns)) => {
            patterns.iter().map(|p| format!("{reference}{}", text(p))).collect()
        }
        Some(p) => vec![format!("{reference}{}", text(p))],
        None => Vec::new(),
    }
}

fn has_attribute(args: &[Arg], attribute: &str) -> bool {
    matches!(args.first(), Some(Arg::List(attrs)) if attrs.iter().any(|a| a.is_atom(attribute)))
}

fn has_childinfo(args: &[Arg]) -> bool {
    let is_childinfo = |a: &Arg| a.astring().is_some_and(|s| s.eq_ignore_ascii_case(b"CHILDINFO"));
    matches!(args.get(3), Some(Arg::List(ext)) if ext.iter().step_by(2).any(is_childinfo))
}

/// Removes `\HasChildren` and CHILDINFO; with `none`, says `\HasNoChildren` instead.
fn forget_children(args: &mut [Arg], none: bool) {
    if let Some(Arg::List(attrs)) = args.first_mut() {
        attrs.retain(|a| !a.is_atom("\\HasChildren") && !a.is_atom("\\HasNoChildren"));
        if none {
            attrs.push(Arg::Atom(b"\\HasNoChildren".to_vec()));
        }
    }
    remove_extended(args, b"CHILDINFO");
}

/// Removes an extended data item (`"NAME" value`) from a LIST response.
fn remove_extended(args: &mut [Arg], item: &[u8]) -> bool {
    let Some(Arg::List(ext)) = args.get_mut(3) else { return false };
    let Some(at) = ext
        .chunks(2)
        .position(|pair| pair[0].astring().is_some_and(|s| s.eq_ignore_ascii_case(item)))
    else {
        return false;
    };
    let end = (2 * at + 2).min(ext.len());
    ext.drain(2 * at..end);
    true
}

/// RFC 5465: a rename's `("OLDNAME" (old))`. A hidden old name is removed: the folder
/// appears as new.
fn drop_hidden_oldname(args: &mut [Arg], hidden: impl Fn(&[u8]) -> bool) -> bool {
    let old = match args.get(3) {
        Some(Arg::List(ext)) => ext.chunks(2).find_map(|pair| {
            let is_oldname = pair[0].astring().is_some_and(|s| s.eq_ignore_ascii_case(b"OLDNAME"));
            match pair.get(1) {
                Some(Arg::List(v)) if is_oldname => {
                    v.first().and_then(Arg::astring).map(<[u8]>::to_vec)
                }
                _ => None,
            }
        }),
        _ => None,
    };
    match old {
        Some(old) if hidden(&old) => remove_extended(args, b"OLDNAME"),
        _ => false,
    }
}

/// Mailboxes named by a NOTIFY or multi-mailbox SEARCH filter (RFC 5465, RFC 7377):
/// `mailboxes`, `subtree` or `subtree-one`, then one name or a list.
fn filter_mailboxes(args: &[Arg]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        match arg {
            Arg::List(items) => out.extend(filter_mailboxes(items)),
            a if a.is_atom("MAILBOXES") || a.is_atom("SUBTREE") || a.is_atom("SUBTREE-ONE") => {
                match args.get(i + 1) {
                    Some(Arg::List(names)) => out.extend(names.iter().filter_map(Arg::astring)),
                    Some(name) => out.extend(name.astring()),
                    None => {}
                }
            }
            _ => {}
        }
    }
    out
}

/// `MAILBOX name` in ESEARCH correlators (`(TAG "x" MAILBOX "INBOX" UIDVALIDITY 3)`).
fn search_mailbox(items: &[Arg]) -> Option<&[u8]> {
    let at = items.iter().position(|a| a.is_atom("MAILBOX"))?;
    items.get(at + 1)?.astring()
}

/// Every string argument, at any depth, that looks like an IMAP URL (RFC 5092):
/// `imap://...` or a relative `/mailbox...` (CATENATE's `URL "/Calendar/;UID=1"`).
fn urls(args: &[Arg]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    for arg in args {
        match arg {
            Arg::List(items) => out.extend(urls(items)),
            Arg::String(s) | Arg::Atom(s) | Arg::Literal { data: s, .. }
                if s.starts_with(b"/")
                    || s.len() > 7 && s[..7].eq_ignore_ascii_case(b"imap://") =>
            {
                out.push(s.as_slice())
            }
            _ => {}
        }
    }
    out
}

/// The mailbox an IMAP URL names, percent-decoded (RFC 5092 §6: `[imap://authority]
/// /enc-mailbox[;UIDVALIDITY=..]/;UID=..`); `None` when it cannot be read.
fn url_mailbox(url: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(url).ok()?;
    let path = match text.get(..7).filter(|p| p.eq_ignore_ascii_case("imap://")) {
        Some(_) => &text[text[7..].find('/')? + 7..],
        None => text,
    };
    let path = path.strip_prefix('/')?;
    let end = path.find(";").unwrap_or(path.len());
    let encoded = path[..end].trim_end_matches('/');
    let mut bytes = Vec::new();
    let mut rest = encoded.as_bytes();
    while let Some((&b, after)) = rest.split_first() {
        if b == b'%' {
            let hex = std::str::from_utf8(after.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &after[2..];
        } else {
            bytes.push(b);
            rest = after;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> Box<dyn Rule> {
        let mut s = Settings::new(
            vec![("folders".into(), "Calendar Contacts \"Shared Tasks\"".into(), 3)],
            1,
        );
        build(&mut s).unwrap().start()
    }

    fn command(line: &[u8]) -> Verdict {
        let mut cmd = Command::parse(line).unwrap();
        let mut cx = Context { delimiter: Some('/'), ..Context::default() };
        rule().on_command(&mut cmd, &mut cx)
    }

    #[test]
    fn every_spelling_of_a_hidden_folder_is_refused() {
        for line in [
            &b"a SELECT Calendar\r\n"[..],
            b"a EXAMINE {8}\r\nCalendar\r\n",
            b"a STATUS &AEM-alendar (MESSAGES)\r\n",
            b"a SELECT \"Calendar/\"\r\n",
            b"a DELETE Calendar/Personal\r\n",
            b"a RENAME Work Contacts\r\n",
            b"a UID MOVE 1:* Calendar\r\n",
            b"a COPY 1 \"Shared Tasks\"\r\n",
            b"a APPEND Calendar (\\Seen) {5}\r\nhello\r\n",
            b"a GETMETADATA (DEPTH 1) Calendar /shared/comment\r\n",
            b"a APPEND INBOX CATENATE (URL \"/Calendar/;UID=1\")\r\n",
            b"a APPEND INBOX CATENATE (URL \"imap://bob@h/Cal%65ndar;UIDVALIDITY=3/;UID=1\")\r\n",
            b"a URLFETCH \"imap://bob@h/Contacts/;UID=7\"\r\n",
        ] {
            assert_eq!(
                command(line),
                Verdict::Reply("NO [NONEXISTENT] Mailbox doesn't exist.".into()),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(command(b"a SELECT Calendars\r\n"), Verdict::Pass);
        assert_eq!(command(b"a COPY 1 INBOX\r\n"), Verdict::Pass);
        assert_eq!(
            command(b"a RENAME Work\r\n"),
            Verdict::Reply("BAD Invalid arguments to RENAME.".into()),
            "missing mailbox arguments are refused, not guessed at"
        );
    }

    #[test]
    fn list_and_status_responses_are_dropped() {
        let mut r = rule();
        let mut cx = Context::default();
        for (raw, want) in [
            (&b"* LIST (\\HasNoChildren) \"/\" Calendar\r\n"[..], Verdict::Drop),
            (b"* LSUB () \"/\" {17}\r\nCalendar/Personal\r\n", Verdict::Drop),
            (b"* STATUS Contacts (MESSAGES 3)\r\n", Verdict::Drop),
            (b"* LIST (\\HasNoChildren) \"/\" INBOX\r\n", Verdict::Pass),
            (b"* 3 EXISTS\r\n", Verdict::Pass),
        ] {
            let mut resp = Response { raw: raw.to_vec(), complete: true, literal_sizes: vec![] };
            assert_eq!(r.on_response(&mut resp, &mut cx), want, "{}", String::from_utf8_lossy(raw));
        }
    }

    fn respond(r: &mut Box<dyn Rule>, raw: &[u8]) -> (Verdict, String) {
        let mut resp = Response { raw: raw.to_vec(), complete: true, literal_sizes: vec![] };
        let mut cx = Context { delimiter: Some('/'), ..Context::default() };
        let v = r.on_response(&mut resp, &mut cx);
        (v, String::from_utf8_lossy(&resp.raw).into_owned())
    }

    fn list_command(r: &mut Box<dyn Rule>, line: &[u8]) {
        let mut cmd = Command::parse(line).unwrap();
        let mut cx = Context { delimiter: Some('/'), ..Context::default() };
        assert_eq!(r.on_command(&mut cmd, &mut cx), Verdict::Pass);
    }

    fn inbox_rule() -> Box<dyn Rule> {
        let mut s = Settings::new(vec![("folders".into(), "INBOX/Calendar".into(), 3)], 1);
        build(&mut s).unwrap().start()
    }

    #[test]
    fn a_parent_of_hidden_folders_tells_only_of_visible_children() {
        // Only hidden children, and the listing covered them: no children.
        let mut r = inbox_rule();
        list_command(&mut r, b"a LIST \"\" *\r\n");
        let (v, _) = respond(&mut r, b"* LIST (\\HasChildren) \"/\" INBOX\r\n");
        assert_eq!(v, Verdict::Drop, "held until the listing completes");
        assert_eq!(
            respond(&mut r, b"* LIST (\\HasNoChildren) \"/\" INBOX/Calendar\r\n").0,
            Verdict::Drop
        );
        let (v, out) = respond(&mut r, b"a OK List completed\r\n");
        assert_eq!(v, Verdict::Pass);
        assert_eq!(out, "* LIST (\\HasNoChildren) \"/\" INBOX\r\na OK List completed\r\n");
        // A visible child: HasChildren stays.
        list_command(&mut r, b"b LIST \"\" *\r\n");
        respond(&mut r, b"* LIST (\\HasChildren) \"/\" INBOX\r\n");
        respond(&mut r, b"* LIST (\\HasNoChildren) \"/\" INBOX/Work\r\n");
        let (_, out) = respond(&mut r, b"b OK List completed\r\n");
        assert!(out.starts_with("* LIST (\\HasChildren) \"/\" INBOX\r\n"), "{out}");
        // Children not listed: nothing is said about them.
        list_command(&mut r, b"c LIST \"\" %\r\n");
        respond(&mut r, b"* LIST (\\HasChildren) \"/\" INBOX\r\n");
        let (_, out) = respond(&mut r, b"c OK List completed\r\n");
        assert!(out.starts_with("* LIST () \"/\" INBOX\r\n"), "{out}");
        // Outside a listing (NOTIFY): nothing is said either.
        let (v, out) = respond(
            &mut r,
            b"* LIST (\\HasChildren) \"/\" INBOX (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n",
        );
        assert_eq!((v, out.as_str()), (Verdict::Pass, "* LIST () \"/\" INBOX ()\r\n"));
    }

    #[test]
    fn a_rename_from_a_hidden_folder_shows_a_new_folder() {
        let mut r = rule();
        let (v, out) =
            respond(&mut r, b"* LIST () \"/\" \"Stuff\" (\"OLDNAME\" (\"Contacts\"))\r\n");
        assert_eq!((v, out.as_str()), (Verdict::Pass, "* LIST () \"/\" \"Stuff\" ()\r\n"));
        let (v, _) = respond(&mut r, b"* LIST () \"/\" \"Contacts\" (\"OLDNAME\" (\"Stuff\"))\r\n");
        assert_eq!(v, Verdict::Drop);
        let (v, _) =
            respond(&mut r, b"* ESEARCH (TAG \"a\" MAILBOX \"Calendar\" UIDVALIDITY 1) ALL 1\r\n");
        assert_eq!(v, Verdict::Drop);
    }

    #[test]
    fn notify_and_search_filters_cannot_name_hidden_folders() {
        for line in [
            &b"a NOTIFY SET (mailboxes Calendar (MessageNew))\r\n"[..],
            b"a NOTIFY SET (subtree (INBOX \"Contacts\") (MessageNew))\r\n",
            b"a SEARCH IN (mailboxes \"Calendar/Personal\") ALL\r\n",
        ] {
            assert_eq!(command(line), not_found(), "{}", String::from_utf8_lossy(line));
        }
        assert_eq!(command(b"a NOTIFY SET (subtree INBOX (MessageNew))\r\n"), Verdict::Pass);
    }
}
