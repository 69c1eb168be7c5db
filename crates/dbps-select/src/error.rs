use thiserror::Error;

/// Why buffer sizes are unusable.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SelectError {
    /// M = 0 selects nothing to classify from.
    #[error("M (salient patches) is 0; a dual buffer needs M of at least 1")]
    ZeroSalient,
    /// L = 0 would never advance through the patches.
    #[error("L (patches per iteration) is 0; a dual buffer needs L of at least 1")]
    ZeroChunk,
}
