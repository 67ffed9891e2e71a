//! Command smuggling: each way a client could make the backend execute bytes the rules did
//! not judge, against a Dovecot that keeps its own record (rawlog and command events).
//! The verdict comes from Dovecot's record and the mailbox state, not from imapgate's
//! replies: the backend executes only commands the rules judged, in imapgate's form.

use crate::common::dovecot::Executed;
use crate::common::*;
use crate::rules::{list_names, status_messages, tagged};

pub const DENY_HIDE: &str = "[rule no-delete]\ntype = commands\ndeny = DELETE EXPUNGE\n\n\
     [rule groupware]\ntype = hide_folders\nfolders = Calendar Contacts\n\n\
     [rule audit]\ntype = audit\n";

pub const LIMIT: &str = "[rule lim]\ntype = limits\nmax_append_size = 1k\n";

/// Folders every scenario starts with; Calendar and Contacts are hidden.
pub const FOLDERS: &[&str] =
    &["Victim", "ScratchA", "ScratchB", "ScratchC", "Calendar", "Contacts"];

/// A recorded Dovecot, a user with `FOLDERS` (a message in Calendar, one \Deleted message
/// in INBOX), and imapgate with `sections` on its listener.
pub struct Recorded {
    pub dv: Dovecot,
    pub px: Proxy,
    pub user: String,
}

impl Recorded {
    pub fn new(prefix: &str, rules: &str, sections: &str) -> Recorded {
        // The list index makes Dovecot's NOTIFY report renames (with OLDNAME).
        let dv = Dovecot::start_recorded("mailbox_list_index = yes\n");
        let user = unique_user(prefix);
        let mut d = dv.connect_as(&user);
        for f in FOLDERS {
            d.cmd_ok("C", &format!("CREATE {f}"));
        }
        d.logout();
        dv.append_message(&user, "Calendar", &text_message("meeting", "secret agenda"));
        dv.append_message(&user, "INBOX", &text_message("survivor", "body"));
        let mut d = dv.connect_as(&user);
        d.cmd_ok("S", "SELECT INBOX");
        d.cmd_ok("F", "STORE 1 +FLAGS (\\Deleted)");
        d.logout();
        // Only sessions through imapgate are recorded from here on.
        dv.record_user(&user);
        let config = format!("{}rules = {rules}\n\n{sections}", minimal_config(dv.port));
        let px = Proxy::start(&config);
        Recorded { dv, px, user }
    }

    pub fn client(&self) -> Client {
        let mut c = Client::connect(self.px.port);
        c.login(&self.user, "secret");
        c
    }

    /// A direct session to Dovecot: not recorded (it logs in as the user, but after the
    /// checks, so callers read the record first).
    fn direct(&self) -> Client {
        self.dv.connect_as(&self.user)
    }

    pub fn mailboxes(&self) -> Vec<String> {
        let mut d = self.direct();
        let names = list_names(&d.cmd_ok("L", "LIST \"\" \"*\""));
        d.logout();
        names
    }

    pub fn messages(&self, mailbox: &str) -> Option<u32> {
        let mut d = self.direct();
        let r = d.cmd("S", &format!("STATUS {mailbox} (MESSAGES)"));
        d.logout();
        status_messages(&r)
    }

    /// Dovecot's command events for sessions through imapgate, once `tag` (a barrier the
    /// test sent last, which imapgate maps to some backend tag) is among them: waits for
    /// at least `count` events.
    pub fn executed(&self, count: usize) -> Vec<Executed> {
        wait_until(WAIT, || {
            let e = self.dv.executed(&self.user);
            (e.len() >= count).then_some(e)
        })
        .unwrap_or_else(|| {
            panic!("fewer than {count} command events in Dovecot's log:\n{}", self.dv.log())
        })
    }

    /// Everything the recorded sessions sent Dovecot, read with imapgate's serialization
    /// in mind: a command's first line, then `{n}` literals of exactly n bytes.
    pub fn forwarded_commands(&self) -> Vec<Vec<u8>> {
        let sessions = self.dv.rawlog(&self.user);
        sessions.iter().flat_map(|(input, output)| commands_in(input, output)).collect()
    }

