use thiserror::Error;

/// Why an aggregator could not be built from its configuration.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MilError {
    /// A width or count that must be positive is zero.
    #[error("`aggregator.{0}` must be at least 1")]
    Zero(&'static str),
    /// The embeddings to aggregate have no feature.
    #[error("the embedding width D is 0; the encoder must output at least one feature")]
    ZeroWidth,
    /// No task head was configured.
    #[error("no task given; list at least one task with its number of classes")]
    NoTasks,
    /// A task with no class.
    #[error("a task has 0 classes; every task needs at least one")]
    NoClasses,
    /// Sinusoidal positional encoding needs an even width.
    #[error(
        "positional encoding needs an even embedding width, got D = {0}; turn `aggregator.positional` off or give the encoder an even output width (`encoder.width`, `encoder.projector`)"
    )]
    OddWidth(usize),
}
