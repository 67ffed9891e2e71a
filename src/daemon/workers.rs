//! Thread mode's session threads. Each session still has an OS thread of its own, but a
//! thread whose session ended parks for a while and takes the next connection instead of
//! exiting: creating and tearing down a thread was about a fifth of a login's CPU.
//! At most [`MAX_PARKED`] threads park, each for at most [`PARK_FOR`], so an idle
//! daemon shrinks back and a burst leaves no more than that many behind.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::signals;

/// Threads kept parked at most.
pub const MAX_PARKED: usize = 64;
/// How long a thread waits for another session before it exits.
pub const PARK_FOR: Duration = Duration::from_secs(30);

type Job = Box<dyn FnOnce() + Send + 'static>;

#[derive(Default)]
struct State {
    /// Sessions handed over, not yet taken by a parked thread.
    jobs: VecDeque<Job>,
    /// Threads waiting for a job.
    parked: usize,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A job runs outside the lock, so a panicking session cannot poison it; if it
        // ever were, the state is still consistent (counts change under the lock).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The session threads of one process.
#[derive(Clone, Default)]
pub struct Workers {
    shared: Arc<Shared>,
}

impl Workers {
    /// Runs `job` on a parked thread, or on a new one (from `builder`, with the
    /// handled signals blocked) when none is free.
    pub fn run(&self, builder: thread::Builder, job: Job) -> io::Result<()> {
        let mut state = self.shared.lock();
        // Each queued job has its own parked thread: hand over only while one is free.
        if state.parked > state.jobs.len() {
            state.jobs.push_back(job);
            drop(state);
            self.shared.wake.notify_one();
            return Ok(());
        }
        drop(state);
        let shared = Arc::clone(&self.shared);
        signals::spawn_quiet(builder, move || {
            job();
            park(&shared);
        })
        .map(drop)
    }

    /// Threads parked now (tests).
    #[cfg(test)]
    fn parked(&self) -> usize {
        self.shared.lock().parked
    }
}

/// Takes jobs until none comes for [`PARK_FOR`] or enough threads are parked already.
fn park(shared: &Shared) {
    loop {
        let mut state = shared.lock();
        if state.parked >= MAX_PARKED {
            return;
        }
        state.parked += 1;
        let deadline = Instant::now() + PARK_FOR;
        let job = loop {
            if let Some(job) = state.jobs.pop_front() {
                break job;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                state.parked -= 1;
                return;
            }
            state = shared.wake.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0;
        };
        state.parked -= 1;
        drop(state);
        job();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    #[test]
    fn a_finished_thread_takes_the_next_job() {
        let workers = Workers::default();
        let (tx, rx) = mpsc::channel();
        let ids = Arc::new(Mutex::new(Vec::new()));
        for n in 0..20 {
            let (tx, ids) = (tx.clone(), Arc::clone(&ids));
            let job: Job = Box::new(move || {
                ids.lock().unwrap().push(thread::current().id());
                tx.send(n).unwrap();
            });
            workers.run(thread::Builder::new(), job).unwrap();
            rx.recv_timeout(Duration::from_secs(10)).expect("the job ran");
            // Wait until the thread is parked again, so the next job can reuse it.
            let parked = Instant::now();
            while workers.parked() == 0 && parked.elapsed() < Duration::from_secs(10) {
                thread::sleep(Duration::from_millis(1));
            }
        }
        let ids = ids.lock().unwrap();
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), 1, "20 jobs one after another used {} threads", distinct.len());
    }

    #[test]
    fn concurrent_jobs_each_get_a_thread_and_all_run() {
        let workers = Workers::default();
        let started = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let (done_tx, done_rx) = mpsc::channel();
        // 10 jobs that all block until released: none may wait for another to end.
        for _ in 0..10 {
            let (started, release_rx, done_tx) =
                (Arc::clone(&started), Arc::clone(&release_rx), done_tx.clone());
            let job: Job = Box::new(move || {
                started.fetch_add(1, Ordering::SeqCst);
                let _ = release_rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
                done_tx.send(()).unwrap();
            });
            workers.run(thread::Builder::new(), job).unwrap();
        }
        let t = Instant::now();
        while started.load(Ordering::SeqCst) < 10 && t.elapsed() < Duration::from_secs(10) {
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(started.load(Ordering::SeqCst), 10, "a job waited for another");
        for _ in 0..10 {
            release_tx.send(()).unwrap();
        }
        for _ in 0..10 {
            done_rx.recv_timeout(Duration::from_secs(10)).expect("every job ends");
        }
    }
}
