//! Where log lines go: stderr in the foreground, a file (reopened on SIGHUP, for
//! logrotate), or syslog. In inetd mode stderr is the client's socket, so there `auto`
//! means syslog and `stderr` is refused. Everything is opened before privileges are
//! dropped: syslog with LOG_NDELAY, the file while still root.
//!
//! env_logger filters records by level and module (`log_level = info,imapgate::rules=debug`,
//! `-d ...`) and formats them for stderr and the file as `TIMESTAMP imapgate[PID] LEVEL:
//! message` (UTC, RFC 3339 with milliseconds), writing each line with a single `write`
//! through imapgate's own writer, so lines of threads or processes sharing the file never
//! interleave; syslog gets the message with its priority and adds its own stamp. Callers
//! never pass credentials or message contents (see session/ and SECURITY.md).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::config::{Global, LogFilter, LogTarget};
use crate::daemon::sys;

/// The log file, when logging to one: reopened by [`reopen`].
static FILE: OnceLock<(PathBuf, Mutex<File>)> = OnceLock::new();

/// Where lines go, and the env_logger that filters and formats them (rebuilt on reload).
static FILTER: OnceLock<(Sink, RwLock<env_logger::Logger>)> = OnceLock::new();

/// Sets up the global logger. `inetd` forbids stderr.
pub fn init(
    global: &Global,
    filter_override: Option<&LogFilter>,
    inetd: bool,
) -> Result<(), String> {
    let filter = filter_override.unwrap_or(&global.log_level);
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
    let sink = match target {
        LogTarget::Syslog => {
            sys::openlog(global.syslog_facility);
            Sink::Syslog
        }
        LogTarget::File(path) => {
            let file = open(&path)?;
            let _ = FILE.set((path, Mutex::new(file)));
            Sink::File
        }
        LogTarget::Stderr | LogTarget::Auto => Sink::Stderr,
    };
    let _ = FILTER.set((sink, RwLock::new(build(filter, sink))));
    log::set_boxed_logger(Box::new(Logger { sink })).map_err(|e| e.to_string())?;
    log::set_max_level(filter.max);
    Ok(())
}

/// An env_logger for `filter`, formatting imapgate's lines into `sink`.
fn build(filter: &LogFilter, sink: Sink) -> env_logger::Logger {
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(&filter.spec);
    builder.format(|buf, record| {
        let stamp = timestamp(SystemTime::now());
        writeln!(
            buf,
            "{stamp} imapgate[{}] {}: {}",
            std::process::id(),
            record.level(),
            record.args()
        )
    });
    builder.target(env_logger::Target::Pipe(Box::new(Writer(sink))));
    builder.build()
}

fn open(path: &PathBuf) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: cannot open log file: {e}", path.display()))
}

/// Reopens the log file under its name (after logrotate moved it). Without a log file
/// this does nothing. On failure the old file stays in use and the reason is logged: in
/// thread mode with a chroot, the path usually no longer exists in the process's view.
pub fn reopen() {
    let Some((path, file)) = FILE.get() else {
        return;
    };
    match open(path) {
        Ok(new) => {
            *file.lock().unwrap_or_else(|p| p.into_inner()) = new;
            log::info!("log file {} reopened", path.display());
        }
        Err(e) => log::error!("{e}; still writing to the file opened before"),
    }
}

/// Changes what is logged (a reload).
pub fn set_filter(filter: &LogFilter) {
    let Some((sink, lock)) = FILTER.get() else { return };
    *lock.write().unwrap_or_else(|p| p.into_inner()) = build(filter, *sink);
    log::set_max_level(filter.max);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sink {
    Stderr,
    File,
    Syslog,
}

/// Where env_logger's formatted lines go: one `write` per line.
struct Writer(Sink);

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0 {
            Sink::File => match FILE.get() {
                Some((_, file)) => {
                    file.lock().unwrap_or_else(|p| p.into_inner()).write_all(buf)?;
                }
                None => io::stderr().write_all(buf)?,
            },
            // Syslog records never reach env_logger's writer (see `Logger::log`).
            Sink::Stderr | Sink::Syslog => io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Logger {
    sink: Sink,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // rustls narrates every handshake at debug; its words are wanted only when tracing.
        let quiet =
            metadata.target().starts_with("rustls") && log::max_level() < LevelFilter::Trace;
        let Some((_, filter)) = FILTER.get() else { return false };
        let filter = filter.read().unwrap_or_else(|p| p.into_inner());
        filter.enabled(metadata) && !(quiet && metadata.level() > Level::Info)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let Some((_, filter)) = FILTER.get() else { return };
        let filter = filter.read().unwrap_or_else(|p| p.into_inner());
        match self.sink {
            Sink::Syslog => {
                let priority = match record.level() {
                    Level::Error => libc::LOG_ERR,
                    Level::Warn => libc::LOG_WARNING,
                    Level::Info => libc::LOG_INFO,
                    Level::Debug | Level::Trace => libc::LOG_DEBUG,
                };
                sys::syslog(priority, &record.args().to_string());
            }
            Sink::Stderr | Sink::File => filter.log(record),
        }
    }

    fn flush(&self) {}
}

/// `2024-05-01T12:34:56.789Z`.
fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = |s: u64, ms: u64| timestamp(UNIX_EPOCH + Duration::from_millis(s * 1000 + ms));
        assert_eq!(t(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(t(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(t(1_714_566_896, 789), "2024-05-01T12:34:56.789Z");
    }
}
