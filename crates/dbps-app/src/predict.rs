//! `dbps predict`: class probabilities of new images from the best checkpoints of a run. The
//! engine rebuilds each method ([`TrainedMethod`]); this module reads images and slides into
//! it ([`Predict`]) and reports.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use dbps_data::{FileInput, Sample, TaskKind, TaskSpec, image_files};
use dbps_slide::{Resolution, Slide, SlideReader, SlideView, TissueMask};
use dbps_tiling::{HostImages, PatchGrid};
use serde::{Deserialize, Serialize};

use dbps_model::PatchClassifier;
use dbps_model::batch::{BatchImages, host_images};
use dbps_model::classifier::{ForwardOutput, Mode};
use dbps_model::progress::progress_bar;
use dbps_model::slide_source::{SlideCandidates, tissue_patches};
use dbps_train::backend::{DeviceChoice, OnBackend};
use dbps_train::checkpoint::method_dirs;
use dbps_train::trained::TrainedMethod;
use dbps_train::{Result, TrainError};

/// What a trained method does with new images: read them as its training data was read,
/// predict them, and (for `explain`) score every candidate.
pub trait Predict<B: Backend> {
    /// Reads an image file as this model's training data was read; a file declaring more than
    /// `max_pixels` is refused from its header.
    fn read(&self, path: &Path, max_pixels: u64) -> Result<Sample>;

    /// The classifier with its patch grid fitted to a `sample`, naming `path` when the image
    /// is too small for one patch.
    fn fitted(&self, path: &Path, sample: &Sample) -> Result<PatchClassifier<B>>;

    /// Class probabilities of a whole-slide image, its patches streamed from disk at the view
    /// `options` asks for (and, with the tissue mask, only patches on tissue).
    fn predict_slide(
        &self,
        slide: &Arc<Slide>,
        options: &SlideOptions,
        device: &B::Device,
    ) -> Result<ImagePrediction>;

    /// [`Predict::predict_slide`], with the attention logits `[1, H, T, K]` over the K
    /// candidates (from the same embeddings), their grid indices and the grid (`explain`).
    fn explain_slide(
        &self,
        slide: &Arc<Slide>,
        options: &SlideOptions,
        device: &B::Device,
    ) -> Result<(ImagePrediction, Tensor<B, 4>, Vec<usize>, PatchGrid)>;

    /// Where this model reads a slide's patches: an explicit `--downsample` (over the
    /// training config's µm/px, with a warning), else the training config's resolution
    /// (`patch.mpp`, or `dataset.slides.downsample`), else full resolution.
    fn resolution(&self, options: &SlideOptions) -> Resolution;

    /// Class probabilities of one image file, with the patches the model looked at; a file
    /// declaring more than `max_pixels` is refused from its header.
    fn predict(&self, path: &Path, max_pixels: u64, device: &B::Device) -> Result<ImagePrediction>;

    /// The prediction record of `out`, a forward pass of `model` over the image at `path`.
    fn prediction(
        &self,
        path: &Path,
        model: &PatchClassifier<B>,
        out: ForwardOutput<B>,
    ) -> ImagePrediction;
}

impl<B: Backend> Predict<B> for TrainedMethod<B> {
    fn read(&self, path: &Path, max_pixels: u64) -> Result<Sample> {
        Ok(file_input(self)?.read(path, max_pixels)?)
    }