    /// The backend's own record shows no denied command and no hidden folder, the
    /// folders and messages are all there, and every command Dovecot received carries
    /// imapgate's tag (no client bytes went through unjudged).
    #[track_caller]
    pub fn assert_untouched(&self) {
        let commands = self.forwarded_commands();
        assert!(!commands.is_empty(), "Dovecot recorded no session through imapgate");
        for (i, cmd) in commands.iter().enumerate() {
            assert!(
                is_imapgate_tag(cmd),
                "a command not in imapgate's form reached Dovecot: {:?}, after {:?}",
                String::from_utf8_lossy(cmd),
                commands[i.saturating_sub(2)..i]
                    .iter()
                    .map(|c| String::from_utf8_lossy(c))
                    .collect::<Vec<_>>()
            );
            assert_judged(cmd);
        }
        for e in self.dv.executed(&self.user) {
            // Dovecot's own reading of each command it ran, arguments re-quoted by it.
            let as_read = format!("{} {} {}", e.tag, e.input_name, e.args);
            assert_judged(as_read.as_bytes());
        }
        let names = self.mailboxes();
        for f in FOLDERS {
            assert!(names.iter().any(|n| n == f), "{f} is gone: {names:?}");
        }
        assert_eq!(self.messages("INBOX"), Some(1), "the \\Deleted INBOX message was expunged");
        assert_eq!(self.messages("Calendar"), Some(1));
    }
}

/// Splits one session's rawlog into the commands Dovecot read (lines and literal data,
/// final CRLF removed). imapgate sends a literal's data only after Dovecot's `+`, so the
/// reader follows Dovecot's output in step: after an announcement, the data follows if
/// Dovecot's next continuation-or-answer is a `+`, and the command ended if it is the
/// command's tagged answer.
pub fn commands_in(input: &[u8], output: &[u8]) -> Vec<Vec<u8>> {
    let responses = responses_in(output);
    let mut responses = responses.iter().peekable();
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut rest = input;
    let mut current = Vec::new();
    let finish = |cmd: &mut Vec<u8>, out: &mut Vec<Vec<u8>>| {
        let mut cmd = std::mem::take(cmd);
        while cmd.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            cmd.pop();
        }
        if !cmd.is_empty() && !cmd.eq_ignore_ascii_case(b"DONE") {
            out.push(cmd);
        }
    };
    while !rest.is_empty() {
        let end = rest.iter().position(|&b| b == b'\n').map_or(rest.len(), |i| i + 1);
        let line = &rest[..end];
        rest = &rest[end..];
        let tag = if current.is_empty() {
            first_line(line).split(' ').next().unwrap_or("").to_string()
        } else {
            tag_of(&current)
        };
        current.extend_from_slice(line);
        let idle = first_line(line).eq_ignore_ascii_case(&format!("{tag} IDLE"));
        match client::literal_len(line) {
            Some(n) => {
                // Dovecot's decision: `+` (the data follows) or the tagged answer.
                let mut granted = false;
                for r in responses.by_ref() {
                    if r.starts_with(b"+") {
                        granted = true;
                        break;
                    }
                    if r.starts_with(format!("{tag} ").as_bytes()) {
                        break;
                    }
                }
                if granted {
                    let n = n.min(rest.len());
                    current.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                } else {
                    finish(&mut current, &mut out);
                }
            }
            None => {
                if idle {
                    // IDLE's `+` is not a literal's.
                    for r in responses.by_ref() {
                        if r.starts_with(b"+") || r.starts_with(format!("{tag} ").as_bytes()) {
                            break;
                        }
                    }
                }
                finish(&mut current, &mut out);
            }
        }
    }
    // A command cut off by the end of the session counts too.
    finish(&mut current, &mut out);
    out
}

fn tag_of(cmd: &[u8]) -> String {
    first_line(cmd).split(' ').next().unwrap_or("").to_string()
}

