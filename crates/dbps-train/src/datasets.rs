//! Opening the configured dataset's three splits, and reading them from burn's data loader.

use std::sync::{Arc, Mutex, PoisonError};

use burn::data::dataset::Dataset;
use burn_train::Interrupter;
use dbps_data::{
    DataError, FileInput, ImageFolder, ImageSource, Pixels, Sample, Split, Target, TaskKind,
    TaskSpec,
};

use crate::config::{DatasetConfig, RunConfig};
use crate::renderer::progress_bar;
use crate::{Result, TrainError};

/// The first sample that failed to load, and who to tell.
#[derive(Default)]
struct Failure {
    error: Option<DataError>,
    interrupter: Option<Interrupter>,
}

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failure")
            .field("error", &self.error)
            .field("watched", &self.interrupter.is_some())
            .finish()
    }
}

/// One split of whichever dataset a config names, as burn's data loader reads it.
///
/// burn's `Dataset::get` cannot fail, so a sample that cannot be loaded (a truncated image)
/// is recorded, training is asked to stop, and a blank sample of the right shape stands in for
/// the one batch left; the run then fails naming the file ([`Splits::take_failure`]).
#[derive(Debug, Clone)]
pub struct ImageDataset {
    source: Arc<dyn ImageSource>,
    failure: Arc<Mutex<Failure>>,
    /// The source's samples this split reads (`train.max_images`), or all of them.
    picks: Option<Arc<[usize]>>,
    /// `[H, W]` of the blank that stands in for a sample that failed to load: the source's
    /// size, or one patch for sources whose largest sample could be gigapixel.
    blank_size: [usize; 2],
}

impl ImageDataset {
    /// The split's source.
    pub fn source(&self) -> &dyn ImageSource {
        self.source.as_ref()
    }

    /// The same split reading at most `limit` samples, spread evenly over the source so that
    /// class-sorted sources (image folders) keep every class.
    fn limited(self, limit: Option<usize>) -> Self {
        let len = self.source.len();
        match limit {
            Some(limit) if limit < len => Self {
                picks: Some((0..limit).map(|i| i * len / limit).collect()),
                ..self
            },
            _ => self,
        }
    }

    fn blank(&self) -> Sample {
        let c = self.source.image_size()[0];
        let [h, w] = self.blank_size;
        Sample {
            image: Pixels::F32(vec![0.0; c * h * w]),
            channels: c,
            height: h,
            width: w,
            targets: self
                .source
                .tasks()
                .iter()
                .map(|t| match t.kind {
                    TaskKind::Softmax => Target::Class(0),
                    TaskKind::MultiLabel => Target::MultiHot(vec![false; t.classes]),
                })
                .collect(),
        }
    }
}

impl Dataset<Sample> for ImageDataset {
    fn get(&self, index: usize) -> Option<Sample> {
        let index = match &self.picks {
            Some(picks) => *picks.get(index)?,
            None if index < self.source.len() => index,
            None => return None,
        };
        let [c, h, w] = self.source.image_size();
        let variable = self.source.variable_size();
        let fits = |s: &Sample| {
            s.channels == c
                && ([s.height, s.width] == [h, w] || variable && s.height <= h && s.width <= w)
                && s.image.len() == c * s.height * s.width
        };
        let sample = self.source.sample(index).and_then(|s| {
            if fits(&s) {
                Ok(s)
            } else {
                Err(DataError::Config {
                    field: "dataset",
                    reason: format!(
                        "sample {index} is {}×{}×{} with {} values, but the dataset promised {c}×{h}×{w}; a dataset must emit one size",
                        s.channels,
                        s.height,
                        s.width,
                        s.image.len()
                    ),
                })
            }
        });
        match sample {
            Ok(sample) => Some(sample),
            Err(error) => {
                tracing::error!(%error, "sample {index} could not be loaded; stopping");
                let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(interrupter) = &failure.interrupter {
                    interrupter.stop(Some("a sample could not be loaded"));
                }
                failure.error.get_or_insert(error);
                Some(self.blank())
            }
        }
    }

    fn len(&self) -> usize {
        self.picks
            .as_ref()
            .map_or_else(|| self.source.len(), |p| p.len())
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
    failure: Arc<Mutex<Failure>>,
}

impl DatasetConfig {
    /// Opens the train, valid and test splits, slides at `mpp` µm per pixel when given
    /// (`patch.mpp`): the only place that knows which datasets exist.
    pub fn open(&self, mpp: Option<f64>) -> Result<[Arc<dyn ImageSource>; 3]> {
        fn each<S: ImageSource + 'static>(
            open: impl Fn(Split) -> std::result::Result<S, DataError>,
        ) -> Result<[Arc<dyn ImageSource>; 3]> {
            Ok([
                Arc::new(open(Split::Train)?),
                Arc::new(open(Split::Valid)?),
                Arc::new(open(Split::Test)?),
            ])
        }
        match self {
            Self::SyntheticMajority(c) => each(|s| dbps_data::SyntheticMajority::new(c, s)),
            Self::SyntheticDigits(c) => each(|s| dbps_data::SyntheticDigits::new(c, s)),
            Self::MegapixelMnist(c) => {
                let [train, valid, test] = dbps_data::MegapixelMnist::splits(c)?;
                Ok([Arc::new(train), Arc::new(valid), Arc::new(test)])
            }
            Self::ImageFolder(c) => {
                each(|s| preparing(s, "images", |progress| ImageFolder::open(c, s, progress)))
            }
            Self::TrafficSigns(c) => each(|s| {
                preparing(s, "images", |progress| {
                    dbps_data::open_traffic_signs(c, s, progress)
                })
            }),
            Self::FeatureBags(c) => each(|s| dbps_data::FeatureBags::open(c, s)),
            Self::Slides(c) => each(|s| {
                preparing(s, "slides", |progress| {
                    dbps_data::SlideSet::open(c, mpp, s, progress)
                })
            }),
        }
    }
}

