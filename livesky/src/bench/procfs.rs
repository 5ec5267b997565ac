//! What the benches read of processes in `/proc`: their children, CPU time and memory.

/// `root` and its children.
pub(super) fn process_tree(root: u32) -> Vec<u32> {
    let mut pids = vec![root];
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
                if after.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(root) {
                    pids.push(pid);
                }
            }
        }
    }
    pids
}

/// CPU seconds (user + system) used so far by these processes, as `stat` has them: sampled at
/// the timer tick.
pub(super) fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .map(|stat| {
            let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("").split_whitespace().collect::<Vec<_>>();
            // Fields 14 and 15 of stat; `after` starts at field 3.
            let t = |i: usize| after.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            (t(11) + t(12)) / 100.0
        })
        .sum()
}

/// CPU seconds used so far by these processes (all their threads), from each thread's
/// `schedstat`: the scheduler's own run time in nanoseconds. `stat`'s times are sampled at the
/// timer tick, and a thread woken by a timer (the edge's flush clock; nginx's `limit_rate`)
/// may run between two ticks and never be sampled.
pub(super) fn run_seconds(pids: &[u32]) -> f64 {
    pids.iter().map(|p| threads_cpu_seconds(&format!("/proc/{p}/task"))).sum()
}

fn threads_cpu_seconds(tasks: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir(tasks) else { return 0.0 };
    dir.flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|ns| ns.parse::<f64>().ok()))
        .sum::<f64>()
        / 1e9
}

pub(super) fn rss_mib(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .sum::<f64>()
        / 1024.0
}
