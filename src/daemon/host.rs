//! What the process models give their sessions (`session::Host`): the failed-login record,
//! the status counters and the shutdown notice. Thread and inetd mode keep the record in
//! this process; a fork-mode session process keeps its copy and reports to the listener
//! process, which owns the record for later connections.

use std::net::IpAddr;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use crate::config::Daemon;
use crate::daemon::{admission, signals, stats};
use crate::metrics;
use crate::session::{Host, Penalty};

/// Sessions that run in this process: thread mode and inetd mode.
pub(crate) struct InProcess;

impl Host for InProcess {
    fn login_failed(&self, ip: IpAddr, settings: &Daemon, base: Duration) -> Penalty {
        let failure = admission::record_failure(ip, settings, base);
        Penalty { delay: failure.delay, blocked: failure.blocked }
    }

    fn finished(&self, from_client: u64, to_client: u64) {
        stats::apply_bytes(from_client, to_client);
    }

    fn stopping(&self) -> bool {
        signals::is_shutting_down()
    }

    fn stop_fd(&self) -> Option<BorrowedFd<'_>> {
        signals::shutdown_fd()
    }
}

/// A fork-mode session process: reports to its listener through the report pipe, one
/// line per event (shorter than PIPE_BUF, so lines of many processes never mix): `F IP`
/// for a failed login, `B FROM TO` for the byte counts, `M METRIC LABEL... VALUE` for
/// what it counted in the metrics registry since its last report.
pub(crate) struct ForkChild {
    /// The write end of the listener's report pipe.
    pub(crate) report: OwnedFd,
}

impl ForkChild {
    /// Sends one report line; a full pipe drops it rather than stalling the session.
    fn report(&self, line: &str) {
        let line = format!("{line}\n");
        let _ = nix::unistd::write(&self.report, line.as_bytes());
    }
}

impl Host for ForkChild {
    fn login_failed(&self, ip: IpAddr, settings: &Daemon, base: Duration) -> Penalty {
        // The copy of the record this process was forked with decides the delay; the
        // listener's record decides about the next connections.
        let failure = admission::record_failure(ip, settings, base);
        self.report(&format!("F {ip}"));
        Penalty { delay: failure.delay, blocked: failure.blocked }
    }

    fn finished(&self, from_client: u64, to_client: u64) {
        self.report(&format!("B {from_client} {to_client}"));
    }

    fn counted(&self) {
        // Whole lines in writes shorter than PIPE_BUF, so lines never mix; a line that
        // could not be (configuration names are short) is dropped.
        let mut batch = String::new();
        for line in metrics::global().drain().into_iter().filter(|l| l.len() < 1000) {
            if batch.len() + line.len() + 3 > 4000 {
                let _ = nix::unistd::write(&self.report, std::mem::take(&mut batch).as_bytes());
            }
            batch.push_str("M ");
            batch.push_str(&line);
            batch.push('\n');
        }
        if !batch.is_empty() {
            let _ = nix::unistd::write(&self.report, batch.as_bytes());
        }
    }

    fn stopping(&self) -> bool {
        signals::is_shutting_down()
    }

    fn stop_fd(&self) -> Option<BorrowedFd<'_>> {
        signals::shutdown_fd()
    }
}
