//! `type = hide_folders`: mailboxes matching the patterns (and their children) do not
//! exist for the client: they vanish from LIST, LSUB, XLIST, extended LIST and
//! LIST-STATUS responses, and every command naming one is answered `NO [NONEXISTENT]`.
//! Names are compared in canonical form (`imap::mailbox`), so a literal, modified UTF-7,
//! another case of INBOX or a trailing delimiter reach nothing. A mailbox command whose
//! arguments cannot be read is refused rather than guessed at.

use std::sync::Arc;

use super::registry::{words, Settings};
use super::{mailbox_args, Command, Context, Response, Rule, RuleKind, Verdict};
use crate::imap::command::Arg;
use crate::imap::mailbox::{self, FolderSet};

#[derive(Debug, Clone)]
struct HideFolders {
    folders: FolderSet,
}

/// Builds the kind from `folders = PATTERNS` (words; `"..."` for names with spaces).
pub fn build(settings: &mut Settings) -> Option<Arc<dyn RuleKind>> {
    let Some((value, line)) = settings.get("folders") else {
        settings.error(settings.line, "type = hide_folders needs folders = NAMES");
        return None;
    };
    match words(&value) {
        Ok(w) if !w.is_empty() => Some(Arc::new(HideFolders { folders: FolderSet::new(w) })),
        Ok(_) => {
            settings.error(line, "folders: empty list");
            None
        }
        Err(e) => {
            settings.error(line, format!("folders: {e}"));
            None
        }
    }
}

impl RuleKind for HideFolders {
    fn start(&self) -> Box<dyn Rule> {
        Box::new(self.clone())
    }
}

impl Rule for HideFolders {
    fn on_command(&mut self, cmd: &mut Command, cx: &mut Context) -> Verdict {
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
        if named.iter().any(|(_, wire)| self.folders.contains_wire(wire, cx.delimiter)) {
            return Verdict::Reply("NO [NONEXISTENT] Mailbox doesn't exist.".into());
        }
        // IMAP URLs name mailboxes too (CATENATE, URLAUTH): a hidden one cannot be read
        // through them either. A URL that cannot be read is refused.
        let args = if uses_urls { &cmd.args[..] } else { &[] };
        for url in urls(args) {
            match url_mailbox(url) {
                Some(name) if self.folders.contains_wire(&mailbox::encode(&name), cx.delimiter) => {
                    return Verdict::Reply("NO [NONEXISTENT] Mailbox doesn't exist.".into());
                }
                Some(_) => {}
                None => return Verdict::Reply("BAD Unreadable IMAP URL.".into()),
            }
        }
        Verdict::Pass
    }

    fn on_response(&mut self, resp: &mut Response, cx: &mut Context) -> Verdict {
        let Some((name, args)) = resp.untagged() else { return Verdict::Pass };
        let mailbox = match name.as_str() {
            "LIST" | "LSUB" | "XLIST" => args.get(2),
            "STATUS" => args.first(),
            _ => None,
        };
        match mailbox.and_then(|m| m.astring()) {
            Some(wire) if self.folders.contains_wire(wire, cx.delimiter) => Verdict::Drop,
            _ => Verdict::Pass,
        }
    }
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
}
