//! Capability lists: what imapgate announces before login, which backend capabilities it
//! may pass on after login, and how the lists of several backends combine into the one
//! set every client of a listener is shown. Case-insensitive throughout (RFC 9051
//! §7.2.2).

use super::sasl::Mechanism;

/// What imapgate itself offers before login: STARTTLS while it may be used, and while
/// logins are allowed AUTH=PLAIN, AUTH=LOGIN and the bearer-token mechanisms in
/// `bearer` (those the listener passes through and every backend offers), else
/// LOGINDISABLED.
pub fn pre_login(starttls: bool, login_allowed: bool, bearer: &[Mechanism]) -> Vec<String> {
    let mut caps: Vec<String> =
        ["IMAP4rev1", "SASL-IR", "LITERAL+", "ID"].map(String::from).to_vec();
    if starttls {
        caps.push("STARTTLS".into());
    }
    if login_allowed {
        caps.push(Mechanism::Plain.capability());
        caps.push(Mechanism::Login.capability());
        caps.extend(bearer.iter().filter(|m| m.is_bearer()).map(|m| m.capability()));
    } else {
        caps.push("LOGINDISABLED".into());
    }
    caps
}

/// True for capabilities the relay must never pass to a logged-in client: those that
/// change the byte stream under the framer (COMPRESS, STARTTLS) or only mean something
/// before login (AUTH=, LOGINDISABLED, SASL-IR).
fn unrelayable(cap: &str) -> bool {
    let upper = cap.to_ascii_uppercase();
    upper.starts_with("COMPRESS=")
        || upper.starts_with("AUTH=")
        || matches!(upper.as_str(), "STARTTLS" | "LOGINDISABLED" | "SASL-IR")
}

/// The backend's post-login capabilities as shown to the client.
pub fn after_login(backend: &[String]) -> Vec<String> {
    backend.iter().filter(|c| !unrelayable(c)).cloned().collect()
}

/// Backend capabilities worth announcing before login, beside imapgate's own: those a
/// client plans with (RFC 9051 §7.2.2 lets it trust the pre-login list). Authentication
/// and TLS are imapgate's business before login, so they are never taken from backends.
pub fn relevant_before_login(cap: &str) -> bool {
    let upper = cap.to_ascii_uppercase();
    !unrelayable(cap)
        && !matches!(
            upper.as_str(),
            "IMAP4REV1" | "LITERAL+" | "LITERAL-" | "ID" | "LOGIN-REFERRALS"
        )
}

/// True when `caps` holds `cap`, in any case.
pub fn has(caps: &[String], cap: &str) -> bool {
    caps.iter().any(|c| c.eq_ignore_ascii_case(cap))
}

fn appendlimit(cap: &str) -> Option<Option<u64>> {
    let upper = cap.to_ascii_uppercase();
    if upper == "APPENDLIMIT" {
        return Some(None);
    }
    upper.strip_prefix("APPENDLIMIT=").map(|n| n.parse().ok())
}

/// The capabilities every one of `sets` offers, in the first set's order. Parameterised
/// capabilities compare whole (`AUTH=PLAIN`, `SORT=DISPLAY`, `COMPRESS=DEFLATE`), except:
/// APPENDLIMIT takes the smallest limit (a bare APPENDLIMIT, "limits vary by mailbox",
/// wins over numbers, RFC 7889 §3); LITERAL+ present everywhere stays LITERAL+, and
/// LITERAL+ mixed with LITERAL- gives LITERAL- (RFC 7888 §4: LITERAL+ includes it).
pub fn intersect(sets: &[&[String]]) -> Vec<String> {
    let Some((first, rest)) = sets.split_first() else { return Vec::new() };
    let mut out: Vec<String> = Vec::new();
    let everywhere = |f: &dyn Fn(&String) -> bool| rest.iter().all(|set| set.iter().any(f));
    for cap in first.iter() {
        let upper = cap.to_ascii_uppercase();
        let kept = if let Some(limit) = appendlimit(cap) {
            everywhere(&|c| appendlimit(c).is_some()).then(|| {
                let limits = rest.iter().flat_map(|s| s.iter().filter_map(|c| appendlimit(c)));
                let all: Option<Vec<u64>> = std::iter::once(limit).chain(limits).collect();
                match all.and_then(|v| v.into_iter().min()) {
                    Some(min) => format!("APPENDLIMIT={min}"),
                    None => "APPENDLIMIT".to_string(),
                }
            })
        } else if upper == "LITERAL+" || upper == "LITERAL-" {
            let literal = |c: &String| {
                c.eq_ignore_ascii_case("LITERAL+") || c.eq_ignore_ascii_case("LITERAL-")
            };
            let all_plus =
                upper == "LITERAL+" && everywhere(&|c| c.eq_ignore_ascii_case("LITERAL+"));
            everywhere(&literal).then(|| if all_plus { "LITERAL+" } else { "LITERAL-" }.to_string())
        } else {
            everywhere(&|c| c.eq_ignore_ascii_case(cap)).then(|| cap.clone())
        };
        if let Some(k) = kept {
            if !has(&out, &k) {
                out.push(k);
            }
        }
    }
    out
}

/// True when a response head may carry a capability list (`* CAPABILITY ...` or a
/// `[CAPABILITY ...]` code): such a line is held until it is complete.
pub fn may_list(head: &[u8]) -> bool {
    head.windows(10).any(|w| w.eq_ignore_ascii_case(b"CAPABILITY"))
}

