//! Datasets of huge single-image samples for dbps.
//!
//! - [`SyntheticDigits`]: the embedded default, needing no files: one procedurally drawn digit
//!   (random stroke jitter, thickness, slant, scale) on a large canvas of noise and clutter strokes.
//! - [`MegapixelMnist`]: the IPS benchmark (method.md §11) built from IDX digit files, with the
//!   majority / max / top / multi tasks and disjoint digit pools per split.
//!
//! Both generate each canvas from `(seed, index)` on demand, so they cost no memory and are
//! identical on every machine.
//!
//! ```
//! use burn::data::dataset::Dataset;
//! use dbps_data::{SyntheticDigits, SyntheticDigitsConfig, Split};
//!
//! let data = SyntheticDigits::new(&SyntheticDigitsConfig::default(), Split::Train).unwrap();
//! let sample = data.get(0).unwrap();
//! assert_eq!(sample.image.len(), sample.height * sample.width);
//! assert!(sample.image.iter().all(|v| (0.0..=1.0).contains(v)));
//! ```

mod canvas;
mod error;
mod glyphs;
mod idx;
mod mnist;
mod sample;
mod synthetic;

pub use canvas::Canvas;
pub use error::DataError;
pub use idx::{IdxDigits, read_idx_digits};
pub use mnist::{MegapixelMnist, MegapixelMnistConfig};
pub use sample::{Sample, Split, Target, TaskKind, TaskSpec};
pub use synthetic::{SyntheticDigits, SyntheticDigitsConfig};
