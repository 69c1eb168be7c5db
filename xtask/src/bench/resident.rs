//! The process's resident memory as Linux reports it, read the way the PyTorch harness reads
//! its own: the growth of the peak resident set (`VmHWM`) from the resident set (`VmRSS`)
//! before the warm-up step. The same meter on both sides, so that neither side's allocator is
//! flattered by a meter the other side lacks (the heap meter counts what Rust allocates and
//! nothing a C library or the kernel holds).

use anyhow::{Context, Result, bail};

/// `VmRSS` and `VmHWM` of this process, bytes.
#[derive(Debug, Clone, Copy)]
pub struct Resident {
    /// Resident now.
    pub current: u64,
    /// Highest resident level since the process started.
    pub peak: u64,
}

impl Resident {
    /// Reads `/proc/self/status`.
    pub fn now() -> Result<Self> {
        let status = std::fs::read_to_string("/proc/self/status").context(
            "cannot read /proc/self/status: the resident-memory meter needs Linux's procfs",
        )?;
        parse(&status)
    }

    /// Peak resident growth since `before`: what the harness calls `peak_rss_delta`.
    pub fn peak_growth_since(&self, before: &Resident) -> u64 {
        self.peak.saturating_sub(before.current)
    }
}

fn parse(status: &str) -> Result<Resident> {
    let field = |name: &str| -> Result<u64> {
        let Some(line) = status.lines().find(|l| l.starts_with(name)) else {
            bail!("/proc/self/status has no {name} line");
        };
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("/proc/self/status: unreadable {name} line {line:?}"))?;
        Ok(kib * 1024)
    };
    Ok(Resident {
        current: field("VmRSS:")?,
        peak: field("VmHWM:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_lines_as_bytes() {
        let r = parse("Name:\txtask\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n").unwrap();
        assert_eq!((r.current, r.peak), (1024 * 1024, 2048 * 1024));
        let before = Resident {
            current: 1000,
            peak: 5000,
        };
        assert_eq!(r.peak_growth_since(&before), 2048 * 1024 - 1000);
        assert!(parse("VmRSS:\t1 kB\n").is_err());
    }

    #[test]
    fn this_process_is_resident() {
        let r = Resident::now().unwrap();
        assert!(r.current > 0 && r.peak >= r.current);
    }
}
