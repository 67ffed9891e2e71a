//! The properties the fuzz targets in `fuzz/` drive, one function per target, each taking
//! the fuzzer's bytes. They live here, inside the crate, so the unit tests replay every
//! target's checked-in corpus (`fuzz/corpus/TARGET/`) on stable in every test run.
//!
//! Each property panics when it breaks; "never panics" is a property too.

use std::time::Instant;

use crate::imap::framer::{Event, Framer, Side};
use crate::imap::preauth::{Action, Credential, Limits, PreAuth, Security};
use crate::imap::sasl::Mechanism;
use crate::imap::{capability, command, response};
use crate::net::proxy_protocol::{self, Parse};
use crate::session::exchange::model::{self, Wire};
use crate::session::exchange::{Exchange, Out, Toward};

/// Splits `data` into pieces whose sizes come from `seed` (1 to 64 bytes each).
fn pieces(data: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut s = u32::from(seed) | 1;
    while !rest.is_empty() {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        let n = (s as usize % 64 + 1).min(rest.len());
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    out
}

/// Frames `data` fed in `chunks`, granting every wait; returns (offset, event) pairs.
fn frames(side: Side, chunks: &[&[u8]]) -> Vec<(usize, Event)> {
    let mut framer = Framer::new(side);
    let mut events = Vec::new();
    let mut offset = 0;
    for chunk in chunks {
        let mut rest = *chunk;
        while !rest.is_empty() {
            let step = framer.advance(rest);
            assert!(step.consumed <= rest.len());
            offset += step.consumed;
            rest = &rest[step.consumed..];
            if let Some(e) = step.event.filter(|e| *e != Event::LongLine) {
                events.push((offset, e));
            }
            if step.consumed == 0 && step.event.is_none() {
                assert!(framer.is_waiting(), "no progress without waiting");
                framer.grant();
            }
        }
    }
    events
}

/// `framer`: the same frames whatever the chunking, on both sides.
pub fn framer(data: &[u8]) {
    let Some((&seed, data)) = data.split_first() else { return };
    for side in [Side::Client, Side::Server] {
        let whole = frames(side, &[data]);
        assert_eq!(frames(side, &pieces(data, seed)), whole, "{side:?}");
    }
}

/// `preauth`: the pre-login dialogue never panics, consumes what it is given or stops at
/// a login or STARTTLS, and holds no more than its limits.
pub fn preauth(data: &[u8]) {
    let Some((&seed, data)) = data.split_first() else { return };
    let limits = Limits { max_command: 1024, max_literal: 256, max_failures: 3 };
    let security = Security {
        starttls_offered: seed & 1 == 1,
        tls_active: seed & 2 == 2,
        login_requires_tls: seed & 4 == 4,
        bearer: vec![Mechanism::XOAuth2, Mechanism::OAuthBearer],
    };
    let mut p = PreAuth::new(limits, security);
    let _ = p.greeting("hi");
    let mut input = Vec::new();
    for piece in pieces(data, seed) {
        input.extend_from_slice(piece);
        let mut out = Vec::new();
        let used = p.feed(&input, &mut out);
        assert!(used <= input.len());
        input.drain(..used);
        for action in &out {
            match action {
                Action::Send(bytes) => assert!(bytes.ends_with(b"\r\n")),
                Action::StartTls(_) => p.tls_started(),
                Action::Login(login) => {
                    // A backend challenged a bearer token: the client's next line answers.
                    if matches!(login.credential, Credential::Bearer(_)) && seed & 8 == 8 {
                        let (used, _) = p.challenge_response(&input);
                        assert!(used <= input.len());
                        input.drain(..used);
                    }
                    let mut more = Vec::new();
                    p.login_failed(&mut more);
                }
                Action::Close(_) => return,
            }
        }
        assert!(input.len() <= data.len());
    }
}

/// `command`: what parses encodes to bytes that parse to the same command and encode to
/// the same bytes again; between literals those bytes are 7-bit lines.
pub fn command(data: &[u8]) {
    if let Ok(c) = command::parse_pre_login(data) {
        assert!(c.args.iter().all(|a| a.string().is_none() || a.astring().is_some()));
    }
    let _ = command::parse_untagged(data);
    let Ok(c) = command::parse(data) else { return };
    let wire = command::encode(&c.tag, &c.name, &c.args);
    let again = command::parse(&wire.bytes)
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", wire.bytes.escape_ascii()));
    assert_eq!(again.args.len(), c.args.len());
    assert_eq!(command::encode(&again.tag, &again.name, &again.args), wire);
    let mut from = 0;
    for &point in &wire.sync_points {
        let line = &wire.bytes[from..point];
        assert!(line.iter().all(|&b| b < 0x80), "8-bit outside a literal");
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line per segment");
        let size: usize = String::from_utf8_lossy(line)
            .rsplit('{')
            .next()
            .and_then(|s| s.split('}').next())
            .and_then(|s| s.parse().ok())
            .expect("an announcement ends each segment");
        from = point + size;
    }
    let rest = &wire.bytes[from..];
    assert!(rest.iter().all(|&b| b < 0x80));
    assert_eq!(rest.iter().filter(|&&b| b == b'\n').count(), 1);
}

/// `response`: the response readers never panic, and a capability list replaced is the
/// list given, wherever it stood.
pub fn response(data: &[u8]) {
    let _ = response::kind(data);
    let _ = response::status(data);
    let _ = response::is_bye(data);
    let _ = capability::may_list(data);
    if response::capabilities(data).is_some() {
        let shown = vec!["IMAP4rev1".to_string(), "IDLE".to_string()];
        if let Some(new) = capability::show(data, &shown) {
            assert_eq!(response::capabilities(&new), Some(shown), "{}", new.escape_ascii());
        }
    }
}

/// `lookup`: the parsers of lookup answers (LDAP, auth_http, PostgreSQL, map records,
/// bearer tokens) and the LDAP filter escaping; see `lookup::fuzz`.
pub fn lookup(data: &[u8]) {
    crate::lookup::fuzz(data);
}

/// `proxy`: the PROXY header parser never panics, never claims more bytes than it was
/// given, and reads back what `encode_v2` wrote.
pub fn proxy(data: &[u8]) {
    if let Parse::Done(h) = proxy_protocol::parse(data) {
        assert!(h.len <= data.len());
        if let Some((src, dst)) = h.addrs {
            if src.is_ipv4() == dst.is_ipv4() {
                let again = proxy_protocol::encode_v2(src, dst);
                match proxy_protocol::parse(&again) {
                    Parse::Done(back) => assert_eq!(back.addrs, Some((src, dst))),
                    other => panic!("{other:?}"),
                }
            }
        }
    }
}

/// `config`: the loader never panics, and every error points at a line of the file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let lines = text.lines().count();
    match crate::config::Config::parse(text, std::path::Path::new("f.ini")) {
        Ok(config) => {
            if let Err(errors) = crate::rules::load(&config) {
                assert!(errors.0.iter().all(|e| e.line <= lines.max(1)));
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty());
            assert!(errors.0.iter().all(|e| e.line <= lines.max(1)), "{errors}");
        }
    }
}

