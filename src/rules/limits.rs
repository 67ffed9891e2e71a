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
use crate::config::{parse_duration, parse_size};

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
    if let Some(d) = duration(settings, "idle_command_timeout") {
        limits.idle_command_timeout = d;
    }
    if let Some((v, line)) = settings.get("max_commands") {
        match v.parse() {
            Ok(n) => limits.max_commands = Some(n),
            Err(_) => settings.error(line, format!("max_commands: {v:?} is not a number")),
        }
    }
    let any = limits.max_bytes_from_client.is_some()
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
    Verdict::Disconnect { bye: format!("[LIMIT] {text}"), reason: format!("limit ({limit})") }
}

impl Rule for Session {
    fn on_command(&mut self, cmd: &mut Command, cx: &mut Context) -> Verdict {
        let l = &self.limits;
        self.commands += u64::from(!cmd.preview);
        if l.max_commands.is_some_and(|max| self.commands > max) {
            return bye("max_commands", "Too many commands in this session.");
        }
        let incoming: u64 = cmd.literal_sizes.iter().sum();
        if l.max_bytes_from_client.is_some_and(|max| cx.bytes_from_client + incoming > max) {
            return bye("max_bytes_from_client", "Too much data sent in this session.");
        }
        if cmd.name == "APPEND" {
            if let Some(max) = l.max_append_size {
                if cmd.literal_sizes.iter().any(|&n| n > max) {
                    return Verdict::Reply(format!(
                        "NO [TOOBIG] Message too large (limit {max} bytes)."
                    ));
                }
            }
        }
        Verdict::Pass
    }

    fn on_response(&mut self, resp: &mut Response, cx: &mut Context) -> Verdict {
        let l = &self.limits;
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
        let mut cmd = Command::parse(b"a APPEND INBOX {2000}\r\n", vec![2000], false).unwrap();
        assert_eq!(
            r.on_command(&mut cmd, &mut Context::default()),
            Verdict::Reply("NO [TOOBIG] Message too large (limit 1024 bytes).".into())
        );
        let mut cmd = Command::parse(b"a APPEND INBOX {20}\r\n", vec![20], false).unwrap();
        assert_eq!(r.on_command(&mut cmd, &mut Context::default()), Verdict::Pass);
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
        let mut noop = Command::parse(b"a NOOP\r\n", vec![], true).unwrap();
        assert_eq!(r.on_command(&mut noop, &mut cx), Verdict::Pass);
        assert_eq!(r.on_command(&mut noop, &mut cx), Verdict::Pass);
        assert!(
            matches!(r.on_command(&mut noop, &mut cx), Verdict::Disconnect { reason, .. } if reason == "limit (max_commands)")
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
}
