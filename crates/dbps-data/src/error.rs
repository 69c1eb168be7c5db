use std::path::PathBuf;

use thiserror::Error;

/// Why a dataset could not be opened or built.
#[derive(Debug, Error)]
pub enum DataError {
    /// A data file or directory is missing.
    #[error("{what} not found at {path}; {fix}")]
    Missing {
        /// What was looked for.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// What to do about it.
        fix: &'static str,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file is not what it claims to be.
    #[error("{path} is not a valid IDX {kind} file: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// `images` or `labels`.
        kind: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A label lies outside the classes of its task.
    #[error(
        "label {label} of item {index} in {path} is outside 0..{classes}; the file must hold digit labels 0–9"
    )]
    LabelOutOfRange {
        /// The labels file.
        path: PathBuf,
        /// Item index.
        index: usize,
        /// The label.
        label: u8,
        /// Number of classes.
        classes: usize,
    },
    /// A dataset parameter is unusable.
    #[error("config setting `{field}`: {reason}")]
    Config {
        /// The setting, as its key in a run config (`dataset.<kind>.<field>`).
        field: &'static str,
        /// Why it is unusable and what to use instead.
        reason: String,
    },
    /// A sample index past the end of its split.
    #[error("sample {index} asked of a split of {len}; indices run from 0 to len − 1")]
    IndexOutOfRange {
        /// Index asked for.
        index: usize,
        /// Samples in the split.
        len: usize,
    },
    /// A slide could not be opened or read.
    #[error(transparent)]
    Slide(#[from] dbps_slide::SlideError),
    /// A split, class folder or image of an image-folder dataset is unusable.
    #[error("{path}: {problem}; {fix}")]
    Folder {
        /// The folder or file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
        /// What to do about it.
        fix: String,
    },
}
