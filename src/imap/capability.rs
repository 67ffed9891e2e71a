//! Capability lists: what imapgate announces before login, and which backend capabilities
//! it may pass on after login. Case-insensitive throughout (RFC 9051 §7.2.2).

/// What imapgate itself offers before login: STARTTLS while it may be used, and
/// AUTH=PLAIN while logins are allowed, else LOGINDISABLED.
pub fn pre_login(starttls: bool, login_allowed: bool) -> Vec<&'static str> {
    let mut caps = vec!["IMAP4rev1", "SASL-IR", "LITERAL+", "ID"];
    if starttls {
        caps.push("STARTTLS");
    }
    caps.push(if login_allowed { "AUTH=PLAIN" } else { "LOGINDISABLED" });
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

/// True when `caps` holds `cap`, in any case.
pub fn has(caps: &[String], cap: &str) -> bool {
    caps.iter().any(|c| c.eq_ignore_ascii_case(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_changing_and_pre_login_capabilities_are_withheld() {
        let backend: Vec<String> =
            ["IMAP4rev1", "IDLE", "COMPRESS=DEFLATE", "starttls", "AUTH=PLAIN"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        assert_eq!(after_login(&backend), vec!["IMAP4rev1", "IDLE"]);
        assert!(has(&backend, "idle"));
    }
}
