//! Checkpoint files: the recorder, where each epoch's weights go, the manifest that rebuilds a
//! method's model, loading weights back, and the strategy that saves after every epoch while
//! recording its figures.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::Backend;
use burn_train::checkpoint::{CheckpointingAction, CheckpointingStrategy};
use burn_train::metric::store::{Aggregate, EventStoreClient, Split};
use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::metrics::{ACCURACY, LOSS};
use crate::report::EpochFigures;
use crate::{Result, StepMeter, TrainError, TrainedClassifier};

/// The recorder of every checkpoint dbps writes.
pub type CheckpointRecorder = NamedMpkFileRecorder<FullPrecisionSettings>;

/// What a method directory holds besides burn-train's files: enough to rebuild the model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodManifest {
    /// The run's whole config.
    pub config: RunConfig,
    /// Index of the method in `config.methods`.
    pub method: usize,
    /// Epoch whose weights did best on validation.
    pub best_epoch: usize,
    /// Epochs completed.
    pub epochs: usize,
}

/// File name of a [`MethodManifest`] inside a method directory.
pub const MANIFEST: &str = "method.json";

/// Path of the model checkpoint of `epoch` in a method directory.
pub fn checkpoint_path(method_dir: &Path, epoch: usize) -> PathBuf {
    method_dir
        .join("checkpoint")
        .join(format!("model-{epoch}.mpk"))
}

/// Loads the weights of `path` into a freshly built model, naming the file on mismatch.
pub fn load_weights<B: Backend>(
    model: TrainedClassifier<B>,
    path: &Path,
    device: &B::Device,
) -> Result<TrainedClassifier<B>> {
    if !path.is_file() {
        return Err(TrainError::Checkpoint {
            what: "checkpoint",
            path: path.to_path_buf(),
            reason: "does not exist; pass the run or method directory that `dbps train` wrote"
                .into(),
        });
    }
    model
        .load_file(path.with_extension(""), &CheckpointRecorder::new(), device)
        .map_err(|e| TrainError::Checkpoint {
            what: "weight file",
            path: path.to_path_buf(),
            reason: format!(
                "does not fit this model ({e}); it was written by another config or is damaged"
            ),
        })
}

/// Records per-epoch figures and saves a checkpoint after every epoch.
pub(crate) struct EveryEpoch {
    pub(crate) history: Arc<Mutex<Vec<EpochFigures>>>,
    pub(crate) method: String,
    pub(crate) meter: StepMeter,
}

impl CheckpointingStrategy for EveryEpoch {
    fn checkpointing(
        &mut self,
        epoch: usize,
        store: &EventStoreClient,
    ) -> Vec<CheckpointingAction> {
        let get = |name: &str, split: Split| {
            store
                .find_metric(name, epoch, Aggregate::Mean, &split)
                .unwrap_or(f64::NAN)
        };
        let figures = EpochFigures {
            epoch,
            train_loss: get(LOSS, Split::Train),
            train_accuracy: get(ACCURACY, Split::Train),
            valid_loss: get(LOSS, Split::Valid),
            valid_accuracy: get(ACCURACY, Split::Valid),
            efficiency: self.meter.figures(),
        };
        self.meter.clear();
        tracing::info!(
            method = %self.method,
            epoch,
            train_loss = figures.train_loss,
            train_acc = figures.train_accuracy,
            valid_loss = figures.valid_loss,
            valid_acc = figures.valid_accuracy,
            ms_per_step = figures.efficiency.as_ref().map(|e| e.ms_per_step),
            peak_step_mb = figures.efficiency.as_ref().and_then(|e| e.peak_step_bytes).map(|b| b as f64 / 1e6),
            "epoch done"
        );
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(figures);
        vec![CheckpointingAction::Save]
    }
}