/// Dovecot's responses, each with its literals.
fn responses_in(output: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = output;
    let mut current = Vec::new();
    while !rest.is_empty() {
        let end = rest.iter().position(|&b| b == b'\n').map_or(rest.len(), |i| i + 1);
        let line = &rest[..end];
        rest = &rest[end..];
        current.extend_from_slice(line);
        match client::literal_len(line) {
            Some(n) if !current.starts_with(b"+") => {
                let n = n.min(rest.len());
                current.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
            }
            _ => out.push(std::mem::take(&mut current)),
        }
    }
    out
}

/// The first line of a command, as text.
pub fn first_line(cmd: &[u8]) -> String {
    let end = cmd.iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(cmd.len());
    String::from_utf8_lossy(&cmd[..end]).into_owned()
}

fn is_imapgate_tag(cmd: &[u8]) -> bool {
    let line = first_line(cmd);
    let tag = line.split(' ').next().unwrap_or("");
    tag.len() > 1 && tag.starts_with('g') && tag[1..].bytes().all(|b| b.is_ascii_digit())
}

/// A top-level token of a command, read independently of imapgate's tokenizer.
#[derive(Debug)]
enum Tok {
    Atom(String),
    Str(Vec<u8>),
    List,
}

/// Tag, upper-case name (with a UID sub-command) and top-level arguments.
fn tokens(cmd: &[u8]) -> (String, String, Vec<Tok>) {
    let mut toks = Vec::new();
    let mut i = 0;
    while i < cmd.len() {
        match cmd[i] {
            b' ' | b'\r' | b'\n' => i += 1,
            b'"' => {
                let mut s = Vec::new();
                i += 1;
                while i < cmd.len() && cmd[i] != b'"' {
                    if cmd[i] == b'\\' {
                        i += 1;
                    }
                    s.extend(cmd.get(i));
                    i += 1;
                }
                i += 1;
                toks.push(Tok::Str(s));
            }
            b'{' | b'~' => {
                let close = cmd[i..].iter().position(|&b| b == b'}').map_or(cmd.len(), |p| i + p);
                let n: usize = String::from_utf8_lossy(&cmd[i..close])
                    .trim_matches(|c: char| !c.is_ascii_digit())
                    .parse()
                    .unwrap_or(0);
                let start = (close + 3).min(cmd.len());
                let end = (start + n).min(cmd.len());
                toks.push(Tok::Str(cmd[start..end].to_vec()));
                i = end;
            }
            b'(' => {
                let mut depth = 0;
                while i < cmd.len() {
                    match cmd[i] {
                        b'(' => depth += 1,
                        b')' => depth -= 1,
                        _ => {}
                    }
                    i += 1;
                    if depth == 0 {
                        break;
                    }
                }
                toks.push(Tok::List);
            }
            _ => {
                let start = i;
                while i < cmd.len() && !b" ()\r\n".contains(&cmd[i]) {
                    i += 1;
                }
                toks.push(Tok::Atom(String::from_utf8_lossy(&cmd[start..i]).into_owned()));
            }
        }
    }
    let mut toks = toks.into_iter();
    let word = |t: Option<Tok>| match t {
        Some(Tok::Atom(a)) => a,
        other => format!("{other:?}"),
    };
    let tag = word(toks.next());
    let mut name = word(toks.next()).to_ascii_uppercase();
    let mut args: Vec<Tok> = toks.collect();
    if name == "UID" && !args.is_empty() {
        if let Tok::Atom(sub) = args.remove(0) {
            name = format!("UID {}", sub.to_ascii_uppercase());
        }
    }
    (tag, name, args)
}

fn is_hidden(name: &[u8]) -> bool {
    let name = String::from_utf8_lossy(name);
    ["Calendar", "Contacts"].iter().any(|h| name == *h || name.starts_with(&format!("{h}.")))
}

