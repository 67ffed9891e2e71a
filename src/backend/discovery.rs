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

/// Starts the discovery thread for `runtime` (thread mode, after the privilege drop).
pub fn start(runtime: Arc<Runtime>) {
    let spawned =
        thread::Builder::new().name("discovery".into()).stack_size(256 << 10).spawn(move || loop {
            for i in 0..runtime.config.backends.len() {
                probe(&runtime, i);
            }
            let interval = runtime.config.global.discovery_interval;
            if interval.is_zero() {
                return;
            }
            thread::sleep(interval);
        });
    if let Err(e) = spawned {
        log::warn!("cannot start backend discovery: {e}");
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
    match greeted.login(&backend.login, user, &Secret::new(password.clone().into_bytes())) {
        Ok(mut session) => {
            states.learn(i, Some(pre), Some(session.capabilities.clone()));
            let _ = std::io::Write::write_all(&mut session.stream, b"ig9 LOGOUT\r\n");
            session.stream.close();
        }
        Err(LoginError::Rejected(why)) => {
            log::warn!("backend {}: probe account {user} refused: {why}", backend.name);
            states.learn(i, Some(pre), None);
        }
        Err(e) => states.mark_down(i, backend.login.down_time, &e.to_string()),
    }
}
