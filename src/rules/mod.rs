//! The rule engine: an ordered list of rules, each a condition (when it applies) and an
//! action (what it does to commands and responses).
//!
//! Configuration-time objects (`RuleKind`, shared by all sessions) are kept apart from
//! per-session state (`Rule`), the split Kolab's Guam conflates. A rule kind lives in one
//! module of its own and is made known in `registry.rs`; the relay knows nothing of
//! specific rules, only of `Engine`.
//!
//! Evaluation: rules run in configuration order on every complete client command and
//! every server response; a rule may rewrite the message in place and let the next rule
//! see the result; the first rule that answers, drops or disconnects ends the evaluation.
//! Conditions are evaluated when the session starts and again whenever data they test
//! arrives later (an ID command after login), so a rule can become active or passive
//! mid-session, Guam-style.

pub mod audit;
pub mod capabilities;
pub mod commands;
pub mod condition;
pub mod hide_folders;
pub mod limits;
mod load;
pub mod registry;
pub mod rewrite_folders;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::imap::command::{self, Arg};

pub use condition::Conditions;
pub use load::load;

/// A kind of rule, built once from its `[rule NAME]` section and shared by all sessions.
pub trait RuleKind: Send + Sync + fmt::Debug {
    /// Per-session state (Guam's `new/1`, called when a session starts relaying).
    fn start(&self) -> Box<dyn Rule>;

    /// Work that must happen once at start-up, before privileges are dropped (opening a
    /// file). `-t` does not call it.
    fn prepare(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Per-session behaviour of a rule. Every method has a pass-through default.
pub trait Rule: Send {
    /// Sees each client command (Guam's `apply_to_client_message`).
    fn on_command(&mut self, _cmd: &mut Command, _cx: &mut Context) -> Verdict {
        Verdict::Pass
    }

    /// Sees each server response (Guam's `apply_to_server_message`).
    fn on_response(&mut self, _resp: &mut Response, _cx: &mut Context) -> Verdict {
        Verdict::Pass
    }

    /// The next moment the rule wants `on_time` called (a session time limit).
    fn deadline(&self, _cx: &Context) -> Option<Instant> {
        None
    }

    /// Called at or after `deadline`; may end the session.
    fn on_time(&mut self, _now: Instant, _cx: &mut Context) -> Verdict {
        Verdict::Pass
    }

    /// True when the rule has commands of its own to send to the backend (`asks`): the
    /// exchange then reads no further client command until they are answered, so every
    /// client command is judged with what they tell.
    fn wants_to_ask(&self) -> bool {
        false
    }

    /// The commands to send now, at a point where no client command is in flight. Their
    /// untagged answers go to `on_answer`, never to the client.
    fn asks(&mut self, _cx: &Context) -> Vec<Ask> {
        Vec::new()
    }

    /// An untagged response to one of this rule's asks.
    fn on_answer(&mut self, _resp: &Response, _cx: &mut Context) {}

    /// The backend answered every ask of the round (`ok`: all with OK).
    fn answered(&mut self, _ok: bool, _cx: &mut Context) {}
}

/// A command a rule sends to the backend for itself (a GETMETADATA, a LIST), under a tag
/// of imapgate's that no client command can have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    pub name: String,
    pub args: Vec<Arg>,
}

/// What a rule decided about a message. Rewriting happens in place, with `Pass`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go on (the message may have been rewritten).
    Pass,
    /// Answer the command with `TAG <text>` (e.g. `NO [CANNOT] ...`); it never reaches
    /// the backend, nor do its literals. For responses: treated as `Drop`.
    Reply(String),
    /// Swallow an untagged response. For commands: treated as a refusal.
    Drop,
    /// Send `* BYE <text>` and end the session (SESSION-END `reason=limit`).
    Disconnect {
        /// Text after `* BYE `.
        bye: String,
        /// The limit, for SESSION-END's `detail=`.
        reason: String,
    },
}

