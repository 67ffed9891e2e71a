//! Server responses: what kind a response head is, and the parts of a status response
//! (RFC 9051 §7.1) that pre-login code needs. No I/O.

/// What a response is, from its head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind<'a> {
    /// `+ ...`: a continuation request.
    Continuation,
    /// `* ...`: untagged data or status.
    Untagged,
    /// `TAG ...`: completes the command with that tag.
    Tagged(&'a [u8]),
}

/// Classifies a response by its first line (or its head).
pub fn kind(head: &[u8]) -> Kind<'_> {
    match head.first() {
        Some(b'+') => Kind::Continuation,
        Some(b'*') => Kind::Untagged,
        _ => Kind::Tagged(head.split(|&b| b == b' ').next().unwrap_or_default()),
    }
}

/// True for `* BYE ...`: the server is closing the connection. (Every response head of
/// a session passes here, so it compares in place rather than parsing.)
pub fn is_bye(head: &[u8]) -> bool {
    head.get(..5).is_some_and(|h| h.eq_ignore_ascii_case(b"* BYE"))
        && matches!(head.get(5), None | Some(b' ' | b'\r' | b'\n'))
}

/// A status response line: `TAG|* OK|NO|BAD|BYE|PREAUTH [CODE] text`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status<'a> {
    /// `*` or the tag.
    pub tag: &'a [u8],
    /// `OK`, `NO`, `BAD`, `BYE` or `PREAUTH`, upper-cased.
    pub status: String,
    /// The response code between the brackets, without them.
    pub code: Option<&'a [u8]>,
    /// The human-readable text.
    pub text: &'a [u8],
}

/// Parses a status response line (line ending optional); `None` for anything else.
pub fn status(line: &[u8]) -> Option<Status<'_>> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (tag, rest) = split_word(line);
    let (word, mut rest) = split_word(rest);
    let status = String::from_utf8_lossy(word).to_ascii_uppercase();
    if !matches!(status.as_str(), "OK" | "NO" | "BAD" | "BYE" | "PREAUTH") || tag.is_empty() {
        return None;
    }
    let mut code = None;
    if rest.first() == Some(&b'[') {
        let close = rest.iter().position(|&b| b == b']')?;
        code = Some(&rest[1..close]);
        rest = &rest[close + 1..];
        rest = rest.strip_prefix(b" ").unwrap_or(rest);
    }
    Some(Status { tag, status, code, text: rest })
}

fn split_word(s: &[u8]) -> (&[u8], &[u8]) {
    match s.iter().position(|&b| b == b' ') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, &[]),
    }
}

/// The capabilities listed in a `[CAPABILITY ...]` response code or in an untagged
/// `* CAPABILITY ...` line; `None` if the line carries neither.
pub fn capabilities(line: &[u8]) -> Option<Vec<String>> {
    let list = match status(line) {
        Some(Status { code: Some(code), .. }) => strip_word(code, b"CAPABILITY")?,
        _ => {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            strip_word(line.strip_prefix(b"* ")?, b"CAPABILITY")?
        }
    };
    let words = list.split(|&b| b == b' ').filter(|w| !w.is_empty());
    Some(words.map(|w| String::from_utf8_lossy(w).into_owned()).collect())
}

/// The line with its capability list (untagged data or response code) replaced by `caps`;
/// `None` when the line has no capability list.
pub fn replace_capabilities(line: &[u8], caps: &[String]) -> Option<Vec<u8>> {
    let list = caps.join(" ");
    let body = line.strip_suffix(b"\r\n").unwrap_or(line);
    if let Some(Status { tag, status, code: Some(code), .. }) = status(body) {
        strip_word(code, b"CAPABILITY")?;
        // The code's bracket comes right after the tag and the status word; a tag may
        // hold a `[` of its own (tags are astrings), so it is not searched for.
        let open = tag.len() + 1 + status.len() + 1;
        let close = open + 1 + code.len();
        let mut out = body[..open].to_vec();
        out.extend_from_slice(format!("[CAPABILITY {list}]").as_bytes());
        out.extend_from_slice(&body[close + 1..]);
        out.extend_from_slice(b"\r\n");
        return Some(out);
    }
    strip_word(body.strip_prefix(b"* ")?, b"CAPABILITY")?;
    Some(format!("* CAPABILITY {list}\r\n").into_bytes())
}

fn strip_word<'a>(s: &'a [u8], word: &[u8]) -> Option<&'a [u8]> {
    let (first, rest) = split_word(s);
    first.eq_ignore_ascii_case(word).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bracket_in_the_tag_is_not_the_code_s() {
        let line = b"a[b OK [CAPABILITY IMAP4rev1 X] done\r\n";
        let caps = ["IMAP4rev1".to_string(), "IDLE".to_string()];
        let new = replace_capabilities(line, &caps).unwrap();
        assert_eq!(new, b"a[b OK [CAPABILITY IMAP4rev1 IDLE] done\r\n");
        // Found by the response fuzz target.
        let found = b"*\xad\xad'\xad[R\xad\xad\xadt OK [CAPABILITY Ia~ a2 N]2\x00\x00\x00d\x8a\r\n";
        let new = replace_capabilities(found, &caps).unwrap();
        assert_eq!(capabilities(&new), Some(caps.to_vec()));
    }

    #[test]
    fn kinds() {
        assert_eq!(kind(b"+ idling"), Kind::Continuation);
        assert_eq!(kind(b"* 3 EXISTS"), Kind::Untagged);
        assert_eq!(kind(b"A1 OK done"), Kind::Tagged(b"A1"));
    }

    #[test]
    fn status_with_and_without_code() {
        let s = status(b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n").unwrap();
        assert_eq!(s.tag, b"a1");
        assert_eq!(s.status, "NO");
        assert_eq!(s.code, Some(&b"AUTHENTICATIONFAILED"[..]));
        assert_eq!(s.text, b"Authentication failed.");
        let s = status(b"* bye going away").unwrap();
        assert_eq!((s.status.as_str(), s.code, s.text), ("BYE", None, &b"going away"[..]));
        assert!(status(b"* 1 EXISTS").is_none());
        assert!(status(b"a1 OK [unterminated").is_none());
    }

    #[test]
    fn capabilities_from_codes_and_untagged_data() {
        let want = vec!["IMAP4rev1".to_string(), "IDLE".into()];
        assert_eq!(capabilities(b"* OK [CAPABILITY IMAP4rev1 IDLE] hi\r\n"), Some(want.clone()));
        assert_eq!(capabilities(b"* CAPABILITY IMAP4rev1 IDLE\r\n"), Some(want.clone()));
        assert_eq!(capabilities(b"a OK [capability IMAP4rev1 IDLE] in"), Some(want));
        assert_eq!(capabilities(b"* OK [ALERT] x"), None);
    }
}
