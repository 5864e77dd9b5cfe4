//! The threads that execute SCSI commands against the volumes.
//!
//! A command's I/O blocks (page-cache copies, journal appends, fsync for FUA), so it does not
//! run on the async workers. A fixed set of threads takes commands from one queue: while
//! commands wait, a thread that finishes one takes the next without sleeping, and only as many
//! threads contend for the volumes' locks as there are in the set. (With tokio's blocking pool,
//! a queue depth of 32 meant about 32 threads each woken for one command: on a small machine
//! the wake-ups and lock hand-offs cost more than the I/O.)

use std::panic::{catch_unwind, AssertUnwindSafe};

type Job = Box<dyn FnOnce() + Send>;

/// Why a command did not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("the command panicked")]
    Panicked,
    #[error("the command threads are gone")]
    Gone,
}

pub struct CommandPool {
    tx: crossbeam_channel::Sender<Job>,
    threads: usize,
}

impl CommandPool {
    /// Start `threads` threads (at least one). They end when the pool is dropped and the queue
    /// is drained.
    pub fn new(threads: usize) -> std::io::Result<CommandPool> {
        let threads = threads.max(1);
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("scsi-exec-{i}"))
                .spawn(move || {
                    for job in rx {
                        job();
                    }
                })?;
        }
        Ok(CommandPool { tx, threads })
    }

    /// Threads for `configured` (0 = twice the CPUs, at least 4).
    pub fn threads_for(configured: u32) -> usize {
        if configured > 0 {
            return configured as usize;
        }
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        (2 * cpus).max(4)
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Run `f` on one of the threads and wait for its result. A panic in `f` is caught: the
    /// thread lives on and the caller gets [`ExecError::Panicked`].
    pub async fn run<T, F>(&self, f: F) -> Result<T, ExecError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(catch_unwind(AssertUnwindSafe(f)));
        });
        self.tx.send(job).map_err(|_| ExecError::Gone)?;
        match result.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(ExecError::Panicked),
            Err(_) => Err(ExecError::Gone),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn runs_jobs_on_its_threads_and_survives_a_panic() {
        let pool = Arc::new(CommandPool::new(2).unwrap());
        assert_eq!(pool.threads(), 2);
        let name = pool
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert!(name.is_some_and(|n| n.starts_with("scsi-exec-")));
        assert!(matches!(
            pool.run(|| panic!("boom")).await,
            Err(ExecError::Panicked)
        ));
        // More jobs than threads, all at once: every one runs, on no more than two threads.
        let busy = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let jobs = (0..32).map(|i| {
            let (pool, busy, most) = (pool.clone(), busy.clone(), most.clone());
            async move {
                pool.run(move || {
                    let now = busy.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    busy.fetch_sub(1, Ordering::SeqCst);
                    i
                })
                .await
                .unwrap()
            }
        });
        let got: Vec<usize> = futures_join_all(jobs).await;
        assert_eq!(got, (0..32).collect::<Vec<_>>());
        assert!((1..=2).contains(&most.load(Ordering::SeqCst)));
    }

    async fn futures_join_all<F: std::future::Future<Output = usize> + Send + 'static>(
        jobs: impl Iterator<Item = F>,
    ) -> Vec<usize> {
        let handles: Vec<_> = jobs.map(tokio::spawn).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }

    #[test]
    fn thread_count_defaults_to_twice_the_cpus() {
        assert_eq!(CommandPool::threads_for(7), 7);
        assert!(CommandPool::threads_for(0) >= 4);
    }
}
