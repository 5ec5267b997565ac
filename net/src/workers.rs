//! Connection threads: each accepted connection lives its whole life on one thread, with its own
//! single-threaded runtime, as an nginx worker keeps its connections.
//!
//! On tokio's shared multi-threaded runtime a connection's task wakes on whichever thread polled
//! the reactor and is stolen back and forth, so its socket, buffers and task state bounce between
//! caches. Measured on the edge (`livesky bench fanout --mode hls`, 2 cores, 5,000 connections):
//! 19.7 k requests per CPU-second with two shared workers, 26.9 k with one; connection threads keep
//! the one-thread cost and still use every core.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio_util::sync::{CancellationToken, DropGuard};

/// A set of connection threads; dropping it stops them (their tasks are dropped).
pub struct ConnThreads {
    handles: Vec<Handle>,
    next: AtomicUsize,
    _stop: DropGuard,
}

impl ConnThreads {
    /// Starts `n` threads named `{name}-{i}`. `n == 0` is an error: say how many.
    pub fn start(name: &str, n: usize) -> io::Result<Self> {
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "connection threads: at least one is needed"));
        }
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let stop = stop.clone();
            std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || {
                // Built here, so that it is also dropped here, outside any async context.
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                rt.block_on(stop.cancelled());
            })?;
            // The thread answers as soon as its runtime is built (or failed to build).
            let handle = rx.recv().map_err(|_| io::Error::other("a connection thread ended while starting"))??;
            handles.push(handle);
        }
        Ok(ConnThreads { handles, next: AtomicUsize::new(0), _stop: stop.drop_guard() })
    }

    /// The next thread's runtime, in turn.
    pub fn pick(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_are_dealt_in_turn_to_threads_of_their_own() {
        let threads = ConnThreads::start("test-conn", 2).unwrap();
        let mut names = Vec::new();
        for _ in 0..4 {
            let name = threads.pick().spawn(async { std::thread::current().name().map(str::to_string) });
            names.push(name.await.unwrap().unwrap());
        }
        assert_eq!(names, ["test-conn-0", "test-conn-1", "test-conn-0", "test-conn-1"]);
        assert!(ConnThreads::start("none", 0).is_err());
    }

    #[test]
    fn dropping_them_stops_their_threads() {
        let threads = ConnThreads::start("test-stop", 1).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // The task holds the sender until its runtime drops it.
        threads.pick().spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await
        });
        drop(threads);
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(5)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
