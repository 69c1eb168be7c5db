//! Training and evaluation of IPS and DBPS classifiers, wired through a burn-train `Learner`.
//!
//! One train step (method.md §5–6): cut the batch into patches, pick the M salient and S
//! sub-salient patches with the encoder and scorer in inference mode on the inner backend
//! (no autodiff graph), re-embed the M salient patches with gradients, add the S sub-salient
//! embeddings as constants, aggregate, and back-propagate the mean task loss.
//!
//! ```
//! use dbps_train::RunConfig;
//!
//! // The embedded default: IPS and DBPS side by side on which of two digits leads.
//! let config = RunConfig::quickstart().unwrap();
//! assert_eq!(config.grid().unwrap().len(), 256);
//! assert_eq!(config.methods.len(), 2);
//! ```

#![warn(missing_docs)]

mod backend;
mod batch;
mod build;
mod candidates;
mod checkpoint;
pub mod config;
mod datasets;
mod epoch_order;
mod error;
mod eval;
mod heap;
mod loss;
pub mod meter;
mod metrics;
mod model;
mod named_weights;
mod official_ips;
pub mod parallel;
mod renderer;
mod report;
mod run_dir;
mod runner;
mod schedule;
mod slide_source;
mod step;
mod trace;
mod trained;

pub use backend::{CpuBackend, CpuTrainBackend, DeviceChoice, OnBackend, TrainLaunch, pool_probe};
#[cfg(feature = "cuda")]
pub use backend::{CudaBackend, CudaTrainBackend};
pub use batch::{
    BatchImages, BatchKey, ImageBatch, ImageBatcher, SingleImage, TaskTargets, host_images,
};
pub use build::build_classifier;
pub use candidates::{HostCandidates, ImageCandidates, cut_selected, cut_selected_host};
pub use checkpoint::{
    CheckpointRecorder, HISTORY, MANIFEST, MethodManifest, checkpoint_path, initial_weights_path,
    load_weights, method_dirs,
};
pub use config::{MethodPlan, RunConfig};
pub use datasets::{ImageDataset, Splits};
pub use epoch_order::{EpochOrder, epoch_seed};
pub use error::{Result, TrainError};
pub use eval::{CheckpointEval, EvalReport, eval_checkpoints, evaluate};
pub use heap::retain_freed_memory;
pub use loss::{LossForm, loss_and_hits, task_hits, task_loss};
pub use meter::{
    EfficiencyFigures, MeteredOptimizer, PoolProbe, StepFigures, StepMeter, TrackingAllocator,
    live_heap_bytes, median, peak_heap_bytes, reset_peak_heap,
};
pub use metrics::{TaskMetric, binary_auc};
pub use model::{
    CandidateOrder, DrawKey, ForwardOutput, Mode, PatchClassifier, SelectionEngine, SelectionPlan,
};
pub use named_weights::{
    CHECKPOINT_PREFIX, NamedTensor, NamedWeightsError, load_named, named_tensors,
};
pub use official_ips::{OfficialImportError, from_official_ips};
pub use renderer::{ProgressRenderer, hide_progress_bars, progress_bar, suspend_bars};
pub use report::{
    EpochFigures, EvalFigures, MethodReport, RunReport, SelectionFigures, TaskAccuracy,
    write_atomic, write_json_atomic,
};
pub use run_dir::{LOCK, RunLock, fresh_run_dir};
pub use runner::{Placement, resume, run};
pub use schedule::WarmupCosine;
pub use slide_source::{SlideCandidates, tissue_patches};
pub use step::{
    EpochTally, StepOutput, StepStats, TrainedClassifier, TrainingMonitor, TrainingPass,
};
pub use trace::{GradientTrace, MethodTrace, TRACE_INDEX, TracedParam};
pub use trained::TrainedMethod;