/// A client command as rules see it.
#[derive(Clone, Debug)]
pub struct Command {
    /// The tag.
    pub tag: String,
    /// Upper-case name; `UID` commands keep both words (`UID MOVE`).
    pub name: String,
    /// The arguments after the name (after the sub-command of `UID`). A literal too large
    /// to hold is `Arg::Streamed`, with its size only. Rules may rewrite the name and the
    /// arguments: the backend receives the command as the rules leave it.
    pub args: Vec<Arg>,
    /// False for the beginning of a command that goes on (the literal at its end is about
    /// to be invited or streamed); the rules see the whole command again later.
    pub complete: bool,
    /// A look before anything of the command was sent on, before imapgate invites its next
    /// literal; rules that count or log commands wait for a look that is not a preview.
    pub preview: bool,
    /// An earlier part of this command already went to the backend (a large APPEND
    /// streams): rules that count or log commands did so then.
    pub continued: bool,
}

impl Command {
    /// The rules' view of a tokenized command (or of its beginning: `complete` false).
    pub fn new(parsed: command::Command, complete: bool) -> Command {
        let mut name = parsed.name;
        let mut args = parsed.args;
        // `UID MOVE 1:3 x` tokenizes as name `UID` with `MOVE` first: one name, so
        // argument indexes are those of the sub-command.
        if name == "UID" && matches!(args.first(), Some(Arg::Atom(_))) {
            let sub = args.remove(0);
            name = format!("UID {}", String::from_utf8_lossy(sub.astring().unwrap_or_default()))
                .to_ascii_uppercase();
        }
        Command { tag: parsed.tag, name, args, complete, preview: false, continued: false }
    }

    /// A complete command from its wire form (tests).
    #[cfg(test)]
    pub fn parse(raw: &[u8]) -> Option<Command> {
        command::parse(raw).ok().map(|c| Command::new(c, true))
    }

    /// The argument at `index` as a string (atom, quoted or literal).
    #[cfg(test)]
    pub fn arg(&self, index: usize) -> Option<&[u8]> {
        self.args.get(index)?.astring()
    }

    /// True the first time rules see this command with the intent to send it on: the
    /// look at which a command is counted or logged, once.
    pub fn first_look(&self) -> bool {
        !self.preview && !self.continued
    }