/// A command as Dovecot received it names no denied command and no hidden folder (as a
/// mailbox argument or in an IMAP URL).
#[track_caller]
fn assert_judged(cmd: &[u8]) {
    let (_, name, args) = tokens(cmd);
    let line = first_line(cmd);
    let base = name.strip_prefix("UID ").unwrap_or(&name);
    assert!(!matches!(base, "DELETE" | "EXPUNGE"), "denied command reached Dovecot: {line}");
    let positions: &[usize] = match name.as_str() {
        "RENAME" => &[0, 1],
        "COPY" | "MOVE" | "UID COPY" | "UID MOVE" => &[1],
        n if MAILBOX_COMMANDS.contains(&n) => &[0],
        _ => &[],
    };
    for &p in positions {
        let arg = match args.get(p) {
            Some(Tok::Atom(a)) => a.as_bytes().to_vec(),
            Some(Tok::Str(s)) => s.clone(),
            _ => continue,
        };
        assert!(
            !is_hidden(&arg),
            "hidden folder reached Dovecot: {}",
            String::from_utf8_lossy(cmd)
        );
    }
    if matches!(name.as_str(), "APPEND" | "URLFETCH") {
        let text = String::from_utf8_lossy(cmd);
        assert!(!text.contains("URL \"/Calendar") && !text.contains("URL \"/Contacts"), "{text}");
    }
}

/// Commands whose arguments name mailboxes (or URLs with mailboxes).
const MAILBOX_COMMANDS: &[&str] = &[
    "SELECT",
    "EXAMINE",
    "STATUS",
    "CREATE",
    "DELETE",
    "RENAME",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "APPEND",
    "COPY",
    "MOVE",
    "GETMETADATA",
    "SETMETADATA",
    "URLFETCH",
    "NOTIFY",
    "GETACL",
    "MYRIGHTS",
];

/// Sends raw bytes, then a NOOP as a barrier; returns everything up to its answer.
pub fn send_then_barrier(c: &mut Client, bytes: &[u8], barrier: &str) -> String {
    c.send(bytes);
    c.send_line(&format!("{barrier} NOOP"));
    text(&c.read_until_tagged(barrier))
}

#[test]
fn smuggling_literal_of_a_command_dovecot_rejects_runs_nothing() {
    let w = Recorded::new("sm-reject", "no-delete, groupware, audit", DENY_HIDE);
    let mut c = w.client();
    let out = send_then_barrier(&mut c, b"a XYZZY {19+}\r\nb SELECT Calendar\r\n\r\n", "z1");
    assert!(!out.contains("b OK"), "{out}");
    let out = send_then_barrier(&mut c, b"x SEARCH \"abc {19+}\r\nd DELETE ScratchA\r\n\r\n", "z2");
    assert!(out.contains("x BAD"), "{out}");
    assert!(!out.contains("d OK"), "{out}");
    c.logout();
    w.executed(3);
    w.assert_untouched();
    // Dovecot saw the unknown command, without the literal it never asked for.
    let xyzzy =
        w.forwarded_commands().iter().map(|c| first_line(c)).find(|l| l.contains("XYZZY")).unwrap();
    assert!(xyzzy.ends_with(" XYZZY {19}"), "{xyzzy}");
    assert!(!String::from_utf8_lossy(&w.dv.rawlog_in(&w.user)).contains("SELECT Calendar"));
    // The audit saw what Dovecot saw.
    w.px.wait_for_log(r"AUDIT id=\d+ user=\S+ tag=a command=XYZZY");
}

#[test]
fn smuggling_literal_right_after_a_quote_is_not_a_second_reading() {
    let w = Recorded::new("sm-quote", "no-delete, groupware", DENY_HIDE);
    let mut c = w.client();
    let out = send_then_barrier(
        &mut c,
        b"a SEARCH \"x\"{16+}\r\nb SEARCH {21+}\r\n\r\nd DELETE ScratchB\r\n\r\n",
        "z1",
    );
    assert!(out.contains("a BAD"), "{out}");
    let out = send_then_barrier(
        &mut c,
        b"e SELECT INBOX\r\nf SEARCH (ALL){22+}\r\ng DELETE ScratchB\r\n\r\n",
        "z2",
    );
    assert!(out.contains("f BAD"), "{out}");
    c.logout();
    w.executed(4);
    w.assert_untouched();
}

