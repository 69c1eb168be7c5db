//! Datasets of huge single-image samples for dbps.
//!
//! - [`SyntheticDigits`]: the embedded default, needing no files: one procedurally drawn digit
//!   (random stroke jitter, thickness, slant, scale) on a large canvas of noise and clutter strokes.
//! - [`MegapixelMnist`]: the IPS benchmark (method.md §11) built from IDX digit files, with the
//!   majority / max / top / multi tasks and disjoint digit pools per split.
//! - [`ImageFolder`]: photographs in `ROOT/{train,val,test}/<class>/` (CQU-BPDD, fMoW, MAME,
//!   DDR), decoded, resized, ImageNet-normalised and augmented on demand; the Swedish traffic
//!   signs (`Set1/`, `Set2/`, `annotations.txt`) through [`open_traffic_signs`].
//!
//! The generated ones draw each canvas from `(seed, index)` on demand, so they cost no memory
//! and are identical on every machine.
//!
//! Every dataset is an [`ImageSource`]: what the training loop reads, one split at a time.
//!
//! ```
//! use dbps_data::{ImageSource, Pixels, SyntheticDigits, SyntheticDigitsConfig, Split};
//!
//! let data = SyntheticDigits::new(&SyntheticDigitsConfig::default(), Split::Train).unwrap();
//! let sample = data.sample(0).unwrap();
//! let Pixels::F32(values) = &sample.image else { unreachable!("generated canvases are f32") };
//! assert_eq!(values.len(), sample.height * sample.width);
//! assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
//! ```

mod canvas;
mod error;
mod features;
mod folder;
mod glyphs;
mod idx;
mod majority;
mod mnist;
mod sample;
mod source;
mod synthetic;
mod traffic;

pub use canvas::Canvas;
pub use error::DataError;
pub use features::{
    BAG_CLASSES, FEATURE_EXTENSIONS, FeatureBags, FeatureBagsConfig, FeatureFile, write_npy,
    write_safetensors,
};
pub use folder::{IMAGE_EXTENSIONS, ImageFolder, ImageFolderConfig};
pub use idx::{IdxDigits, read_idx_digits};
pub use majority::{SyntheticMajority, SyntheticMajorityConfig};
pub use mnist::{MegapixelMnist, MegapixelMnistConfig};
pub use sample::{Pixels, Sample, Split, Target, TaskKind, TaskSpec};
pub use source::ImageSource;
pub use synthetic::{SyntheticDigits, SyntheticDigitsConfig};
pub use traffic::{SIGN_CLASSES, open_traffic_signs};
