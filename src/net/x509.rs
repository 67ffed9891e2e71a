//! Just enough X.509 DER reading for two admin-facing facts: a certificate's validity
//! period (to refuse an expired certificate at start-up) and its subject (to log and to
//! match client certificates). rustls verifies certificates; this never decides trust.
//! Pure code; malformed input gives `None`, never a panic.

/// A certificate's validity period, in seconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// notBefore.
    pub not_before: i64,
    /// notAfter.
    pub not_after: i64,
}

/// Reads one DER element: (tag, contents, rest).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes.iter().fold(0usize, |n, &b| n << 8 | usize::from(b))
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

const SEQUENCE: u8 = 0x30;

/// The tbsCertificate fields after the version: serial, signature, issuer, validity,
/// subject (RFC 5280 §4.1).
fn tbs_fields(der: &[u8]) -> Option<[&[u8]; 5]> {
    let (SEQUENCE, cert, _) = element(der)? else { return None };
    let (SEQUENCE, tbs, _) = element(cert)? else { return None };
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = element(rest)?.2; // [0] EXPLICIT version
    }
    let mut fields = [&[][..]; 5];
    for field in &mut fields {
        let (_, contents, after) = element(rest)?;
        *field = contents;
        rest = after;
    }
    Some(fields)
}

/// The validity period of a DER certificate.
pub fn validity(der: &[u8]) -> Option<Validity> {
    let [_, _, _, validity, _] = tbs_fields(der)?;
    let (tag1, t1, rest) = element(validity)?;
    let (tag2, t2, _) = element(rest)?;
    Some(Validity { not_before: time(tag1, t1)?, not_after: time(tag2, t2)? })
}

/// UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ) to Unix seconds.
fn time(tag: u8, text: &[u8]) -> Option<i64> {
    let text = text.strip_suffix(b"Z")?;
    if !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |s: &[u8]| s.iter().fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
    let (year, rest) = match (tag, text.len()) {
        (0x17, 12) => {
            let yy = num(&text[..2]);
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        (0x18, 14) => (num(&text[..4]), &text[4..]),
        _ => return None,
    };
    let [month, day, hour, minute, second] = [0, 2, 4, 6, 8].map(|i| num(&rest[i..i + 2]));
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The subject of a DER certificate as `CN=alice,O=Example` (attributes in certificate
/// order; commas and backslashes in values escaped with a backslash).
pub fn subject(der: &[u8]) -> Option<String> {
    let [_, _, _, _, name] = tbs_fields(der)?;
    let mut parts = Vec::new();
    let mut rdns = name;
    while !rdns.is_empty() {
        let (_, set, after) = element(rdns)?;
        rdns = after;
        let mut atvs = set;
        while !atvs.is_empty() {
            let (_, atv, after) = element(atvs)?;
            atvs = after;
            let (_, oid, rest) = element(atv)?;
            let (_, value, _) = element(rest)?;
            let value = String::from_utf8_lossy(value).replace('\\', "\\\\").replace(',', "\\,");
            parts.push(format!("{}={value}", attribute_name(oid)));
        }
    }
    Some(parts.join(","))
}

fn attribute_name(oid: &[u8]) -> String {
    match oid {
        [0x55, 0x04, 0x03] => "CN".into(),
        [0x55, 0x04, 0x06] => "C".into(),
        [0x55, 0x04, 0x07] => "L".into(),
        [0x55, 0x04, 0x08] => "ST".into(),
        [0x55, 0x04, 0x0a] => "O".into(),
        [0x55, 0x04, 0x0b] => "OU".into(),
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress".into(),
        other => other.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DER TLV builder for test certificates.
    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if contents.len() < 0x80 {
            out.push(contents.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(contents.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(contents);
        out
    }

    fn name(cn: &str, o: &str) -> Vec<u8> {
        let atv = |oid: &[u8], v: &str| {
            tlv(0x31, &tlv(0x30, &[tlv(6, oid), tlv(0x0c, v.as_bytes())].concat()))
        };
        tlv(0x30, &[atv(&[0x55, 4, 3], cn), atv(&[0x55, 4, 10], o)].concat())
    }

    fn certificate(not_before: &[u8], not_after: &[u8], long_time: bool) -> Vec<u8> {
        let time_tag = if long_time { 0x18 } else { 0x17 };
        let validity = tlv(0x30, &[tlv(time_tag, not_before), tlv(time_tag, not_after)].concat());
        let tbs = [
            tlv(0xa0, &tlv(2, &[2])),
            tlv(2, &[1, 2, 3]),
            tlv(0x30, &tlv(6, &[1, 2])),
            name("Issuer CA", "Example"),
            validity,
            name("alice, the user", "Example"),
            tlv(0x30, &[0u8; 200]),
        ]
        .concat();
        tlv(0x30, &[tlv(0x30, &tbs), tlv(0x30, &[]), tlv(3, &[0])].concat())
    }

    #[test]
    fn validity_in_both_time_formats() {
        let cert = certificate(b"240101000000Z", b"491231235959Z", false);
        let v = validity(&cert).unwrap();
        assert_eq!(v.not_before, 1_704_067_200);
        assert_eq!(v.not_after, 2_524_607_999);
        let cert = certificate(b"20240101000000Z", b"20500101000000Z", true);
        assert_eq!(validity(&cert).unwrap().not_after, 2_524_608_000);
    }

    #[test]
    fn subject_renders_attributes_in_order() {
        let cert = certificate(b"240101000000Z", b"491231235959Z", false);
        assert_eq!(subject(&cert).unwrap(), "CN=alice\\, the user,O=Example");
    }

    #[test]
    fn truncated_or_garbled_input_gives_none() {
        let cert = certificate(b"240101000000Z", b"491231235959Z", false);
        for n in 0..cert.len() {
            assert!(validity(&cert[..n]).is_none());
            let mut bad = cert.clone();
            bad[n] ^= 0xff;
            let _ = (validity(&bad), subject(&bad));
        }
        assert!(validity(&certificate(b"241301000000Z", b"491231235959Z", false)).is_none());
    }
}
