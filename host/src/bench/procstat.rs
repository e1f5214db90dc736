//! What a process costs, read from Linux's `/proc`: CPU time (`/proc/<pid>/stat`, all threads)
//! and resident memory (`/proc/<pid>/status` `VmRSS` / `VmHWM`), and the machine's load average.

use std::time::{Duration, Instant};

/// Clock ticks per second of `/proc/<pid>/stat` times: Linux's `USER_HZ`, 100 on every
/// architecture it exposes to user space.
const USER_HZ: u64 = 100;

/// One reading of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// When it was taken.
    pub at: Instant,
    /// User plus system CPU time so far, all threads.
    pub cpu: Duration,
    /// Resident memory now, bytes.
    pub rss: u64,
    /// Peak resident memory so far, bytes.
    pub hwm: u64,
}

/// Reads process `pid` (`"self"` for this one); None if it is gone or `/proc` is missing.
pub fn sample(pid: &str) -> Option<Sample> {
    let at = Instant::now();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(Sample {
        at,
        cpu: cpu_time(&stat)?,
        rss: status_kib(&status, "VmRSS:")? * 1024,
        hwm: status_kib(&status, "VmHWM:")? * 1024,
    })
}

/// utime + stime from a `/proc/<pid>/stat` line (fields 14 and 15, counted after the
/// parenthesised command name, which may itself hold spaces).
fn cpu_time(stat: &str) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ")": field 3 (state) is the first; utime is field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
}

/// A `kB` value of a `/proc/<pid>/status` line.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// What a process used between two readings.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// CPU time over wall time: 1.0 is one core busy all along.
    pub cores: f64,
    /// Resident memory at the end, bytes.
    pub rss: u64,
    /// Peak resident memory at the end, bytes.
    pub hwm: u64,
}

/// The usage between `before` and `after`.
pub fn usage(before: &Sample, after: &Sample) -> Usage {
    let wall = after.at.saturating_duration_since(before.at).as_secs_f64();
    let cpu = after.cpu.saturating_sub(before.cpu).as_secs_f64();
    Usage {
        cores: if wall > 0.0 { cpu / wall } else { 0.0 },
        rss: after.rss,
        hwm: after.hwm,
    }
}

/// The 1, 5 and 15 minute load averages (zeros if unreadable).
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text.split_whitespace().map(|f| f.parse().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_a_command_name_with_spaces() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 1 0 1 2 3";
        assert_eq!(cpu_time(stat), Some(Duration::from_secs(3)));
    }

    #[test]
    fn this_process_can_be_read_and_uses_memory() {
        let s = sample("self").expect("/proc/self");
        assert!(s.rss > 0 && s.hwm >= s.rss, "{s:?}");
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        let later = sample("self").expect("/proc/self");
        assert!(usage(&s, &later).cores >= 0.0);
        assert!(later.cpu >= s.cpu);
    }
}
