//! The standard process families (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`, `process_max_fds`,
//! `process_start_time_seconds`), read from `/proc` at scrape time. The parsers are pure
//! and tested on fixed text; the reader only opens the files. Elsewhere than Linux the
//! families are left out.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

/// What one read of `/proc` found; a family whose source could not be read is `None`.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

/// Times from `/proc/self/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatTimes {
    /// User plus system CPU time.
    pub cpu_ticks: u64,
    /// When the process started, after boot.
    pub start_ticks: u64,
}

/// `utime`, `stime` and `starttime` (fields 14, 15 and 22 of proc(5)) from the text of
/// `/proc/self/stat`. The command name (field 2) may hold spaces and parentheses, so the
/// fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<StatTimes> {
    let after_name = text.get(text.rfind(')')? + 1..)?;
    // Field 3 (state) is the first after the name.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n.checked_sub(3)?)?.parse().ok() };
    Some(StatTimes {
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        start_ticks: field(22)?,
    })
}

/// The boot time (`btime`, seconds since the Unix epoch) from the text of `/proc/stat`.
pub fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}

/// `VmRSS` in bytes from the text of `/proc/self/status` (the kernel writes it in kB).
pub fn parse_resident_bytes(text: &str) -> Option<u64> {
    let value = text.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kib: u64 = value.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// The soft limit of `Max open files` from the text of `/proc/self/limits`; `None` when
/// unlimited.
pub fn parse_max_fds(text: &str) -> Option<u64> {
    let rest = text
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Read the sample from this process's `/proc`.
#[cfg(target_os = "linux")]
pub fn sample() -> ProcessSample {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let stat = read("/proc/self/stat").as_deref().and_then(parse_stat);
    let boot = read("/proc/stat").as_deref().and_then(parse_boot_time);
    ProcessSample {
        cpu_seconds: stat
            .filter(|_| ticks > 0.0)
            .map(|s| s.cpu_ticks as f64 / ticks),
        resident_bytes: read("/proc/self/status")
            .as_deref()
            .and_then(parse_resident_bytes),
        // The directory's own descriptor, open while it is listed, is counted too, as the
        // other Prometheus clients count it.
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count() as u64),
        max_fds: read("/proc/self/limits").as_deref().and_then(parse_max_fds),
        start_time_seconds: stat
            .zip(boot)
            .filter(|_| ticks > 0.0)
            .map(|(s, boot)| boot as f64 + s.start_ticks as f64 / ticks),
    }
}

#[cfg(not(target_os = "linux"))]
pub fn sample() -> ProcessSample {
    ProcessSample::default()
}

/// The process families, sampled at each scrape.
#[derive(Debug, Default)]
pub struct ProcessMetrics;

impl Collector for ProcessMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sample = sample();
        if let Some(seconds) = sample.cpu_seconds {
            encoder
                .encode_descriptor(
                    "process_cpu",
                    "User and system CPU time spent.",
                    Some(&Unit::Seconds),
                    MetricType::Counter,
                )?
                .encode_counter::<NoLabelSet, _, u64>(&seconds, None)?;
        }
        if let Some(bytes) = sample.resident_bytes {
            encoder
                .encode_descriptor(
                    "process_resident_memory",
                    "Resident memory size.",
                    Some(&Unit::Bytes),
                    MetricType::Gauge,
                )?
                .encode_gauge(&bytes)?;
        }
        if let Some(fds) = sample.open_fds {
            encoder
                .encode_descriptor(
                    "process_open_fds",
                    "Open file descriptors.",
                    None,
                    MetricType::Gauge,
                )?
                .encode_gauge(&fds)?;
        }
        if let Some(fds) = sample.max_fds {
            encoder
                .encode_descriptor(
                    "process_max_fds",
                    "Most file descriptors the process may open.",
                    None,
                    MetricType::Gauge,
                )?
                .encode_gauge(&fds)?;
        }
        if let Some(seconds) = sample.start_time_seconds {
            encoder
                .encode_descriptor(
                    "process_start_time",
                    "When the process started, as Unix time.",
                    Some(&Unit::Seconds),
                    MetricType::Gauge,
                )?
                .encode_gauge(&seconds)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        // A command name with a space and a parenthesis, as a process may have.
        let stat = "4242 (sen tinel) x) S 1 4242 4242 0 -1 4194560 1500 0 3 0 \
                    250 75 0 0 20 0 3 0 123456 1000000 800 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(stat),
            Some(StatTimes {
                cpu_ticks: 325,
                start_ticks: 123456
            })
        );
        assert_eq!(parse_stat("4242 (truncated) S 1 2"), None);
        assert_eq!(parse_stat("no name at all"), None);
    }

    #[test]
    fn boot_time_resident_memory_and_fd_limit() {
        let proc_stat = "cpu  1 2 3 4\nintr 5\nbtime 1765000000\nprocesses 10\n";
        assert_eq!(parse_boot_time(proc_stat), Some(1_765_000_000));
        assert_eq!(parse_boot_time("cpu 1\n"), None);
        let status = "Name:\tsentinel\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_resident_bytes(status), Some(5120 * 1024));
        assert_eq!(parse_resident_bytes("VmRSS: lots\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_fds(unlimited), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_every_family() {
        let sample = sample();
        assert!(sample.cpu_seconds.is_some_and(|s| s >= 0.0));
        assert!(sample.resident_bytes.is_some_and(|b| b > 0));
        assert!(sample.open_fds.is_some_and(|n| n >= 3));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = sample.start_time_seconds.unwrap();
        assert!(
            started <= now + 1.0 && started > now - 86_400.0 * 365.0,
            "{started}"
        );
    }
}
