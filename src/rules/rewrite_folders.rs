//! `type = rewrite_folders`: shows a backend folder under another name and translates
//! both ways: every mailbox argument of a command (client name to backend name) and the
//! names in LIST, LSUB, XLIST and STATUS responses (backend name to client name). A
//! mapping covers the folder's children too. `folder = CLIENT_NAME BACKEND_NAME`, one
//! line per folder, names in UTF-8 (quote names with spaces). LIST patterns are passed on
//! as they are.

use std::sync::Arc;

use super::registry::Settings;
use super::{Command, Context, Response, Rule, RuleKind, Verdict};
use crate::config::words;
use crate::imap::command::{self, Arg};
use crate::imap::mailbox;

#[derive(Debug, Clone)]
struct RewriteFolders {
    /// (client name, backend name), UTF-8.
    pairs: Vec<(String, String)>,
}

/// Builds the kind from repeatable `folder = CLIENT BACKEND` lines.
pub fn build(settings: &mut Settings) -> Option<Arc<dyn RuleKind>> {
    let mut pairs = Vec::new();
    for (value, line) in settings.all("folder") {
        match words(&value).as_deref() {
            Ok([client, backend]) => pairs.push((client.clone(), backend.clone())),
            _ => settings
                .error(line, "folder: expected CLIENT_NAME BACKEND_NAME (quote names with spaces)"),
        }
    }
    if pairs.is_empty() && settings.errors.is_empty() {
        settings.error(
            settings.line,
            "type = rewrite_folders needs at least one folder = CLIENT BACKEND",
        );
    }
    Some(Arc::new(RewriteFolders { pairs }))
}

impl RuleKind for RewriteFolders {
    fn start(&self) -> Box<dyn Rule> {
        Box::new(self.clone())
    }
}

/// `name` with the prefix `from` replaced by `to`, when `name` is `from` or a child of it.
fn translate(name: &str, from: &str, to: &str, delimiter: char) -> Option<String> {
    let rest = name.strip_prefix(from)?;
    (rest.is_empty() || rest.starts_with(delimiter)).then(|| format!("{to}{rest}"))
}

impl RewriteFolders {
    fn map(&self, wire: &[u8], delimiter: char, to_backend: bool) -> Option<Vec<u8>> {
        let name = mailbox::decode(wire)?;
        let name = mailbox::canonical(&name, delimiter);
        self.pairs.iter().find_map(|(client, backend)| {
            let (from, to) = if to_backend { (client, backend) } else { (backend, client) };
            translate(&name, from, to, delimiter).map(|n| mailbox::encode(&n))
        })
    }
}

impl Rule for RewriteFolders {
    fn on_command(&mut self, cmd: &mut Command, cx: &mut Context) -> Verdict {
        let delimiter = cx.delimiter.unwrap_or('/');
        let changes: Vec<(usize, Vec<u8>)> = cmd
            .mailboxes()
            .into_iter()
            .filter_map(|(i, wire)| Some((i, self.map(wire, delimiter, true)?)))
            .collect();
        for (i, new) in changes {
            cmd.args[i] = Arg::String(new);
        }
        Verdict::Pass
    }

    fn on_response(&mut self, resp: &mut Response, cx: &mut Context) -> Verdict {
        // Only a whole response can be written anew (a streamed one is only its head).
        if !resp.complete {
            return Verdict::Pass;
        }
        let Some((name, mut args)) = resp.untagged() else { return Verdict::Pass };
        let index = match name.as_str() {
            "LIST" | "LSUB" | "XLIST" => 2,
            "STATUS" => 0,
            _ => return Verdict::Pass,
        };
        let delimiter = cx.delimiter.unwrap_or('/');
        let Some(new) =
            args.get(index).and_then(Arg::astring).and_then(|w| self.map(w, delimiter, false))
        else {
            return Verdict::Pass;
        };
        args[index] = Arg::String(new);
        resp.raw = command::encode_untagged(&name, &args);
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> Box<dyn Rule> {
        let mut s =
            Settings::new(vec![("folder".into(), "Sent \"INBOX.Sent Items\"".into(), 2)], 1);
        build(&mut s).unwrap().start()
    }

    #[test]
    fn commands_name_the_backend_folder() {
        let mut cx = Context { delimiter: Some('.'), ..Context::default() };
        let mut cmd = Command::parse(b"a SELECT Sent\r\n").unwrap();
        rule().on_command(&mut cmd, &mut cx);
        assert_eq!(cmd.arg(0), Some(&b"INBOX.Sent Items"[..]));
        let mut cmd = Command::parse(b"a UID COPY 1:2 Sent.2024\r\n").unwrap();
        rule().on_command(&mut cmd, &mut cx);
        assert_eq!(cmd.arg(1), Some(&b"INBOX.Sent Items.2024"[..]));
        let mut cmd = Command::parse(b"a SELECT Sentinel\r\n").unwrap();
        rule().on_command(&mut cmd, &mut cx);
        assert_eq!(cmd.arg(0), Some(&b"Sentinel"[..]));
    }

    #[test]
    fn responses_show_the_client_name() {
        let mut cx = Context { delimiter: Some('.'), ..Context::default() };
        let mut resp = Response {
            raw: b"* LIST (\\HasNoChildren) \".\" \"INBOX.Sent Items\"\r\n".to_vec(),
            complete: true,
            literal_sizes: vec![],
        };
        rule().on_response(&mut resp, &mut cx);
        assert_eq!(
            String::from_utf8_lossy(&resp.raw),
            "* LIST (\\HasNoChildren) \".\" \"Sent\"\r\n"
        );
    }
}