    fn fitted(&self, path: &Path, sample: &Sample) -> Result<PatchClassifier<B>> {
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

    fn predict_slide(
        &self,
        slide: &Arc<Slide>,
        options: &SlideOptions,
        device: &B::Device,
    ) -> Result<ImagePrediction> {
        let (model, source, reading) = slide_source(self, slide, options, device)?;
        let out = model.forward_eval_from(&source)?;
        Ok(slide_result(self, slide, &model, &source, reading, out))
    }

    fn explain_slide(
        &self,
        slide: &Arc<Slide>,
        options: &SlideOptions,
        device: &B::Device,
    ) -> Result<(ImagePrediction, Tensor<B, 4>, Vec<usize>, PatchGrid)> {
        let (model, source, reading) = slide_source(self, slide, options, device)?;
        let (out, logits) = model.forward_eval_with_attention(&source)?;
        let prediction = slide_result(self, slide, &model, &source, reading, out);
        let candidates = source.grid_indices().iter().map(|&i| i as usize).collect();
        Ok((prediction, logits, candidates, model.plan().grid))
    }

    fn resolution(&self, options: &SlideOptions) -> Resolution {
        let config = &self.manifest.config;
        let trained = match &config.dataset {
            dbps_train::config::DatasetConfig::Slides(slides) => {
                Some(slides.resolution(config.patch.mpp))
            }
            _ => None,
        };
        match (options.downsample, trained) {
            (Some(d), Some(Resolution::MicronsPerPixel(mpp))) => {
                tracing::warn!(downsample = d, mpp, method = %self.manifest.name(), "--downsample overrides the {mpp} µm/px the model was trained at");
                Resolution::Downsample(d)
            }
            (Some(d), _) => Resolution::Downsample(d),
            (None, Some(trained)) => trained,
            (None, None) => Resolution::Downsample(1.0),
        }
    }

    fn predict(&self, path: &Path, max_pixels: u64, device: &B::Device) -> Result<ImagePrediction> {
        let sample = self.read(path, max_pixels)?;
        let model = self.fitted(path, &sample)?;
        let images = Arc::new(
            host_images(
                std::slice::from_ref(&sample),
                [1, sample.channels, sample.height, sample.width],
            )
            .map_err(dbps_model::ModelError::from)?,
        );
        predict_fitted(self, path, &model, &images, device)
    }

    fn prediction(
        &self,
        path: &Path,
        model: &PatchClassifier<B>,
        out: ForwardOutput<B>,
    ) -> ImagePrediction {
        let tasks = self
            .tasks
            .iter()
            .zip(out.logits)
            .map(|(task, logits)| TaskPrediction::new(task, logits))
            .collect();
        ImagePrediction {
            image: path.to_path_buf(),
            method: self.manifest.name().to_string(),
            epoch: self.manifest.best_epoch,
            size: model.plan().grid.image_size(),
            patches: model.plan().grid.len(),
            tasks,
            salient: patch_indices(out.salient),
            sub_salient: out.sub_salient.map(patch_indices).unwrap_or_default(),
            slide: None,
        }
    }
}

fn file_input<B: Backend>(method: &TrainedMethod<B>) -> Result<FileInput> {
    method.manifest
        .config
        .dataset
        .spec()
        .file_input()
        .ok_or_else(|| TrainError::Checkpoint {
            what: "model",
            path: method.dir.clone(),
            reason: "was trained on feature bags (`feature_bags`), which are not images; score feature files with `dbps eval`".into(),
        })
}

fn slide_result<B: Backend>(
    method: &TrainedMethod<B>,
    slide: &Slide,
    model: &PatchClassifier<B>,
    source: &SlideCandidates<B>,
    reading: SlideReading,
    out: ForwardOutput<B>,
) -> ImagePrediction {
    let mut prediction = method.prediction(slide.path(), model, out);
    prediction.slide = Some(SlideReading {
        tiles_read: source.tiles_read(),
        ..reading
    });
    prediction
}

/// The classifier fitted to the slide view `options` picks, its candidates, and what
/// was read (`tiles_read` counts once the candidates have been read).
fn slide_source<B: Backend>(
    method: &TrainedMethod<B>,
    slide: &Arc<Slide>,
    options: &SlideOptions,
    device: &B::Device,
) -> Result<(PatchClassifier<B>, SlideCandidates<B>, SlideReading)> {
    let path = slide.path();
    let view = SlideView::new(Arc::clone(slide), method.resolution(options))?;
    let level = view.level();
    let l = slide.levels()[level];
    let size = view.size();
    let patch = method.model.plan().grid.patch();
    let model = method.model.for_image_size(size).map_err(|e| TrainError::Input {
        path: path.to_path_buf(),
        reason: format!(
            "level {level} ({}×{} px as read, downsample {:.1}): {e}; the model cuts {patch} px patches, so ask for a level at least that large with a smaller --downsample",
            size[0], size[1], view.level0_per_pixel()
        ),
    })?;
    let grid = model.plan().grid;
    let (order, threshold) = if options.tissue_mask {
        let mask = TissueMask::of_slide(slide)?;
        let pool = tissue_patches(&grid, size, &mask);
        (
            model.plan().candidates_among(&pool, Mode::Eval),
            Some(mask.threshold),
        )
    } else {
        (model.plan().candidates(1, Mode::Eval), None)
    };
    let indices = order.indices;
    if indices.is_empty() {
        return Err(TrainError::Input {
            path: path.to_path_buf(),
            reason: format!(
                "the tissue mask (Otsu threshold {}) keeps no patch; run without --tissue-mask",
                threshold.unwrap_or(0)
            ),
        });
    }
    tracing::info!(slide = %path.display(), level, patches = grid.len(), kept = indices.len(), "reading slide patches");
    let reading = SlideReading {
        level,
        downsample: l.downsample,
        scale: view.scale(),
        level0_per_pixel: view.level0_per_pixel(),
        mpp: view.mpp(),
        reader: slide.reader_name().to_string(),
        grid: GridGeometry::of(&grid),
        patches_skipped: grid.len() - indices.len(),
        tissue_threshold: threshold,
        tiles: l.tile_count(),
        tiles_read: 0,
    };
    let source = SlideCandidates::new(view, grid, indices, file_input(method)?, device.clone())
        .with_progress();
    Ok((model, source, reading))
}

/// [`Predict::predict`] of an image already read into `images` (`[1, C, H, W]`)
/// with the classifier [`Predict::fitted`] to it.
fn predict_fitted<B: Backend>(
    method: &TrainedMethod<B>,
    path: &Path,
    model: &PatchClassifier<B>,
    images: &Arc<HostImages>,
    device: &B::Device,
) -> Result<ImagePrediction> {
    let out = model.forward_eval(&BatchImages::Host {
        images: Arc::clone(images),
        device: device.clone(),
    })?;
    Ok(method.prediction(path, model, out))
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
    /// The names of `classes`, when the training data named its classes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
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
        let labels = if task.class_names.is_empty() {
            Vec::new()
        } else {
            classes.iter().map(|&c| task.class_name(c)).collect()
        };
        Self {
            task: task.name.clone(),
            classes,
            labels,
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
    /// How a whole-slide image was read (absent for ordinary images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slide: Option<SlideReading>,
}

/// How `dbps predict` and `dbps explain` read their inputs: whole-slide images streamed tile
/// by tile, and the pixel budget of ordinary images decoded whole.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlideOptions {
    /// The most pixels an ordinary image may declare (see [`dbps_data::DEFAULT_MAX_PIXELS`]).
    pub max_pixels: u64,
    /// Requested downsample of level 0: the most reduced level not coarser than this is read.
    /// `None`: the resolution the model was trained at (see [`TrainedMethod::resolution`]).
    pub downsample: Option<f64>,
    /// Which reader opens slides.
    pub reader: SlideReader,
    /// Encode only patches on tissue (Otsu threshold on a thumbnail).
    pub tissue_mask: bool,
    /// Bytes of decoded tiles kept in memory.
    pub cache_bytes: usize,
}

impl Default for SlideOptions {
    fn default() -> Self {
        Self {
            max_pixels: dbps_data::DEFAULT_MAX_PIXELS,
            downsample: None,
            reader: SlideReader::Auto,
            tissue_mask: false,
            cache_bytes: 64 << 20,
        }
    }
}

/// The patch grid in the pixels the model saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GridGeometry {
    /// Patch rows.
    pub rows: usize,
    /// Patch columns.
    pub cols: usize,
    /// Patch side p.
    pub patch: usize,
    /// Distance between patch origins.
    pub stride: usize,
}

