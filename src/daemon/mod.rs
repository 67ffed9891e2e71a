//! The process: start-up in the order relayd and OpenSMTPD use (command line;
//! configuration and TLS files; user, group and chroot resolved; backend names resolved
//! with a chroot; listening sockets bound or taken from systemd; the log opened; then
//! privileges dropped: thread mode and inetd mode here, fork mode in each session
//! process, before the first byte from a client is read), then one of the process models
//! (threads, forked processes, inetd), signals and reloads.

pub mod admission;
pub mod cli;
pub mod fork;
mod host;
pub mod inetd;
pub mod listener;
pub mod logging;
pub mod privdrop;
pub mod reload;
pub mod signals;
pub mod socket_activation;
pub mod stats;
mod sys;

use std::sync::Arc;

use crate::backend::discovery;
use crate::config::{self, Config};
use crate::net::tls;
use crate::rules;
use crate::session::Runtime;

/// Exit codes from sysexits(3).
mod exit {
    pub const USAGE: i32 = 64;
    pub const UNAVAILABLE: i32 = 69;
    pub const OSERR: i32 = 71;
    pub const NOPERM: i32 = 77;
    pub const CONFIG: i32 = 78;
}

/// Runs imapgate with the process's arguments; returns the exit code.
pub fn main() -> i32 {
    let opts = match cli::parse(std::env::args().skip(1)) {
        Ok(cli::Command::Run(opts)) => opts,
        Ok(cli::Command::Help) => {
            println!("{}", cli::USAGE);
            return 0;
        }
        Ok(cli::Command::Version) => {
            println!("imapgate {}", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        Err(e) => {
            eprintln!("imapgate: {e}\n{}", cli::USAGE);
            return exit::USAGE;
        }
    };
    let mut config = match Config::load(&opts.config) {
        Ok(config) => config,
        Err(errors) => return config_failed(&opts, &errors),
    };
    let tls = match tls::load(&config) {
        Ok(tls) => tls,
        Err(errors) => return config_failed(&opts, &errors),
    };
    let rules = match rules::load(&config) {
        Ok(rules) => rules,
        Err(errors) => return config_failed(&opts, &errors),
    };
    let spec = match privdrop::resolve(&config) {
        Ok(spec) => spec,
        Err(errors) => return config_failed(&opts, &errors),
    };
    if opts.check_only {
        println!("{}: configuration OK", opts.config.display());
        return 0;
    }
    if let Err(e) = logging::init(&config.global, opts.log_level, opts.inetd) {
        if !opts.inetd {
            eprintln!("imapgate: {e}");
        }
        return exit::CONFIG;
    }
    logging::install_panic_hook();
    for backend in config.backends.iter().filter(|b| b.tls_insecure_skip_verify) {
        log::warn!(
            "backend {}: tls_insecure_skip_verify = yes: its certificate is NOT verified, \
             anyone on the path can read the users' passwords",
            backend.name
        );
    }
    privdrop::warn_if_root(spec.as_ref());
    if spec.as_ref().is_some_and(|s| s.chroot.is_some()) {
        if let Err(e) = privdrop::resolve_backends(&mut config, None) {
            log::error!("{e}");
            return exit::UNAVAILABLE;
        }
    }
    // Rules open what they need (an audit file) now, while still privileged.
    for rule in &rules {
        if let Err(e) = rule.kind.prepare() {
            log::error!("{}: rule {} (line {}): {e}", config.path.display(), rule.name, rule.line);
            return exit::CONFIG;
        }
    }
    let runtime = Arc::new(Runtime::new(config, tls, rules));
    if opts.inetd {
        return inetd_main(runtime, spec.as_ref());
    }
    let bound = match listener::bind(&runtime.config) {
        Ok(bound) => bound,
        Err(e) => {
            log::error!("{e}");
            return exit::UNAVAILABLE;
        }
    };
    let fork = runtime.config.global.daemon.mode == config::Mode::Fork;
    if !fork {
        // Thread mode: drop for good before the first connection thread exists.
        if let Some(spec) = &spec {
            if let Err(e) = privdrop::drop_privileges(spec) {
                log::error!("{e}");
                return exit::NOPERM;
            }
            log::info!(
                "privileges dropped to {} ({}:{}){}",
                spec.user,
                spec.uid,
                spec.gid,
                chroot_note(spec)
            );
        }
        if let Err(e) = signals::init_shutdown_pipe() {
            log::error!("signals: {e}");
            return exit::OSERR;
        }
    }
    let signals = match signals::install() {
        Ok(fd) => fd,
        Err(e) => {
            log::error!("signals: {e}");
            return exit::OSERR;
        }
    };
    let path = runtime.config.path.display().to_string();
    let mode = if fork { "fork" } else { "thread" };
    log::info!("imapgate {} started with {path} (mode = {mode})", env!("CARGO_PKG_VERSION"));
    let ctx = reload::Ctx { opts: opts.clone(), spec: spec.clone(), privileged: fork };
    if !fork {
        // Fork mode keeps its listener single-threaded; children learn at login instead.
        discovery::start(Arc::clone(&runtime));
    }
    if fork {
        fork::run(runtime, bound, signals, ctx)
    } else {
        listener::run(runtime, bound, signals, ctx)
    }
}

fn chroot_note(spec: &privdrop::Spec) -> String {
    spec.chroot.as_ref().map_or(String::new(), |c| format!(" in chroot {}", c.display()))
}

/// inetd mode: take the socket, drop privileges, then serve.
fn inetd_main(runtime: Arc<Runtime>, spec: Option<&privdrop::Spec>) -> i32 {
    let client = match inetd::take_client() {
        Ok(client) => client,
        Err(e) => {
            log::error!("inetd mode: {e}");
            return exit::OSERR;
        }
    };
    if let Some(spec) = spec {
        if let Err(e) = privdrop::drop_privileges(spec) {
            log::error!("inetd mode: {e}");
            return exit::NOPERM;
        }
    }
    if let Err(e) = signals::init_shutdown_signal() {
        log::error!("inetd mode: signals: {e}");
        return exit::OSERR;
    }
    inetd::serve(runtime, client);
    0
}

/// Reports configuration errors. In inetd mode stderr is the client, so the errors go
/// to syslog and the client gets a BYE that says why it cannot be served.
fn config_failed(opts: &cli::Options, errors: &config::ConfigErrors) -> i32 {
    if opts.inetd && !opts.check_only {
        sys::openlog(libc::LOG_MAIL);
        for e in &errors.0 {
            sys::syslog(libc::LOG_ERR, &e.to_string());
        }
        use std::io::Write;
        let _ = std::io::stdout()
            .write_all(b"* BYE [UNAVAILABLE] imapgate is misconfigured, see its log.\r\n");
        return exit::CONFIG;
    }
    for e in &errors.0 {
        eprintln!("{e}");
    }
    exit::CONFIG
}
