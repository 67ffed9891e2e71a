//! `type = capabilities`: removes capabilities from what the client is shown (or keeps
//! only the listed ones), wherever a capability list appears (`* CAPABILITY` data and
//! `[CAPABILITY ...]` codes alike, including the LOGIN answer), and refuses commands that
//! need a capability the client was not shown: a client cannot use what it was not told.

use std::sync::Arc;

use super::condition::glob_match;
use super::registry::Settings;
use super::{Command, Context, Response, Rule, RuleKind, Verdict};
use crate::config::words;
use crate::imap::{capability, response};

#[derive(Debug, Clone)]
struct Capabilities {
    /// Upper-case globs (`AUTH=*`, `COMPRESS=*`).
    patterns: Vec<String>,
    /// `keep`: the patterns list what stays; `remove`: what goes.
    keep: bool,
}

/// Builds the kind from `remove = CAPS` or `keep = CAPS`.
pub fn build(settings: &mut Settings) -> Option<Arc<dyn RuleKind>> {
    let (list, keep, line) = match (settings.get("remove"), settings.get("keep")) {
        (Some((v, l)), None) => (v, false, l),
        (None, Some((v, l))) => (v, true, l),
        (Some(_), Some((_, l))) => {
            settings.error(l, "give either remove or keep, not both");
            return None;
        }
        (None, None) => {
            settings.error(settings.line, "type = capabilities needs remove = CAPS or keep = CAPS");
            return None;
        }
    };
    match words(&list) {
        Ok(w) if !w.is_empty() => {
            let patterns = w.iter().map(|c| c.to_ascii_uppercase()).collect();
            Some(Arc::new(Capabilities { patterns, keep }))
        }
        Ok(_) => {
            settings.error(line, "empty capability list");
            None
        }
        Err(e) => {
            settings.error(line, e);
            None
        }
    }
}

impl Capabilities {
    fn shown(&self, cap: &str) -> bool {
        let upper = cap.to_ascii_uppercase();
        // IMAP4rev1/IMAP4rev2 are the protocol itself: never removed.
        if upper.starts_with("IMAP4") {
            return true;
        }
        let listed = self.patterns.iter().any(|p| glob_match(p, &upper));
        listed == self.keep
    }
}

impl RuleKind for Capabilities {
    fn start(&self) -> Box<dyn Rule> {
        Box::new(self.clone())
    }
}

impl Rule for Capabilities {
    fn on_command(&mut self, cmd: &mut Command, cx: &mut Context) -> Verdict {
        let visible = |pattern: &str| {
            cx.capabilities
                .iter()
                .any(|c| self.shown(c) && glob_match(pattern, &c.to_ascii_uppercase()))
        };
        if let Some(cap) = capability::required_by(&cmd.name) {
            if !visible(cap) {
                return Verdict::Reply(format!("NO [CANNOT] {} is not available here.", cmd.name));
            }
        }
        if cmd.name == "ENABLE" {
            // RFC 5161: only what the client was shown may be enabled.
            for arg in &cmd.args {
                let name =
                    String::from_utf8_lossy(arg.astring().unwrap_or_default()).to_ascii_uppercase();
                if !visible(&name) {
                    return Verdict::Reply(format!("NO [CANNOT] {name} is not available here."));
                }
            }
        }
        Verdict::Pass
    }

    fn on_response(&mut self, resp: &mut Response, _cx: &mut Context) -> Verdict {
        if let Some(caps) = response::capabilities(&resp.raw) {
            let kept: Vec<String> = caps.into_iter().filter(|c| self.shown(c)).collect();
            if let Some(rewritten) = response::replace_capabilities(&resp.raw, &kept) {
                resp.raw = rewritten;
            }
        }
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(key: &str, value: &str) -> Box<dyn Rule> {
        let mut s = Settings::new(vec![(key.into(), value.into(), 3)], 1);
        build(&mut s).unwrap().start()
    }

    fn cx() -> Context {
        let caps = ["IMAP4rev1", "IDLE", "MOVE", "COMPRESS=DEFLATE", "ENABLE", "CONDSTORE"];
        Context { capabilities: caps.iter().map(|s| s.to_string()).collect(), ..Context::default() }
    }

    #[test]
    fn removed_capabilities_vanish_from_lists_and_codes() {
        let mut r = rule("remove", "MOVE COMPRESS=*");
        for (input, want) in [
            (
                &b"* CAPABILITY IMAP4rev1 IDLE MOVE COMPRESS=DEFLATE\r\n"[..],
                &b"* CAPABILITY IMAP4rev1 IDLE\r\n"[..],
            ),
            (
                b"a OK [CAPABILITY IMAP4rev1 MOVE IDLE] Logged in\r\n",
                b"a OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n",
            ),
        ] {
            let mut resp = Response { raw: input.to_vec(), complete: true, literal_sizes: vec![] };
            assert_eq!(r.on_response(&mut resp, &mut cx()), Verdict::Pass);
            assert_eq!(String::from_utf8_lossy(&resp.raw), String::from_utf8_lossy(want));
        }
    }

    #[test]
    fn commands_needing_a_hidden_capability_are_refused() {
        let mut r = rule("remove", "MOVE compress=deflate CONDSTORE");
        let mut refused = |line: &[u8]| {
            let mut cmd = Command::parse(line).unwrap();
            r.on_command(&mut cmd, &mut cx()) != Verdict::Pass
        };
        assert!(refused(b"a UID MOVE 1:2 Trash\r\n"));
        assert!(refused(b"a COMPRESS DEFLATE\r\n"));
        assert!(refused(b"a ENABLE CONDSTORE\r\n"));
        assert!(!refused(b"a IDLE\r\n"));
        assert!(refused(b"a NAMESPACE\r\n"), "never offered by the backend");
    }

    #[test]
    fn keep_lists_keep_the_protocol_itself() {
        let mut r = rule("keep", "IDLE");
        let mut resp = Response {
            raw: b"* CAPABILITY IMAP4rev1 IDLE MOVE\r\n".to_vec(),
            complete: true,
            literal_sizes: vec![],
        };
        r.on_response(&mut resp, &mut cx());
        assert_eq!(resp.raw, b"* CAPABILITY IMAP4rev1 IDLE\r\n");
    }
}