#[test]
fn smuggling_through_idle_continuation_lines_runs_nothing_unjudged() {
    let w = Recorded::new("sm-idle", "no-delete, groupware", DENY_HIDE);
    let mut c = w.client();
    c.cmd_ok("s", "SELECT INBOX");
    c.send_line("i IDLE");
    let cont = c.read_line();
    assert!(cont.starts_with(b"+"), "{}", text(&cont));
    // Not DONE: the IDLE ends and the line is judged, here refused.
    c.send(b"b DELETE ScratchC\r\n");
    let r = text(&c.read_until_tagged("b"));
    assert!(r.contains("b NO [NOPERM]"), "{r}");
    // imapgate ended the IDLE with its own DONE.
    let r = text(&c.read_until_tagged("i"));
    assert!(r.contains("i OK"), "{r}");
    // A literal in the line that ends an IDLE is judged as a command's literal.
    c.send_line("j IDLE");
    let cont = c.read_line();
    assert!(cont.starts_with(b"+"), "{}", text(&cont));
    let out = send_then_barrier(&mut c, b"k XYZZY {19+}\r\nd SELECT Calendar\r\n\r\n", "z1");
    assert!(out.contains("k BAD"), "{out}");
    assert!(out.contains("j OK"), "{out}");
    c.send_line("l IDLE");
    assert!(c.read_line().starts_with(b"+"));
    c.send(b"done\r\n");
    let r = text(&c.read_until_tagged("l"));
    assert!(r.contains("l OK"), "{r}");
    c.logout();
    w.executed(6);
    w.assert_untouched();
}

#[test]
fn smuggling_later_parts_of_a_streamed_append_are_judged() {
    let w = Recorded::new("sm-stream", "no-delete, groupware", DENY_HIDE);
    // MULTIAPPEND: a message too large to hold streams; the CATENATE URL of the second
    // message points into the hidden Calendar and aborts the command.
    let mut c = w.client();
    let big = binary_message(300_000, "big");
    c.send_line(&format!("a APPEND INBOX {{{}}}", big.len()));
    let cont = c.read_line();
    assert!(cont.starts_with(b"+"), "Dovecot's + for the streamed message: {}", text(&cont));
    c.send(&big);
    c.send(b" CATENATE (URL \"/Calendar/;UID=1\")\r\n");
    let rest = text(&c.read_to_eof());
    assert!(rest.contains("a NO [NONEXISTENT]"), "{rest}");
    assert!(rest.contains("* BYE"), "{rest}");
    // The same through a CATENATE list: a large TEXT part, then the URL.
    let mut c = w.client();
    c.send_line("b APPEND INBOX CATENATE (TEXT {300000}");
    assert!(c.read_line().starts_with(b"+"));
    c.send(&vec![b'x'; 300_000]);
    c.send(b" URL \"/INBOX/;UID=1\" URL \"/Calendar/;UID=1\")\r\n");
    let rest = text(&c.read_to_eof());
    assert!(rest.contains("b NO [NONEXISTENT]"), "{rest}");
    w.assert_untouched();
    let raw = w.dv.rawlog_in(&w.user);
    assert!(
        !String::from_utf8_lossy(&raw).contains("Calendar"),
        "the refused part reached Dovecot: {:?}",
        w.forwarded_commands().iter().map(|c| first_line(c)).collect::<Vec<_>>()
    );
}

