//! Backend choice: burn-flex on the CPU by default, burn-cuda behind the `cuda` feature.

use std::path::Path;

use crate::eval::{EvalReport, eval_checkpoints};
use crate::report::RunReport;
use crate::{Result, RunConfig, runner};

/// The CPU backend (burn-flex: SIMD kernels, multi-threaded).
pub type CpuBackend = burn::backend::Flex;
/// The CPU backend with autodiff.
pub type CpuTrainBackend = burn::backend::Autodiff<CpuBackend>;
/// The CUDA backend.
#[cfg(feature = "cuda")]
pub type CudaBackend = burn_cuda::Cuda;
/// The CUDA backend with autodiff.
#[cfg(feature = "cuda")]
pub type CudaTrainBackend = burn::backend::Autodiff<CudaBackend>;

/// Where a run executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// burn-flex on the CPU.
    #[default]
    Cpu,
    /// burn-cuda on GPU `n`.
    #[cfg(feature = "cuda")]
    Cuda(usize),
}

impl DeviceChoice {
    /// Human-readable name, recorded in reports.
    pub fn name(&self) -> String {
        match self {
            Self::Cpu => format!(
                "cpu (burn-flex, {} threads)",
                std::thread::available_parallelism().map_or(1, |n| n.get())
            ),
            #[cfg(feature = "cuda")]
            Self::Cuda(n) => format!("cuda:{n} (burn-cuda)"),
        }
    }

    /// Trains every method of `config` into a fresh directory named after `wanted`.
    pub fn train(&self, config: &RunConfig, wanted: &Path) -> Result<RunReport> {
        match self {
            Self::Cpu => {
                runner::run::<CpuTrainBackend>(config, wanted, &Default::default(), &self.name())
            }
            #[cfg(feature = "cuda")]
            Self::Cuda(n) => {
                let device = burn_cuda::CudaDevice::new(*n);
                runner::run::<CudaTrainBackend>(config, wanted, &device, &self.name())
            }
        }
    }

    /// Evaluates the checkpoints under `dir`.
    pub fn eval(&self, dir: &Path) -> Result<EvalReport> {
        match self {
            Self::Cpu => eval_checkpoints::<CpuBackend>(dir, &Default::default(), &self.name()),
            #[cfg(feature = "cuda")]
            Self::Cuda(n) => {
                eval_checkpoints::<CudaBackend>(dir, &burn_cuda::CudaDevice::new(*n), &self.name())
            }
        }
    }
}
