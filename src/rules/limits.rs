//! `type = limits`: bounds on a session. Where one command can be refused, it is (an
//! APPEND over `max_append_size` gets `NO [TOOBIG]` before its literal is sent); otherwise
//! the session ends with `* BYE [LIMIT] ...` and the SESSION-END reason names the limit.
//!
//! Keys (all optional): `max_bytes_from_client`, `max_bytes_to_client`,
//! `max_append_size`, `max_literal_to_client`, `max_session_time`, `idle_timeout`,
//! `idle_command_timeout` (how long IDLE may last, default 29m, RFC 2177),
//! `max_commands`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::registry::Settings;
use super::{Command, Context, Response, Rule, RuleKind, Verdict};
use crate::config::{parse_count, parse_duration, parse_size};
use crate::imap::response;

#[derive(Debug, Clone, Default)]
struct Limits {
    max_bytes_from_client: Option<u64>,
    max_bytes_to_client: Option<u64>,
    max_append_size: Option<u64>,
    max_literal_to_client: Option<u64>,
    max_session_time: Option<Duration>,
    idle_timeout: Option<Duration>,
    idle_command_timeout: Duration,
    max_commands: Option<u64>,
}

/// Builds the kind from its keys; at least one limit must be set.
pub fn build(settings: &mut Settings) -> Option<Arc<dyn RuleKind>> {
    let size = |s: &mut Settings, key: &str| {
        let (v, line) = s.get(key)?;
        parse_size(&v).map(|n| n as u64).map_err(|e| s.error(line, format!("{key}: {e}"))).ok()
    };
    let mut limits = Limits {
        max_bytes_from_client: size(settings, "max_bytes_from_client"),
        max_bytes_to_client: size(settings, "max_bytes_to_client"),
        max_append_size: size(settings, "max_append_size"),
        max_literal_to_client: size(settings, "max_literal_to_client"),
        idle_command_timeout: Duration::from_secs(29 * 60),
        ..Limits::default()
    };
    let duration = |s: &mut Settings, key: &str| {
        let (v, line) = s.get(key)?;
        parse_duration(&v).map_err(|e| s.error(line, format!("{key}: {e}"))).ok()
    };
    limits.max_session_time = duration(settings, "max_session_time");
    limits.idle_timeout = duration(settings, "idle_timeout");
    // Given or not, IDLE is bounded (29m by default); given, it is the rule's limit.
    let idle_command_timeout = duration(settings, "idle_command_timeout");
    if let Some(d) = idle_command_timeout {
        limits.idle_command_timeout = d;
    }
    if let Some((v, line)) = settings.get("max_commands") {
        match parse_count(&v) {
            Ok(n) => limits.max_commands = Some(n),
            Err(e) => settings.error(line, format!("max_commands: {e}")),
        }
    }
    let any = idle_command_timeout.is_some()
        || limits.max_bytes_from_client.is_some()
        || limits.max_bytes_to_client.is_some()
        || limits.max_append_size.is_some()
        || limits.max_literal_to_client.is_some()
        || limits.max_session_time.is_some()
        || limits.idle_timeout.is_some()
        || limits.max_commands.is_some();
    if !any {
        settings.error(settings.line, "type = limits sets no limit");
    }
    Some(Arc::new(limits))
}

impl RuleKind for Limits {
    fn start(&self) -> Box<dyn Rule> {
        Box::new(Session { limits: self.clone(), commands: 0 })
    }
}

struct Session {
    limits: Limits,
    commands: u64,
}

fn bye(limit: &str, text: &str) -> Verdict {
    Verdict::Disconnect { bye: format!("[LIMIT] {text}"), reason: limit.to_string() }
}

impl Rule for Session {
    fn on_command(&mut self, cmd: &mut Command, cx: &mut Context) -> Verdict {
        let l = &self.limits;
        self.commands += u64::from(cmd.first_look());
        if l.max_commands.is_some_and(|max| self.commands > max) {
            return bye("max_commands", "Too many commands in this session.");
        }
        // What has arrived is counted already; a literal about to be invited is not.
        let incoming =
            if cmd.complete { 0 } else { cmd.literal_sizes().last().copied().unwrap_or(0) };
        if l.max_bytes_from_client.is_some_and(|max| cx.bytes_from_client + incoming > max) {
            return bye("max_bytes_from_client", "Too much data sent in this session.");
        }
        if let Some(max) = l.max_append_size {
            // Per message: CATENATE parts add up; a URL part has no size imapgate knows.
            for size in cmd.appended_messages() {
                match size {
                    Some(n) if n <= max => {}
                    Some(_) => {
                        return Verdict::Reply(format!(
                            "NO [TOOBIG] Message too large (limit {max} bytes)."
                        ))
                    }
                    None => {
                        return Verdict::Reply(format!(
                            "NO [TOOBIG] CATENATE URL parts cannot be measured against the \
                             limit of {max} bytes."
                        ))
                    }
                }
            }
        }
        Verdict::Pass
    }

