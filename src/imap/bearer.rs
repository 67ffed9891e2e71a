//! The bearer-token mechanisms imapgate passes through to backends: Google's XOAUTH2
//! (`user=NAME ^A auth=Bearer TOKEN ^A ^A`) and RFC 7628 OAUTHBEARER
//! (`n,a=NAME, ^A auth=Bearer TOKEN ^A [host=... ^A port=... ^A] ^A`).
//!
//! imapgate cannot check a token: the backend does. What imapgate needs is the user name,
//! to route the login like any other, and a message the backend reads the way imapgate
//! did. So a message is parsed strictly (`decode`) and the backend receives imapgate's own
//! encoding of it (`Bearer::encode`), carrying the user name imapgate routed on: the
//! backend then authenticates exactly the user the map chose, and a token issued to one
//! user cannot open another user's mailbox by naming it in a field imapgate ignored.
//! No I/O.

use super::sasl::{base64_encode, Mechanism, Secret};

/// A parsed bearer-token message. Its `Debug` never shows the token.
pub struct Bearer {
    /// XOAUTH2 or OAUTHBEARER.
    pub mechanism: Mechanism,
    /// The user name the message names (XOAUTH2 `user=`, OAUTHBEARER `a=`).
    pub user: String,
    /// OAUTHBEARER's GS2 channel-binding flag, `n` or `y` (`p=`, channel binding, cannot
    /// survive a proxy: the client's TLS channel is not the backend's).
    cbind: u8,
    /// The key=value pairs other than the user name, each followed by ^A, in order.
    pairs: Secret,
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bearer({}, user={:?}, <redacted>)", self.mechanism.name(), self.user)
    }
}

const SEP: u8 = 0x01;

/// Parses a decoded client message of `mechanism` (XOAUTH2 or OAUTHBEARER).
pub fn decode(mechanism: Mechanism, raw: &[u8]) -> Result<Bearer, &'static str> {
    match mechanism {
        Mechanism::XOAuth2 => decode_xoauth2(raw),
        Mechanism::OAuthBearer => decode_oauthbearer(raw),
        Mechanism::Plain | Mechanism::Login => Err("Not a bearer-token mechanism"),
    }
}

fn decode_xoauth2(raw: &[u8]) -> Result<Bearer, &'static str> {
    let invalid = "Invalid XOAUTH2 message";
    let body = raw.strip_suffix(&[SEP, SEP]).ok_or(invalid)?;
    let mut user = None;
    let mut auth = None;
    for pair in body.split(|&b| b == SEP) {
        let (key, value) = split_pair(pair).ok_or(invalid)?;
        let slot = match key {
            b"user" => &mut user,
            b"auth" => &mut auth,
            _ => return Err(invalid),
        };
        if slot.replace(value).is_some() {
            return Err(invalid);
        }
    }
    let (Some(user), Some(auth)) = (user, auth) else { return Err(invalid) };
    let mut pairs = Secret::new(Vec::with_capacity(auth.len() + 6));
    pairs.bytes_mut().extend_from_slice(b"auth=");
    pairs.bytes_mut().extend_from_slice(auth);
    pairs.bytes_mut().push(SEP);
    Ok(Bearer { mechanism: Mechanism::XOAuth2, user: user_name(user)?, cbind: b'n', pairs })
}

fn decode_oauthbearer(raw: &[u8]) -> Result<Bearer, &'static str> {
    let invalid = "Invalid OAUTHBEARER message";
    let (cbind, rest) = match raw {
        [b'p', b'=', ..] => return Err("Channel binding cannot pass through a proxy"),
        [flag @ (b'n' | b'y'), b',', rest @ ..] => (*flag, rest),
        _ => return Err(invalid),
    };
    let rest = rest
        .strip_prefix(b"a=")
        .ok_or("OAUTHBEARER needs the user name in its GS2 header (a=...)")?;
    let end = rest.iter().position(|&b| b == b',').ok_or(invalid)?;
    let user = saslname(&rest[..end]).ok_or(invalid)?;
    let kvs = rest[end + 1..].strip_prefix(&[SEP]).ok_or(invalid)?;
    let kvs = kvs.strip_suffix(&[SEP, SEP]).ok_or(invalid)?;
    let mut pairs = Secret::new(Vec::with_capacity(kvs.len() + 2));
    let mut has_auth = false;
    for pair in kvs.split(|&b| b == SEP) {
        let (key, value) = split_pair(pair).ok_or(invalid)?;
        has_auth |= key == b"auth";
        let out = pairs.bytes_mut();
        out.extend_from_slice(key);
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(SEP);
    }
    if !has_auth {
        return Err(invalid);
    }
    Ok(Bearer { mechanism: Mechanism::OAuthBearer, user: user_name(&user)?, cbind, pairs })
}

/// `key=value`: key 1*ALPHA, value *(VCHAR / SP / HTAB) (RFC 7628 §3.1; CR and LF,
/// which it also allows, are refused: no token holds them, and a backend's log might).
fn split_pair(pair: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = pair.iter().position(|&b| b == b'=')?;
    let (key, value) = (&pair[..eq], &pair[eq + 1..]);
    let key_ok = !key.is_empty() && key.iter().all(u8::is_ascii_alphabetic);
    let value_ok = value.iter().all(|&b| (0x20..0x7f).contains(&b) || b == b'\t');
    (key_ok && value_ok).then_some((key, value))
}

