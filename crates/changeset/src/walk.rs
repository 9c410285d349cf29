//! A small pool for walking a tree on a few threads: jobs (a directory, a batch of files) on a
//! shared stack, each thread with its own results, merged by the caller. Directories are
//! independent, and the work on them (hashing in a scan or a copy-in, a stat per entry in a
//! rescan) is CPU-bound once the tree is cached, so a couple of threads cut the wall time
//! nearly in proportion to the cores.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use crate::{Error, Result};

/// How many threads a walk uses: the cores, at most four (beyond that the filesystem, not
/// the CPU, is the limit).
pub(crate) fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

struct Shared<J> {
    jobs: Vec<J>,
    busy: usize,
    failed: Option<Error>,
}

struct Pool<J> {
    shared: Mutex<Shared<J>>,
    changed: Condvar,
}

impl<J> Pool<J> {
    fn lock(&self) -> MutexGuard<'_, Shared<J>> {
        // A panicking job is propagated by `run`; the queue itself stays consistent.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next job, or `None` when every job is done or one failed.
    fn next(&self) -> Option<J> {
        let mut shared = self.lock();
        loop {
            if shared.failed.is_some() {
                return None;
            }
            if let Some(job) = shared.jobs.pop() {
                shared.busy += 1;
                return Some(job);
            }
            if shared.busy == 0 {
                self.changed.notify_all();
                return None;
            }
            shared = self
                .changed
                .wait(shared)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn done(&self, outcome: Result<()>, found: &mut Vec<J>) {
        let mut shared = self.lock();
        shared.busy -= 1;
        match outcome {
            Ok(()) => shared.jobs.append(found),
            Err(e) => {
                found.clear();
                if shared.failed.is_none() {
                    shared.failed = Some(e);
                }
            }
        }
        self.changed.notify_all();
    }

    /// Runs jobs until none are left, calling `after` after each.
    fn work<S>(
        &self,
        state: &mut S,
        work: &(impl Fn(J, &mut S, &mut Vec<J>) -> Result<()> + Sync),
        mut after: impl FnMut(),
    ) {
        let mut found = Vec::new();
        while let Some(job) = self.next() {
            let mut running = Running {
                pool: self,
                finished: false,
            };
            let outcome = work(job, state, &mut found);
            running.finished = true;
            self.done(outcome, &mut found);
            after();
        }
    }
}

/// A job under way: if its thread panics, the others stop instead of waiting for it forever
/// (the panic itself is propagated when the thread is joined).
struct Running<'a, J> {
    pool: &'a Pool<J>,
    finished: bool,
}

impl<J> Drop for Running<'_, J> {
    fn drop(&mut self) {
        if !self.finished {
            let mut shared = self.pool.lock();
            shared.busy -= 1;
            if shared.failed.is_none() {
                shared.failed = Some(Error::io(
                    "walk",
                    std::path::Path::new("."),
                    std::io::Error::other("a worker thread panicked"),
                ));
            }
            self.pool.changed.notify_all();
        }
    }
}

/// Runs `first` and every job it leads to on `threads` threads (the caller's among them),
/// each with a state from `init`; returns the states, or the first error. `work` gets a job,
/// its thread's state, and a list to push the jobs it finds onto. `finish` runs on each
/// thread once its jobs are done (to sort its share in parallel); `after` runs on the caller's
/// thread after each of its jobs (for progress reports).
pub(crate) fn run<J: Send, S: Send>(
    first: J,
    threads: usize,
    init: impl Fn() -> S + Sync,
    work: impl Fn(J, &mut S, &mut Vec<J>) -> Result<()> + Sync,
    finish: impl Fn(&mut S) + Sync,
    mut after: impl FnMut(),
) -> Result<Vec<S>> {
    let pool = Pool {
        shared: Mutex::new(Shared {
            jobs: vec![first],
            busy: 0,
            failed: None,
        }),
        changed: Condvar::new(),
    };
    let states = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut state = init();
                    pool.work(&mut state, &work, || {});
                    finish(&mut state);
                    state
                })
            })
            .collect();
        let mut mine = init();
        pool.work(&mut mine, &work, &mut after);
        finish(&mut mine);
        let mut states = vec![mine];
        for helper in helpers {
            match helper.join() {
                Ok(state) => states.push(state),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        states
    });
    match pool
        .shared
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .failed
    {
        Some(e) => Err(e),
        None => Ok(states),
    }
}
