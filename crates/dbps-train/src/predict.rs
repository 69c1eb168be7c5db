//! `dbps predict`: class probabilities of new images from the best checkpoints of a run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use dbps_data::{FileInput, Sample, TaskKind, TaskSpec, image_files};
use dbps_tiling::HostImages;
use serde::{Deserialize, Serialize};

use crate::batch::host_images;
use crate::build::build_classifier;
use crate::checkpoint::{MethodManifest, load_weights, method_dirs};
use crate::datasets::Splits;
use crate::renderer::progress_bar;
use crate::{BatchImages, PatchClassifier, Result, TrainError, TrainedClassifier, TrainingMonitor};

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
    /// Loads the best checkpoint of a method directory.
    pub fn open(method_dir: &Path, device: &B::Device) -> Result<Self> {
        let manifest = MethodManifest::read(method_dir)?;
        let tasks = if manifest.tasks.is_empty() {
            Splits::open(&manifest.config)?.tasks
        } else {
            manifest.tasks.clone()
        };
        let classifier = build_classifier::<B>(&manifest.config, manifest.method, &tasks, device)?;
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

    /// How this model reads an image file.
    fn file_input(&self) -> Result<FileInput> {
        self.manifest
            .config
            .dataset
            .file_input()
            .ok_or_else(|| TrainError::Checkpoint {
                what: "model",
                path: self.dir.clone(),
                reason: "was trained on feature bags (`feature_bags`), which are not images; score feature files with `dbps eval`".into(),
            })
    }

    /// Reads an image file as this model's training data was read.
    pub fn read(&self, path: &Path) -> Result<Sample> {
        Ok(self.file_input()?.read(path)?)
    }

    /// The classifier with its patch grid fitted to a `sample`, naming `path` when the image
    /// is too small for one patch.
    pub fn fitted(&self, path: &Path, sample: &Sample) -> Result<PatchClassifier<B>> {
        let size = [sample.height, sample.width];
        if self.manifest.config.aggregator.positional && size != self.manifest.config.image_size() {
            tracing::warn!(image = %path.display(), "the model adds patch positions and was trained on {:?} images: positions of a {}×{} image mean other places", self.manifest.config.image_size(), size[0], size[1]);
        }
        self.model
            .for_image_size(size)
            .map_err(|e| TrainError::Input {
                path: path.to_path_buf(),
                reason: format!(
                    "{e}; the model cuts {} px patches, so the image must be at least that on each side",
                    self.model.plan().grid.patch()
                ),
            })
    }

    /// Class probabilities of one image file, with the patches the model looked at.
    pub fn predict(&self, path: &Path, device: &B::Device) -> Result<ImagePrediction> {
        let sample = self.read(path)?;
        let model = self.fitted(path, &sample)?;
        let images = Arc::new(host_images(
            std::slice::from_ref(&sample),
            [1, sample.channels, sample.height, sample.width],
        )?);
        self.predict_fitted(path, &model, &images, device)
    }

    /// [`TrainedMethod::predict`] of an image already read into `images` (`[1, C, H, W]`)
    /// with the classifier [`TrainedMethod::fitted`] to it.
    pub(crate) fn predict_fitted(
        &self,
        path: &Path,
        model: &PatchClassifier<B>,
        images: &Arc<HostImages>,
        device: &B::Device,
    ) -> Result<ImagePrediction> {
        let [_, _, height, width] = images.dims();
        let out = model.forward_eval(&BatchImages::Host {
            images: Arc::clone(images),
            device: device.clone(),
        })?;
        let tasks = self
            .tasks
            .iter()
            .zip(out.logits)
            .map(|(task, logits)| TaskPrediction::new(task, logits))
            .collect();
        Ok(ImagePrediction {
            image: path.to_path_buf(),
            method: self.manifest.name().to_string(),
            epoch: self.manifest.best_epoch,
            size: [height, width],
            patches: model.plan().grid.len(),
            tasks,
            salient: patch_indices(out.salient),
            sub_salient: out.sub_salient.map(patch_indices).unwrap_or_default(),
        })
    }
}

/// The grid indices of one image's picks (`[1, K]`), without the −1 padding of short bags.
fn patch_indices<B: Backend>(indices: Tensor<B, 2, Int>) -> Vec<usize> {
    indices
        .into_data()
        .iter::<i64>()
        .filter_map(|i| usize::try_from(i).ok())
        .collect()
}

