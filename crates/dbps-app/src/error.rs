//! The application's errors: each names the input and the fix.

use std::path::PathBuf;

use thiserror::Error;

/// Everything the application's commands can fail with.
#[derive(Debug, Error)]
pub enum AppError {
    /// The training engine failed (its error names the input).
    #[error(transparent)]
    Train(#[from] dbps_train::TrainError),
    /// The model layer failed (a forward pass, a file written whole).
    #[error(transparent)]
    Model(#[from] dbps_model::ModelError),
    /// Some slides of `dbps slides check` would stop a run.
    #[error(
        "{failed} of {total} slides would fail a run; the first: {first}; every slide's row is in {csv}: fix or drop those slides"
    )]
    Check {
        /// Slides that would fail.
        failed: usize,
        /// Slides checked.
        total: usize,
        /// The first failing slide and why.
        first: String,
        /// The report written.
        csv: PathBuf,
    },
    /// A command-line option is unusable.
    #[error("option `{option}`: {reason}")]
    Option {
        /// The option, as typed.
        option: &'static str,
        /// What is wrong and what to use instead.
        reason: String,
    },
    /// A prediction list cannot be used.
    #[error("prediction list {path}: {reason}")]
    List {
        /// The list file.
        path: PathBuf,
        /// What is wrong, with the line, and the fix.
        reason: String,
    },
    /// A results folder cannot be merged.
    #[error("results folder {path}: {reason}")]
    Results {
        /// The folder (or one file in it).
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// Some slides of a shard failed; the others' results are written.
    #[error(
        "{failed} of {total} slides of shard {shard} failed: {first}; their results are missing, the others are written: fix the slides and run the shard again"
    )]
    SlidesFailed {
        /// The shard, `K/N`.
        shard: String,
        /// How many failed.
        failed: usize,
        /// Slides the shard holds.
        total: usize,
        /// The first failure.
        first: String,
    },
    /// The orchestrator cannot run.
    #[error("orchestrator: {0}")]
    Orchestrator(String),
}

/// Result with an [`AppError`].
pub type Result<T, E = AppError> = std::result::Result<T, E>;
