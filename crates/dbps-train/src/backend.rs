//! Backend choice: burn-flex on the CPU by default, burn-cuda behind the `cuda` feature.

use crate::{Result, TrainError};

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
) -> Option<std::sync::Arc<dyn dbps_model::meter::PoolProbe>> {
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
impl dbps_model::meter::PoolProbe for CudaPool {
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

/// Code to run on whichever backend a [`DeviceChoice`] names (a closure generic over the
/// backend, which Rust closures cannot be): the one place a device choice becomes a type.
pub trait OnBackend {
    /// What the code returns.
    type Output;

    /// Runs on backend `B` with `device`, named `name` in reports.
    fn run<B: burn::tensor::backend::Backend>(self, device: B::Device, name: &str) -> Self::Output;
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
    /// Parses `cpu`, `cuda` (GPU 0) or `cuda:N`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |reason: String| TrainError::Option {
            option: "--device",
            reason,
        };
        match text.trim() {
            "cpu" => Ok(Self::Cpu),
            #[cfg(feature = "cuda")]
            "cuda" => Ok(Self::Cuda(0)),
            #[cfg(feature = "cuda")]
            other if other.starts_with("cuda:") => {
                other["cuda:".len()..].parse().map(Self::Cuda).map_err(|_| {
                    bad(format!(
                        "`{other}`: write the GPU as cuda:N, N counting from 0"
                    ))
                })
            }
            #[cfg(not(feature = "cuda"))]
            other if other == "cuda" || other.starts_with("cuda:") => Err(bad(format!(
                "`{other}`: this dbps was built without CUDA; rebuild with `cargo build --release --features cuda`"
            ))),
            other => Err(bad(format!(
                "`{other}` is not a device; use cpu, cuda, cuda:N, or a comma-separated list of one kind such as cuda:0,cuda:1"
            ))),
        }
    }

    /// Parses a comma-separated list of devices of one kind (`cpu`, `cuda:0,cuda:1`, or
    /// `cpu,cpu`: two replicas on the CPU, for checking data parallelism without GPUs).
    pub fn parse_list(text: &str) -> Result<Vec<Self>> {
        let devices: Vec<Self> = text.split(',').map(Self::parse).collect::<Result<_>>()?;
        let bad = |reason: String| TrainError::Option {
            option: "--device",
            reason,
        };
        if devices
            .iter()
            .any(|d| std::mem::discriminant(d) != std::mem::discriminant(&devices[0]))
        {
            return Err(bad(format!(
                "`{text}` mixes CPU and GPUs; list devices of one kind"
            )));
        }
        #[cfg(feature = "cuda")]
        for (i, d) in devices.iter().enumerate() {
            if matches!(d, Self::Cuda(_)) && devices[..i].contains(d) {
                return Err(bad(format!(
                    "`{text}` lists {d:?} twice; list each GPU once"
                )));
            }
        }
        Ok(devices)
    }

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

    /// Runs `code` on this device's backend.
    pub fn dispatch<F: OnBackend>(&self, code: F) -> F::Output {
        match self {
            Self::Cpu => code.run::<CpuBackend>(Default::default(), &self.name()),
            #[cfg(feature = "cuda")]
            Self::Cuda(n) => code.run::<CudaBackend>(burn_cuda::CudaDevice::new(*n), &self.name()),
        }
    }
}
