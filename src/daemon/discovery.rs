//! Backend discovery: a background thread that connects to every backend at start-up
//! and every `discovery_interval`, reads its greeting capabilities, logs in with the probe
//! account when one is configured (to learn the post-login capabilities before any user
//! does), and records up/down state. Sessions never wait for it; a backend that is down
//! only makes its probe fail.

use std::sync::Arc;
use std::thread;

use crate::backend::{self, LoginError};
use crate::imap::sasl::Secret;
use crate::session::Runtime;

/// The discovery thread's work for `runtime`: every backend probed at once and then
/// every `discovery_interval` (not at all again when it is 0). The daemon starts the
/// thread (thread mode, after the privilege drop).
pub fn run(runtime: Arc<Runtime>) {
    loop {
        for i in 0..runtime.config.backends.len() {
            probe(&runtime, i);
        }
        let interval = runtime.config.global.discovery_interval;
        if interval.is_zero() {
            return;
        }
        thread::sleep(interval);
    }
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
