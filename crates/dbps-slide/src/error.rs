use std::path::PathBuf;

use thiserror::Error;

/// Why a slide could not be opened or read.
#[derive(Debug, Error)]
pub enum SlideError {
    /// The file could not be read at all.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is damaged or not what it claims to be: no reader is tried after this one.
    #[error("{path}: {problem}; {fix}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
        /// What to do about it.
        fix: String,
    },
    /// A well-formed file the built-in reader does not read (its compression, pixel type or
    /// layout); OpenSlide is asked next when dbps has it.
    #[error("{path}: {problem}; {fix}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What the built-in reader does not read.
        problem: String,
        /// What to do about it.
        fix: String,
    },
    /// OpenSlide refused the file or one of its regions.
    #[error("{path}: OpenSlide cannot read it: {message}{context}; {fix}")]
    OpenSlide {
        /// The file.
        path: PathBuf,
        /// What OpenSlide said.
        message: String,
        /// Why OpenSlide was asked (the built-in reader's refusal), or empty.
        context: String,
        /// What to do about it.
        fix: String,
    },
    /// A reader this build does not have was asked for.
    #[error("{what}: {reason}")]
    ReaderMissing {
        /// The setting or option naming the reader.
        what: String,
        /// Why it is not there and how to get it.
        reason: String,
    },
    /// A resolution in µm/px was asked of a slide that does not state its own.
    #[error(
        "{path} states no resolution (no TIFF resolution tags, no Aperio `MPP`, no `openslide.mpp-x`), so a patch of {wanted} µm/px cannot be cut from it; give the level as a downsample instead (`--downsample`, `dataset.slides.downsample`), or drop the slide"
    )]
    NoResolution {
        /// The slide.
        path: PathBuf,
        /// The µm per pixel asked for.
        wanted: f64,
    },
    /// A resolution finer than the slide's finest level was asked for.
    #[error(
        "{path}: a patch of {wanted} µm/px is finer than the slide's level 0 ({finest} µm/px), and dbps does not enlarge pixels; ask for {finest} µm/px or more, or drop the slide"
    )]
    TooCoarse {
        /// The slide.
        path: PathBuf,
        /// The µm per pixel asked for.
        wanted: f64,
        /// The slide's level-0 µm per pixel.
        finest: f64,
    },
}

impl SlideError {
    /// A damaged file, with the usual fix.
    pub(crate) fn damaged(path: &std::path::Path, problem: String) -> Self {
        Self::Damaged {
            path: path.to_path_buf(),
            problem,
            fix: "the file is truncated or damaged; copy or export it again".into(),
        }
    }
}
