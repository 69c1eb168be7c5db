//! The datasets a run config can name, and what a run needs to know of each.
//!
//! Adding a dataset takes one [`DatasetSpec`] impl on its config type and one line in the
//! [`datasets!`] list below, which makes the [`DatasetConfig`] arm (the JSON key) and its
//! dispatch; nothing else in the workspace matches on the kind of dataset.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{
    DataError, FeatureBags, FeatureBagsConfig, FileInput, ImageFolder, ImageFolderConfig,
    ImageSource, MegapixelMnist, MegapixelMnistConfig, SlideSet, SlidesConfig, Split,
    SyntheticDigits, SyntheticDigitsConfig, SyntheticMajority, SyntheticMajorityConfig, TaskSpec,
    ToyBarsConfig, open_traffic_signs,
};

/// The three splits of a dataset, train, valid and test.
pub type OpenSplits = [Arc<dyn ImageSource>; 3];

/// How the images of a dataset are laid out, which decides how they are cut into patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataLayout {
    /// Every image has the size [`DatasetSpec::image_size`] gives: one patch grid for all.
    FixedSize,
    /// Bags of precomputed patch features, one row of features per bag: a grid of 1-px
    /// patches per bag.
    FeatureBags,
    /// Slides of different sizes, read patch by patch: a grid per slide.
    Slides,
}

/// What a run needs to know of a dataset, implemented by the dataset's config type.
pub trait DatasetSpec {
    /// Opens the train, valid and test splits, slides at `mpp` µm per pixel when given.
    /// `prepared(split, done, total)` follows long preparations (headers read, masks
    /// computed) for a progress bar.
    fn open_splits(
        &self,
        mpp: Option<f64>,
        prepared: &mut dyn FnMut(Split, usize, usize),
    ) -> Result<OpenSplits, DataError>;

    /// What [`DatasetSpec::open_splits`] counts while it prepares (`images`, `slides`), for
    /// the progress bar's label.
    fn counts(&self) -> &'static str {
        "images"
    }

    /// How the images are laid out.
    fn layout(&self) -> DataLayout {
        DataLayout::FixedSize
    }

    /// `[H, W]` of every image, for [`DataLayout::FixedSize`] datasets; `None` otherwise.
    fn image_size(&self) -> Option<[usize; 2]>;

    /// The setting that fixes the image size, under the dataset's key (`canvas`,
    /// `height/width`); `None` when images differ in size.
    fn size_setting(&self) -> Option<&'static str> {
        None
    }

    /// How a new image file (or a slide's pixels) is fed to a model trained on this dataset,
    /// or `None` when its samples are not images (feature bags).
    fn file_input(&self) -> Option<FileInput>;

    /// The folder the data is read from, or `None` for generated data.
    fn root(&self) -> Option<&Path>;

    /// The tasks, when they are known without reading the data.
    fn known_tasks(&self) -> Option<Vec<TaskSpec>> {
        None
    }
}

/// Opens each split with `open`.
pub(crate) fn each_split<S: ImageSource + 'static>(
    mut open: impl FnMut(Split) -> Result<S, DataError>,
) -> Result<OpenSplits, DataError> {
    Ok([
        Arc::new(open(Split::Train)?),
        Arc::new(open(Split::Valid)?),
        Arc::new(open(Split::Test)?),
    ])
}

/// The JSON key and config type of every dataset: the one list of datasets.
macro_rules! datasets {
    ($( $(#[$doc:meta])* $key:literal => $variant:ident($config:ty), )*) => {
        /// Which dataset a run reads, with its settings: the key names the dataset, the value
        /// holds that dataset's settings.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub enum DatasetConfig {
            $( $(#[$doc])* #[serde(rename = $key)] $variant($config), )*
        }

        impl DatasetConfig {
            /// The dataset's key in a run config (`synthetic_majority`, `slides`, …).
            pub fn key(&self) -> &'static str {
                match self {
                    $( Self::$variant(_) => $key, )*
                }
            }

            /// The dataset's settings as what a run needs to know of them.
            pub fn spec(&self) -> &dyn DatasetSpec {
                match self {
                    $( Self::$variant(config) => config, )*
                }
            }
        }
    };
}

datasets! {
    /// The embedded default: which of two procedural digits is in the majority, among clutter.
    "synthetic_majority" => SyntheticMajority(SyntheticMajorityConfig),
    /// Copies of one procedural digit (class = the digit) among clutter.
    "synthetic_digits" => SyntheticDigits(SyntheticDigitsConfig),
    /// Photographs in class folders, `ROOT/{train,val,test}/<class>/*` (CQU-BPDD, fMoW, …).
    "image_folder" => ImageFolder(ImageFolderConfig),
    /// Swedish traffic signs, the 4-class speed-limit task (`Set1/`, `Set2/`).
    "traffic_signs" => TrafficSigns(TrafficSignsConfig),
    /// Megapixel MNIST from IDX files.
    "megapixel_mnist" => MegapixelMnist(MegapixelMnistConfig),
    /// Bags of precomputed patch features, one file per slide (CAMELYON16).
    "feature_bags" => FeatureBags(FeatureBagsConfig),
    /// Whole-slide images (tiled TIFF/BigTIFF) listed in `labels.csv`, patches read from disk.
    "slides" => Slides(SlidesConfig),
    /// One bar on a dark canvas, its direction the class: the worked example of
    /// `docs/extending.md`.
    "toy_bars" => ToyBars(ToyBarsConfig),
}

impl DatasetConfig {
    /// The JSON path of the setting that fixes the image size (`patch.size` where the
    /// images differ in size and a grid is cut per image).
    pub fn size_key(&self) -> String {
        match self.spec().size_setting() {
            Some(setting) => format!("dataset.{}.{setting}", self.key()),
            None => "patch.size".into(),
        }
    }
}

/// The Swedish traffic signs: the settings of an image folder over `Set1/` and `Set2/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TrafficSignsConfig(pub ImageFolderConfig);

/// A photograph read as the image folder's training data was.
fn photo_input(config: &ImageFolderConfig) -> Option<FileInput> {
    Some(FileInput::Photo {
        height: config.height,
        width: config.width,
    })
}

impl DatasetSpec for SyntheticMajorityConfig {
    fn open_splits(
        &self,
        _: Option<f64>,
        _: &mut dyn FnMut(Split, usize, usize),
    ) -> Result<OpenSplits, DataError> {
        each_split(|split| SyntheticMajority::new(self, split))
    }

    fn image_size(&self) -> Option<[usize; 2]> {
        Some([self.canvas, self.canvas])
    }

    fn size_setting(&self) -> Option<&'static str> {
        Some("canvas")
    }

    fn file_input(&self) -> Option<FileInput> {
        Some(FileInput::Gray)
    }

    fn root(&self) -> Option<&Path> {
        None
    }

    fn known_tasks(&self) -> Option<Vec<TaskSpec>> {
        Some(SyntheticMajority::tasks())
    }
}

impl DatasetSpec for SyntheticDigitsConfig {
    fn open_splits(
        &self,
        _: Option<f64>,
        _: &mut dyn FnMut(Split, usize, usize),
    ) -> Result<OpenSplits, DataError> {
        each_split(|split| SyntheticDigits::new(self, split))
    }

    fn image_size(&self) -> Option<[usize; 2]> {
        Some([self.canvas, self.canvas])
    }

    fn size_setting(&self) -> Option<&'static str> {
        Some("canvas")
    }

    fn file_input(&self) -> Option<FileInput> {
        Some(FileInput::Gray)
    }

    fn root(&self) -> Option<&Path> {
        None
    }

    fn known_tasks(&self) -> Option<Vec<TaskSpec>> {
        Some(SyntheticDigits::tasks())
    }
}

