use std::path::PathBuf;

use thiserror::Error;

/// Everything that can stop a dbps run; each message names the input and the fix.
#[derive(Debug, Error)]
pub enum TrainError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}; check the path given to --config")]
    ConfigIo {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The config file is not valid JSON for a dbps config.
    #[error(
        "config {origin} is not a valid dbps config: {source}; compare it with configs/quickstart.json"
    )]
    ConfigSyntax {
        /// File name or "embedded default".
        origin: String,
        /// The parse error, with line and column.
        source: serde_json::Error,
    },
    /// A config value is out of range.
    #[error("config setting `{field}`: {reason}")]
    Config {
        /// The setting, as a JSON path.
        field: String,
        /// Why it is wrong and what to use instead.
        reason: String,
    },
    /// The dataset could not be opened.
    #[error(transparent)]
    Data(#[from] dbps_data::DataError),
    /// A slide could not be opened or read.
    #[error(transparent)]
    Slide(#[from] dbps_slide::SlideError),
    /// A forward pass, a step or a write of the model layer failed at run time.
    #[error(transparent)]
    Model(#[from] dbps_model::ModelError),
    /// Data-parallel training cannot start or go on.
    #[error(transparent)]
    Parallel(#[from] dbps_parallel::ParallelError),
    /// Something stopped training from inside burn-train's loop (a step, a checkpoint write,
    /// a rank that left); the message is that error's.
    #[error(transparent)]
    Stopped(dbps_model::step::StepFailure),
    /// Training diverged.
    #[error(
        "training of {method} stopped: the loss became {value} at epoch {epoch}; lower `train.lr` or raise `train.warmup_epochs` (checkpoints of earlier epochs are kept)"
    )]
    NonFiniteLoss {
        /// The method being trained.
        method: String,
        /// The epoch.
        epoch: usize,
        /// The loss value.
        value: f64,
    },
    /// A checkpoint or run directory is unusable.
    #[error("{what} {path}: {reason}")]
    Checkpoint {
        /// What was being read.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// Weights from another implementation do not fit the model the config builds.
    #[error("weights {path}: {reason}")]
    ForeignWeights {
        /// The weight file.
        path: PathBuf,
        /// What does not fit, and what to do.
        reason: String,
    },
    /// An image given to `dbps predict` cannot be used.
    #[error("{path}: {reason}")]
    Input {
        /// The image file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A command-line option does not fit the model it is applied to.
    #[error("option `{option}`: {reason}")]
    Option {
        /// The option, as typed (`--head`).
        option: &'static str,
        /// What is wrong and what to use instead.
        reason: String,
    },
    /// Training over several devices or ranks cannot start or go on.
    #[error("data-parallel training: {reason}")]
    Collective {
        /// What went wrong, naming the rank or option, and what to do.
        reason: String,
    },
    /// Writing results failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Result with a [`TrainError`].
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

impl TrainError {
    /// The error that stopped training from inside burn-train's loop, as the variant it was
    /// raised as when it came from this layer or the ones below.
    pub fn stopped(failure: dbps_model::step::StepFailure) -> Self {
        let failure = match failure.downcast::<TrainError>() {
            Ok(own) => return *own,
            Err(other) => other,
        };
        let failure = match failure.downcast::<dbps_model::ModelError>() {
            Ok(model) => return Self::Model(*model),
            Err(other) => other,
        };
        match failure.downcast::<dbps_parallel::ParallelError>() {
            Ok(parallel) => Self::Parallel(*parallel),
            Err(other) => Self::Stopped(other),
        }
    }
}
