//! imapgate: an IMAP proxy and session filter. See README.md and ARCHITECTURE.md.
//!
//! `main` wires the parts together: command line, configuration, logging, then either
//! standalone listening or inetd mode.

pub mod backend;
pub mod cli;
pub mod config;
pub mod imap;
pub mod inetd;
pub mod listener;
pub mod logging;
pub mod relay;
pub mod route;
pub mod session;
mod sys;
pub mod tls;
pub mod transport;
pub mod x509;

use std::sync::Arc;

use config::Config;

/// What every session shares: the configuration and the TLS configurations built from it.
#[derive(Debug)]
pub struct Runtime {
    /// The loaded configuration.
    pub config: Config,
    /// TLS configurations, loaded before any privilege drop.
    pub tls: tls::Contexts,
}

/// Exit codes from sysexits(3).
mod exit {
    pub const USAGE: i32 = 64;
    pub const UNAVAILABLE: i32 = 69;
    pub const OSERR: i32 = 71;
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
    let config = match Config::load(&opts.config) {
        Ok(config) => config,
        Err(errors) => return config_failed(&opts, &errors),
    };
    let tls = match tls::load(&config) {
        Ok(tls) => tls,
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
    let runtime = Arc::new(Runtime { config, tls });
    if opts.inetd {
        return match inetd::take_client() {
            Ok(client) => {
                inetd::serve(runtime, client);
                0
            }
            Err(e) => {
                log::error!("inetd mode: {e}");
                exit::OSERR
            }
        };
    }
    match listener::bind(&runtime.config) {
        Ok(bound) => {
            let path = runtime.config.path.display();
            log::info!("imapgate {} started with {path}", env!("CARGO_PKG_VERSION"));
            listener::run(runtime, bound);
            0
        }
        Err(e) => {
            log::error!("{e}");
            exit::UNAVAILABLE
        }
    }
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
