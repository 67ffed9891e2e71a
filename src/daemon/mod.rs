//! The process: start-up in the order relayd and OpenSMTPD use (command line;
//! configuration and TLS files; user, group and chroot resolved; backend names resolved
//! with a chroot; listening sockets bound or taken from systemd; the log opened; then
//! privileges dropped: thread mode and inetd mode here, fork mode in each session
//! process, before the first byte from a client is read), then one of the process models
//! (threads, forked processes, inetd), signals and reloads.

pub mod admission;
pub mod cli;
pub mod discovery;
pub mod fork;
mod host;
pub mod inetd;
pub mod listener;
pub mod logging;
pub mod privdrop;
pub mod reload;
pub mod scrape;
pub mod signals;
pub mod socket_activation;
pub mod stats;
mod sys;
mod workers;

use std::sync::Arc;

use crate::config::{self, Config};
use crate::net::tls;
use crate::rules;
use crate::session::Runtime;

/// Exit codes from sysexits(3). README.md and imapgate(8) list each with its causes.
pub(crate) mod exit {
    /// The command line is wrong.
    pub const USAGE: i32 = 64;
    /// A listening address, systemd's sockets or a backend name before the chroot.
    pub const UNAVAILABLE: i32 = 69;
    /// Signals, inetd mode's socket, the fork-mode listener.
    pub const OSERR: i32 = 71;
    /// Privileges could not be dropped.
    pub const NOPERM: i32 = 77;
    /// The configuration or a file it names, the log, an audit file.
    pub const CONFIG: i32 = 78;
    /// Every code above.
    #[cfg(test)]
    pub const ALL: [i32; 5] = [USAGE, UNAVAILABLE, OSERR, NOPERM, CONFIG];
}

/// Why imapgate could not start, with the exit code that says so.
enum StartError {
    /// The command line is wrong: the message and the usage go to stderr (under
    /// `--inetd`, the message to syslog and a BYE to the client).
    Usage(String),
    /// The configuration (or a file it names) is wrong: every `FILE:LINE: message`.
    Config(config::ConfigErrors),
    /// Something of the system refused (a port, the log, privileges, signals): logged.
    System { code: i32, message: String },
}

impl StartError {
    fn system(code: i32, message: impl std::fmt::Display) -> StartError {
        StartError::System { code, message: message.to_string() }
    }

    fn code(&self) -> i32 {
        match self {
            StartError::Usage(_) => exit::USAGE,
            StartError::Config(_) => exit::CONFIG,
            StartError::System { code, .. } => *code,
        }
    }
}

/// Everything loaded from the configuration before anything is bound or dropped.
struct Loaded {
    config: Config,
    tls: tls::Contexts,
    rules: Vec<Arc<rules::RuleDef>>,
    maps: Vec<Arc<crate::lookup::Lookup>>,
    /// User, group and chroot to drop to, when configured.
    spec: Option<privdrop::Spec>,
}

/// Runs imapgate with the process's arguments; returns the exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match cli::parse(args.iter().cloned()) {
        Ok(cli::Command::Run(opts)) => opts,
        Ok(cli::Command::Help) => {
            println!("{}", cli::USAGE);
            return 0;
        }
        Ok(cli::Command::Version) => {
            println!("imapgate {}", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        Err(e) => return report(cli::wants_inetd(&args), StartError::Usage(e.to_string())),
    };
    match start(&opts) {
        Ok(code) => code,
        Err(e) => report(opts.inetd && !opts.check_only, e),
    }
}

/// Start-up, in the order relayd and OpenSMTPD use; returns the exit code of the run.
fn start(opts: &cli::Options) -> Result<i32, StartError> {
    let loaded = load(opts)?;
    if opts.check_only {
        println!("{}: configuration OK", opts.config.display());
        return Ok(0);
    }
    open_log(opts, &loaded.config)?;
    let spec = loaded.spec.clone();
    let runtime = prepare(loaded)?;
    if opts.inetd {
        if runtime.config.global.metrics.is_some() {
            log::warn!("inetd mode: metrics is ignored (each process serves one session)");
        }
        return run_inetd(runtime, spec.as_ref());
    }
    // Bound first, so that it answers as soon as the listeners do.
    let metrics = match runtime.config.global.metrics {
        Some(addr) => {
            let server =
                scrape::Server::bind(addr).map_err(|e| StartError::system(exit::UNAVAILABLE, e))?;
            log::info!("metrics on http://{}/metrics", server.addr().unwrap_or(addr));
            Some(server)
        }
        None => None,
    };
    let bound =
        listener::bind(&runtime.config).map_err(|e| StartError::system(exit::UNAVAILABLE, e))?;
    let fork = runtime.config.global.daemon.mode == config::Mode::Fork;
    if !fork {
        // Thread mode: drop for good before the first connection thread exists.
        drop_privileges(spec.as_ref())?;
        signals::init_shutdown_pipe()
            .map_err(|e| StartError::system(exit::OSERR, format!("signals: {e}")))?;
    }
    let signals = signals::Signals::install()
        .map_err(|e| StartError::system(exit::OSERR, format!("signals: {e}")))?;
    let path = runtime.config.path.display().to_string();
    let mode = if fork { "fork" } else { "thread" };
    log::info!("imapgate {} started with {path} (mode = {mode})", env!("CARGO_PKG_VERSION"));
    let ctx = reload::Ctx { opts: opts.clone(), spec, privileged: fork };
    Ok(if fork {
        // Fork mode keeps its listener single-threaded; children learn at login instead.
        fork::run(runtime, bound, signals, ctx, metrics)
    } else {
        if let Some(server) = metrics {
            let builder = std::thread::Builder::new().name("metrics".into()).stack_size(256 << 10);
            let serve = move || server.run(&|| crate::metrics::global().render());
            if let Err(e) = signals::spawn_quiet(builder, serve) {
                log::warn!("cannot start the metrics thread: {e}");
            }
        }
        // Starts discovery, which follows every reload.
        listener::run(runtime, bound, signals, ctx)
    })
}