/// A response line carrying a capability list, with the list the client was shown
/// instead; `None` when the line carries none (or nothing was shown). Every capability
/// list the client sees goes through here, in both relay modes.
pub fn show(line: &[u8], shown: &[String]) -> Option<Vec<u8>> {
    if shown.is_empty() {
        return None;
    }
    super::response::capabilities(line)?;
    super::response::replace_capabilities(line, shown)
}

/// The capability a command needs, as a glob (`THREAD=*`), for commands that exist only
/// with one. A client must not use what it was not shown.
pub fn required_by(command: &str) -> Option<&'static str> {
    Some(match command {
        "MOVE" | "UID MOVE" => "MOVE",
        "COMPRESS" => "COMPRESS=*",
        "IDLE" => "IDLE",
        "NAMESPACE" => "NAMESPACE",
        "UNSELECT" => "UNSELECT",
        "SORT" | "UID SORT" => "SORT*",
        "THREAD" | "UID THREAD" => "THREAD=*",
        "GETQUOTA" | "GETQUOTAROOT" | "SETQUOTA" => "QUOTA*",
        "GETACL" | "SETACL" | "DELETEACL" | "LISTRIGHTS" | "MYRIGHTS" => "ACL",
        "GETMETADATA" | "SETMETADATA" => "METADATA*",
        "ENABLE" => "ENABLE",
        "UID EXPUNGE" => "UIDPLUS",
        "NOTIFY" => "NOTIFY",
        "XLIST" => "XLIST",
        _ => return None,
    })
}

/// Why a command must be refused because it needs a capability the client was not
/// shown (`shown` empty: nothing is known, nothing refused). `line` is the command's
/// first line; ENABLE may only enable what was shown (RFC 5161).
pub fn refusal(line: &[u8], shown: &[String]) -> Option<String> {
    let (_, name) = super::command::tag_and_name(line)?;
    let first = line.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
    let text = String::from_utf8_lossy(first);
    let enabled = if name == "ENABLE" { text.split_whitespace().skip(2).collect() } else { vec![] };
    refusal_for(&name, &enabled, shown)
}

/// Like `refusal`, for a tokenized command: its upper-case name and, for ENABLE, the
/// capabilities it names.
pub fn refusal_for(name: &str, enabled: &[&str], shown: &[String]) -> Option<String> {
    if shown.is_empty() {
        return None;
    }
    if let Some(cap) = required_by(name) {
        if !offers(shown, cap) {
            return Some(format!("NO [CANNOT] {name} is not available here."));
        }
    }
    enabled
        .iter()
        .find(|word| !offers(shown, word))
        .map(|word| format!("NO [CANNOT] {word} is not available here."))
}

/// Glob match for capability patterns (`*` matches any run), case-insensitive.
pub fn matches(pattern: &str, cap: &str) -> bool {
    let (p, c) = (pattern.to_ascii_uppercase(), cap.to_ascii_uppercase());
    match p.split_once('*') {
        None => p == c,
        Some((prefix, suffix)) => {
            c.len() >= prefix.len() + suffix.len() && c.starts_with(prefix) && c.ends_with(suffix)
        }
    }
}

/// True when a capability matching `pattern` is in `caps`.
pub fn offers(caps: &[String], pattern: &str) -> bool {
    caps.iter().any(|c| matches(pattern, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(list: &str) -> Vec<String> {
        list.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn stream_changing_and_pre_login_capabilities_are_withheld() {
        let backend = v("IMAP4rev1 IDLE COMPRESS=DEFLATE starttls AUTH=PLAIN");
        assert_eq!(after_login(&backend), v("IMAP4rev1 IDLE"));
        assert!(has(&backend, "idle"));
    }

    #[test]
    fn intersection_compares_parameters_and_keeps_the_first_order() {
        let a = v("IMAP4rev1 IMAP4rev2 IDLE MOVE SORT SORT=DISPLAY AUTH=PLAIN APPENDLIMIT=50000 LITERAL+ CONDSTORE");
        let b = v("imap4rev1 SORT idle AUTH=LOGIN APPENDLIMIT=20000 LITERAL- condstore");
        assert_eq!(
            intersect(&[&a, &b]),
            v("IMAP4rev1 IDLE SORT APPENDLIMIT=20000 LITERAL- CONDSTORE")
        );
        let c = v("IMAP4rev1 APPENDLIMIT LITERAL+");
        assert_eq!(intersect(&[&a, &c]), v("IMAP4rev1 APPENDLIMIT LITERAL+"));
        assert_eq!(intersect(&[&a]), a);
        assert!(intersect(&[]).is_empty());
    }

    #[test]
    fn commands_name_the_capability_they_need() {
        let caps = v("IMAP4rev1 THREAD=REFERENCES SORT=DISPLAY");
        assert!(offers(&caps, required_by("UID THREAD").unwrap()));
        assert!(offers(&caps, required_by("SORT").unwrap()));
        assert!(!offers(&caps, required_by("MOVE").unwrap()));
        assert_eq!(required_by("FETCH"), None);
        assert!(matches("COMPRESS=*", "compress=deflate"));
        assert!(!matches("SORT", "SORT=DISPLAY"));
    }
}