    fn on_response(&mut self, resp: &mut Response, cx: &mut Context) -> Verdict {
        let l = &self.limits;
        if let Some(max) = l.max_append_size {
            announce_append_limit(resp, max);
        }
        if l.max_literal_to_client.is_some_and(|max| resp.literal_sizes.iter().any(|&n| n > max)) {
            return bye("max_literal_to_client", "Message too large to download.");
        }
        let outgoing: u64 = resp.literal_sizes.iter().sum::<u64>() + resp.raw.len() as u64;
        if l.max_bytes_to_client.is_some_and(|max| cx.bytes_to_client + outgoing > max) {
            return bye("max_bytes_to_client", "Too much data received in this session.");
        }
        Verdict::Pass
    }

    fn deadline(&self, cx: &Context) -> Option<Instant> {
        let l = &self.limits;
        let session_end = l.max_session_time.zip(cx.started).map(|(t, s)| s + t);
        let idle = if cx.idling { Some(l.idle_command_timeout) } else { l.idle_timeout };
        let idle_end = idle.zip(cx.last_activity).map(|(t, last)| last + t);
        session_end.into_iter().chain(idle_end).min()
    }

    fn on_time(&mut self, now: Instant, cx: &mut Context) -> Verdict {
        let l = &self.limits;
        if l.max_session_time.zip(cx.started).is_some_and(|(t, s)| now >= s + t) {
            return bye("max_session_time", "Session time limit reached.");
        }
        let idle = if cx.idling { Some(l.idle_command_timeout) } else { l.idle_timeout };
        if idle.zip(cx.last_activity).is_some_and(|(t, last)| now >= last + t) {
            return bye("idle_timeout", "Idle for too long.");
        }
        Verdict::Pass
    }
}