impl DatasetSpec for MegapixelMnistConfig {
    fn open_splits(
        &self,
        _: Option<f64>,
        _: &mut dyn FnMut(Split, usize, usize),
    ) -> Result<OpenSplits, DataError> {
        // One read of the digit files for the three splits.
        let [train, valid, test] = MegapixelMnist::splits(self)?;
        Ok([Arc::new(train), Arc::new(valid), Arc::new(test)])
    }

    fn image_size(&self) -> Option<[usize; 2]> {
        Some([self.canvas, self.canvas])
    }

    fn size_setting(&self) -> Option<&'static str> {
        Some("canvas")
    }

    fn file_input(&self) -> Option<FileInput> {
        Some(FileInput::Gray)
    }

    fn root(&self) -> Option<&Path> {
        Some(&self.digits_dir)
    }

    fn known_tasks(&self) -> Option<Vec<TaskSpec>> {
        Some(MegapixelMnist::tasks())
    }
}

impl DatasetSpec for ImageFolderConfig {
    fn open_splits(
        &self,
        _: Option<f64>,
        prepared: &mut dyn FnMut(Split, usize, usize),
    ) -> Result<OpenSplits, DataError> {
        each_split(|split| {
            ImageFolder::open(self, split, |done, total| prepared(split, done, total))
        })
    }

    fn image_size(&self) -> Option<[usize; 2]> {
        Some([self.height, self.width])
    }

    fn size_setting(&self) -> Option<&'static str> {
        Some("height/width")
    }

    fn file_input(&self) -> Option<FileInput> {
        photo_input(self)
    }

    fn root(&self) -> Option<&Path> {
        Some(&self.root)
    }
}

impl DatasetSpec for TrafficSignsConfig {
    fn open_splits(
        &self,
        _: Option<f64>,
        prepared: &mut dyn FnMut(Split, usize, usize),
    ) -> Result<OpenSplits, DataError> {
        each_split(|split| {
            open_traffic_signs(&self.0, split, |done, total| prepared(split, done, total))
        })
    }

    fn image_size(&self) -> Option<[usize; 2]> {
        self.0.image_size()
    }

    fn size_setting(&self) -> Option<&'static str> {
        Some("height/width")
    }

    fn file_input(&self) -> Option<FileInput> {
        photo_input(&self.0)
    }

    fn root(&self) -> Option<&Path> {
        Some(&self.0.root)
    }
}

impl DatasetSpec for FeatureBagsConfig {
    fn open_splits(
        &self,
        _: Option<f64>,
        _: &mut dyn FnMut(Split, usize, usize),
    ) -> Result<OpenSplits, DataError> {
        each_split(|split| FeatureBags::open(self, split))
    }

    fn layout(&self) -> DataLayout {
        DataLayout::FeatureBags
    }

    fn image_size(&self) -> Option<[usize; 2]> {
        None
    }

    fn file_input(&self) -> Option<FileInput> {
        None
    }

    fn root(&self) -> Option<&Path> {
        Some(&self.root)
    }
}

impl DatasetSpec for SlidesConfig {
    fn open_splits(
        &self,
        mpp: Option<f64>,
        prepared: &mut dyn FnMut(Split, usize, usize),
    ) -> Result<OpenSplits, DataError> {
        each_split(|split| {
            SlideSet::open(self, mpp, split, |done, total| prepared(split, done, total))
        })
    }

    fn counts(&self) -> &'static str {
        "slides"
    }

    fn layout(&self) -> DataLayout {
        DataLayout::Slides
    }

    fn image_size(&self) -> Option<[usize; 2]> {
        None
    }

    fn file_input(&self) -> Option<FileInput> {
        Some(self.input())
    }

    fn root(&self) -> Option<&Path> {
        Some(&self.root)
    }
}
