//! Which of burn-train's engines trains several devices of one process.

use std::sync::Arc;

use burn::tensor::backend::AutodiffBackend;
use burn_train::{ExecutionStrategy, MultiDeviceOptim};

/// How several devices of one process train together: the burn-train engine, how many times
/// that engine steps the learning-rate schedule per global step, and whether it needs an image
/// for every device at every step.
#[derive(Clone)]
pub struct MultiDeviceEngine<B: AutodiffBackend> {
    /// Makes the engine for these devices (the first is the main device).
    pub strategy: Arc<dyn Fn(Vec<B::Device>) -> ExecutionStrategy<B> + Send + Sync>,
    /// True when the engine steps the schedule once per device and step (burn-train's DDP
    /// does, on every worker), so the schedule must count that many calls as one step.
    pub schedule_per_device: bool,
    /// True when every device must take part in every step (a collective that waits for all
    /// of them): a short last batch must still hold an image per device.
    pub needs_every_part: bool,
}

impl<B: AutodiffBackend> std::fmt::Debug for MultiDeviceEngine<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiDeviceEngine")
            .field("schedule_per_device", &self.schedule_per_device)
            .field("needs_every_part", &self.needs_every_part)
            .finish()
    }
}

impl<B: AutodiffBackend> Default for MultiDeviceEngine<B> {
    /// burn-train's multi-device strategy: one replica per device on worker threads, their
    /// gradients summed on the main device, which alone steps the optimizer.
    fn default() -> Self {
        Self {
            strategy: Arc::new(|devices| {
                ExecutionStrategy::multi(devices, MultiDeviceOptim::OptimMainDevice)
            }),
            schedule_per_device: false,
            needs_every_part: false,
        }
    }
}

/// burn-train's distributed data parallel engine (`--features distributed`, CUDA): one worker
/// per GPU, each replica's gradients summed over NCCL during the backward pass.
#[cfg(feature = "distributed")]
pub fn ddp_engine<B>() -> MultiDeviceEngine<B>
where
    B: AutodiffBackend + burn::tensor::backend::distributed::DistributedBackend,
{
    use burn::tensor::backend::distributed::{DistributedConfig, ReduceOperation};
    MultiDeviceEngine {
        strategy: Arc::new(|devices| {
            // Each replica's loss is already weighted by its share of the global batch, so
            // the sum of the replicas' gradients is the global batch's gradient.
            ExecutionStrategy::ddp(
                devices,
                DistributedConfig {
                    all_reduce_op: ReduceOperation::Sum,
                },
            )
        }),
        schedule_per_device: true,
        needs_every_part: true,
    }
}
