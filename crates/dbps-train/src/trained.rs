//! A trained method as its run directory keeps it: the best-on-validation checkpoint rebuilt
//! into a classifier, with its manifest and tasks (what evaluation, prediction and
//! explanation start from).

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use dbps_data::TaskSpec;

use crate::build::build_classifier;
use crate::checkpoint::{MethodManifest, load_weights};
use crate::datasets::Splits;
use dbps_model::PatchClassifier;
use dbps_model::step::{TrainedClassifier, TrainingMonitor};

use crate::Result;

/// A method's best-on-validation weights, rebuilt from its directory.
#[derive(Debug)]
pub struct TrainedMethod<B: Backend> {
    /// The method directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: MethodManifest,
    /// The dataset's tasks, in logit order.
    pub tasks: Vec<TaskSpec>,
    /// The classifier with the best epoch's weights.
    pub model: PatchClassifier<B>,
}

impl<B: Backend> TrainedMethod<B> {
    /// Loads the best checkpoint of a method directory (without reading the torchvision file
    /// the run started from: the checkpoint holds every weight).
    pub fn open(method_dir: &Path, device: &B::Device) -> Result<Self> {
        let (manifest, trained) = MethodManifest::read_checked(method_dir)?;
        let tasks = if manifest.tasks.is_empty() {
            Splits::open(&manifest.config)?.tasks
        } else {
            manifest.tasks.clone()
        };
        let classifier = build_classifier::<B>(&trained, manifest.method, &tasks, device)?;
        let model = load_weights(
            TrainedClassifier::new(classifier, TrainingMonitor::default()),
            &manifest.best_checkpoint(method_dir)?,
            device,
        )?;
        Ok(Self {
            dir: method_dir.to_path_buf(),
            manifest,
            tasks,
            model: model.classifier,
        })
    }
}
