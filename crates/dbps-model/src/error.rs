use std::path::PathBuf;

use thiserror::Error;

/// What can stop a forward pass, a step or a write of this crate; each message names the
/// input and the fix, in this layer's words (no config keys: the config layer adds those).
#[derive(Debug, Error)]
pub enum ModelError {
    /// An image does not fit the patch grid.
    #[error("patch grid: {0}")]
    Tiling(#[from] dbps_tiling::TilingError),
    /// The encoder cannot run on the patches it was given.
    #[error("encoder: {0}")]
    Encoder(#[from] dbps_encoder::EncoderError),
    /// The aggregator cannot run on the embeddings it was given.
    #[error("aggregator: {0}")]
    Mil(#[from] dbps_mil::MilError),
    /// Patch selection cannot run with the plan it was given.
    #[error("patch selection: {0}")]
    Select(#[from] dbps_select::SelectError),
    /// A sample could not be read.
    #[error(transparent)]
    Data(#[from] dbps_data::DataError),
    /// A slide could not be read.
    #[error(transparent)]
    Slide(#[from] dbps_slide::SlideError),
    /// An image cannot be used as it is.
    #[error("{path}: {reason}")]
    Input {
        /// The image file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// Writing a file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Result with a [`ModelError`].
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
