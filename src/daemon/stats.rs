//! Process-wide counters for the SIGUSR1 status line, as relaxed atomics: sessions
//! open and in total, bytes each way, connections refused. In fork mode the listener
//! process counts sessions itself (one per child) and session processes report their
//! byte counts to it (`host::ForkChild`). The same events are counted per listener and
//! per reason in the metrics registry (`crate::metrics`).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::{self, Metric};

static OPEN: AtomicU64 = AtomicU64::new(0);
static TOTAL: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);
static FROM_CLIENTS: AtomicU64 = AtomicU64::new(0);
static TO_CLIENTS: AtomicU64 = AtomicU64::new(0);

/// A session of `listener` began (called by the listener, thread or fork mode).
pub fn session_started(listener: &str) {
    OPEN.fetch_add(1, Ordering::Relaxed);
    TOTAL.fetch_add(1, Ordering::Relaxed);
    metrics::add(Metric::SessionsOpen, &[listener], 1);
    metrics::add(Metric::SessionsTotal, &[listener], 1);
}

/// A session of `listener` ended (called by the listener; the name it started with,
/// even when a reload renamed things since).
pub fn session_ended(listener: &str) {
    // Never below zero, even if a caller pairs these wrongly.
    let _ = OPEN.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    metrics::global().sub(Metric::SessionsOpen, &[listener]);
}

/// A connection was refused before its greeting, for `reason` (a `Refusal::reason`).
pub fn refused(reason: &'static str) {
    REFUSED.fetch_add(1, Ordering::Relaxed);
    metrics::add(Metric::Refused, &[reason], 1);
}

/// Adds a finished session's byte counts (thread mode: the session's `Host`; fork mode:
/// the listener, from a session process's report).
pub fn apply_bytes(from_client: u64, to_client: u64) {
    FROM_CLIENTS.fetch_add(from_client, Ordering::Relaxed);
    TO_CLIENTS.fetch_add(to_client, Ordering::Relaxed);
}

/// Sessions open now.
pub fn open() -> u64 {
    OPEN.load(Ordering::Relaxed)
}

/// The one-line status for SIGUSR1; `backends` is `Backends::status`'s
/// `name:up,name:down` (thread mode), or `unknown` where this process does not track
/// them (the fork-mode listener).
pub fn status_line(mode: &str, backends: &str) -> String {
    let (admitted, blocked) = crate::daemon::admission::snapshot();
    format!(
        "STATUS mode={mode} sessions_open={} sessions_total={} refused={} admitted={admitted} \
         blocked_addresses={blocked} bytes_from_clients={} bytes_to_clients={} backends={backends}",
        OPEN.load(Ordering::Relaxed),
        TOTAL.load(Ordering::Relaxed),
        REFUSED.load(Ordering::Relaxed),
        FROM_CLIENTS.load(Ordering::Relaxed),
        TO_CLIENTS.load(Ordering::Relaxed),
    )
}