/// What one method predicts for one task of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskPrediction {
    /// Task name.
    pub task: String,
    /// The predicted class (softmax tasks), or every class above 0.5 (multi-label tasks).
    pub classes: Vec<usize>,
    /// Probability per class: softmax over classes, or a sigmoid per class for multi-label
    /// tasks.
    pub probabilities: Vec<f64>,
}

impl TaskPrediction {
    fn new<B: Backend>(task: &TaskSpec, logits: Tensor<B, 2>) -> Self {
        let probabilities: Vec<f64> = match task.kind {
            TaskKind::Softmax => softmax(logits, 1),
            TaskKind::MultiLabel => sigmoid(logits),
        }
        .into_data()
        .iter::<f64>()
        .collect();
        let classes = match task.kind {
            TaskKind::Softmax => probabilities
                .iter()
                .enumerate()
                .fold(None::<(usize, f64)>, |best, (i, &p)| match best {
                    Some((_, q)) if q >= p => best,
                    _ => Some((i, p)),
                })
                .map(|(i, _)| vec![i])
                .unwrap_or_default(),
            TaskKind::MultiLabel => (0..probabilities.len())
                .filter(|&i| probabilities[i] > 0.5)
                .collect(),
        };
        Self {
            task: task.name.clone(),
            classes,
            probabilities,
        }
    }
}

/// What one method predicts for one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImagePrediction {
    /// The image file.
    pub image: PathBuf,
    /// Method name.
    pub method: String,
    /// Epoch of the weights used (best on validation).
    pub epoch: usize,
    /// `[height, width]` the model saw.
    pub size: [usize; 2],
    /// Patches N of the image's grid.
    pub patches: usize,
    /// One entry per task.
    pub tasks: Vec<TaskPrediction>,
    /// Grid indices of the M′ salient patches.
    pub salient: Vec<usize>,
    /// Grid indices of the S sub-salient patches (DBPS).
    pub sub_salient: Vec<usize>,
}

/// Everything `dbps predict` found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictReport {
    /// Backend and device.
    pub device: String,
    /// Per image, per method.
    pub predictions: Vec<ImagePrediction>,
}

impl PredictReport {
    /// One row per image, method and task.
    pub fn table(&self) -> String {
        let name = |p: &Path| {
            p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        };
        let width = self
            .predictions
            .iter()
            .map(|p| name(&p.image).chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut out = format!(
            "{:<width$} {:<8} {:<10} {:>10} {:>8}  probabilities\n",
            "image", "method", "task", "prediction", "p"
        );
        for p in &self.predictions {
            for t in &p.tasks {
                let classes: Vec<String> = t.classes.iter().map(|c| c.to_string()).collect();
                let top = t.classes.first().map_or(String::from("–"), |&c| {
                    format!("{:.3}", t.probabilities[c])
                });
                let all: Vec<String> = t.probabilities.iter().map(|q| format!("{q:.3}")).collect();
                out += &format!(
                    "{:<width$} {:<8} {:<10} {:>10} {:>8}  [{}]\n",
                    name(&p.image),
                    p.method,
                    t.task,
                    if classes.is_empty() {
                        "none".into()
                    } else {
                        classes.join(",")
                    },
                    top,
                    all.join(", ")
                );
            }
        }
        out
    }
}

/// Predicts every image of `inputs` (files, or folders of images) with every method under
/// `checkpoint` (a run directory or one method folder).
pub fn predict<B: Backend>(
    checkpoint: &Path,
    inputs: &[PathBuf],
    device: &B::Device,
    device_name: &str,
) -> Result<PredictReport> {
    let files = image_files(inputs)?;
    let methods = method_dirs(checkpoint)?
        .iter()
        .map(|dir| TrainedMethod::<B>::open(dir, device))
        .collect::<Result<Vec<_>>>()?;
    let bar = progress_bar(files.len() * methods.len(), "predict");
    let mut predictions = Vec::with_capacity(files.len() * methods.len());
    for file in &files {
        for method in &methods {
            predictions.push(method.predict(file, device)?);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(PredictReport {
        device: device_name.to_string(),
        predictions,
    })
}