impl GridGeometry {
    /// The geometry of `grid`.
    pub fn of(grid: &PatchGrid) -> Self {
        Self {
            rows: grid.rows(),
            cols: grid.cols(),
            patch: grid.patch(),
            stride: grid.stride(),
        }
    }

    /// `[y, x]` of patch `index`'s top-left pixel.
    pub fn origin(&self, index: usize) -> [usize; 2] {
        [
            index / self.cols.max(1) * self.stride,
            index % self.cols.max(1) * self.stride,
        ]
    }
}

/// How one slide was read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlideReading {
    /// Pyramid level read (0 = full resolution).
    pub level: usize,
    /// Its downsample of level 0.
    pub downsample: f64,
    /// Level pixels per pixel the model saw (1: the level as it is; above 1 when a µm/px
    /// resolution fell between levels).
    #[serde(default = "one")]
    pub scale: f64,
    /// Level-0 pixels per pixel the model saw: grid coordinates times this are level-0
    /// coordinates (QuPath's).
    #[serde(default)]
    pub level0_per_pixel: f64,
    /// µm per pixel the model saw, when the slide states its resolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mpp: Option<f64>,
    /// The reader: `builtin` or `openslide`.
    #[serde(default)]
    pub reader: String,
    /// The patch grid over the pixels the model saw.
    #[serde(default)]
    pub grid: GridGeometry,
    /// Grid patches the tissue mask left out as background (never read or encoded).
    pub patches_skipped: usize,
    /// The mask's Otsu threshold, when a mask was used.
    pub tissue_threshold: Option<u8>,
    /// Tiles in the level.
    pub tiles: usize,
    /// Distinct tiles of the level its patches lay on (tiles under skipped patches only are
    /// never read).
    pub tiles_read: usize,
}

fn one() -> f64 {
    1.0
}

