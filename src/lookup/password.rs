//! Checking a password against a stored hash in Dovecot's `{SCHEME}` form, for SQL maps
//! with `verify_password`: `{SHA512-CRYPT}` and `{SHA256-CRYPT}` (`$6$`, `$5$`, written
//! here from Drepper's specification on ring's SHA-2), `{BLF-CRYPT}` (bcrypt `$2y$`, the
//! `bcrypt` crate) and `{ARGON2ID}`/`{ARGON2I}` (the `argon2` crate). A hash without a
//! `{SCHEME}` prefix is read by its `$id$`. Any other scheme is an error, never a
//! comparison of plaintext.

use ring::digest::{self, Algorithm};

/// The most work one check may cost, whatever a row says: a hash with higher costs is an
/// error, not a login that takes minutes or gigabytes (Dovecot's defaults are far below).
const MAX_SHA_ROUNDS: u64 = 1_000_000;
const MAX_BCRYPT_COST: u32 = 16;
const MAX_ARGON2_KIB: u32 = 256 * 1024;
const MAX_ARGON2_PASSES: u32 = 16;
const MAX_ARGON2_LANES: u32 = 16;

/// Whether `password` matches `stored`; `Err` for a scheme imapgate does not support or a
/// malformed hash.
pub fn verify(stored: &str, password: &[u8]) -> Result<bool, String> {
    let (scheme, hash) = match stored.strip_prefix('{').and_then(|s| s.split_once('}')) {
        Some((scheme, hash)) => (scheme.to_ascii_uppercase(), hash),
        None => (String::new(), stored),
    };
    let id = hash.split('$').nth(1).unwrap_or_default();
    match (scheme.as_str(), id) {
        ("SHA512-CRYPT" | "", "6") => sha_crypt(hash, password, &digest::SHA512, "6"),
        ("SHA256-CRYPT" | "", "5") => sha_crypt(hash, password, &digest::SHA256, "5"),
        ("BLF-CRYPT" | "", "2y" | "2b" | "2a") => {
            let cost: u32 = hash.split('$').nth(2).and_then(|c| c.parse().ok()).ok_or("bad BLF-CRYPT hash")?;
            if cost > MAX_BCRYPT_COST {
                return Err(format!("BLF-CRYPT cost {cost} is over {MAX_BCRYPT_COST}"));
            }
            bcrypt::verify(password, hash).map_err(|e| format!("bad BLF-CRYPT hash: {e}"))
        }
        ("ARGON2ID" | "ARGON2I" | "", "argon2id" | "argon2i") => {
            use argon2::password_hash::{PasswordHash, PasswordVerifier};
            let parsed = PasswordHash::new(hash).map_err(|e| format!("bad ARGON2 hash: {e}"))?;
            let params = argon2::Params::try_from(&parsed).map_err(|e| format!("bad ARGON2 hash: {e}"))?;
            if params.m_cost() > MAX_ARGON2_KIB
                || params.t_cost() > MAX_ARGON2_PASSES
                || params.p_cost() > MAX_ARGON2_LANES
            {
                return Err("ARGON2 costs over the limit (256 MiB, 16 passes, 16 lanes)".into());
            }
            Ok(argon2::Argon2::default().verify_password(password, &parsed).is_ok())
        }
        (scheme, _) => Err(format!(
            "unsupported password scheme {:?} (supported: SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT, ARGON2ID, ARGON2I)",
            if scheme.is_empty() { id } else { scheme }
        )),
    }
}

const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// SHA-crypt (`$5$`, `$6$`): `$ID$[rounds=N$]SALT$HASH`.
fn sha_crypt(
    hash: &str,
    password: &[u8],
    alg: &'static Algorithm,
    id: &str,
) -> Result<bool, String> {
    let bad = || format!("bad ${id}$ hash");
    let rest = hash.strip_prefix(&format!("${id}$")).ok_or_else(bad)?;
    let (rounds, rest) = match rest.strip_prefix("rounds=") {
        Some(r) => {
            let (n, rest) = r.split_once('$').ok_or_else(bad)?;
            let n: u64 = n.parse().map_err(|_| bad())?;
            if n > MAX_SHA_ROUNDS {
                return Err(format!("${id}$ rounds {n} is over {MAX_SHA_ROUNDS}"));
            }
            (n.max(1000), rest)
        }
        None => (5000, rest),
    };
    let (salt, expected) = rest.rsplit_once('$').ok_or_else(bad)?;
    let salt = &salt.as_bytes()[..salt.len().min(16)];
    let out = sha_crypt_raw(password, salt, rounds, alg);
    Ok(constant_time_eq(encode(&out, alg).as_bytes(), expected.as_bytes()))
}

