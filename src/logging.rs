//! Where log lines go: stderr in the foreground, a file, or syslog. In inetd mode stderr
//! is the client's socket, so there `auto` means syslog and `stderr` is refused.

use std::fs::OpenOptions;
use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::config::{Global, LogTarget};
use crate::sys;

/// Sets up the global logger. `inetd` forbids stderr.
pub fn init(
    global: &Global,
    level_override: Option<LevelFilter>,
    inetd: bool,
) -> Result<(), String> {
    let level = level_override.unwrap_or(global.log_level);
    let target = match &global.log {
        LogTarget::Auto if inetd => LogTarget::Syslog,
        LogTarget::Auto => LogTarget::Stderr,
        LogTarget::Stderr if inetd => {
            return Err(
                "log = stderr is impossible in inetd mode: stderr is the client's socket".into()
            )
        }
        other => other.clone(),
    };
    match target {
        LogTarget::Syslog => {
            sys::openlog(global.syslog_facility);
            log::set_boxed_logger(Box::new(Syslog { level })).map_err(|e| e.to_string())?;
            log::set_max_level(level);
        }
        LogTarget::File(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| format!("{}: cannot open log file: {e}", path.display()))?;
            builder(level)
                .target(env_logger::Target::Pipe(Box::new(file)))
                .try_init()
                .map_err(|e| e.to_string())?;
        }
        LogTarget::Stderr | LogTarget::Auto => {
            builder(level)
                .target(env_logger::Target::Stderr)
                .try_init()
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn builder(level: LevelFilter) -> env_logger::Builder {
    let mut b = env_logger::Builder::new();
    // rustls narrates every handshake at debug; its words are wanted only when tracing.
    let rustls_level =
        if level >= LevelFilter::Trace { level } else { level.min(LevelFilter::Info) };
    b.filter_level(level).filter_module("rustls", rustls_level).format(|buf, record| {
        let ts = buf.timestamp_millis();
        writeln!(buf, "{ts} imapgate[{}] {}: {}", std::process::id(), record.level(), record.args())
    });
    b
}

struct Syslog {
    level: LevelFilter,
}

impl Log for Syslog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let quiet = metadata.target().starts_with("rustls") && self.level < LevelFilter::Trace;
        metadata.level() <= self.level && !(quiet && metadata.level() > Level::Info)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let priority = match record.level() {
            Level::Error => libc::LOG_ERR,
            Level::Warn => libc::LOG_WARNING,
            Level::Info => libc::LOG_INFO,
            Level::Debug | Level::Trace => libc::LOG_DEBUG,
        };
        sys::syslog(priority, &record.args().to_string());
    }

    fn flush(&self) {}
}

/// Routes panic messages to the log: the default hook writes to stderr, which in inetd
/// mode is the client's socket.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("main");
        log::error!("internal error in thread {name}: {info}");
    }));
}
