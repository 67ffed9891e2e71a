//! SIGHUP: load the configuration again. A new configuration is used by new sessions
//! only; running sessions keep the one they started with (they hold an `Arc`). A broken
//! file is reported line by line and the old configuration stays in force. What is known
//! about backends that did not change (up or down, capabilities) carries over, and in
//! thread mode discovery turns to the new configuration at once.
//!
//! What a reload cannot change is logged as a warning, never ignored silently:
//! - always: `mode`, `metrics` and the log destination (`log`, `log_file`,
//!   `syslog_facility`);
//! - thread mode, once privileges are dropped: `user`, `group`, `chroot` and the
//!   listening addresses (the process can no longer bind privileged ports or leave its
//!   chroot). Files the new configuration names (itself, TLS keys) are read with the
//!   dropped privileges and inside the chroot: when they cannot be read there, the
//!   reload fails with that reason and the old configuration stays.
//! - fork mode: the listener process keeps its privileges, so everything else changes,
//!   including the listening addresses (bound again) and the privileges of new sessions.

use std::sync::Arc;

use crate::config::{Config, ConfigErrors};
use crate::daemon::privdrop::{self, Spec};
use crate::daemon::{cli, logging};
use crate::net::tls;
use crate::rules;
use crate::session::Runtime;

/// What the accept loop needs to reload.
pub struct Ctx {
    /// The command line (the configuration path, `-d`).
    pub opts: cli::Options,
    /// The privileges sessions drop to.
    pub spec: Option<Spec>,
    /// The process is privileged (fork mode listener): it may change everything.
    pub privileged: bool,
}

fn log_errors(what: &str, errors: &ConfigErrors) {
    for e in &errors.0 {
        log::error!("reload: {e}");
    }
    log::error!("reload: {what}; the configuration in force is unchanged");
}

/// Loads the configuration again. `None` when it is broken (the reasons are logged).
pub fn load(ctx: &mut Ctx, current: &Runtime) -> Option<Arc<Runtime>> {
    let path = &ctx.opts.config;
    let mut config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            log_errors("configuration rejected", &e);
            return None;
        }
    };
    let tls = match tls::load(&config) {
        Ok(t) => t,
        Err(e) => {
            log_errors("TLS files rejected", &e);
            return None;
        }
    };
    let rules = match rules::load(&config) {
        Ok(r) => r,
        Err(e) => {
            log_errors("rules rejected", &e);
            return None;
        }
    };
    let maps = match crate::lookup::load(&config) {
        Ok(m) => m,
        Err(e) => {
            log_errors("maps rejected", &e);
            return None;
        }
    };
    // Audit files of the new rules are opened now (still root in fork mode; in thread
    // mode as the unprivileged user, so a new file must be writable by it).
    for rule in &rules {
        if let Err(e) = rule.kind.prepare() {
            log::error!(
                "reload: rule {} (line {}): {e}; the configuration in force is unchanged",
                rule.name,
                rule.line
            );
            return None;
        }
    }
    let old = &current.config;
    if old.global.daemon.mode != config.global.daemon.mode {
        log::warn!("reload: mode cannot change while running; restart imapgate to apply it");
        config.global.daemon.mode = old.global.daemon.mode;
    }
    let (og, ng) = (&old.global, &config.global);
    if og.metrics != ng.metrics {
        log::warn!("reload: metrics cannot change while running; restart imapgate to apply it");
    }
    if og.log != ng.log || og.syslog_facility != ng.syslog_facility {
        log::warn!("reload: the log destination cannot change while running; restart to apply it");
    }
    let privileges_changed = (&og.daemon.user, &og.daemon.group, &og.daemon.chroot)
        != (&ng.daemon.user, &ng.daemon.group, &ng.daemon.chroot);
    if ctx.privileged {
        match privdrop::resolve(&config) {
            Ok(spec) => ctx.spec = spec,
            Err(e) => {
                log_errors("user, group or chroot rejected", &e);
                return None;
            }
        }
    } else if privileges_changed {
        log::warn!(
            "reload: user, group and chroot cannot change after privileges were dropped; \
             restart imapgate to apply them (the old ones stay in force)"
        );
    }
    if ctx.spec.as_ref().is_some_and(|s| s.chroot.is_some()) {
        if let Err(e) = privdrop::resolve_backends(&mut config, Some(old)) {
            log::error!("reload: {e}; the configuration in force is unchanged");
            return None;
        }
    }
    if ctx.opts.log_level.is_none() {
        logging::set_filter(&config.global.log_level);
    }
    log::info!("reload: {} loaded; new sessions use it", path.display());
    let runtime = Runtime::new(config, tls, rules, maps);
    runtime.backends.carry_over(&runtime.config, &current.backends, &current.config);
    Some(Arc::new(runtime))
}
