//! Backend discovery: a background thread that connects to every backend at start-up
//! and every `discovery_interval`, reads its greeting capabilities, logs in with the probe
//! account when one is configured (to learn the post-login capabilities before any user
//! does), and records up/down state. Sessions never wait for it; a backend that is down
//! only makes its probe fail.
//!
//! It always works for the runtime new sessions get: a reload hands it the new one
//! ([`Discovery::retarget`]), whose backends it probes at once (added ones included) and
//! then every new `discovery_interval`.

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::backend::{self, LoginError};
use crate::daemon::signals;
use crate::imap::sasl::Secret;
use crate::session::Runtime;

/// The discovery thread, from the accept loop's side.
pub struct Discovery {
    shared: Arc<Shared>,
}

/// The runtime to probe for, and how many times it was replaced.
struct Shared {
    current: Mutex<(Arc<Runtime>, u64)>,
    replaced: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, (Arc<Runtime>, u64)> {
        // A poisoned lock only means a panicking thread held it; the data is plain values.
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Discovery {
    /// Starts the thread for `runtime` (thread mode, after the privilege drop).
    pub fn start(runtime: Arc<Runtime>) -> io::Result<Discovery> {
        let shared =
            Arc::new(Shared { current: Mutex::new((runtime, 0)), replaced: Condvar::new() });
        let for_thread = Arc::clone(&shared);
        let builder = thread::Builder::new().name("discovery".into()).stack_size(256 << 10);
        signals::spawn_quiet(builder, move || run(&for_thread))?;
        Ok(Discovery { shared })
    }

    /// A reload: from now on probe for `runtime`, starting at once.
    pub fn retarget(&self, runtime: Arc<Runtime>) {
        let mut current = self.shared.lock();
        *current = (runtime, current.1 + 1);
        self.shared.replaced.notify_all();
    }
}

/// The discovery thread's work: every backend of the current runtime probed at once and
/// then every `discovery_interval` (not again when it is 0), until a reload replaces the
/// runtime, which starts a new round at once.
fn run(shared: &Shared) {
    let (mut runtime, mut generation) = shared.lock().clone();
    loop {
        for i in 0..runtime.config.backends.len() {
            if shared.lock().1 != generation {
                break;
            }
            probe(&runtime, i);
        }
        let next = wait(shared, generation, runtime.config.global.discovery_interval);
        (runtime, generation) = next;
    }
}

/// Waits `interval` (for ever when it is 0) or until the runtime is replaced; returns
/// the runtime to probe next.
fn wait(shared: &Shared, generation: u64, interval: Duration) -> (Arc<Runtime>, u64) {
    // An interval too long to add to the clock is as good as for ever.
    let deadline =
        Some(interval).filter(|i| !i.is_zero()).and_then(|i| Instant::now().checked_add(i));
    let mut current = shared.lock();
    while current.1 == generation {
        let Some(deadline) = deadline else {
            current = shared.replaced.wait(current).unwrap_or_else(|p| p.into_inner());
            continue;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        current = shared.replaced.wait_timeout(current, left).unwrap_or_else(|p| p.into_inner()).0;
    }
    current.clone()
}

/// Probes one backend and records what it learned.
pub fn probe(runtime: &Runtime, i: usize) {
    let backend = &runtime.config.backends[i];
    let states = &runtime.backends;
    let greeted = match backend::greet(backend, runtime.tls.backends[i].as_ref(), None) {
        Ok(g) => g,
        Err(e) => {
            states.mark_down(i, backend.login.down_time, &e.to_string());
            return;
        }
    };
    states.mark_up(i);
    let pre = greeted.capabilities.clone();
    let Some((user, password)) = &backend.login.probe else {
        states.learn(i, Some(pre), None);
        greeted.logout();
        return;
    };
    let password = Secret::new(password.clone().into_bytes());
    // A password login is never challenged.
    match greeted.login(
        &backend.login,
        user,
        backend::connect::Proof::Password(&password),
        &mut |_| None,
    ) {
        Ok(mut session) => {
            states.learn(i, Some(pre), Some(session.capabilities.clone()));
            let _ = std::io::Write::write_all(&mut session.stream, b"ig9 LOGOUT\r\n");
            session.stream.close();
        }
        Err(LoginError::Rejected(why) | LoginError::Unsupported(why)) => {
            log::warn!("backend {}: probe account {user} refused: {why}", backend.name);
            states.learn(i, Some(pre), None);
        }
        Err(e) => states.mark_down(i, backend.login.down_time, &e.to_string()),
    }
}
