//! Opening the configured dataset's three splits.

use std::sync::Arc;

use burn::data::dataset::Dataset;
use dbps_data::{MegapixelMnist, Sample, Split, SyntheticDigits, TaskSpec, read_idx_digits};

use crate::config::{DatasetConfig, RunConfig};
use crate::{Result, TrainError};

/// One split of whichever dataset a config names.
#[derive(Debug, Clone)]
pub enum ImageDataset {
    /// The embedded procedural digits.
    Synthetic(SyntheticDigits),
    /// Megapixel MNIST.
    Mnist(MegapixelMnist),
}

impl Dataset<Sample> for ImageDataset {
    fn get(&self, index: usize) -> Option<Sample> {
        match self {
            Self::Synthetic(d) => d.get(index),
            Self::Mnist(d) => d.get(index),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Synthetic(d) => d.len(),
            Self::Mnist(d) => d.len(),
        }
    }
}

/// The train, valid and test splits with the dataset's tasks.
#[derive(Debug, Clone)]
pub struct Splits {
    /// The dataset's tasks, in target order.
    pub tasks: Vec<TaskSpec>,
    /// Training split.
    pub train: ImageDataset,
    /// Model-selection split.
    pub valid: ImageDataset,
    /// Held-out split.
    pub test: ImageDataset,
}

impl Splits {
    /// Opens the dataset a config names and checks its images fit the patch grid.
    pub fn open(config: &RunConfig) -> Result<Self> {
        let (tasks, [train, valid, test]) = match &config.dataset {
            DatasetConfig::SyntheticDigits(c) => {
                let open = |s| SyntheticDigits::new(c, s).map(ImageDataset::Synthetic);
                (
                    SyntheticDigits::tasks(),
                    [open(Split::Train)?, open(Split::Valid)?, open(Split::Test)?],
                )
            }
            DatasetConfig::MegapixelMnist(c) => {
                let digits = Arc::new(read_idx_digits(&c.resolved_digits_dir())?);
                let open =
                    |s| MegapixelMnist::from_digits(c, s, digits.clone()).map(ImageDataset::Mnist);
                (
                    MegapixelMnist::tasks(),
                    [open(Split::Train)?, open(Split::Valid)?, open(Split::Test)?],
                )
            }
        };
        for (name, split) in [("train", &train), ("valid", &valid), ("test", &test)] {
            if split.is_empty() {
                return Err(TrainError::Config {
                    field: "dataset.sizes".into(),
                    reason: format!(
                        "the {name} split is empty; give every split at least one image"
                    ),
                });
            }
        }
        if let Some(sample) = train.get(0) {
            let [h, w] = config.image_size();
            if [sample.height, sample.width] != [h, w]
                || sample.channels != config.encoder.in_channels()
            {
                let channels = config.encoder.in_channels();
                return Err(TrainError::Config {
                    field: format!("encoder.{}.in_channels", config.encoder.name()),
                    reason: format!(
                        "images are {}×{}×{} but the model expects {channels}×{h}×{w}; match the encoder's input channels to the data",
                        sample.channels, sample.height, sample.width
                    ),
                });
            }
        }
        Ok(Self {
            tasks,
            train,
            valid,
            test,
        })
    }
}
