//! SASL: the mechanisms imapgate speaks with clients, PLAIN (RFC 4616) and LOGIN
//! (draft-murchison-sasl-login), the base64 they travel in, and `Secret`, the wrapper
//! that keeps passwords and tokens out of logs. The bearer-token mechanisms, which
//! imapgate passes through, are in `bearer.rs`. No I/O.

use std::fmt;

use zeroize::Zeroize;

/// A credential. Its `Debug` and `Display` never show the bytes, in every build.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps credential bytes.
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    /// The bytes, for the one place that must send them to the backend.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The bytes, to build a command that carries them.
    pub fn bytes_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // The password does not stay in freed heap memory: zeroize's writes are volatile,
        // so the compiler cannot drop them as dead stores the way it may a plain loop.
        self.0.zeroize();
    }
}

/// The SASL mechanisms a client may use with imapgate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// RFC 4616: one message, `authzid NUL user NUL password`.
    Plain,
    /// Two prompts, `Username:` and `Password:`; what Outlook and many phones use.
    Login,
    /// Google's XOAUTH2: `user=NAME ^A auth=Bearer TOKEN ^A ^A`, passed through.
    XOAuth2,
    /// RFC 7628 OAUTHBEARER, passed through.
    OAuthBearer,
}

impl Mechanism {
    /// Every mechanism, in the order capability lists name them.
    pub const ALL: [Mechanism; 4] =
        [Mechanism::Plain, Mechanism::Login, Mechanism::XOAuth2, Mechanism::OAuthBearer];

    /// The registered name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::XOAuth2 => "XOAUTH2",
            Mechanism::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// The mechanism called `name`, in any case.
    pub fn named(name: &[u8]) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| name.eq_ignore_ascii_case(m.name().as_bytes()))
    }

    /// True for the mechanisms whose credential is a bearer token the backend checks.
    pub fn is_bearer(self) -> bool {
        matches!(self, Mechanism::XOAuth2 | Mechanism::OAuthBearer)
    }

    /// Its capability, `AUTH=NAME`.
    pub fn capability(self) -> String {
        format!("AUTH={}", self.name())
    }
}

/// The LOGIN mechanism's prompts, base64 of `Username:` and `Password:`.
pub const LOGIN_USER_PROMPT: &str = "VXNlcm5hbWU6";
pub const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| n << 8 | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Strict standard base64 (padding required, no whitespace), `None` when invalid.
pub fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for (i, quad) in text.chunks(4).enumerate() {
        let last = i == text.len() / 4 - 1;
        let pad = quad.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &b in &quad[..4 - pad] {
            let v = ALPHABET.iter().position(|&a| a == b)?;
            n = n << 6 | v as u32;
        }
        n <<= 6 * pad;
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    Some(out)
}

/// The parts of a SASL PLAIN message: authorization identity, user, password.
#[derive(Debug)]
pub struct Plain {
    /// The authorization identity (empty when the client acts as itself).
    pub authzid: Vec<u8>,
    /// The authentication identity: the login name.
    pub user: Vec<u8>,
    /// The password.
    pub password: Secret,
}

/// Splits a (base64-decoded) SASL PLAIN message.
pub fn decode_plain(raw: &[u8]) -> Result<Plain, &'static str> {
    let mut parts = raw.split(|&b| b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("Invalid PLAIN message");
    };
    Ok(Plain {
        authzid: authzid.to_vec(),
        user: user.to_vec(),
        password: Secret::new(password.to_vec()),
    })
}

/// Encodes a SASL PLAIN response for `user`, acting as `authzid` when one is given (a
/// master-user login).
pub fn encode_plain(authzid: Option<&[u8]>, user: &[u8], password: &Secret) -> Secret {
    let authzid = authzid.unwrap_or_default();
    let mut raw = Vec::with_capacity(authzid.len() + user.len() + password.expose().len() + 2);
    raw.extend_from_slice(authzid);
    raw.push(0);
    raw.extend_from_slice(user);
    raw.push(0);
    raw.extend_from_slice(password.expose());
    let raw = Secret::new(raw);
    Secret::new(base64_encode(raw.expose()).into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_every_length() {
        let data: Vec<u8> = (0..=255).collect();
        for n in 0..data.len() {
            let enc = base64_encode(&data[..n]);
            assert_eq!(base64_decode(enc.as_bytes()).unwrap(), &data[..n]);
        }
        assert_eq!(base64_encode(b"\0alice\0secret"), "AGFsaWNlAHNlY3JldA==");
    }

    #[test]
    fn invalid_base64_is_refused() {
        for bad in [&b"abc"[..], b"ab=c", b"a===", b"ab==cd==", b"ab c"] {
            assert!(base64_decode(bad).is_none(), "{}", bad.escape_ascii());
        }
    }

    #[test]
    fn plain_splits_into_three_parts() {
        let p = decode_plain(b"\0alice\0secret").unwrap();
        assert_eq!((p.authzid.as_slice(), p.user.as_slice()), (&b""[..], &b"alice"[..]));
        assert_eq!(p.password.expose(), b"secret");
        assert_eq!(format!("{:?}", p.password), "<redacted>");
        assert!(decode_plain(b"a\0b").is_err());
        let enc = encode_plain(None, b"alice", &Secret::new(b"secret".to_vec()));
        assert_eq!(enc.expose(), b"AGFsaWNlAHNlY3JldA==");
        let master = encode_plain(Some(b"alice"), b"admin", &Secret::new(b"m".to_vec()));
        assert_eq!(base64_decode(master.expose()).unwrap(), b"alice\0admin\0m");
    }

    #[test]
    fn login_prompts_are_the_words_clients_expect() {
        assert_eq!(base64_decode(LOGIN_USER_PROMPT.as_bytes()).unwrap(), b"Username:");
        assert_eq!(base64_decode(LOGIN_PASSWORD_PROMPT.as_bytes()).unwrap(), b"Password:");
        assert_eq!(Mechanism::named(b"xoauth2"), Some(Mechanism::XOAuth2));
        assert_eq!(Mechanism::named(b"CRAM-MD5"), None);
    }
}
