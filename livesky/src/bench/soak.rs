//! A CPU's busy time, whoever was charged for it, measured by soaking up its idle time (the
//! "cyclesoak" method): `bench fanout --server-core`, an experiment (BENCHMARKS.md, "What nginx's
//! own CPU figure leaves out"; its two 5,000-viewer runs disagreed).
//!
//! A server's CPU read from `/proc` is not all the CPU its serving costs. On a kernel with tick
//! accounting and no `CONFIG_IRQ_TIME_ACCOUNTING` (these machines), a softirq is charged to
//! whatever task the tick happens to interrupt, and a timer softirq on an idle CPU to nobody.
//! nginx with `tcp_nopush` (`TCP_CORK`) leaves the tail of every `sendfile` to the TCP probe
//! timer, whose softirq on loopback also delivers the bytes to the reader: `perf record -a` at
//! 5,000 viewers saw about twice as much of nginx's work in such softirqs as in its process.
//!
//! A soaker thread on a CPU, at `SCHED_IDLE`, spins reading the clock. Whatever runs on its CPU
//! instead of it (another task, an interrupt, a softirq) shows up as a gap in its readings; the
//! gaps summed are the CPU's busy time, whoever was charged for it. `SCHED_IDLE` tasks are
//! preempted at once by any other task's wake-up, so a soaker takes only time nothing else
//! wanted.
//!
//! The bench puts the server under test alone on the soaked CPU and itself (the load
//! generator) on the others ([`pin`]). What the soaked CPU is busy with is then the server and
//! the kernel work its sends set off there (a loopback send delivers to the reader's socket on
//! the sender's CPU, and a TCP timer fires on the CPU that armed it), whoever was charged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A gap between two clock readings longer than this was time the CPU spent on something
/// else. (A reading takes tens of nanoseconds; a context switch there and back, microseconds.)
const GAP: Duration = Duration::from_micros(1);
/// The soaker threads' name (in `top`).
const THREAD_NAME: &str = "cpu-soak";

/// Soaker threads, one per soaked CPU, stopped on drop.
pub(super) struct Soak {
    busy_ns: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// A reading of [`Soak`]: busy time so far and when it was read.
#[derive(Clone, Copy)]
pub(super) struct Mark {
    busy_ns: u64,
    at: Instant,
}

impl Soak {
    /// Starts a soaker on each of `cpus`; an error if the kernel refuses `SCHED_IDLE` (a soaker
    /// at normal priority would take CPU from the servers it measures).
    pub(super) fn start(cpus: &[usize]) -> anyhow::Result<Self> {
        // Built first, so that its drop stops the soakers already started if a later one fails.
        let mut soak = Self {
            busy_ns: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::with_capacity(cpus.len()),
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for &cpu in cpus {
            let (busy, stop, ready) = (soak.busy_ns.clone(), soak.stop.clone(), ready_tx.clone());
            soak.threads.push(std::thread::Builder::new().name(THREAD_NAME.into()).spawn(move || {
                let set = idle_on(cpu);
                let ok = set.is_ok();
                let _ = ready.send(set);
                if ok {
                    spin(&busy, &stop);
                }
            })?);
        }
        for _ in cpus {
            ready_rx.recv()??;
        }
        Ok(soak)
    }

    pub(super) fn mark(&self) -> Mark {
        Mark { busy_ns: self.busy_ns.load(Ordering::Relaxed), at: Instant::now() }
    }

    /// The soaked CPUs' busy time since `from`, in % of one core.
    pub(super) fn busy_pct_since(&self, from: Mark) -> f64 {
        let now = self.mark();
        let wall = now.at.duration_since(from.at).as_secs_f64().max(1e-9);
        (now.busy_ns - from.busy_ns) as f64 / 1e9 / wall * 100.0
    }
}

impl Drop for Soak {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn spin(busy_ns: &AtomicU64, stop: &AtomicBool) {
    let mut last = Instant::now();
    let mut local = 0u64;
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let gap = now.duration_since(last);
        if gap > GAP {
            local += gap.as_nanos() as u64;
        }
        last = now;
        n = n.wrapping_add(1);
        // Published in batches: an atomic add on every gap would bounce a cache line between
        // the soakers at every interrupt.
        if n.is_multiple_of(4096) && local > 0 {
            busy_ns.fetch_add(std::mem::take(&mut local), Ordering::Relaxed);
        }
        std::hint::spin_loop();
    }
}

/// Pins the calling thread to `cpu` and makes it `SCHED_IDLE`.
fn idle_on(cpu: usize) -> anyhow::Result<()> {
    set_affinity(0, &[cpu])?;
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a plain system call on the calling thread (pid 0) with a parameter that lives
    // across the call.
    let ok = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0;
    anyhow::ensure!(ok, "making a soaker SCHED_IDLE: {}", std::io::Error::last_os_error());
    Ok(())
}

/// The CPU the server under test runs on, alone.
pub(super) const SERVER_CPU: usize = 0;

/// Puts this process (the load generator) on every CPU but [`SERVER_CPU`] and starts a soaker
/// there; `None` (and a line saying why) on a machine with one CPU or where that fails.
pub(super) fn server_core() -> Option<Soak> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!("one CPU: no server-core column (it needs a CPU for the server alone)");
        return None;
    }
    let others: Vec<usize> = (0..cpus).filter(|&c| c != SERVER_CPU).collect();
    match pin(None, &others).and_then(|()| Soak::start(&[SERVER_CPU])) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("no server-core column: {e:#}");
            None
        }
    }
}

/// Runs thread `tid` (0: the calling one) on `cpus` only.
fn set_affinity(tid: libc::pid_t, cpus: &[usize]) -> anyhow::Result<()> {
    // SAFETY: `cpu_set_t` is plain data, valid zeroed; `CPU_SET` checks the index; the set lives
    // across the call.
    let ok = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    };
    anyhow::ensure!(ok, "running thread {tid} on CPUs {cpus:?}: {}", std::io::Error::last_os_error());
    Ok(())
}

/// Runs every thread of process `pid` (or this process, `None`) on `cpus` only. Threads it
/// starts later inherit it from the thread that starts them.
pub(super) fn pin(pid: Option<u32>, cpus: &[usize]) -> anyhow::Result<()> {
    let dir = pid.map_or_else(|| "/proc/self/task".to_string(), |p| format!("/proc/{p}/task"));
    for t in std::fs::read_dir(&dir)?.flatten() {
        if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<libc::pid_t>().ok()) {
            set_affinity(tid, cpus)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread spinning for 300 ms shows up as about that much busy time.
    #[test]
    fn counts_what_other_threads_run() {
        let Ok(soak) = Soak::start(&[0]) else { return }; // no SCHED_IDLE here: nothing to test
        let m = soak.mark();
        // On the soaked CPU, from another thread (this one may not be pinned).
        let busy = std::thread::spawn(|| {
            set_affinity(0, &[0])?;
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_millis(300) {
                std::hint::spin_loop();
            }
            anyhow::Ok(())
        });
        assert!(busy.join().is_ok_and(|r| r.is_ok()), "could not run a thread on CPU 0");
        // The soaker publishes a gap once it runs again, within a few thousand readings.
        std::thread::sleep(Duration::from_millis(50));
        let busy = soak.busy_pct_since(m);
        // 300 ms of one core in about 350 ms: about 85 %, whatever else the test machine runs.
        assert!(busy > 60.0, "a busy thread was not seen: {busy:.0} %");
        drop(soak);
    }
}