#[test]
fn smuggling_size_limits_hold_per_message_and_for_streamed_messages() {
    let w = Recorded::new("sm-size", "no-delete, groupware, lim", &format!("{DENY_HIDE}{LIMIT}"));
    let mut c = w.client();
    // 2 MiB, announced: refused before a byte of it is invited.
    let r = c.cmd("a", "APPEND INBOX {2097152}");
    assert!(tagged(&r).starts_with("a NO [TOOBIG]"), "{}", text(&r));
    // MULTIAPPEND: a small first message, then a 2 MiB one.
    c.send_line("b APPEND INBOX {10}");
    assert!(c.read_line().starts_with(b"+"));
    c.send(b"Subject: x");
    c.send(b" {2097152+}\r\n");
    c.send(&vec![b'y'; 2_097_152]);
    c.send(b"\r\n");
    let r = text(&c.read_until_tagged("b"));
    assert!(r.contains("b NO [TOOBIG]"), "{r}");
    // Fifty 1,000-byte CATENATE parts make one 50,000-byte message.
    let mut cmd = b"d APPEND INBOX CATENATE (".to_vec();
    for i in 0..50 {
        if i > 0 {
            cmd.push(b' ');
        }
        cmd.extend_from_slice(b"TEXT {1000+}\r\n");
        cmd.extend_from_slice(&[b'z'; 1000]);
    }
    cmd.extend_from_slice(b")\r\n");
    c.send(&cmd);
    let r = text(&c.read_until_tagged("d"));
    assert!(r.contains("d NO [TOOBIG]"), "{r}");
    // The limit is announced.
    let caps = text(&c.cmd_ok("k", "CAPABILITY"));
    assert!(caps.contains("APPENDLIMIT=1024") && !caps.contains("CATENATE"), "{caps}");
    c.logout();
    w.assert_untouched();
}

#[test]
fn smuggling_a_flood_of_refused_commands_keeps_imapgate_small() {
    let w = Recorded::new("sm-flood", "no-delete, groupware", DENY_HIDE);
    let mut c = w.client();
    c.cmd_ok("n", "NOOP");
    let before = w.px.rss_kib();
    // 8 MiB of commands imapgate refuses itself, without reading a single answer.
    let writer = c.writer();
    const ROUNDS: usize = 85;
    const PAIRS: usize = 4096; // 24 bytes each: 85 rounds are 8.2 MiB
    let sender = std::thread::spawn(move || {
        let mut writer = writer;
        let chunk = b"a DELETE x\r\nb STARTTLS\r\n".repeat(PAIRS);
        for _ in 0..ROUNDS {
            std::io::Write::write_all(&mut writer, &chunk).expect("flood");
        }
        std::io::Write::write_all(&mut writer, b"z NOOP\r\n").expect("barrier");
    });
    // Let imapgate fill the socket buffers and stop reading.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let during = w.px.rss_kib();
    assert!(
        during < before + 4 * 1024,
        "imapgate grew from {before} KiB to {during} KiB while the client did not read"
    );
    // The client reads now: every command is answered, none reached Dovecot.
    c.set_timeout(std::time::Duration::from_secs(120));
    let mut refusals = 0usize;
    loop {
        let line = c.read_line();
        if line.starts_with(b"a NO [NOPERM]") || line.starts_with(b"b NO [CANNOT]") {
            refusals += 1;
        } else if line.starts_with(b"z OK") {
            break;
        } else {
            panic!("unexpected answer {}", text(&line));
        }
    }
    assert_eq!(refusals, 2 * PAIRS * ROUNDS);
    sender.join().expect("sender");
    c.logout();
    let log = w.px.log();
    let lines = log.lines().filter(|l| l.contains(" refused tag=")).count();
    assert!(lines <= 20, "{lines} refusal lines logged");
    w.px.wait_for_log(r"refused \d+ more commands \(not logged one by one\)");
    w.assert_untouched();
}

#[test]
fn smuggling_deny_expunge_covers_close_move_and_replace() {
    let w = Recorded::new("sm-close", "no-delete, groupware", DENY_HIDE);
    let mut c = w.client();
    c.cmd_ok("s", "SELECT INBOX");
    let r = c.cmd("m", "MOVE 1 Victim");
    assert!(tagged(&r).starts_with("m NO [NOPERM]"), "{}", text(&r));
    let r = c.cmd("u", "UID MOVE 1:* Victim");
    assert!(tagged(&r).starts_with("u NO [NOPERM]"), "{}", text(&r));
    // CLOSE leaves the mailbox without expunging (UNSELECT on the backend).
    c.cmd_ok("c", "CLOSE");
    c.logout();
    w.assert_untouched();
    assert!(w.forwarded_commands().iter().any(|c| first_line(c).ends_with(" UNSELECT")));
}

