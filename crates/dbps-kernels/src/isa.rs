//! Which SIMD instruction set the microkernels use, decided at run time.
//!
//! An [`Isa`] can only come from detection ([`Isa::detect`], [`Isa::available`],
//! [`Isa::named`], [`Isa::portable`]), so holding one proves this CPU runs it: a
//! `#[target_feature]` microkernel is never reached on a CPU without that feature, and weights
//! are never packed for a tile the running kernel does not use.

use std::sync::OnceLock;

use crate::KernelError;

/// An instruction set this CPU supports; it fixes the microkernel's tile and the layout a
/// [`crate::PackedConv`] is packed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Isa(Kind);

/// The instruction sets the kernels have tiles for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// AVX-512F: 12 × 32 tiles in 24 zmm accumulators.
    Avx512,
    /// AVX2 + FMA: 6 × 16 tiles in 12 ymm accumulators.
    Avx2,
    /// Plain Rust (whatever the compiler vectorises): 4 × 16 tiles. Any CPU.
    Portable,
}

/// The environment variable that picks an instruction set by name.
pub const ISA_VARIABLE: &str = "DBPS_KERNEL_ISA";

impl Isa {
    /// The instruction set named by `DBPS_KERNEL_ISA` (`avx512`, `avx2`, `portable`), or the
    /// best this CPU runs when it is unset. A name that is unknown or that this CPU does not
    /// run is an error naming the ones it does. Read once per process.
    pub fn detect() -> Result<Self, KernelError> {
        static CHOSEN: OnceLock<Result<Isa, KernelError>> = OnceLock::new();
        CHOSEN
            .get_or_init(|| match std::env::var(ISA_VARIABLE) {
                Ok(name) => Self::named(&name),
                Err(std::env::VarError::NotPresent) => Ok(Self::best()),
                Err(std::env::VarError::NotUnicode(_)) => Err(KernelError::Isa {
                    name: "(not UTF-8)".into(),
                    available: Self::names(),
                }),
            })
            .clone()
    }

    /// The instruction set called `name`, if this CPU runs it.
    pub fn named(name: &str) -> Result<Self, KernelError> {
        Self::available()
            .into_iter()
            .find(|isa| isa.name() == name)
            .ok_or_else(|| KernelError::Isa {
                name: name.to_string(),
                available: Self::names(),
            })
    }

    /// The best instruction set this CPU runs.
    pub fn best() -> Self {
        Self::available()[0]
    }

    /// The plain-Rust kernels, which every CPU runs.
    pub fn portable() -> Self {
        Self(Kind::Portable)
    }

    /// Every instruction set this CPU runs, best first (always ends with the portable one).
    pub fn available() -> Vec<Self> {
        let mut found = Vec::with_capacity(3);
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                found.push(Self(Kind::Avx512));
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                found.push(Self(Kind::Avx2));
            }
        }
        found.push(Self(Kind::Portable));
        found
    }

    fn names() -> String {
        Self::available()
            .iter()
            .map(|isa| isa.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Lower-case name, as `DBPS_KERNEL_ISA` spells it.
    pub fn name(self) -> &'static str {
        match self.0 {
            Kind::Avx512 => "avx512",
            Kind::Avx2 => "avx2",
            Kind::Portable => "portable",
        }
    }

    /// Which tile the kernels run.
    pub(crate) fn kind(self) -> Kind {
        self.0
    }

    /// Rows (output pixels) per microkernel tile.
    pub(crate) fn mr(self) -> usize {
        match self.0 {
            Kind::Avx512 => 12,
            Kind::Avx2 => 6,
            Kind::Portable => 4,
        }
    }

    /// Columns (output channels) per microkernel tile: the width of a packed weight panel.
    pub(crate) fn nr(self) -> usize {
        match self.0 {
            Kind::Avx512 => 32,
            Kind::Avx2 | Kind::Portable => 16,
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_this_cpu_does_not_run_are_errors() {
        assert!(matches!(
            Isa::named("sse9"),
            Err(KernelError::Isa { ref name, .. }) if name == "sse9"
        ));
        assert_eq!(Isa::named("portable"), Ok(Isa::portable()));
        for isa in Isa::available() {
            assert_eq!(Isa::named(isa.name()), Ok(isa));
        }
        #[cfg(target_arch = "x86_64")]
        if !std::arch::is_x86_feature_detected!("avx512f") {
            assert!(Isa::named("avx512").is_err());
        }
    }
}
