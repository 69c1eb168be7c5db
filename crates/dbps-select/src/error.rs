use thiserror::Error;

/// Why buffer sizes are unusable.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SelectError {
    /// M = 0 selects nothing to classify from.
    #[error("M (salient patches) is 0; set `selection.m` to at least 1")]
    ZeroSalient,
    /// L = 0 would never advance through the patches.
    #[error("L (patches per iteration) is 0; set `selection.l` to at least 1")]
    ZeroChunk,
}
