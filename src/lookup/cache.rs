//! A map's answer cache (`cache_ttl`, `negative_ttl`, `stale_if_error`), one per map and
//! per process.
//!
//! The key holds everything the answer depends on (the source says what: the login
//! name, for a source that checks passwords the password, for auth_http the client's
//! address), run through HMAC-SHA-256 under a key drawn at start-up: the cache never
//! holds a password, nor a hash of one that could be attacked offline. Answers for a
//! user are kept `cache_ttl`, "not found" and "wrong password" `negative_ttl`; while the
//! source is failing, an expired positive answer is still used for `stale_if_error`
//! after it expired. The table is bounded: when full, what has expired goes, and if that
//! is not enough, everything.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use super::Found;

/// Entries one map's cache holds at most.
const MAX_ENTRIES: usize = 100_000;

pub struct Cache {
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub stale_if_error: Duration,
    key: hmac::Key,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

struct Entry {
    found: Option<Found>,
    stored: Instant,
}

impl Entry {
    fn positive(&self) -> bool {
        matches!(self.found, Some(Found::Route(_) | Found::Refused { .. }))
    }
}

impl Cache {
    /// A cache, or `None` when nothing would be kept.
    pub fn new(ttl: Duration, negative_ttl: Duration, stale_if_error: Duration) -> Option<Cache> {
        if ttl.is_zero() && negative_ttl.is_zero() {
            return None;
        }
        let mut secret = [0u8; 32];
        // Without randomness the keys would still be unique, only predictable; the cache
        // holds no secret in either case.
        let _ = SystemRandom::new().fill(&mut secret);
        Some(Cache {
            ttl,
            negative_ttl,
            stale_if_error,
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            entries: Mutex::new(HashMap::new()),
        })
    }

    /// The key for what the source says its answer depends on.
    pub fn key(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.key);
        for part in parts {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        // A poisoned lock only means a thread panicked holding it; the map is still whole.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lifetime(&self, entry: &Entry) -> Duration {
        if entry.positive() {
            self.ttl
        } else {
            self.negative_ttl
        }
    }

    /// A fresh answer for `key`.
    pub fn fresh(&self, key: &[u8; 32]) -> Option<Option<Found>> {
        let entries = self.lock();
        let entry = entries.get(key)?;
        (entry.stored.elapsed() < self.lifetime(entry)).then(|| entry.found.clone())
    }

    /// An expired positive answer still within `stale_if_error`, for when the source fails.
    pub fn stale(&self, key: &[u8; 32]) -> Option<Option<Found>> {
        let entries = self.lock();
        let entry = entries.get(key).filter(|e| e.positive())?;
        (entry.stored.elapsed() < self.ttl + self.stale_if_error).then(|| entry.found.clone())
    }

    /// Keeps what the source answered.
    pub fn store(&self, key: [u8; 32], found: Option<Found>) {
        let entry = Entry { found, stored: Instant::now() };
        if self.lifetime(&entry).is_zero() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
            let keep = |e: &Entry| e.stored.elapsed() < self.lifetime(e) + self.stale_if_error;
            entries.retain(|_, e| keep(e));
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Target;
    use crate::lookup::Answer;

    #[test]
    fn keys_depend_on_every_part_and_on_the_boundaries() {
        let c = Cache::new(Duration::from_secs(1), Duration::ZERO, Duration::ZERO).unwrap();
        assert_eq!(c.key(&[b"alice", b"pw"]), c.key(&[b"alice", b"pw"]));
        assert_ne!(c.key(&[b"alice", b"pw"]), c.key(&[b"alice", b"pw2"]));
        assert_ne!(c.key(&[b"ab", b"c"]), c.key(&[b"a", b"bc"]));
        let other = Cache::new(Duration::from_secs(1), Duration::ZERO, Duration::ZERO).unwrap();
        assert_ne!(c.key(&[b"alice"]), other.key(&[b"alice"]), "keyed per process");
    }

    #[test]
    fn answers_expire_by_kind_and_stale_ones_serve_only_positive() {
        let c =
            Cache::new(Duration::from_millis(50), Duration::ZERO, Duration::from_secs(60)).unwrap();
        let (hit, miss) = (c.key(&[b"alice"]), c.key(&[b"nobody"]));
        c.store(hit, Some(Found::Route(Answer::to(Target::Backend(1)))));
        c.store(miss, None);
        assert!(c.fresh(&hit).is_some());
        assert!(c.fresh(&miss).is_none(), "negative_ttl 0 keeps no negative answer");
        std::thread::sleep(Duration::from_millis(80));
        assert!(c.fresh(&hit).is_none());
        assert!(matches!(c.stale(&hit), Some(Some(Found::Route(_)))));
        assert!(Cache::new(Duration::ZERO, Duration::ZERO, Duration::from_secs(1)).is_none());
    }
}
