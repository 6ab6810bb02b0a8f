//! A watchdog thread armed around every collective.
//!
//! MPI and NCCL calls block until every rank has joined: a rank that died, hangs in a data loader
//! or took another branch leaves the others waiting forever, and a job that hangs burns its whole
//! allocation without a word. The collective cannot be interrupted from inside, so a second
//! thread waits for the deadline and, if the collective is still running, prints
//! `rank R: timed out after Ns in <op> at step S` and ends the process (for MPI: `MPI_Abort`,
//! which also takes the other ranks of the job down).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Exit status of a rank that timed out in a collective (as timeout(1) uses).
pub const TIMEOUT_EXIT_CODE: i32 = 124;

/// What ends the process on a timeout; receives [`TIMEOUT_EXIT_CODE`].
pub(crate) type Abort = Box<dyn Fn(i32) + Send>;

struct Armed {
    deadline: Instant,
    op: String,
}

#[derive(Default)]
struct State {
    armed: Option<Armed>,
    step: Option<u64>,
    shutdown: bool,
}

type Shared = Arc<(Mutex<State>, Condvar)>;

pub(crate) struct Watchdog {
    shared: Shared,
    timeout: Duration,
    thread: Option<JoinHandle<()>>,
}

/// Disarms the watchdog when the collective returns.
pub(crate) struct ArmGuard<'a> {
    watchdog: &'a Watchdog,
}

impl Watchdog {
    pub(crate) fn new(rank: usize, timeout: Duration, abort: Abort) -> Self {
        let shared: Shared = Arc::default();
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("lantern-comm-watchdog".into())
                .spawn(move || watch(&shared, rank, timeout, &abort))
                .expect("spawning the collective watchdog thread")
        };
        Self {
            shared,
            timeout,
            thread: Some(thread),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere while holding it; the state stays valid.
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_step(&self, step: u64) {
        self.lock().step = Some(step);
    }

    /// Starts the clock for one collective; it stops when the returned guard drops.
    pub(crate) fn arm(&self, op: impl Into<String>) -> ArmGuard<'_> {
        let mut s = self.lock();
        s.armed = Some(Armed {
            deadline: Instant::now() + self.timeout,
            op: op.into(),
        });
        self.shared.1.notify_all();
        ArmGuard { watchdog: self }
    }
}

impl Drop for ArmGuard<'_> {
    fn drop(&mut self) {
        self.watchdog.lock().armed = None;
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.lock().shutdown = true;
        self.shared.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn watch(shared: &Shared, rank: usize, timeout: Duration, abort: &Abort) {
    let (lock, cvar) = &**shared;
    let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if s.shutdown {
            return;
        }
        let Some(armed) = &s.armed else {
            s = cvar.wait(s).unwrap_or_else(|e| e.into_inner());
            continue;
        };
        let now = Instant::now();
        if now < armed.deadline {
            let wait = armed.deadline - now;
            s = cvar
                .wait_timeout(s, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            continue;
        }
        // Still armed past its deadline: each collective re-arms with its own deadline, so
        // this one has been running for the whole timeout.
        let step = s.step.map_or("-".to_string(), |n| n.to_string());
        eprintln!(
            "rank {rank}: timed out after {} in {} at step {step}",
            seconds(timeout),
            armed.op
        );
        drop(s);
        abort(TIMEOUT_EXIT_CODE);
        // The abort hook does not return; should one ever do so, still leave.
        std::process::exit(TIMEOUT_EXIT_CODE);
    }
}

/// `2s`, `0.5s`: whole seconds without a fraction.
pub(crate) fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI32, Ordering};

    #[test]
    fn seconds_format() {
        assert_eq!(seconds(Duration::from_secs(300)), "300s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn disarmed_in_time_never_fires_and_shuts_down() {
        let fired = Arc::new(AtomicI32::new(0));
        let f = fired.clone();
        let wd = Watchdog::new(
            0,
            Duration::from_millis(200),
            Box::new(move |c| {
                f.store(c, Ordering::SeqCst);
            }),
        );
        for _ in 0..5 {
            let _g = wd.arm("all_reduce");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        drop(wd);
        assert_eq!(fired.load(Ordering::SeqCst), 0);
    }
}