/// Opens one split behind a "preparing <split> <what>" bar that the source's progress
/// callback (`done`, `total`) moves.
fn preparing<S>(
    split: Split,
    what: &str,
    open: impl FnOnce(&mut dyn FnMut(usize, usize)) -> std::result::Result<S, DataError>,
) -> std::result::Result<S, DataError> {
    let bar = progress_bar(0, &format!("preparing {split:?} {what}"));
    let opened = open(&mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    opened
}

impl DatasetConfig {
    /// How a new image file (or a slide's pixels) is fed to a model trained on this dataset
    /// (`dbps predict`, slide datasets), or `None` for feature bags, which are not images.
    pub fn file_input(&self) -> Option<FileInput> {
        match self {
            Self::SyntheticMajority(_) | Self::SyntheticDigits(_) | Self::MegapixelMnist(_) => {
                Some(FileInput::Gray)
            }
            Self::ImageFolder(c) | Self::TrafficSigns(c) => Some(FileInput::Photo {
                height: c.height,
                width: c.width,
            }),
            Self::Slides(c) => Some(c.input()),
            Self::FeatureBags(_) => None,
        }
    }
}

impl Splits {
    /// Opens the dataset a config names and checks its images fit the patch grid and the
    /// encoder, before any run directory exists.
    pub fn open(config: &RunConfig) -> Result<Self> {
        let failure = Arc::new(Mutex::new(Failure::default()));
        let patch = config.patch.size;
        let [train, valid, test] = config.dataset.open(config.patch.mpp)?.map(|source| {
            let [_, h, w] = source.image_size();
            let blank_size = if source.variable_size() {
                [h.min(patch), w.min(patch)]
            } else {
                [h, w]
            };
            ImageDataset {
                source,
                failure: failure.clone(),
                picks: None,
                blank_size,
            }
            .limited(config.train.max_images)
        });
        for (name, split) in [("train", &train), ("valid", &valid), ("test", &test)] {
            if split.source.is_empty() {
                return Err(TrainError::Config {
                    field: "dataset".into(),
                    reason: format!(
                        "the {name} split is empty; give every split at least one image"
                    ),
                });
            }
        }
        for task in train.source.tasks() {
            if matches!(task.kind, TaskKind::Softmax) && task.classes < 2 {
                return Err(TrainError::Config {
                    field: "dataset".into(),
                    reason: format!(
                        "task `{}` has {} class(es) ({}): with one class every prediction is right by construction; give the data at least two classes",
                        task.name,
                        task.classes,
                        task.class_names.join(", ")
                    ),
                });
            }
        }
        let [c, h, w] = train.source.image_size();
        let [want_h, want_w] = config.image_size();
        let channels = config.encoder.in_channels();
        // Bags and slides differ in size; only their channels must agree.
        let size_agrees = [h, w] == [want_h, want_w] || train.source.variable_size();
        if !size_agrees || c != channels {
            return Err(TrainError::Config {
                field: format!("encoder.{}.in_channels", config.encoder.name()),
                reason: if train.source.variable_size() {
                    format!(
                        "the data has {c} channel(s) but the encoder reads {channels}; match the encoder's input channels to the data"
                    )
                } else {
                    format!(
                        "images are {c}×{h}×{w} but the model expects {channels}×{want_h}×{want_w}; match the encoder's input channels to the data"
                    )
                },
            });
        }
        for split in [&train, &valid, &test] {
            if let Some((path, [iw, ih])) = split.source.smallest_file()
                && iw.min(ih) < patch
            {
                return Err(DataError::Folder {
                    path: path.to_path_buf(),
                    problem: format!(
                        "the image is {iw}×{ih} px, smaller than one {patch} px patch"
                    ),
                    fix: "remove it, or use smaller patches (`patch.size`)".into(),
                }
                .into());
            }
        }
        Ok(Self {
            tasks: train.source.tasks(),
            train,
            valid,
            test,
            failure,
        })
    }

    /// Training is stopped through `interrupter` when a sample cannot be loaded.
    pub fn watch(&self, interrupter: &Interrupter) {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .interrupter = Some(interrupter.clone());
    }

    /// The first sample that failed to load since the splits were opened, if any.
    pub fn take_failure(&self) -> Option<DataError> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .error
            .take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_images_spreads_the_picks_over_the_split() {
        let mut config = RunConfig::from_json(crate::config::QUICKSTART, "quickstart").unwrap();
        let full = Splits::open(&config).unwrap();
        config.train.max_images = Some(4);
        let limited = Splits::open(&config).unwrap();
        let n = full.train.len();
        assert!(n > 8, "the quickstart train split has {n} images");
        assert_eq!(limited.train.len(), 4);
        assert_eq!(limited.test.len(), 4.min(full.test.len()));
        assert!(limited.train.get(4).is_none());
        // The fourth pick is sample 3n/4 of the source, not sample 3.
        let picked = limited.train.get(3).unwrap();
        let expected = full.train.get(3 * n / 4).unwrap();
        assert_eq!(picked.targets, expected.targets);
        assert_eq!(picked.image, expected.image);
    }
}
