//! Opening the configured dataset's three splits and checking them against the model.

use burn_train::Interrupter;
use dbps_data::{DataError, DatasetConfig, OpenSplits, Split, TaskKind, TaskSpec};
use dbps_model::image_dataset::{ImageDataset, SampleFailures};
use dbps_model::progress::progress_bar;
use indicatif::ProgressBar;

use crate::config::RunConfig;
use crate::{Result, TrainError};

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
    failures: SampleFailures,
}

/// Opens the dataset's three splits behind "preparing <split> <images|slides>" bars, slides
/// at `mpp` µm per pixel when given.
fn open_splits(dataset: &DatasetConfig, mpp: Option<f64>) -> Result<OpenSplits> {
    let spec = dataset.spec();
    let mut bar: Option<(Split, ProgressBar)> = None;
    let opened = spec.open_splits(mpp, &mut |split, done, total| {
        if bar.as_ref().is_none_or(|(current, _)| *current != split) {
            if let Some((_, done)) = bar.take() {
                done.finish_and_clear();
            }
            let label = format!("preparing {split:?} {}", spec.counts());
            bar = Some((split, progress_bar(total, &label)));
        }
        if let Some((_, bar)) = &bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    });
    if let Some((_, bar)) = bar {
        bar.finish_and_clear();
    }
    Ok(opened?)
}

impl Splits {
    /// Opens the dataset a config names and checks its images fit the patch grid and the
    /// encoder, before any run directory exists.
    pub fn open(config: &RunConfig) -> Result<Self> {
        let failures = SampleFailures::default();
        let patch = config.patch.size;
        let [train, valid, test] = open_splits(&config.dataset, config.patch.mpp)?.map(|source| {
            let [_, h, w] = source.image_size();
            let blank_size = if source.variable_size() {
                [h.min(patch), w.min(patch)]
            } else {
                [h, w]
            };
            ImageDataset::new(source, failures.clone(), blank_size).limited(config.train.max_images)
        });
        for (name, split) in [("train", &train), ("valid", &valid), ("test", &test)] {
            if split.source().is_empty() {
                return Err(TrainError::Config {
                    field: "dataset".into(),
                    reason: format!(
                        "the {name} split is empty; give every split at least one image"
                    ),
                });
            }
        }
        for task in train.source().tasks() {
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
        let [c, h, w] = train.source().image_size();
        let [want_h, want_w] = config.image_size();
        let channels = config.encoder.in_channels();
        // Bags and slides differ in size; only their channels must agree.
        let size_agrees = [h, w] == [want_h, want_w] || train.source().variable_size();
        if !size_agrees || c != channels {
            return Err(TrainError::Config {
                field: format!("encoder.{}.in_channels", config.encoder.name()),
                reason: if train.source().variable_size() {
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
            if let Some((path, [iw, ih])) = split.source().smallest_file()
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
            tasks: train.source().tasks(),
            train,
            valid,
            test,
            failures,
        })
    }

    /// Training is stopped through `interrupter` when a sample cannot be loaded.
    pub fn watch(&self, interrupter: &Interrupter) {
        self.failures.watch(interrupter);
    }

    /// The first sample that failed to load since the splits were opened, if any.
    pub fn take_failure(&self) -> Option<DataError> {
        self.failures.take()
    }
}

#[cfg(test)]
mod tests {
    use burn::data::dataset::Dataset;

    use super::*;

    #[test]
    fn max_images_spreads_the_picks_over_the_split() {
        let mut config = RunConfig::from_json(crate::config::QUICKSTART, "quickstart")
            .unwrap()
            .into_config();
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
