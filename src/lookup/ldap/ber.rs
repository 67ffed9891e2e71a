//! The slice of BER (X.690) LDAPv3 messages use: definite lengths, one-byte tags,
//! INTEGER, OCTET STRING, BOOLEAN, ENUMERATED and constructed values. Encoding builds a
//! `Vec`; decoding reads from a slice and never trusts a length it was sent.

/// Tags used by LDAP (RFC 4511 §4).
pub const INTEGER: u8 = 0x02;
pub const OCTET_STRING: u8 = 0x04;
pub const BOOLEAN: u8 = 0x01;
pub const ENUMERATED: u8 = 0x0a;
pub const SEQUENCE: u8 = 0x30;
pub const SET: u8 = 0x31;

/// A TLV: `tag`, then `content` encoded by the closure.
pub fn tlv(out: &mut Vec<u8>, tag: u8, content: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    content(&mut inner);
    out.push(tag);
    push_len(out, inner.len());
    out.extend_from_slice(&inner);
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

pub fn octets(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    tlv(out, tag, |o| o.extend_from_slice(value));
}

pub fn integer(out: &mut Vec<u8>, tag: u8, value: i64) {
    let bytes = value.to_be_bytes();
    // The shortest two's-complement form.
    let mut start = 0;
    while start < 7
        && ((bytes[start] == 0 && bytes[start + 1] & 0x80 == 0)
            || (bytes[start] == 0xff && bytes[start + 1] & 0x80 != 0))
    {
        start += 1;
    }
    octets(out, tag, &bytes[start..]);
}

/// A decoded TLV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub tag: u8,
    pub content: &'a [u8],
}

/// Reads TLVs one after another from a slice.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { rest: data }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next TLV.
    pub fn next(&mut self) -> Result<Tlv<'a>, String> {
        let (tlv, used) = parse(self.rest)?.ok_or("truncated BER value")?;
        self.rest = &self.rest[used..];
        Ok(tlv)
    }

    /// The next TLV, which must have `tag`.
    pub fn expect(&mut self, tag: u8) -> Result<Tlv<'a>, String> {
        let tlv = self.next()?;
        if tlv.tag != tag {
            return Err(format!("expected BER tag {tag:#04x}, found {:#04x}", tlv.tag));
        }
        Ok(tlv)
    }
}

impl<'a> Tlv<'a> {
    pub fn reader(&self) -> Reader<'a> {
        Reader::new(self.content)
    }

    pub fn int(&self) -> Result<i64, String> {
        if self.content.is_empty() || self.content.len() > 8 {
            return Err("bad INTEGER".into());
        }
        let negative = self.content[0] & 0x80 != 0;
        Ok(self
            .content
            .iter()
            .fold(if negative { -1i64 } else { 0 }, |n, &b| n << 8 | i64::from(b)))
    }
}

/// One TLV at the start of `data`, and the bytes it takes; `None` when incomplete.
pub fn parse(data: &[u8]) -> Result<Option<(Tlv<'_>, usize)>, String> {
    let [tag, first, ..] = *data else { return Ok(None) };
    if tag & 0x1f == 0x1f {
        return Err("multi-byte BER tags are not used by LDAP".into());
    }
    let (len, head) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return Err("unsupported BER length".into());
        }
        let Some(bytes) = data.get(2..2 + n) else { return Ok(None) };
        (bytes.iter().fold(0usize, |l, &b| l << 8 | b as usize), 2 + n)
    };
    match data.get(head..head + len) {
        Some(content) => Ok(Some((Tlv { tag, content }, head + len))),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_integers_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let mut out = Vec::new();
            octets(&mut out, OCTET_STRING, &vec![7u8; len]);
            let (tlv, used) = parse(&out).unwrap().unwrap();
            assert_eq!((tlv.content.len(), used), (len, out.len()));
            assert!(parse(&out[..out.len() - 1]).unwrap().is_none(), "incomplete at {len}");
        }
        for v in [0i64, 1, 127, 128, 255, 256, -1, -128, -129, i64::from(i32::MAX)] {
            let mut out = Vec::new();
            integer(&mut out, INTEGER, v);
            assert_eq!(parse(&out).unwrap().unwrap().0.int().unwrap(), v, "{out:?}");
        }
        let mut out = Vec::new();
        integer(&mut out, INTEGER, 128);
        assert_eq!(out, [2, 2, 0, 128]);
    }

    #[test]
    fn hostile_lengths_are_refused_or_incomplete() {
        assert!(parse(&[0x04, 0x85, 1, 1, 1, 1, 1]).is_err());
        assert!(parse(&[0x04, 0x84, 0xff, 0xff, 0xff, 0xff]).unwrap().is_none());
        assert!(parse(&[0x1f, 0x01, 0]).is_err());
    }
}
