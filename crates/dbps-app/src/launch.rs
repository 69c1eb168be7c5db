//! How `dbps train` and `dbps resume` place a run: its devices, its rank among processes,
//! and where gradients are recorded; the one place a device list becomes a backend type.

use std::path::{Path, PathBuf};

use dbps_model::trace::GradientTrace;
use dbps_train::Result;
#[cfg(feature = "distributed")]
use dbps_train::TrainError;
#[cfg(not(feature = "distributed"))]
use dbps_train::backend::CpuTrainBackend;
#[cfg(feature = "cuda")]
use dbps_train::backend::CudaTrainBackend;
use dbps_train::backend::DeviceChoice;
use dbps_train::config::CheckedRun;
use dbps_train::report::RunReport;
use dbps_train::runner::{self, Placement};

/// With burn's `distributed` feature, burn-autodiff differentiates only backends that
/// implement `DistributedBackend` (the CubeCL ones), so a `distributed` build trains on GPUs
/// only.
#[cfg(feature = "distributed")]
fn cpu_training_unavailable() -> TrainError {
    TrainError::Option {
        option: "--device",
        reason: "this dbps was built with `--features distributed`, in which burn 0.21 differentiates only GPU backends; train on cuda:N, or use a build without `distributed` to train on the CPU".into(),
    }
}

/// How `dbps train` runs: its devices (one replica each, all of one kind), its place among
/// several processes, and where to record gradients.
#[derive(Debug, Clone, Default)]
pub struct TrainLaunch {
    /// One replica per device; the first is the main device.
    pub devices: Vec<DeviceChoice>,
    /// This process's place among several, if it is one rank of a multi-machine run.
    pub node: Option<dbps_parallel::NodeSpec>,
    /// Where to record every optimizer step's gradients (`--trace-gradients`).
    pub trace: Option<PathBuf>,
}

impl TrainLaunch {
    /// The devices' name, recorded in reports.
    fn name(&self) -> String {
        let first = self.devices.first().copied().unwrap_or_default();
        match self.devices.len() {
            0 | 1 => first.name(),
            n => format!(
                "{} ({n} devices: {})",
                first.name(),
                self.devices
                    .iter()
                    .map(|d| format!("{d:?}").to_lowercase())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    fn placement<B: burn::tensor::backend::AutodiffBackend>(
        &self,
        devices: Vec<B::Device>,
    ) -> Placement<B> {
        Placement {
            devices,
            node: self.node.clone(),
            trace: self.trace.as_deref().map(GradientTrace::new),
            engine: None,
        }
    }

    /// One burn-flex replica per listed `cpu`.
    #[cfg(not(feature = "distributed"))]
    fn cpu_placement(&self) -> Placement<CpuTrainBackend> {
        self.placement(vec![Default::default(); self.devices.len().max(1)])
    }

    /// Trains every method of `config` into a fresh directory named after `wanted`.
    pub fn train(&self, config: &CheckedRun, wanted: &Path) -> Result<RunReport> {
        match self.devices.first().copied().unwrap_or_default() {
            #[cfg(not(feature = "distributed"))]
            DeviceChoice::Cpu => runner::run(config, wanted, &self.cpu_placement(), &self.name()),
            #[cfg(feature = "distributed")]
            DeviceChoice::Cpu => Err(cpu_training_unavailable()),
            #[cfg(feature = "cuda")]
            DeviceChoice::Cuda(_) => {
                let placement = self.cuda_placement();
                runner::run(config, wanted, &placement, &self.name())
            }
        }
    }

    /// Continues the interrupted run in `run_dir` (see [`runner::resume`]).
    pub fn resume(&self, run_dir: &Path) -> Result<RunReport> {
        match self.devices.first().copied().unwrap_or_default() {
            #[cfg(not(feature = "distributed"))]
            DeviceChoice::Cpu => runner::resume(run_dir, &self.cpu_placement(), &self.name()),
            #[cfg(feature = "distributed")]
            DeviceChoice::Cpu => Err(cpu_training_unavailable()),
            #[cfg(feature = "cuda")]
            DeviceChoice::Cuda(_) => {
                let placement = self.cuda_placement();
                runner::resume(run_dir, &placement, &self.name())
            }
        }
    }

    /// The GPUs as burn-cuda devices; with the `distributed` feature, several GPUs of one
    /// process train through burn-train's DDP (NCCL all-reduce) instead of gathering the
    /// gradients on the first GPU.
    #[cfg(feature = "cuda")]
    fn cuda_placement(&self) -> Placement<CudaTrainBackend> {
        let devices = self
            .devices
            .iter()
            .map(|d| match d {
                DeviceChoice::Cuda(n) => burn_cuda::CudaDevice::new(*n),
                DeviceChoice::Cpu => burn_cuda::CudaDevice::new(0),
            })
            .collect();
        #[allow(unused_mut)]
        let mut placement = self.placement::<CudaTrainBackend>(devices);
        #[cfg(feature = "distributed")]
        if placement.devices.len() > 1 {
            placement.engine = Some(dbps_parallel::ddp_engine::<CudaTrainBackend>());
        }
        placement
    }
}