/// Capability lists tell clients the append limit (RFC 7889 APPENDLIMIT, the smaller of
/// the backend's and this rule's) and no longer offer CATENATE, whose URL parts have
/// sizes imapgate cannot check.
fn announce_append_limit(resp: &mut Response, max: u64) {
    let Some(caps) = response::capabilities(&resp.raw) else { return };
    let backend_limit = caps
        .iter()
        .filter_map(|c| c.to_ascii_uppercase().strip_prefix("APPENDLIMIT=")?.parse::<u64>().ok())
        .min();
    let limit = backend_limit.map_or(max, |b| b.min(max));
    let mut kept: Vec<String> = caps
        .into_iter()
        .filter(|c| {
            let upper = c.to_ascii_uppercase();
            upper != "CATENATE" && upper != "APPENDLIMIT" && !upper.starts_with("APPENDLIMIT=")
        })
        .collect();
    kept.push(format!("APPENDLIMIT={limit}"));
    if let Some(rewritten) = response::replace_capabilities(&resp.raw, &kept) {
        resp.raw = rewritten;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pairs: &[(&str, &str)]) -> Box<dyn Rule> {
        let entries = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string(), 2)).collect();
        let mut s = Settings::new(entries, 1);
        let kind = build(&mut s).unwrap();
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        kind.start()
    }

    #[test]
    fn a_too_large_append_is_refused_with_toobig() {
        let mut r = rule(&[("max_append_size", "1k")]);
        let toobig = Verdict::Reply("NO [TOOBIG] Message too large (limit 1024 bytes).".into());
        let mut cmd = prefix(b"a APPEND INBOX {2000}\r\n");
        assert_eq!(r.on_command(&mut cmd, &mut Context::default()), toobig);
        let mut cmd = prefix(b"a APPEND INBOX {20}\r\n");
        assert_eq!(r.on_command(&mut cmd, &mut Context::default()), Verdict::Pass);
        // Per message, not per literal: CATENATE parts add up; MULTIAPPEND counts each.
        let mut parts = b"a APPEND INBOX CATENATE (".to_vec();
        for _ in 0..3 {
            parts.extend_from_slice(b"TEXT {400}\r\n");
            parts.extend_from_slice(&[b'x'; 400]);
            parts.push(b' ');
        }
        parts.pop();
        parts.extend_from_slice(b")\r\n");
        let mut cmd = Command::parse(&parts).unwrap();
        assert_eq!(r.on_command(&mut cmd, &mut Context::default()), toobig);
        let multi = b"a APPEND INBOX {3}\r\nabc (\\Seen) {4}\r\nabcd\r\n";
        let mut cmd = Command::parse(multi).unwrap();
        assert_eq!(r.on_command(&mut cmd, &mut Context::default()), Verdict::Pass);
        let url = b"a APPEND INBOX CATENATE (URL \"/INBOX/;UID=1\")\r\n";
        let mut cmd = Command::parse(url).unwrap();
        assert!(
            matches!(r.on_command(&mut cmd, &mut Context::default()), Verdict::Reply(t) if t.contains("URL"))
        );
    }

    /// The rules' look at a command before its last literal is invited.
    fn prefix(head: &[u8]) -> Command {
        let parsed = crate::imap::command::parse_prefix(head, &[head.len()], true).unwrap();
        Command::new(parsed, false)
    }

    #[test]
    fn capability_lists_announce_the_append_limit_without_catenate() {
        let mut r = rule(&[("max_append_size", "1k")]);
        let mut resp = Response {
            raw: b"a OK [CAPABILITY IMAP4rev1 CATENATE APPENDLIMIT=5000 IDLE] Logged in\r\n"
                .to_vec(),
            complete: true,
            literal_sizes: vec![],
        };
        r.on_response(&mut resp, &mut Context::default());
        assert_eq!(resp.raw, b"a OK [CAPABILITY IMAP4rev1 IDLE APPENDLIMIT=1024] Logged in\r\n");
    }

    #[test]
    fn counts_and_times_end_the_session() {
        let mut r =
            rule(&[("max_commands", "2"), ("max_session_time", "1h"), ("idle_timeout", "5m")]);
        let mut cx = Context {
            started: Some(Instant::now()),
            last_activity: Some(Instant::now()),
            ..Context::default()
        };
        let mut noop = Command::parse(b"a NOOP\r\n").unwrap();
        assert_eq!(r.on_command(&mut noop, &mut cx), Verdict::Pass);
        assert_eq!(r.on_command(&mut noop, &mut cx), Verdict::Pass);
        assert!(
            matches!(r.on_command(&mut noop, &mut cx), Verdict::Disconnect { reason, .. } if reason == "max_commands")
        );
        let deadline = r.deadline(&cx).unwrap();
        assert!(deadline <= Instant::now() + Duration::from_secs(300));
        cx.idling = true;
        let idle_deadline = r.deadline(&cx).unwrap();
        assert!(
            idle_deadline > Instant::now() + Duration::from_secs(28 * 60),
            "IDLE may last 29 minutes"
        );
        let later = Instant::now() + Duration::from_secs(3601);
        assert!(matches!(r.on_time(later, &mut cx), Verdict::Disconnect { .. }));
    }

    #[test]
    fn a_limits_rule_without_limits_is_an_error() {
        let mut s = Settings::new(vec![], 4);
        build(&mut s);
        assert_eq!(s.errors, vec![(4, "type = limits sets no limit".to_string())]);
    }

    #[test]
    fn a_limit_on_idle_alone_is_a_limit() {
        let mut r = rule(&[("idle_command_timeout", "10m")]);
        let cx =
            Context { idling: true, last_activity: Some(Instant::now()), ..Context::default() };
        let deadline = r.deadline(&cx).expect("IDLE is bounded");
        assert!(deadline <= Instant::now() + Duration::from_secs(600));
        let later = Instant::now() + Duration::from_secs(601);
        assert!(matches!(r.on_time(later, &mut cx.clone()), Verdict::Disconnect { .. }));
    }

    #[test]
    fn max_commands_takes_digits_only() {
        for bad in ["+5", "-1", "5k", " 5", "1e3", ""] {
            let mut s = Settings::new(vec![("max_commands".into(), bad.into(), 3)], 1);
            build(&mut s);
            assert!(
                s.errors.contains(&(
                    3,
                    format!(
                        "max_commands: invalid number {bad:?} (expected digits only, e.g. 1000)"
                    )
                )),
                "{bad:?}: {:?}",
                s.errors
            );
        }
        rule(&[("max_commands", "100000")]);
    }
}
