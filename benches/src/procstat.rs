//! CPU time and memory of a process, and the machine's CPU, from `/proc` (Linux).

use std::sync::OnceLock;
use std::time::Instant;

/// Clock ticks per second of `/proc/*/stat` times.
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User plus system CPU seconds of every thread of `pid` so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// Resident memory of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Busy and total jiffies of the whole machine.
pub fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = cpu
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// A reading of one process and the machine, to difference against a later one.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub cpu: Option<f64>,
    pub machine: Option<(u64, u64)>,
}

impl Sample {
    pub fn take(pid: Option<u32>) -> Self {
        Self {
            at: Instant::now(),
            cpu: pid.and_then(cpu_seconds),
            machine: machine_jiffies(),
        }
    }

    /// CPU of the process between `self` and `later`, in percent of one core.
    pub fn cpu_percent(&self, later: &Sample) -> Option<f64> {
        let secs = later.at.duration_since(self.at).as_secs_f64();
        Some((later.cpu? - self.cpu?) / secs.max(1e-9) * 100.0)
    }

    /// CPU seconds of the process between `self` and `later`.
    pub fn cpu_seconds(&self, later: &Sample) -> Option<f64> {
        Some(later.cpu? - self.cpu?)
    }

    /// How busy the whole machine was between `self` and `later`, in percent of all cores.
    pub fn machine_busy_percent(&self, later: &Sample) -> Option<f64> {
        let (b0, t0) = self.machine?;
        let (b1, t1) = later.machine?;
        (t1 > t0).then(|| (b1 - b0) as f64 / (t1 - t0) as f64 * 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let pid = std::process::id();
        let before = Sample::take(Some(pid));
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = Sample::take(Some(pid));
        assert!(after.cpu.unwrap() >= before.cpu.unwrap());
        assert!(rss_bytes(pid).unwrap() > 1 << 20);
        assert!(before.machine.is_some());
    }
}