/// `exchange`: a byte script of client and server bytes through both modes of the
/// exchange, pumped as the relay pumps it: no panic, forwarded input always within what
/// was read, imapgate's own queues bounded.
pub fn exchange(data: &[u8]) {
    let Some((&mode, script)) = data.split_first() else { return };
    let ex = if mode & 1 == 0 {
        Exchange::fast(vec!["IMAP4rev1".into(), "IDLE".into(), "LITERAL+".into()])
    } else {
        Exchange::judged(model::engine())
    };
    let mut wire = Wire::new(ex);
    let now = Instant::now();
    // Each step: one byte says who speaks and how much (up to 63 bytes of what follows).
    let mut rest = script;
    while let Some((&op, tail)) = rest.split_first() {
        let n = usize::from(op & 0x3f).min(tail.len());
        let (bytes, after) = tail.split_at(n);
        rest = after;
        if op & 0x80 == 0 {
            wire.client_sends(bytes);
        } else {
            wire.server_sends(bytes);
        }
        let _ = wire.pump(now);
        wire.ex.on_time(now);
        let bounded = match wire.ex.out(Toward::Client) {
            Out::Bytes(b) => b.len() <= 2 * 256 * 1024 + 64,
            _ => true,
        };
        assert!(bounded, "imapgate's answers piled up");
        let _ = wire.ex.at_client_boundary();
    }
}

/// `smuggling`: see `session::exchange::model`.
pub fn smuggling(data: &[u8]) {
    model::check(data);
}

#[cfg(test)]
mod tests {
    /// Every target's checked-in corpus, replayed through its property.
    #[test]
    fn every_fuzz_corpus_replays() {
        type Property = fn(&[u8]);
        let targets: [(&str, Property); 9] = [
            ("framer", super::framer),
            ("preauth", super::preauth),
            ("command", super::command),
            ("response", super::response),
            ("proxy", super::proxy),
            ("config", super::config),
            ("exchange", super::exchange),
            ("smuggling", super::smuggling),
            ("lookup", super::lookup),
        ];
        for (name, property) in targets {
            let dir =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(name);
            let entries =
                std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            let mut replayed = 0;
            for entry in entries {
                let path = entry.expect("corpus entry").path();
                let input = std::fs::read(&path).expect("corpus file");
                if std::panic::catch_unwind(|| property(&input)).is_err() {
                    panic!("{name}: {} breaks the property", path.display());
                }
                replayed += 1;
            }
            assert!(replayed > 0, "{name}: empty corpus");
        }
    }
}
