use thiserror::Error;

/// Why an aggregator could not be built from its configuration.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MilError {
    /// A width or count that must be positive is zero.
    #[error("`aggregator.{0}` must be at least 1")]
    Zero(&'static str),
    /// A width or count beyond the aggregator's documented limit (its weights would be sized
    /// by it before anything could fail).
    #[error("`aggregator.{field}` is {value}, more than the {max} an aggregator may have; {why}")]
    TooLarge {
        /// The setting.
        field: &'static str,
        /// Its value.
        value: usize,
        /// The limit.
        max: usize,
        /// What the limit is for.
        why: &'static str,
    },
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
