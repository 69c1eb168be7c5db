use thiserror::Error;

/// Why an aggregator could not be built from its configuration. Settings are named as the
/// aggregator knows them (`heads`); the run config adds their JSON path ([`MilError::field`]).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MilError {
    /// A width or count that must be positive is zero.
    #[error("`{0}` must be at least 1")]
    Zero(&'static str),
    /// A width or count beyond the aggregator's documented limit (its weights would be sized
    /// by it before anything could fail).
    #[error("`{field}` is {value}, more than the {max} an aggregator may have; {why}")]
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
        "positional encoding needs an even embedding width, got D = {0}; turn `positional` off or give the encoder an even output width"
    )]
    OddWidth(usize),
}

impl MilError {
    /// The aggregator's setting at fault, if one is (`heads`, `positional`, …); `None` for
    /// what comes from elsewhere (the encoder's width, the dataset's tasks).
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::Zero(field) | Self::TooLarge { field, .. } => Some(field),
            Self::OddWidth(_) => Some("positional"),
            Self::ZeroWidth | Self::NoTasks | Self::NoClasses => None,
        }
    }
}
