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

use std::sync::Arc;

use config::Config;

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
    let config = Arc::new(config);
    if opts.inetd {
        return match inetd::take_client() {
            Ok(client) => {
                inetd::serve(config, client);
                0
            }
            Err(e) => {
                log::error!("inetd mode: {e}");
                exit::OSERR
            }
        };
    }
    match listener::bind(&config) {
        Ok(bound) => {
            log::info!(
                "imapgate {} started with {}",
                env!("CARGO_PKG_VERSION"),
                config.path.display()
            );
            listener::run(config, bound);
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