#[test]
fn smuggling_control_characters_in_tags_do_not_reach_the_log_raw() {
    let w = Recorded::new("sm-ctl", "no-delete, groupware", DENY_HIDE);
    let mut c = w.client();
    c.send(b"a\x1b[31mX DELETE Victim\r\n");
    c.send_line("z NOOP");
    let r = text(&c.read_until_tagged("z"));
    assert!(r.contains("BAD"), "{r}");
    c.send(b"t\x7f DELETE Victim\r\nz2 NOOP\r\n");
    c.read_until_tagged("z2");
    c.logout();
    let log = w.px.log();
    assert!(!log.contains('\x1b') && !log.contains('\x7f'), "raw control bytes in the log");
    w.assert_untouched();
}

#[test]
fn smuggling_hidden_folders_leave_no_trace_in_child_attributes() {
    let sections = "[rule hide]\ntype = hide_folders\nfolders = Projects.Secret\n";
    let dv = Dovecot::start();
    let user = unique_user("sm-children");
    let mut d = dv.connect_as(&user);
    d.cmd_ok("C", "CREATE Projects.Secret");
    d.cmd_ok("C", "CREATE Work.Plan");
    let direct = text(&d.cmd_ok("L", "LIST \"\" \"*\""));
    assert!(direct.contains("\\HasChildren) \".\" Projects"), "{direct}");
    d.logout();
    let px = Proxy::start(&format!("{}rules = hide\n\n{sections}", minimal_config(dv.port)));
    let mut c = Client::connect(px.port);
    c.login(&user, "secret");
    let all = text(&c.cmd_ok("a", "LIST \"\" \"*\""));
    assert!(!all.contains("Secret"), "{all}");
    assert!(all.contains("\\HasNoChildren) \".\" Projects"), "{all}");
    assert!(all.contains("\\HasChildren) \".\" Work"), "{all}");
    let top = text(&c.cmd_ok("b", "LIST \"\" \"%\""));
    assert!(!top.contains("HasChildren) \".\" Projects"), "{top}");
    let names = list_names(top.as_bytes());
    assert!(names.contains(&"Projects".to_string()), "{top}");
    c.logout();
}

/// The literal-framing cases against Cyrus, whose parser and error recovery differ from
/// Dovecot's (it swallows `{n+}` data after an error, and reads literals only where its
/// grammar expects strings). The verdict comes from Cyrus's own telemetry and mailboxes.
#[test]
fn smuggling_literal_framing_cases_run_nothing_on_cyrus_either() {
    use crate::common::cyrus::Cyrus;
    let cy = Cyrus::start(&["carol"]);
    let mut d = Client::connect(cy.port);
    d.login("carol", "secret");
    for f in ["Victim", "ScratchA", "ScratchB", "Calendar"] {
        d.cmd_ok("C", &format!("CREATE {f}"));
    }
    let names = list_names(&d.cmd_ok("L", "LIST \"\" \"*\""));
    d.logout();
    let victim = names.iter().find(|n| n.ends_with("Victim")).expect("Victim listed").clone();
    let prefix = &victim[..victim.len() - "Victim".len()];
    cy.record_user("carol");
    let sections = format!(
        "[rule no-delete]\ntype = commands\ndeny = DELETE EXPUNGE\n\n\
         [rule groupware]\ntype = hide_folders\nfolders = Calendar {prefix}Calendar\n"
    );
    let px = Proxy::start(&format!(
        "{}rules = no-delete, groupware\n\n{sections}",
        minimal_config(cy.port)
    ));
    let mut c = Client::connect(px.port);
    c.login("carol", "secret");
    c.cmd_ok("s", "SELECT INBOX");
    let cases: Vec<Vec<u8>> = vec![
        format!("a XYZZY {{19+}}\r\nb SELECT {prefix}Calendar\r\n\r\n").into_bytes(),
        format!("x SEARCH \"abc {{{}+}}\r\nd DELETE {prefix}ScratchA\r\n\r\n", 17 + prefix.len())
            .into_bytes(),
        format!(
            "a SEARCH \"x\"{{16+}}\r\nb SEARCH {{{}+}}\r\n\r\nd DELETE {prefix}ScratchB\r\n\r\n",
            21 + prefix.len()
        )
        .into_bytes(),
        format!("e FETCH {{5+}}\r\n1:* x DELETE {prefix}Victim\r\n").into_bytes(),
    ];
    for (i, case) in cases.iter().enumerate() {
        let out = send_then_barrier(&mut c, case, &format!("z{i}"));
        assert!(!out.contains(" OK Completed") || !out.contains("DELETE"), "{out}");
    }
    c.logout();
    let record = cy.telemetry("carol");
    let input = telemetry_input(&record);
    let commands: Vec<String> =
        commands_in(&input, &telemetry_output(&record)).iter().map(|c| first_line(c)).collect();
    assert!(commands.iter().any(|l| l.ends_with(" XYZZY {19}")), "{commands:?}");
    for line in commands {
        if line.is_empty() {
            continue;
        }
        let name = line.split(' ').nth(1).unwrap_or("").to_ascii_uppercase();
        assert_ne!(name, "DELETE", "Cyrus received {line}");
        if name == "SELECT" {
            assert!(!line.contains("Calendar"), "Cyrus received {line}");
        }
    }
    let mut d = Client::connect(cy.port);
    d.login("carol", "secret");
    let after = list_names(&d.cmd_ok("L", "LIST \"\" \"*\""));
    d.logout();
    for f in ["Victim", "ScratchA", "ScratchB"] {
        assert!(after.iter().any(|n| n.ends_with(f)), "{f} is gone on Cyrus: {after:?}");
    }
}