fn sha_crypt_raw(p: &[u8], s: &[u8], rounds: u64, alg: &'static Algorithm) -> Vec<u8> {
    let n = alg.output_len();
    let h = |parts: &[&[u8]]| {
        let mut ctx = digest::Context::new(alg);
        for part in parts {
            ctx.update(part);
        }
        ctx.finish().as_ref().to_vec()
    };
    let b = h(&[p, s, p]);
    let mut ctx = digest::Context::new(alg);
    ctx.update(p);
    ctx.update(s);
    let mut left = p.len();
    while left > n {
        ctx.update(&b);
        left -= n;
    }
    ctx.update(&b[..left]);
    let mut bits = p.len();
    while bits > 0 {
        ctx.update(if bits & 1 == 1 { &b } else { p });
        bits >>= 1;
    }
    let mut a = ctx.finish().as_ref().to_vec();
    let stretch =
        |seed: &[u8], len: usize| -> Vec<u8> { seed.iter().cycle().take(len).copied().collect() };
    let mut dp = digest::Context::new(alg);
    for _ in 0..p.len() {
        dp.update(p);
    }
    let p_seq = stretch(dp.finish().as_ref(), p.len());
    let mut ds = digest::Context::new(alg);
    for _ in 0..16 + usize::from(a[0]) {
        ds.update(s);
    }
    let s_seq = stretch(ds.finish().as_ref(), s.len());
    for i in 0..rounds {
        let mut c = digest::Context::new(alg);
        c.update(if i % 2 == 1 { &p_seq } else { &a });
        if i % 3 != 0 {
            c.update(&s_seq);
        }
        if i % 7 != 0 {
            c.update(&p_seq);
        }
        c.update(if i % 2 == 1 { &a } else { &p_seq });
        a = c.finish().as_ref().to_vec();
    }
    a
}

/// The crypt base64 of the digest, in the byte order the algorithm prescribes.
fn encode(d: &[u8], alg: &'static Algorithm) -> String {
    let mut out = String::new();
    let mut put = |b2: u8, b1: u8, b0: u8, n: usize| {
        let mut w = u32::from(b2) << 16 | u32::from(b1) << 8 | u32::from(b0);
        for _ in 0..n {
            out.push(char::from(ITOA64[(w & 0x3f) as usize]));
            w >>= 6;
        }
    };
    if alg.output_len() == 64 {
        for i in 0..21 {
            let b2 = i * 22 % 63;
            put(d[b2], d[(b2 + 21) % 63], d[(b2 + 42) % 63], 4);
        }
        put(0, 0, d[63], 2);
    } else {
        for i in 0..10 {
            let b2 = i * 21 % 30;
            put(d[b2], d[(b2 + 10) % 30], d[(b2 + 20) % 30], 4);
        }
        put(0, d[31], d[30], 3);
    }
    out
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha_crypt_matches_the_reference_vectors() {
        // From glibc's crypt (Drepper's specification), with "Hello world!".
        let pw = b"Hello world!";
        assert_eq!(verify("$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1", pw), Ok(true));
        assert_eq!(verify("{SHA512-CRYPT}$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.", pw), Ok(true));
        assert_eq!(
            verify("{SHA256-CRYPT}$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5", pw),
            Ok(true)
        );
        assert_eq!(verify("$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1", b"Hello world?"), Ok(false));
    }

    #[test]
    fn dovecot_schemes_verify() {
        // Written by `doveadm pw -s SCHEME -p secret`.
        for stored in [
            "{SHA512-CRYPT}$6$CYCNvvyMqvezUCRp$8pcF/FhV44ZE4hjbZ54z1NCaLAODz37OuvAz9nkR7Yg9uQs/mGlky6GGNjxduzGsLQHhEUWxuTB6Vjn59gceg.",
            "{BLF-CRYPT}$2y$05$UzorkCxkIQTHmb8jePD5Oec0/79dCuqLHi9spcDohV4V70LTIDvt6",
            "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$r32nrr019YcL68W/eEd0Yw$61eUrCmZr+9Mh9xm3Lqb71BzPOWRXBcGAOoDuegc3s4",
        ] {
            assert_eq!(verify(stored, b"secret"), Ok(true), "{stored}");
            assert_eq!(verify(stored, b"secreT"), Ok(false), "{stored}");
        }
        assert!(verify("{PLAIN}secret", b"secret").unwrap_err().contains("unsupported"));
        assert!(verify("{MD5-CRYPT}$1$x$y", b"secret").is_err());
        assert!(verify("{SHA512-CRYPT}garbage", b"secret").is_err());
        // Costs a row may not impose.
        assert!(verify("$6$rounds=999999999$salt$x", b"s").unwrap_err().contains("over"));
        assert!(verify(
            "{BLF-CRYPT}$2y$31$UzorkCxkIQTHmb8jePD5Oec0/79dCuqLHi9spcDohV4V70LTIDvt6",
            b"s"
        )
        .unwrap_err()
        .contains("over"));
        assert!(verify("{ARGON2ID}$argon2id$v=19$m=4194304,t=3,p=1$r32nrr019YcL68W/eEd0Yw$61eUrCmZr+9Mh9xm3Lqb71BzPOWRXBcGAOoDuegc3s4", b"s").unwrap_err().contains("over"));
    }
}