/// Everything `dbps predict` found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictReport {
    /// Backend and device.
    pub device: String,
    /// Peak resident memory of the process in MiB (Linux's VmHWM), read when prediction ended.
    pub peak_resident_mib: Option<f64>,
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
                let classes: Vec<String> = if t.labels.is_empty() {
                    t.classes.iter().map(|c| c.to_string()).collect()
                } else {
                    t.labels.clone()
                };
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
        for p in &self.predictions {
            if let Some(r) = &p.slide {
                let resolution = r.mpp.map_or(String::new(), |m| format!(", {m:.3} µm/px"));
                out += &format!(
                    "{} ({}): level {} (downsample {:.1}{resolution}, {}×{} px read by the {} reader), {} of {} patches skipped as background, {} of {} tiles read\n",
                    name(&p.image),
                    p.method,
                    r.level,
                    r.downsample,
                    p.size[0],
                    p.size[1],
                    match r.reader.as_str() {
                        "openslide" => "OpenSlide",
                        _ => "built-in",
                    },
                    r.patches_skipped,
                    p.patches,
                    r.tiles_read,
                    r.tiles
                );
            }
        }
        if let Some(mib) = self.peak_resident_mib {
            out += &format!("peak resident memory: {mib:.0} MiB\n");
        }
        out
    }
}

/// The best checkpoints of every method of a run, opened once, predicting file after file.
#[derive(Debug)]
pub struct Predictor<B: Backend> {
    methods: Vec<TrainedMethod<B>>,
    slides: SlideOptions,
    device: B::Device,
}

impl<B: Backend> Predictor<B> {
    /// Opens the best checkpoint of every method under `checkpoint` (a run directory or one
    /// method folder).
    pub fn open(checkpoint: &Path, slides: &SlideOptions, device: &B::Device) -> Result<Self> {
        let methods = method_dirs(checkpoint)?
            .iter()
            .map(|dir| TrainedMethod::<B>::open(dir, device))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            methods,
            slides: *slides,
            device: device.clone(),
        })
    }

    /// The methods, in name order.
    pub fn methods(&self) -> &[TrainedMethod<B>] {
        &self.methods
    }

    /// What every method predicts for one file (an image, or a tiled TIFF read as a slide).
    pub fn predict_file(&self, file: &Path) -> Result<Vec<ImagePrediction>> {
        let slide = open_slide(file, &self.slides)?;
        let predictions = self
            .methods
            .iter()
            .map(|method| match &slide {
                Some(slide) => method.predict_slide(slide, &self.slides, &self.device),
                None => method.predict(file, self.slides.max_pixels, &self.device),
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(reading) = predictions.last().and_then(|p| p.slide.as_ref()) {
            tracing::info!(slide = %file.display(), skipped = reading.patches_skipped, tiles_read = reading.tiles_read, tiles = reading.tiles, "slide read");
        }
        Ok(predictions)
    }
}

/// Predicts every image of `inputs` (files, or folders of images) with every method under
/// `checkpoint` (a run directory or one method folder); tiled TIFFs are streamed as slides.
pub fn predict<B: Backend>(
    checkpoint: &Path,
    inputs: &[PathBuf],
    slides: &SlideOptions,
    device: &B::Device,
    device_name: &str,
) -> Result<PredictReport> {
    let files = image_files(inputs)?;
    let predictor = Predictor::<B>::open(checkpoint, slides, device)?;
    let bar = progress_bar(files.len() * predictor.methods().len(), "predict");
    let mut predictions = Vec::with_capacity(files.len() * predictor.methods().len());
    for file in &files {
        let found = predictor.predict_file(file)?;
        bar.inc(found.len() as u64);
        predictions.extend(found);
    }
    bar.finish_and_clear();
    Ok(PredictReport {
        device: device_name.to_string(),
        peak_resident_mib: peak_resident_mib(),
        predictions,
    })
}

/// [`predict`] on the backend of `device`.
pub fn predict_on(
    device: DeviceChoice,
    checkpoint: &Path,
    inputs: &[PathBuf],
    slides: &SlideOptions,
) -> Result<PredictReport> {
    struct Run<'a>(&'a Path, &'a [PathBuf], &'a SlideOptions);
    impl OnBackend for Run<'_> {
        type Output = Result<PredictReport>;
        fn run<B: Backend>(self, device: B::Device, name: &str) -> Self::Output {
            predict::<B>(self.0, self.1, self.2, &device, name)
        }
    }
    device.dispatch(Run(checkpoint, inputs, slides))
}

/// The file as a slide when a reader takes it as one (a tiled TIFF; with OpenSlide, any
/// format it recognises); `None` for an ordinary image.
pub(crate) fn open_slide(path: &Path, options: &SlideOptions) -> Result<Option<Arc<Slide>>> {
    Ok(Slide::open_if_slide(path, options.reader, options.cache_bytes)?.map(Arc::new))
}

/// The process's peak resident set in MiB (`VmHWM` in `/proc/self/status`; Linux only).
pub fn peak_resident_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