/// The input half of a Cyrus telemetry record: lines after `<TIME<` marks, up to the next
/// `>TIME>` mark (output lines that continue an output block carry no mark).
fn telemetry_input(record: &[u8]) -> Vec<u8> {
    telemetry_half(record, b'<')
}

fn telemetry_output(record: &[u8]) -> Vec<u8> {
    telemetry_half(record, b'>')
}

fn telemetry_half(record: &[u8], mark: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let mut input = false;
    for line in record.split_inclusive(|&b| b == b'\n') {
        let marked = |m: u8| {
            line.first() == Some(&m)
                && line[1..]
                    .iter()
                    .position(|&b| b == m)
                    .is_some_and(|i| line[1..=i].iter().all(u8::is_ascii_digit))
        };
        let other = if mark == b'<' { b'>' } else { b'<' };
        if marked(mark) {
            input = true;
            let at = line[1..].iter().position(|&b| b == mark).unwrap() + 2;
            out.extend_from_slice(&line[at..]);
        } else if marked(other) {
            input = false;
        } else if input {
            out.extend_from_slice(line);
        }
    }
    out
}

#[test]
fn smuggling_notify_shows_no_rename_from_a_hidden_folder() {
    let w = Recorded::new("sm-notify", "no-delete, groupware", DENY_HIDE);
    let mut c = w.client();
    c.cmd_ok("n", "NOTIFY SET (personal (MailboxName SubscriptionChange MessageNew))");
    let r = c.cmd("m", "NOTIFY SET (mailboxes Calendar (MessageNew))");
    assert!(tagged(&r).starts_with("m NO [NONEXISTENT]"), "{}", text(&r));
    // Another client (not through imapgate) renames the hidden Contacts and delivers
    // to the hidden Calendar.
    let mut d = w.direct();
    d.cmd_ok("R", "RENAME Contacts Stuff");
    d.logout();
    w.dv.append_message(&w.user, "Calendar", &text_message("new", "event"));
    // The notification arrives (Dovecot sends it at the next command at the latest).
    let seen = wait_until(WAIT, || {
        let r = text(&c.cmd_ok("p", "NOOP"));
        r.contains("Stuff").then_some(r)
    })
    .expect("a LIST notification for the rename");
    assert!(!seen.contains("Contacts"), "the hidden old name reached the client: {seen}");
    assert!(!seen.contains("Calendar"), "news of the hidden Calendar reached the client: {seen}");
    c.logout();
}
