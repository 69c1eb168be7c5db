use thiserror::Error;

/// Why an aggregator could not be built from its configuration.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MilError {
    /// A width or count that must be positive is zero.
    #[error("`aggregator.{0}` must be at least 1")]
    Zero(&'static str),
    /// No task head was configured.
    #[error("no task given; list at least one task with its number of classes")]
    NoTasks,
    /// Sinusoidal positional encoding needs an even width.
    #[error(
        "positional encoding needs an even embedding width, got D = {0}; use an even `embed_dim`"
    )]
    OddWidth(usize),
}
