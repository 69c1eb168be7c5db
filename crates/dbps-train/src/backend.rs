//! Backend choice: burn-flex on the CPU by default, burn-cuda behind the `cuda` feature.

use std::path::{Path, PathBuf};

use crate::eval::{EvalReport, eval_checkpoints};
use crate::explain::{ExplainOptions, Explanation, explain};
use crate::predict::{PredictReport, SlideOptions, predict};
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

/// The memory-pool probe of `device`, for the step meter: CubeCL's pool on CUDA; `None` on
/// the CPU, where the tracking allocator measures the heap instead.
pub fn pool_probe<B: burn::tensor::backend::Backend>(
    device: &B::Device,
) -> Option<std::sync::Arc<dyn crate::PoolProbe>> {
    #[cfg(feature = "cuda")]
    if let Some(cuda) = (device as &dyn std::any::Any).downcast_ref::<burn_cuda::CudaDevice>() {
        return Some(std::sync::Arc::new(CudaPool(cuda.clone())));
    }
    let _ = device;
    None
}

/// CubeCL's memory pool of one CUDA device.
#[cfg(feature = "cuda")]
#[derive(Debug)]
struct CudaPool(burn_cuda::CudaDevice);

#[cfg(feature = "cuda")]
impl crate::PoolProbe for CudaPool {
    fn release_unused(&self) {
        use cubecl::Runtime;
        cubecl::cuda::CudaRuntime::client(&self.0).memory_cleanup();
    }

    fn reserved_bytes(&self) -> Option<u64> {
        use cubecl::Runtime;
        let usage = cubecl::cuda::CudaRuntime::client(&self.0)
            .memory_usage()
            .ok()?;
        Some(usage.bytes_reserved)
    }
}

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

    /// Continues the interrupted run in `run_dir` (see [`runner::resume`]).
    pub fn resume(&self, run_dir: &Path) -> Result<RunReport> {
        match self {
            Self::Cpu => {
                runner::resume::<CpuTrainBackend>(run_dir, &Default::default(), &self.name())
            }
            #[cfg(feature = "cuda")]
            Self::Cuda(n) => {
                let device = burn_cuda::CudaDevice::new(*n);
                runner::resume::<CudaTrainBackend>(run_dir, &device, &self.name())
            }
        }
    }

    /// Predicts the images of `inputs` with the best checkpoints under `dir`.
    pub fn predict(
        &self,
        dir: &Path,
        inputs: &[PathBuf],
        slides: &SlideOptions,
    ) -> Result<PredictReport> {
        match self {
            Self::Cpu => {
                predict::<CpuBackend>(dir, inputs, slides, &Default::default(), &self.name())
            }
            #[cfg(feature = "cuda")]
            Self::Cuda(n) => predict::<CudaBackend>(
                dir,
                inputs,
                slides,
                &burn_cuda::CudaDevice::new(*n),
                &self.name(),
            ),
        }
    }

    /// Explains `image` with the best checkpoints under `dir`, drawing the figure to `out`.
    pub fn explain(
        &self,
        dir: &Path,
        image: &Path,
        out: &Path,
        options: &ExplainOptions,
    ) -> Result<Explanation> {
        match self {
            Self::Cpu => explain::<CpuBackend>(dir, image, out, options, &Default::default()),
            #[cfg(feature = "cuda")]
            Self::Cuda(n) => {
                explain::<CudaBackend>(dir, image, out, options, &burn_cuda::CudaDevice::new(*n))
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
