//! Which SIMD instruction set the microkernels use, decided once at run time.

use std::sync::OnceLock;

/// The instruction set a [`crate::PackedConv`] was packed for; it fixes the microkernel's tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512F: 12 × 32 tiles in 24 zmm accumulators.
    Avx512,
    /// AVX2 + FMA: 6 × 16 tiles in 12 ymm accumulators.
    Avx2,
    /// Plain Rust (whatever the compiler vectorises): 4 × 16 tiles. Any CPU.
    Portable,
}

impl Isa {
    /// The best instruction set this CPU runs, or the one named by `DBPS_KERNEL_ISA`
    /// (`avx512`, `avx2`, `portable`) when that one is supported.
    pub fn detect() -> Self {
        static CHOSEN: OnceLock<Isa> = OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let wanted = std::env::var("DBPS_KERNEL_ISA").ok();
            let forced = wanted
                .as_deref()
                .and_then(|name| Self::available().into_iter().find(|isa| isa.name() == name));
            forced.unwrap_or_else(|| Self::available()[0])
        })
    }

    /// Every instruction set this CPU runs, best first (always ends with [`Isa::Portable`]).
    pub fn available() -> Vec<Self> {
        let mut found = Vec::with_capacity(3);
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                found.push(Self::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                found.push(Self::Avx2);
            }
        }
        found.push(Self::Portable);
        found
    }

    /// Lower-case name, as `DBPS_KERNEL_ISA` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Avx512 => "avx512",
            Self::Avx2 => "avx2",
            Self::Portable => "portable",
        }
    }

    /// Rows (output pixels) per microkernel tile.
    pub(crate) fn mr(self) -> usize {
        match self {
            Self::Avx512 => 12,
            Self::Avx2 => 6,
            Self::Portable => 4,
        }
    }

    /// Columns (output channels) per microkernel tile: the width of a packed weight panel.
    pub(crate) fn nr(self) -> usize {
        match self {
            Self::Avx512 => 32,
            Self::Avx2 | Self::Portable => 16,
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
