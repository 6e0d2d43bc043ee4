//! Per-core workers: the threads that serve traffic, one current-thread tokio runtime on
//! each, and which of them the calling thread is.
//!
//! Why this shape, measured: the first design ran every connection on one multi-thread
//! runtime behind one listening socket, with one pool per endpoint behind a mutex. With
//! two workers on two cores it spent 31.2 µs of CPU per proxied request against 24.8 with
//! one (BENCHMARKS.md, a-all), while nginx went from 21.5 to 19.7: work stealing, wake-ups
//! handed between threads and cache lines bounced between cores. So Sinew takes Envoy's
//! shape: each worker accepts on its own `SO_REUSEPORT` socket (sinew-proxy's listener),
//! a connection lives on the worker that accepted it, every task it spawns (an upstream
//! connection, a mirror copy, a tunnel) runs there too, and upstream pools are kept per
//! worker, indexed by [`index`]. What the workers share is the immutable config and a few
//! counters.
//!
//! The thread that builds the workers keeps its own runtime for everything that is not
//! traffic: the admin API, xDS, reloads, health checks and signals.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    /// The worker this thread is; 0 on every thread that is not a worker.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// How many workers the process runs; 1 until [`Workers::spawn`] starts more.
static COUNT: AtomicUsize = AtomicUsize::new(1);

/// The worker the calling thread is (0 on a thread that is not one). Per-worker state is
/// indexed by it, modulo its length: state built before the workers started has one slot.
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// How many workers the process runs: the length per-worker state is built with.
pub fn count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

/// The serving runtimes, one per worker.
pub struct Workers {
    handles: Vec<Handle>,
    /// Dropping a sender ends its worker's thread (what is still running there is
    /// dropped with its runtime).
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `n` worker threads (at least one), each running a current-thread runtime
    /// until the returned value is dropped.
    pub fn spawn(n: usize) -> io::Result<Arc<Workers>> {
        let n = n.max(1);
        COUNT.store(n, Ordering::Relaxed);
        let mut handles = Vec::with_capacity(n);
        let mut stops = Vec::with_capacity(n);
        for i in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("sinew-worker-{i}"))
                .spawn(move || {
                    INDEX.with(|index| index.set(i));
                    let _ = runtime.block_on(stopped);
                    // Blocking tasks (a DNS lookup) must not hold the thread's exit.
                    runtime.shutdown_background();
                })?;
        }
        tracing::debug!(workers = n, "worker threads started");
        Ok(Arc::new(Workers {
            handles,
            _stop: stops,
        }))
    }

    /// One worker: the runtime the caller runs on. For tests and embedders that run the
    /// proxy on a runtime of their own.
    pub fn current() -> Arc<Workers> {
        Arc::new(Workers {
            handles: vec![Handle::current()],
            _stop: Vec::new(),
        })
    }

    /// How many workers there are.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Never: there is always at least one worker.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// The runtimes, in worker order.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_runs_its_tasks_on_its_own_thread_and_knows_its_index() {
        let workers = Workers::spawn(2).unwrap();
        assert_eq!(workers.len(), 2);
        assert_eq!(count(), 2);
        let mut seen = Vec::new();
        for (i, handle) in workers.handles().iter().enumerate() {
            let (tx, rx) = std::sync::mpsc::channel();
            handle.spawn(async move {
                // A task spawned from a worker's task stays on that worker.
                let inner = tokio::spawn(async { (index(), std::thread::current().id()) });
                let _ = tx.send((index(), std::thread::current().id(), inner.await.unwrap()));
            });
            let (index, thread, (inner_index, inner_thread)) = rx
                .recv_timeout(std::time::Duration::from_secs(5))
                .expect("the worker ran the task");
            assert_eq!(index, i);
            assert_eq!((inner_index, inner_thread), (index, thread));
            assert_ne!(thread, std::thread::current().id());
            seen.push(thread);
        }
        assert_ne!(seen[0], seen[1], "two workers, two threads");
    }

    #[test]
    fn a_thread_that_is_not_a_worker_is_index_zero() {
        assert_eq!(index(), 0);
    }
}
