//! LDAP search filters (RFC 4515) from their string form to BER (RFC 4511 §4.5.1), and
//! the escaping that keeps a login name a value: `*`, `(`, `)`, `\` and NUL become
//! `\2a`, `\28`, `\29`, `\5c`, `\00`, so `%u` can never add a filter term.

use super::ber::{self, tlv};

/// Escapes a value for a filter.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// The BER encoding of a filter string.
pub fn encode(filter: &str) -> Result<Vec<u8>, String> {
    let mut p = Parser { s: filter.as_bytes(), pos: 0, depth: 0 };
    let mut out = Vec::new();
    p.filter(&mut out)?;
    if p.pos != p.s.len() {
        return Err(format!("unexpected text after the filter at {}", p.pos));
    }
    Ok(out)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> Result<(), String> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at {}", char::from(b), self.pos))
        }
    }

    fn filter(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        self.depth += 1;
        if self.depth > 16 {
            return Err("filter nested too deep".into());
        }
        self.eat(b'(')?;
        match self.peek() {
            Some(b'&') => self.list(out, 0xa0)?,
            Some(b'|') => self.list(out, 0xa1)?,
            Some(b'!') => {
                self.pos += 1;
                let mut inner = Vec::new();
                self.filter(&mut inner)?;
                tlv(out, 0xa2, |o| o.extend_from_slice(&inner));
            }
            _ => self.item(out)?,
        }
        self.eat(b')')?;
        self.depth -= 1;
        Ok(())
    }

    fn list(&mut self, out: &mut Vec<u8>, tag: u8) -> Result<(), String> {
        self.pos += 1;
        let mut inner = Vec::new();
        while self.peek() == Some(b'(') {
            self.filter(&mut inner)?;
        }
        if inner.is_empty() {
            return Err(format!("an empty filter list at {}", self.pos));
        }
        tlv(out, tag, |o| o.extend_from_slice(&inner));
        Ok(())
    }

    fn item(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_alphanumeric() || b"-.;".contains(&b)) {
            self.pos += 1;
        }
        let attr = &self.s[start..self.pos];
        if attr.is_empty() {
            return Err(format!("expected an attribute at {start}"));
        }
        let tag = match (self.peek(), self.s.get(self.pos + 1)) {
            (Some(b'~'), Some(b'=')) => Some(0xa8),
            (Some(b'>'), Some(b'=')) => Some(0xa5),
            (Some(b'<'), Some(b'=')) => Some(0xa6),
            (Some(b'='), _) => None,
            _ => return Err(format!("expected =, ~=, >= or <= at {}", self.pos)),
        };
        self.pos += if tag.is_some() { 2 } else { 1 };
        // The raw value up to the closing parenthesis; `*` splits substrings.
        let vstart = self.pos;
        while self.peek().is_some_and(|b| b != b')' && b != b'(') {
            self.pos += 1;
        }
        let raw = &self.s[vstart..self.pos];
        if let Some(tag) = tag {
            let value = unescape(raw)?;
            tlv(out, tag, |o| {
                ber::octets(o, ber::OCTET_STRING, attr);
                ber::octets(o, ber::OCTET_STRING, &value);
            });
            return Ok(());
        }
        if raw == b"*" {
            ber::octets(out, 0x87, attr);
            return Ok(());
        }
        let parts: Vec<&[u8]> = raw.split(|&b| b == b'*').collect();
        if parts.len() == 1 {
            let value = unescape(raw)?;
            tlv(out, 0xa3, |o| {
                ber::octets(o, ber::OCTET_STRING, attr);
                ber::octets(o, ber::OCTET_STRING, &value);
            });
            return Ok(());
        }
        let mut subs = Vec::new();
        let last = parts.len() - 1;
        for (i, part) in parts.iter().enumerate() {
            if part.is_empty() {
                continue;
            }
            let tag = match i {
                0 => 0x80,
                i if i == last => 0x82,
                _ => 0x81,
            };
            ber::octets(&mut subs, tag, &unescape(part)?);
        }
        tlv(out, 0xa4, |o| {
            ber::octets(o, ber::OCTET_STRING, attr);
            tlv(o, ber::SEQUENCE, |o| o.extend_from_slice(&subs));
        });
        Ok(())
    }
}

/// Fuzzing: any string encodes or fails cleanly, and an escaped value is one value.
#[cfg(any(test, fuzzing))]
pub fn fuzz(text: &str) {
    let _ = encode(text);
    let encoded =
        encode(&format!("(uid={})", escape(text))).expect("an escaped value always parses");
    assert_eq!(encoded[0], 0xa3, "an escaped value stays one equality match");
    assert!(encoded.ends_with(text.as_bytes()));
}

/// `\XX` escapes to bytes.
fn unescape(raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' {
            let hex = raw.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(byte.ok_or("a backslash must be followed by two hex digits")?);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_encode_as_rfc_4511_says() {
        // (uid=bob) → [3] { "uid", "bob" }
        assert_eq!(encode("(uid=bob)").unwrap(), b"\xa3\x0a\x04\x03uid\x04\x03bob");
        assert_eq!(encode("(mail=*)").unwrap(), b"\x87\x04mail");
        let and = encode("(&(objectClass=person)(|(uid=a)(mail=a@x)))").unwrap();
        assert_eq!(and[0], 0xa0);
        let sub = encode("(cn=a*b*c)").unwrap();
        assert_eq!(sub, b"\xa4\x0f\x04\x02cn\x30\x09\x80\x01a\x81\x01b\x82\x01c");
        assert_eq!(encode("(!(x>=5))").unwrap()[..3], [0xa2, 0x08, 0xa5]);
    }

    #[test]
    fn escaped_values_stay_values() {
        let evil = "x)(uid=*))(|(uid=*";
        let filter = format!("(uid={})", escape(evil));
        let encoded = encode(&filter).unwrap();
        assert_eq!(encoded[0], 0xa3, "still one equality match: {filter}");
        assert!(encoded.ends_with(evil.as_bytes()));
        for bad in ["uid=x", "(uid=x", "(=x)", "(&)", "(uid=\\zz)", "(uid=x))"] {
            assert!(encode(bad).is_err(), "{bad}");
        }
    }
}