/// The configuration, the TLS files and rules it names, and the account to drop to:
/// every problem reported before any of it is used (`-t` stops after this).
fn load(opts: &cli::Options) -> Result<Loaded, StartError> {
    let config = Config::load(&opts.config).map_err(StartError::Config)?;
    let tls = tls::load(&config).map_err(StartError::Config)?;
    let rules = rules::load(&config).map_err(StartError::Config)?;
    let maps = crate::lookup::load(&config).map_err(StartError::Config)?;
    let spec = privdrop::resolve(&config).map_err(StartError::Config)?;
    Ok(Loaded { config, tls, rules, maps, spec })
}

/// Opens the log (stderr, a file, or syslog, opened now so it keeps working in a chroot)
/// and sends panics there.
fn open_log(opts: &cli::Options, config: &Config) -> Result<(), StartError> {
    logging::init(&config.global, opts.log_level.as_ref(), opts.inetd)
        .map_err(|e| StartError::system(exit::CONFIG, e))?;
    logging::install_panic_hook();
    Ok(())
}

/// What must happen while still privileged: warnings about risky settings, backend
/// names resolved before a chroot hides resolv.conf, audit files opened.
fn prepare(loaded: Loaded) -> Result<Arc<Runtime>, StartError> {
    let Loaded { mut config, tls, rules, maps, spec } = loaded;
    for backend in config.backends.iter().filter(|b| b.tls_insecure_skip_verify) {
        log::warn!(
            "backend {}: tls_insecure_skip_verify = yes: its certificate is NOT verified, \
             anyone on the path can read the users' passwords",
            backend.name
        );
    }
    privdrop::warn_if_root(spec.as_ref());
    if spec.as_ref().is_some_and(|s| s.chroot.is_some()) {
        privdrop::resolve_backends(&mut config, None)
            .map_err(|e| StartError::system(exit::UNAVAILABLE, e))?;
    }
    for rule in &rules {
        rule.kind.prepare().map_err(|e| {
            let at = format!("{}: rule {} (line {})", config.path.display(), rule.name, rule.line);
            StartError::system(exit::CONFIG, format!("{at}: {e}"))
        })?;
    }
    Ok(Arc::new(Runtime::new(config, tls, rules, maps)))
}

/// Drops to the configured user, group and chroot, for good.
fn drop_privileges(spec: Option<&privdrop::Spec>) -> Result<(), StartError> {
    let Some(spec) = spec else { return Ok(()) };
    privdrop::drop_privileges(spec).map_err(|e| StartError::system(exit::NOPERM, e))?;
    let chroot =
        spec.chroot.as_ref().map_or(String::new(), |c| format!(" in chroot {}", c.display()));
    log::info!("privileges dropped to {} ({}:{}){chroot}", spec.user, spec.uid, spec.gid);
    Ok(())
}

/// inetd mode: take the socket, drop privileges, then serve the one connection.
fn run_inetd(runtime: Arc<Runtime>, spec: Option<&privdrop::Spec>) -> Result<i32, StartError> {
    let client = inetd::take_client()
        .map_err(|e| StartError::system(exit::OSERR, format!("inetd mode: {e}")))?;
    if let Some(spec) = spec {
        privdrop::drop_privileges(spec)
            .map_err(|e| StartError::system(exit::NOPERM, format!("inetd mode: {e}")))?;
    }
    signals::init_shutdown_signal()
        .map_err(|e| StartError::system(exit::OSERR, format!("inetd mode: signals: {e}")))?;
    inetd::serve(runtime, client);
    Ok(0)
}

/// Says why imapgate cannot start, where it can be read, and returns the exit code.
/// In inetd mode (`inetd`) fds 0 to 2 are the client, who may get nothing but IMAP: a
/// command line or configuration mistake goes to syslog (mail facility: the
/// configuration that could name another is not read yet) and the client gets a BYE that
/// says why it cannot be served; a system error goes to the log if one was opened, else
/// to syslog too.
fn report(inetd: bool, e: StartError) -> i32 {
    let logged = log::max_level() != log::LevelFilter::Off;
    match &e {
        StartError::Usage(message) if inetd => {
            misconfigured(&[format!("imapgate: {message} (see imapgate -h)")]);
        }
        StartError::Usage(message) => eprintln!("imapgate: {message}\n{}", cli::USAGE),
        StartError::Config(errors) if inetd => {
            misconfigured(&errors.0.iter().map(ToString::to_string).collect::<Vec<_>>());
        }
        StartError::Config(errors) => {
            for error in &errors.0 {
                eprintln!("{error}");
            }
        }
        StartError::System { message, .. } if logged => log::error!("{message}"),
        StartError::System { message, .. } if inetd => {
            sys::openlog(libc::LOG_MAIL);
            sys::syslog(libc::LOG_ERR, &format!("imapgate: {message}"));
        }
        StartError::System { message, .. } => eprintln!("imapgate: {message}"),
    }
    e.code()
}

/// inetd mode, before the log is open: `lines` to syslog, and a BYE to the client.
fn misconfigured(lines: &[String]) {
    sys::openlog(libc::LOG_MAIL);
    for line in lines {
        sys::syslog(libc::LOG_ERR, line);
    }
    use std::io::Write;
    let _ = std::io::stdout()
        .write_all(b"* BYE [UNAVAILABLE] imapgate is misconfigured, see its log.\r\n");
}
