//! The process's resident memory as Linux reports it, read the way the PyTorch harness reads
//! its own: the growth of the peak resident set (`VmHWM`) from the resident set (`VmRSS`)
//! before the warm-up step ([`Resident::baseline`]: freed heap returned and the peak reset
//! first, so nothing before the phase counts). The same meter on both sides, so that neither side's allocator is
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

    /// The resident set right before a measured phase, with the kernel's peak reset to it.
    ///
    /// Freed heap memory is first handed back to the kernel (glibc's `malloc_trim`; dbps's
    /// binaries otherwise keep it, `retain_freed_memory`), then `VmHWM` is reset to `VmRSS`
    /// (`/proc/self/clear_refs`, Linux ≥ 4.0). Without the first, a phase would reuse memory
    /// freed while its inputs were built and grow by less than it needs; without the second, a
    /// peak reached while building them (the random batch's intermediate copies: 6.9 GB at
    /// N = 14,400) would be read as the phase's. Both only make dbps's figure larger.
    pub fn baseline() -> Result<Self> {
        trim_heap();
        std::fs::write("/proc/self/clear_refs", "5").context(
            "cannot reset the peak resident set through /proc/self/clear_refs (Linux ≥ 4.0): \
             without it a peak reached before the measured phase would count as the phase's",
        )?;
        Self::now()
    }

    /// Peak resident growth since `before`: what the harness calls `peak_rss_delta`.
    pub fn peak_growth_since(&self, before: &Resident) -> u64 {
        self.peak.saturating_sub(before.current)
    }
}

/// Returns the heap's free pages to the kernel (glibc; elsewhere freed memory is not kept).
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only releases free memory of glibc's arenas; no live block moves.
        unsafe {
            malloc_trim(0);
        }
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

    /// A peak reached and freed before the baseline is not the phase's: the baseline's peak
    /// is its current level (another test thread may add a little).
    #[test]
    fn baseline_forgets_an_earlier_peak() {
        let block = vec![1u8; 256 << 20];
        std::hint::black_box(&block);
        drop(block);
        let r = Resident::baseline().unwrap();
        assert!(
            r.peak - r.current < 64 << 20,
            "peak {} MB above current after the reset",
            (r.peak - r.current) >> 20
        );
    }

    #[test]
    fn this_process_is_resident() {
        let r = Resident::now().unwrap();
        assert!(r.current > 0 && r.peak >= r.current);
    }
}
