use thiserror::Error;

/// Why data-parallel training cannot start or go on.
#[derive(Debug, Error)]
pub enum ParallelError {
    /// A rank, the orchestrator or the exchange failed; the reason names the rank or option
    /// and what to do.
    #[error("data-parallel training: {reason}")]
    Collective {
        /// What went wrong, and what to do.
        reason: String,
    },
    /// A replica's step failed.
    #[error(transparent)]
    Model(#[from] dbps_model::ModelError),
}

/// Result with a [`ParallelError`].
pub type Result<T, E = ParallelError> = std::result::Result<T, E>;