    /// Sizes of every literal of the command, in order, streamed ones included.
    pub fn literal_sizes(&self) -> Vec<u64> {
        fn walk(args: &[Arg], out: &mut Vec<u64>) {
            for arg in args {
                match arg {
                    Arg::List(items) => walk(items, out),
                    other => out.extend(other.literal_size()),
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.args, &mut out);
        out
    }

    /// For APPEND: the size of each message it carries (RFC 3502 MULTIAPPEND), counting
    /// every CATENATE TEXT part (RFC 4469); `None` for a message with a part whose size
    /// imapgate cannot know (a CATENATE URL).
    pub fn appended_messages(&self) -> Vec<Option<u64>> {
        if self.name != "APPEND" {
            return Vec::new();
        }
        let mut messages = Vec::new();
        let mut args = self.args.iter().skip(1).peekable();
        while let Some(arg) = args.next() {
            match arg {
                Arg::Literal { .. } | Arg::Streamed { .. } => messages.push(arg.literal_size()),
                Arg::Atom(_) if arg.is_atom("CATENATE") || arg.is_atom("UTF8") => {
                    if let Some(Arg::List(parts)) = args.peek() {
                        messages.push(catenated_size(parts));
                        args.next();
                    }
                }
                // Flags, a date-time, append extensions: not message data.
                _ => {}
            }
        }
        messages
    }
}

/// The size of a CATENATE (or UTF8) part list: TEXT literals add up, a URL is unknown.
fn catenated_size(parts: &[Arg]) -> Option<u64> {
    let mut total = 0u64;
    let mut i = 0;
    while i < parts.len() {
        match &parts[i] {
            a if a.is_atom("URL") => return None,
            a if a.is_atom("TEXT") => {}
            other => total = total.saturating_add(other.literal_size().unwrap_or(0)),
        }
        i += 1;
    }
    Some(total)
}

/// Which arguments of a command name mailboxes (after `strip_uid`), for rules that
/// check or rewrite mailbox names. COPY and MOVE name their target second.
pub fn mailbox_args(name: &str) -> &'static [usize] {
    match name {
        "SELECT" | "EXAMINE" | "STATUS" | "APPEND" | "CREATE" | "DELETE" | "SUBSCRIBE"
        | "UNSUBSCRIBE" | "GETACL" | "SETACL" | "DELETEACL" | "LISTRIGHTS" | "MYRIGHTS"
        | "GETQUOTAROOT" | "SETMETADATA" | "GETMETADATA" => &[0],
        "RENAME" => &[0, 1],
        "COPY" | "MOVE" | "UID COPY" | "UID MOVE" => &[1],
        _ => &[],
    }
}

impl Command {
    /// The mailbox arguments: (argument index, wire name). GETMETADATA may put an options
    /// list before its mailbox (RFC 5464 §4.2), which is skipped.
    pub fn mailboxes(&self) -> Vec<(usize, &[u8])> {
        let args = &self.args;
        let shift =
            usize::from(self.name == "GETMETADATA" && matches!(args.first(), Some(Arg::List(_))));
        mailbox_args(&self.name)
            .iter()
            .filter_map(|&i| Some((i + shift, args.get(i + shift)?.astring()?)))
            .collect()
    }
}

/// A server response as rules see it.
#[derive(Clone, Debug)]
pub struct Response {
    /// The assembled bytes: the whole response, or its head when `complete` is false.
    pub raw: Vec<u8>,
    /// False when a literal too large to inspect follows.
    pub complete: bool,
    /// Sizes of the literals announced so far.
    pub literal_sizes: Vec<u64>,
}

impl Response {
    /// For untagged data (`* LIST ...`, `* STATUS ...`): the upper-case name and the
    /// arguments, when they tokenize.
    pub fn untagged(&self) -> Option<(String, Vec<Arg>)> {
        let c = command::parse_untagged(&self.raw).ok()?;
        Some((c.name, c.args))
    }
}

/// What rules know about the session. Filled by the engine; rules may record what they
/// learn (the hierarchy delimiter) for other rules.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// Session id, for log lines.
    pub session: u64,
    /// The client's address.
    pub client_ip: Option<IpAddr>,
    /// The listener's name.
    pub listener: String,
    /// TLS toward the client is on.
    pub tls: bool,
    /// The subject of the client's certificate.
    pub client_cert: Option<String>,
    /// The login name as the client typed it.
    pub user: String,
    /// The backend's name.
    pub backend: String,
    /// The client's ID parameters, once sent (`Some(empty)` for `ID NIL`).
    pub client_id: Option<Vec<(String, Option<String>)>>,
    /// The server's hierarchy delimiter, once a LIST response showed it.
    pub delimiter: Option<char>,
    /// Capabilities the client was shown after login.
    pub capabilities: Vec<String>,
    /// When the session started relaying.
    pub started: Option<Instant>,
    /// The client is in IDLE (between the server's `+` and DONE).
    pub idling: bool,
    /// When a message last passed in either direction.
    pub last_activity: Option<Instant>,
    /// Bytes the client sent since login.
    pub bytes_from_client: u64,
    /// Bytes sent to the client since login.
    pub bytes_to_client: u64,
}

/// One `[rule NAME]` section after validation.
#[derive(Debug, Clone)]
pub struct RuleDef {
    /// NAME, for logs.
    pub name: String,
    /// Line of the section header.
    pub line: usize,
    /// When the rule applies.
    pub conditions: Conditions,
    /// What it does.
    pub kind: Arc<dyn RuleKind>,
}

struct Active {
    def: Arc<RuleDef>,
    rule: Box<dyn Rule>,
    applies: bool,
}

/// The rules of one session, in order, with their applicability.
pub struct Engine {
    rules: Vec<Active>,
    /// What rules know about the session.
    pub cx: Context,
    /// The rule that gave the last command verdict other than Pass: `NAME (line N)`.
    decided_by: Option<String>,
}

