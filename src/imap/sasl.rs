//! SASL PLAIN (RFC 4616) and the base64 it travels in, plus `Secret`, the wrapper that
//! keeps passwords out of logs. No I/O.

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

/// Decodes a base64 SASL PLAIN response.
pub fn decode_plain(b64: &[u8]) -> Result<Plain, &'static str> {
    let raw = base64_decode(b64).ok_or("Invalid base64 data")?;
    let raw = Secret::new(raw);
    let mut parts = raw.expose().split(|&b| b == 0);
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

/// Encodes a SASL PLAIN response for `user` (no authorization identity).
pub fn encode_plain(user: &[u8], password: &Secret) -> Secret {
    let mut raw = Vec::with_capacity(user.len() + password.expose().len() + 2);
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
        let p = decode_plain(b"AGFsaWNlAHNlY3JldA==").unwrap();
        assert_eq!((p.authzid.as_slice(), p.user.as_slice()), (&b""[..], &b"alice"[..]));
        assert_eq!(p.password.expose(), b"secret");
        assert_eq!(format!("{:?}", p.password), "<redacted>");
        assert!(decode_plain(base64_encode(b"a\0b").as_bytes()).is_err());
        let enc = encode_plain(b"alice", &Secret::new(b"secret".to_vec()));
        assert_eq!(enc.expose(), b"AGFsaWNlAHNlY3JldA==");
    }
}
