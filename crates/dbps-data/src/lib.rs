//! Datasets of huge single-image samples for dbps.
//!
//! - [`SyntheticMajority`]: the embedded default, needing no files: which of two procedurally
//!   drawn digits is in the majority among 2–4 × M digits and clutter strokes, one per cell.
//! - [`SyntheticDigits`]: copies of one procedurally drawn digit (random stroke jitter,
//!   thickness, slant, scale) on a large canvas of noise and clutter strokes.
//! - [`SlideSet`]: whole-slide images listed in a `labels.csv`, read patch by patch (through
//!   [`dbps_slide`]) at a chosen level or resolution, background skipped by a tissue mask.
//! - [`FeatureBags`]: precomputed patch features, one `[N_i, D]` file per slide (CAMELYON16).
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
//! use dbps_data::{ImageSource, Pixels, Split, SyntheticMajority, SyntheticMajorityConfig};
//!
//! let data = SyntheticMajority::new(&SyntheticMajorityConfig::default(), Split::Train).unwrap();
//! let sample = data.sample(0).unwrap();
//! let Pixels::F32(values) = &sample.image else { unreachable!("generated canvases are f32") };
//! assert_eq!(values.len(), sample.height * sample.width);
//! assert!(values.iter().all(|v| (0.0..=1.0).contains(v)));
//! ```

#![warn(missing_docs)]

mod canvas;
mod data_path;
mod dataset_spec;
mod error;
mod features;
mod file_input;
mod folder;
mod generated_limits;
mod glyphs;
mod idx;
mod majority;
mod mnist;
mod sample;
mod slide_set;
mod source;
mod synthetic;
mod toy_bars;
mod traffic;
mod train_classes;

pub use canvas::Canvas;
pub use dataset_spec::{DataLayout, DatasetConfig, DatasetSpec, OpenSplits, TrafficSignsConfig};
pub use error::DataError;
pub use features::{
    BAG_CLASSES, FEATURE_EXTENSIONS, FeatureBags, FeatureBagsConfig, FeatureFile, write_npy,
    write_safetensors,
};
pub use file_input::{DEFAULT_MAX_PIXELS, FileInput, image_files};
pub use folder::{IMAGE_EXTENSIONS, ImageFolder, ImageFolderConfig};
pub use generated_limits::MAX_SPLIT_SIZE;
pub use idx::{IdxDigits, read_idx_digits};
pub use majority::{SyntheticMajority, SyntheticMajorityConfig};
pub use mnist::{MegapixelMnist, MegapixelMnistConfig};
pub use sample::{Pixels, Sample, Split, Target, TaskKind, TaskSpec};
pub use slide_set::{SlideImage, SlideSet, SlidesConfig};
pub use source::ImageSource;
pub use synthetic::{SyntheticDigits, SyntheticDigitsConfig};
pub use toy_bars::{ToyBars, ToyBarsConfig};
pub use traffic::{SIGN_CLASSES, open_traffic_signs};