impl Engine {
    /// Starts the rules for a session; conditions are evaluated against `cx` now.
    pub fn new(defs: &[Arc<RuleDef>], cx: Context) -> Engine {
        let rules = defs
            .iter()
            .map(|def| Active { def: Arc::clone(def), rule: def.kind.start(), applies: false })
            .collect();
        let mut engine = Engine { rules, cx, decided_by: None };
        engine.reevaluate();
        engine
    }

    /// True when some rule applies now: the relay must show it every message.
    pub fn is_active(&self) -> bool {
        self.rules.iter().any(|r| r.applies)
    }

    /// True when a passive rule could become active later: its conditions test ID
    /// parameters, which the client may send after login.
    pub fn may_become_active(&self) -> bool {
        self.rules.iter().any(|r| !r.applies && r.def.conditions.tests_id())
    }

    /// Re-evaluates every condition, logging each change.
    pub fn reevaluate(&mut self) {
        for r in &mut self.rules {
            let applies = r.def.conditions.matches(&self.cx);
            if applies != r.applies {
                let state = if applies { "active" } else { "passive" };
                log::debug!("id={} rule={} is now {state}", self.cx.session, r.def.name);
            }
            r.applies = applies;
        }
    }

    /// Runs the applicable rules on a command, in order, until one is terminal. The
    /// caller logs refusals (`decided_by` names the rule), so it can bound how many.
    pub fn command(&mut self, cmd: &mut Command) -> Verdict {
        self.decided_by = None;
        if cmd.name == "ID" && cmd.complete {
            self.learn_id(cmd);
        }
        let cx = &mut self.cx;
        for r in self.rules.iter_mut().filter(|r| r.applies) {
            let verdict = r.rule.on_command(cmd, cx);
            if verdict != Verdict::Pass {
                count(&r.def.name, decision_word(&verdict, "refuse"));
                self.decided_by = Some(format!("{} (line {})", r.def.name, r.def.line));
                return verdict;
            }
        }
        Verdict::Pass
    }

    /// The rule behind the last refusal of `command`, as `NAME (line N)`.
    pub fn decided_by(&self) -> Option<String> {
        self.decided_by.clone()
    }

    /// Runs the applicable rules on a response, in order, until one is terminal.
    pub fn response(&mut self, resp: &mut Response) -> Verdict {
        let cx = &mut self.cx;
        for r in self.rules.iter_mut().filter(|r| r.applies) {
            match r.rule.on_response(resp, cx) {
                Verdict::Pass => {}
                Verdict::Reply(_) | Verdict::Drop => {
                    count(&r.def.name, "drop");
                    return Verdict::Drop;
                }
                other => {
                    count(&r.def.name, decision_word(&other, "drop"));
                    log::info!("id={} rule={} {}", cx.session, r.def.name, verdict_word(&other));
                    return other;
                }
            }
        }
        Verdict::Pass
    }

    /// True when an applicable rule has commands of its own to send.
    pub fn wants_to_ask(&self) -> bool {
        self.rules.iter().any(|r| r.applies && r.rule.wants_to_ask())
    }

    /// The commands of the first applicable rule that has some, and which rule it is.
    pub fn asks(&mut self) -> Option<(usize, Vec<Ask>)> {
        let cx = &self.cx;
        self.rules.iter_mut().enumerate().filter(|(_, r)| r.applies).find_map(|(i, r)| {
            let asks = r.rule.asks(cx);
            (!asks.is_empty()).then_some((i, asks))
        })
    }

    /// An untagged answer to rule `i`'s asks.
    pub fn on_answer(&mut self, i: usize, resp: &Response) {
        if let Some(r) = self.rules.get_mut(i) {
            r.rule.on_answer(resp, &mut self.cx);
        }
    }

    /// Rule `i`'s asks are all answered.
    pub fn answered(&mut self, i: usize, ok: bool) {
        if let Some(r) = self.rules.get_mut(i) {
            r.rule.answered(ok, &mut self.cx);
        }
    }

    /// The earliest deadline of an applicable rule.
    pub fn deadline(&self) -> Option<Instant> {
        self.rules.iter().filter(|r| r.applies).filter_map(|r| r.rule.deadline(&self.cx)).min()
    }

