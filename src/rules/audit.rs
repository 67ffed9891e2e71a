//! `type = audit`: one log line per command of matching sessions: session, user, tag,
//! command and the mailboxes it names (decoded). Never arguments beyond mailbox names,
//! so never literal contents, message data or credentials (LOGIN happens before rules).
//! Lines go to the log at info, or with `file = PATH` to a file of their own, opened at
//! start-up before privileges are dropped.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use super::registry::Settings;
use super::{Command, Context, Rule, RuleKind, Verdict};
use crate::imap::mailbox;

#[derive(Debug)]
struct Audit {
    path: Option<PathBuf>,
    file: OnceLock<Arc<Mutex<File>>>,
}

/// Builds the kind from an optional `file = PATH` (relative: to the configuration's
/// directory).
pub fn build(settings: &mut Settings) -> Option<Arc<dyn RuleKind>> {
    let path = settings.get("file").map(|(v, _)| settings.path(&v));
    Some(Arc::new(Audit { path, file: OnceLock::new() }))
}

impl RuleKind for Audit {
    fn prepare(&self) -> Result<(), String> {
        let Some(path) = &self.path else { return Ok(()) };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("audit file {}: {e}", path.display()))?;
        let _ = self.file.set(Arc::new(Mutex::new(file)));
        Ok(())
    }

    fn start(&self) -> Box<dyn Rule> {
        Box::new(Session { file: self.file.get().cloned() })
    }
}

struct Session {
    file: Option<Arc<Mutex<File>>>,
}

/// A value for a `key=value` log field: bare when harmless, else quoted with escapes.
fn field(text: &str) -> String {
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '\\') {
        return text.to_string();
    }
    format!("\"{}\"", text.chars().flat_map(char::escape_default).collect::<String>())
}

impl Rule for Session {
    fn on_command(&mut self, cmd: &mut Command, cx: &mut Context) -> Verdict {
        if !cmd.first_look() {
            return Verdict::Pass;
        }
        let mut line = format!(
            "AUDIT id={} user={} tag={} command={}",
            cx.session,
            field(&cx.user),
            field(&cmd.tag),
            field(&cmd.name)
        );
        for (_, wire) in cmd.mailboxes() {
            let name =
                mailbox::decode(wire).unwrap_or_else(|| String::from_utf8_lossy(wire).into_owned());
            line.push_str(&format!(" mailbox={}", field(&name)));
        }
        match &self.file {
            Some(file) => {
                let now =
                    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                if let Ok(mut f) = file.lock() {
                    let _ = writeln!(f, "{}.{:03} {line}", now.as_secs(), now.subsec_millis());
                }
            }
            None => log::info!("{line}"),
        }
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_lines_name_mailboxes_but_not_contents() {
        let dir = std::env::temp_dir().join(format!("imapgate-audit-{}", std::process::id()));
        let path = dir.with_extension("log");
        let mut s = Settings::new(vec![("file".into(), path.display().to_string(), 2)], 1);
        let kind = build(&mut s).unwrap();
        kind.prepare().unwrap();
        let mut rule = kind.start();
        let mut cx = Context { session: 7, user: "alice".into(), ..Context::default() };
        let mut cmd = Command::parse(b"a1 APPEND Entw&APw-rfe {11}\r\nsecret body\r\n").unwrap();
        assert_eq!(rule.on_command(&mut cmd, &mut cx), Verdict::Pass);
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(
            text.contains("AUDIT id=7 user=alice tag=a1 command=APPEND mailbox=\"Entw\\u{fc}rfe\""),
            "{text}"
        );
        assert!(!text.contains("secret"));
    }
}