/// RFC 5801 saslname: UTF-8 with `,` and `=` written `=2C` and `=3D`.
fn saslname(encoded: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(encoded.len());
    let mut i = 0;
    while let Some(&b) = encoded.get(i) {
        if b != b'=' {
            out.push(b);
            i += 1;
            continue;
        }
        match encoded.get(i + 1..i + 3) {
            Some(b"2C") => out.push(b','),
            Some(b"3D") => out.push(b'='),
            _ => return None,
        }
        i += 3;
    }
    Some(out)
}

/// A user name fit to route on and to send on: UTF-8, not empty, no control characters.
fn user_name(bytes: &[u8]) -> Result<String, &'static str> {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.is_empty() && !s.chars().any(char::is_control) => Ok(s.to_string()),
        _ => Err("Invalid user name"),
    }
}

impl Bearer {
    /// The message for the backend, base64-encoded, naming `user` (the user name imapgate
    /// routed on, which a map may have rewritten). `None` when `user` cannot be carried.
    pub fn encode(&self, user: &str) -> Option<Secret> {
        if user.is_empty() || user.chars().any(char::is_control) {
            return None;
        }
        let mut raw = Secret::new(Vec::with_capacity(user.len() + self.pairs.expose().len() + 16));
        let out = raw.bytes_mut();
        match self.mechanism {
            Mechanism::XOAuth2 => {
                out.extend_from_slice(b"user=");
                out.extend_from_slice(user.as_bytes());
                out.push(SEP);
                out.extend_from_slice(self.pairs.expose());
            }
            _ => {
                out.extend_from_slice(&[self.cbind, b',']);
                out.extend_from_slice(b"a=");
                for &b in user.as_bytes() {
                    match b {
                        b',' => out.extend_from_slice(b"=2C"),
                        b'=' => out.extend_from_slice(b"=3D"),
                        _ => out.push(b),
                    }
                }
                out.extend_from_slice(&[b',', SEP]);
                out.extend_from_slice(self.pairs.expose());
            }
        }
        out.push(SEP);
        Some(Secret::new(base64_encode(raw.expose()).into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::sasl::base64_decode;

    fn round_trip(mechanism: Mechanism, raw: &[u8], user: &str) -> Vec<u8> {
        let b = decode(mechanism, raw).unwrap();
        base64_decode(b.encode(user).unwrap().expose()).unwrap()
    }

    #[test]
    fn xoauth2_names_its_user_and_is_sent_on_canonically() {
        let raw = b"user=alice@example.org\x01auth=Bearer ya29.tok\x01\x01";
        let b = decode(Mechanism::XOAuth2, raw).unwrap();
        assert_eq!(b.user, "alice@example.org");
        assert!(!format!("{b:?}").contains("ya29"), "{b:?}");
        assert_eq!(round_trip(Mechanism::XOAuth2, raw, "alice@example.org"), raw);
        // The field order does not matter to imapgate; the backend gets Google's order.
        let swapped = b"auth=Bearer ya29.tok\x01user=alice\x01\x01";
        assert_eq!(
            round_trip(Mechanism::XOAuth2, swapped, "alice"),
            b"user=alice\x01auth=Bearer ya29.tok\x01\x01"
        );
    }

    #[test]
    fn oauthbearer_needs_a_gs2_user_and_keeps_its_other_fields() {
        let raw = b"n,a=bob=2Cjr@example.org,\x01host=imap.example.org\x01port=143\x01auth=Bearer xyz\x01\x01";
        let b = decode(Mechanism::OAuthBearer, raw).unwrap();
        assert_eq!(b.user, "bob,jr@example.org");
        assert_eq!(round_trip(Mechanism::OAuthBearer, raw, &b.user), raw);
        let rerouted = round_trip(Mechanism::OAuthBearer, raw, "bob");
        assert!(rerouted.starts_with(b"n,a=bob,\x01host="), "{}", rerouted.escape_ascii());
        let anonymous = b"n,,\x01auth=Bearer xyz\x01\x01";
        assert!(decode(Mechanism::OAuthBearer, anonymous).unwrap_err().contains("a=..."));
        let bound = b"p=tls-unique,a=bob,\x01auth=Bearer xyz\x01\x01";
        assert!(decode(Mechanism::OAuthBearer, bound).unwrap_err().contains("Channel binding"));
    }

    #[test]
    fn malformed_messages_are_refused() {
        let bad: [(Mechanism, &[u8]); 9] = [
            (Mechanism::XOAuth2, b"user=alice\x01auth=Bearer x\x01"),
            (Mechanism::XOAuth2, b"user=alice\x01\x01"),
            (Mechanism::XOAuth2, b"user=alice\x01user=bob\x01auth=Bearer x\x01\x01"),
            (Mechanism::XOAuth2, b"user=al\rice\x01auth=Bearer x\x01\x01"),
            (Mechanism::XOAuth2, b"user=\x01auth=Bearer x\x01\x01"),
            (Mechanism::OAuthBearer, b"\x01"),
            (Mechanism::OAuthBearer, b"n,a=bob,\x01host=x\x01\x01"),
            (Mechanism::OAuthBearer, b"n,a=b=ob,\x01auth=Bearer x\x01\x01"),
            (Mechanism::OAuthBearer, b"n,a=bob,\x01au th=x\x01auth=Bearer x\x01\x01"),
        ];
        for (m, raw) in bad {
            assert!(decode(m, raw).is_err(), "{}", raw.escape_ascii());
        }
        let b = decode(Mechanism::XOAuth2, b"user=a\x01auth=Bearer x\x01\x01").unwrap();
        assert!(b.encode("a\x01b").is_none());
    }
}