    /// Lets rules act on time; the first terminal verdict wins.
    pub fn on_time(&mut self, now: Instant) -> Verdict {
        let cx = &mut self.cx;
        for r in self.rules.iter_mut().filter(|r| r.applies) {
            let verdict = r.rule.on_time(now, cx);
            if verdict != Verdict::Pass {
                count(&r.def.name, decision_word(&verdict, "drop"));
                log::info!("id={} rule={} {}", cx.session, r.def.name, verdict_word(&verdict));
                return verdict;
            }
        }
        Verdict::Pass
    }

    /// An ID command after login changes what ID conditions see (RFC 2971 allows ID in
    /// any state). Rules are re-evaluated before they see the command itself.
    fn learn_id(&mut self, cmd: &Command) {
        let params = match cmd.args.as_slice() {
            [arg] if arg.is_nil() => Vec::new(),
            [Arg::List(items)] => items
                .chunks(2)
                .filter_map(|pair| {
                    let field = pair.first()?.astring()?;
                    let value =
                        pair.get(1).and_then(|v| if v.is_nil() { None } else { v.astring() });
                    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                    Some((text(field), value.map(text)))
                })
                .collect(),
            _ => return,
        };
        self.cx.client_id = Some(params);
        self.reevaluate();
    }
}

/// The `decision` label of a verdict other than pass; `refusal` names what Reply and
/// Drop mean where it was given (a refused command, a dropped response).
fn decision_word(v: &Verdict, refusal: &'static str) -> &'static str {
    match v {
        Verdict::Disconnect { .. } => "disconnect",
        Verdict::Pass => "pass",
        Verdict::Reply(_) | Verdict::Drop => refusal,
    }
}

/// Counts a rule's decision in the metrics registry.
fn count(rule: &str, decision: &'static str) {
    crate::metrics::add(crate::metrics::Metric::RuleDecisions, &[rule, decision], 1);
}

fn verdict_word(v: &Verdict) -> String {
    match v {
        Verdict::Pass => "pass".into(),
        Verdict::Reply(text) => format!("reply \"{text}\" to"),
        Verdict::Drop => "drop".into(),
        Verdict::Disconnect { reason, .. } => format!("disconnect ({reason})"),
    }
}

#[cfg(test)]
mod tests {
    use super::registry::{build, Settings};
    use super::*;
    use crate::metrics::{self, Metric};

    fn def(name: &str, kind: &str, keys: &[(&str, &str)]) -> Arc<RuleDef> {
        let entries = keys.iter().map(|(k, v)| (k.to_string(), v.to_string(), 2)).collect();
        let mut settings = Settings::new(entries, 1);
        let kind = build(kind, &mut settings).unwrap().unwrap();
        Arc::new(RuleDef { name: name.into(), line: 1, conditions: Conditions::default(), kind })
    }

    #[test]
    fn decisions_other_than_pass_are_counted_per_rule() {
        let defs = [
            def("metrics-deny", "commands", &[("deny", "DELETE")]),
            def("metrics-hide", "hide_folders", &[("folders", "Calendar")]),
        ];
        let cx = Context { delimiter: Some('/'), ..Context::default() };
        let mut engine = Engine::new(&defs, cx);
        let mut delete = Command::parse(b"a DELETE x\r\n").unwrap();
        assert!(matches!(engine.command(&mut delete), Verdict::Reply(_)));
        let mut noop = Command::parse(b"b NOOP\r\n").unwrap();
        assert_eq!(engine.command(&mut noop), Verdict::Pass);
        let mut list = Response {
            raw: b"* LIST () \"/\" Calendar\r\n".to_vec(),
            complete: true,
            literal_sizes: vec![],
        };
        assert_eq!(engine.response(&mut list), Verdict::Drop);
        let registry = metrics::global();
        assert_eq!(registry.get(Metric::RuleDecisions, &["metrics-deny", "refuse"]), 1);
        assert_eq!(registry.get(Metric::RuleDecisions, &["metrics-deny", "pass"]), 0);
        assert_eq!(registry.get(Metric::RuleDecisions, &["metrics-hide", "drop"]), 1);
    }
}
