//! The JSON run configuration (`configs/*.json`) and its validation.

use std::path::{Path, PathBuf};

pub use dbps_data::DatasetConfig;
use dbps_data::{DEFAULT_MAX_PIXELS, DataLayout, FeatureBagsConfig};
use dbps_encoder::{EncoderConfig, EncoderError};
use dbps_mil::{AggregatorConfig, AggregatorKind, AttentionSettings, MilError};
use dbps_select::{BufferRule, DualBuffer, SelectError};
use dbps_tiling::{MAX_PATCHES, PatchDrop, PatchGrid, RemainderPolicy};
use serde::{Deserialize, Serialize};

use dbps_model::classifier::SelectionEngine;
use dbps_model::loss::LossForm;

use crate::{Result, TrainError};

/// The embedded default configuration (`configs/quickstart.json`).
pub const QUICKSTART: &str = include_str!("../../../configs/quickstart.json");

/// A whole run: one dataset, one encoder/aggregator design, several methods trained side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Name of the run (the default output folder is `runs/<name>`).
    pub name: String,
    /// Where checkpoints and metrics go.
    #[serde(default)]
    pub output_dir: Option<PathBuf>,
    /// The dataset.
    pub dataset: DatasetConfig,
    /// How images are cut into patches.
    pub patch: PatchConfig,
    /// The patch encoder.
    pub encoder: EncoderConfig,
    /// The attention settings shared by every method's aggregator.
    #[serde(default)]
    pub aggregator: AttentionSettings,
    /// The methods to train, in order.
    pub methods: Vec<MethodConfig>,
    /// Optimisation settings.
    pub train: TrainConfig,
}

/// Patch geometry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchConfig {
    /// Patch side p in pixels.
    pub size: usize,
    /// Stride in pixels (defaults to the patch size).
    #[serde(default)]
    pub stride: Option<usize>,
    /// What to do with pixels past the last whole patch.
    #[serde(default)]
    pub remainder: RemainderPolicy,
    /// Slides only: the µm per pixel of the patches (`size` px of this resolution), so that one
    /// config serves slides scanned at 20× and 40×; each slide is read at the level closest
    /// from the finer side and resampled exactly. Slides that state no resolution are an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mpp: Option<f64>,
}

/// One method to train: IPS (s = 0, ips aggregator) or DBPS (s > 0, dual attention).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodConfig {
    /// Display name, also the sub-folder of the run directory.
    pub name: String,
    /// Salient patches M.
    pub m: i64,
    /// Salient patches M′ at evaluation (Table 1 trains with M and evaluates with M′); M when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m_eval: Option<i64>,
    /// Sub-salient patches S (0 for IPS).
    #[serde(default)]
    pub s: i64,
    /// Patches per iteration L.
    pub l: i64,
    /// Random patch-drop ratio r ∈ [0, 1), training only.
    #[serde(default)]
    pub drop: f64,
    /// The aggregator.
    #[serde(default)]
    pub aggregator: AggregatorKind,
    /// How selection refills the buffers: `paper` (eq. 3–4, the default) or `authors` (the
    /// DBPS authors' code, which made the paper's numbers; method.md §6).
    #[serde(default)]
    pub selection: BufferRule,
}

/// Optimisation settings (method.md §9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Epochs.
    pub epochs: usize,
    /// Images per optimizer step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up length in epochs (may be fractional).
    pub warmup_epochs: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Shuffle the patch order before selection (breaks ties between identical patches).
    pub shuffle_patches: bool,
    /// Data-loading threads.
    pub workers: usize,
    /// Seed of initialisation, data order, patch drop and shuffling.
    pub seed: u64,
    /// Read at most this many images of each split, spread evenly over it (quick runs such as
    /// `cargo xtask reproduce --quick`); all when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_images: Option<usize>,
    /// What runs the selection pass's encoder (`auto` or `burn`).
    #[serde(default)]
    pub selection_engine: SelectionEngine,
    /// ε of the official IPS loss, NLL of ln(softmax + ε) and BCE on the sigmoid output
    /// (`configs/paper/**` use 1e-6, as the official code); absent: the stable log-softmax and
    /// BCE-with-logits form (method.md §9).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_eps: Option<f64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 16,
            lr: 1e-3,
            warmup_epochs: 1.0,
            weight_decay: 0.1,
            shuffle_patches: true,
            workers: 1,
            seed: 0,
            max_images: None,
            selection_engine: SelectionEngine::default(),
            loss_eps: None,
        }
    }
}

impl TrainConfig {
    /// AdamW as every method trains with it: β = (0.9, 0.999), ε = 1e-8 (PyTorch's defaults,
    /// the official code's choice) and this config's weight decay, applied to every parameter.
    pub fn adamw(&self) -> burn::optim::AdamWConfig {
        burn::optim::AdamWConfig::new()
            .with_beta_1(0.9)
            .with_beta_2(0.999)
            .with_epsilon(1e-8)
            .with_weight_decay(self.weight_decay as f32)
    }

    /// The loss form `loss_eps` asks for.
    pub fn loss_form(&self) -> LossForm {
        match self.loss_eps {
            Some(eps) => LossForm::Official { eps },
            None => LossForm::Stable,
        }
    }
}

/// A method's settings once checked: sizes as counts, the drop as a [`PatchDrop`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MethodPlan {
    /// The M/S/L buffers of training.
    pub buffer: DualBuffer,
    /// The M′/S/L buffers of evaluation.
    pub eval_buffer: DualBuffer,
    /// Training-time patch drop.
    pub drop: PatchDrop,
    /// The aggregator.
    pub aggregator: AggregatorKind,
}

/// Settings given on the command line, written into a config's JSON before it is parsed and
/// checked, so that they are checked with the rest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigOverrides {
    /// `train.epochs` (`--epochs`).
    pub epochs: Option<usize>,
    /// `train.seed` (`--seed`).
    pub seed: Option<u64>,
    /// The encoder's `weights` (`--weights`).
    pub weights: Option<PathBuf>,
}

impl ConfigOverrides {
    /// Writes the overrides into a config's JSON (the encoder's under its one key).
    fn apply(&self, value: &mut serde_json::Value) {
        if let Some(epochs) = self.epochs {
            value["train"]["epochs"] = epochs.into();
        }
        if let Some(seed) = self.seed {
            value["train"]["seed"] = seed.into();
        }
        if let Some(weights) = &self.weights
            && let Some(encoder) = value["encoder"].as_object_mut()
            && let Some(settings) = encoder.values_mut().next()
        {
            settings["weights"] = weights.to_string_lossy().into_owned().into();
        }
    }
}

/// A run config whose every setting has been checked ([`RunConfig::check`]), with what the
/// checks computed: the patch grid, each method's plan and the embedding width D. It reads as
/// the config it holds and cannot be changed, so nothing computed from it goes stale.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedRun {
    config: RunConfig,
    grid: PatchGrid,
    plans: Vec<MethodPlan>,
    embed_dim: usize,
}

impl CheckedRun {
    /// The patch grid over the dataset's images (one patch for datasets whose images differ in
    /// size: each image gets a grid of its own).
    pub fn grid(&self) -> PatchGrid {
        self.grid
    }

    /// The checked plan of method `index`.
    pub fn plan(&self, index: usize) -> MethodPlan {
        self.plans[index]
    }

    /// The embedding width D the encoder will output.
    pub fn embed_dim(&self) -> usize {
        self.embed_dim
    }

    /// The config, to change and check again.
    pub fn into_config(self) -> RunConfig {
        self.config
    }
}

impl std::ops::Deref for CheckedRun {
    type Target = RunConfig;

    fn deref(&self) -> &RunConfig {
        &self.config
    }
}

impl Serialize for CheckedRun {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        self.config.serialize(serializer)
    }
}

/// The largest patch side, in pixels.
pub const MAX_PATCH_SIDE: usize = 4096;
/// The most epochs a run may ask for.
pub const MAX_EPOCHS: usize = 1_000_000;
/// The largest batch, in images.
pub const MAX_BATCH: usize = 4096;
/// The most data-loading threads.
pub const MAX_WORKERS: usize = 1024;

/// An aggregator setting's error under its JSON path (`aggregator.heads`).
fn aggregator_error(e: MilError) -> TrainError {
    match e.field() {
        Some(field) => config_error(format!("aggregator.{field}"), e.to_string()),
        None => config_error("aggregator", e.to_string()),
    }
}

fn config_error(field: impl Into<String>, reason: impl Into<String>) -> TrainError {
    TrainError::Config {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Checks that a name from a config, which becomes a folder name, is one plain path component —
/// not empty, not `.` or `..`, without a path separator or a control character — so that no
/// config makes a run write into, or prune, a folder outside its own run directory.
fn folder_name(field: String, name: &str) -> Result<()> {
    let problem = if name.trim().is_empty() {
        "is empty".to_string()
    } else if name == "." || name == ".." {
        format!("`{name}` names the run directory or the one above it")
    } else if let Some(c) = name
        .chars()
        .find(|&c| c == '/' || c == '\\' || c.is_control())
    {
        format!("`{}` contains {c:?}", name.escape_debug())
    } else {
        return Ok(());
    };
    Err(config_error(
        field,
        format!(
            "{problem}: the name becomes a folder of the run, so it must be one plain folder name (letters, digits, spaces, '-', '_', '.'), e.g. \"DBPS-r0.3\""
        ),
    ))
}

impl RunConfig {
    /// Reads and checks a config file.
    pub fn from_file(path: &Path) -> Result<CheckedRun> {
        Self::from_file_with(path, &ConfigOverrides::default())
    }

    /// Reads a config file, applies command-line overrides to its JSON and checks the result.
    pub fn from_file_with(path: &Path, overrides: &ConfigOverrides) -> Result<CheckedRun> {
        let text = std::fs::read_to_string(path).map_err(|source| TrainError::ConfigIo {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_with(&text, &path.display().to_string(), overrides)
    }

    /// The embedded quickstart config, checked.
    pub fn quickstart() -> Result<CheckedRun> {
        Self::quickstart_with(&ConfigOverrides::default())
    }

    /// The embedded quickstart config with command-line overrides, checked.
    pub fn quickstart_with(overrides: &ConfigOverrides) -> Result<CheckedRun> {
        Self::from_json_with(
            QUICKSTART,
            "embedded default (configs/quickstart.json)",
            overrides,
        )
    }

    /// Parses and checks config text; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<CheckedRun> {
        Self::from_json_with(text, origin, &ConfigOverrides::default())
    }

    /// Parses config text with `overrides` written into its JSON, then checks it once.
    pub fn from_json_with(
        text: &str,
        origin: &str,
        overrides: &ConfigOverrides,
    ) -> Result<CheckedRun> {
        let syntax = |source| TrainError::ConfigSyntax {
            origin: origin.to_string(),
            source,
        };
        let mut value: serde_json::Value = serde_json::from_str(text).map_err(syntax)?;
        let plain = overrides.weights.is_some().then(|| value.clone());
        overrides.apply(&mut value);
        let config: Self = match serde_json::from_value(value) {
            Ok(config) => config,
            // A weight file for an encoder that takes none is the option's fault, not the file's.
            Err(error) => match plain.map(serde_json::from_value::<Self>) {
                Some(Ok(config)) => {
                    return Err(TrainError::Option {
                        option: "--weights",
                        reason: format!(
                            "encoder `{}` has no torchvision weights to load; drop --weights, or use a ResNet",
                            config.encoder.name()
                        ),
                    });
                }
                _ => return Err(syntax(error)),
            },
        };
        config.check()
    }

    /// Image size `[H, W]` of the dataset: one 1-px patch for feature bags (each bag is a
    /// `1 × N_i` row with a grid of its own, see `bags`), one patch for slides (each has a
    /// grid of its own; this one only checks the geometry).
    pub fn image_size(&self) -> [usize; 2] {
        match self.dataset.spec().image_size() {
            Some(size) => size,
            None if self.bags() => [1, 1],
            None => [self.patch.size, self.patch.size],
        }
    }

    /// How the dataset's images are laid out.
    pub fn layout(&self) -> DataLayout {
        self.dataset.spec().layout()
    }

    /// True for bags of precomputed features: each bag is cut into its own `1 × N_i` grid of
    /// 1-px patches (see [`RunConfig::grid_per_image`]).
    pub fn bags(&self) -> bool {
        self.layout() == DataLayout::FeatureBags
    }

    /// True when N differs from image to image (feature bags, slides): there is no one patch
    /// grid; each image is cut into a grid of its own and M and S are capped at what an image
    /// holds.
    pub fn grid_per_image(&self) -> bool {
        self.layout() != DataLayout::FixedSize
    }

    /// The patch grid over the dataset's images.
    pub fn grid(&self) -> Result<PatchGrid> {
        let stride = self.patch.stride.unwrap_or(self.patch.size);
        PatchGrid::new(
            self.image_size(),
            self.patch.size,
            stride,
            self.patch.remainder,
        )
        .map_err(|e| {
            let key = if self.patch.size > 0 && stride == 0 {
                "patch.stride"
            } else {
                "patch.size"
            };
            config_error(key, e.to_string())
        })
    }

    /// Checks every setting, so that bad input fails before any work starts, and keeps what
    /// the checks computed (the grid, each method's plan, D) for everything that runs after.
    pub fn check(self) -> Result<CheckedRun> {
        folder_name("name".into(), &self.name)?;
        self.validate_geometry()?;
        let grid = self.grid()?;
        // The most salient patches an image can supply: N, unbounded when each image has a
        // grid of its own.
        let n = if self.grid_per_image() {
            usize::MAX
        } else {
            grid.len()
        };
        self.encoder.validate().map_err(|e| self.encoder_error(e))?;
        if let DatasetConfig::FeatureBags(bags) = &self.dataset {
            self.validate_bags(bags)?;
        }
        if self.layout() == DataLayout::Slides && self.aggregator.positional {
            return Err(config_error(
                "aggregator.positional",
                "slides differ in size, so a patch's grid index means a different place on each; set it to false",
            ));
        }
        if self.methods.is_empty() {
            return Err(config_error(
                "methods",
                "no method listed; add at least one, e.g. {\"name\": \"IPS\", \"m\": 10, \"l\": 20}",
            ));
        }
        let mut plans = Vec::with_capacity(self.methods.len());
        for (i, method) in self.methods.iter().enumerate() {
            folder_name(format!("methods[{i}].name"), &method.name)?;
            plans.push(self.method_plan(i, n)?);
            if self.methods[..i].iter().any(|m| m.name == method.name) {
                return Err(config_error(
                    format!("methods[{i}].name"),
                    format!(
                        "`{}` is used twice; give each method its own name",
                        method.name
                    ),
                ));
            }
        }
        let t = &self.train;
        for (key, value, max, why) in [
            (
                "train.epochs",
                t.epochs,
                MAX_EPOCHS,
                "the papers train for 50 to 150",
            ),
            (
                "train.batch_size",
                t.batch_size,
                MAX_BATCH,
                "the papers use 16",
            ),
        ] {
            if !(1..=max).contains(&value) {
                return Err(config_error(
                    key,
                    format!("{value} must lie in 1..={max}; {why}"),
                ));
            }
        }
        if t.workers > MAX_WORKERS {
            return Err(config_error(
                "train.workers",
                format!(
                    "{} must lie in 0..={MAX_WORKERS}; one loader thread per core is plenty",
                    t.workers
                ),
            ));
        }
        if let Some(eps) = t.loss_eps
            && !(eps.is_finite() && eps > 0.0 && eps < 1.0)
        {
            return Err(config_error(
                "train.loss_eps",
                format!(
                    "{eps} is not in (0, 1); the official code uses 1e-6, or leave it out for the stable loss"
                ),
            ));
        }
        if t.max_images == Some(0) {
            return Err(config_error(
                "train.max_images",
                "must be at least 1, or absent to read every image",
            ));
        }
        if !(t.lr.is_finite() && t.lr > 0.0 && t.lr <= 1.0) {
            return Err(config_error(
                "train.lr",
                format!(
                    "{} must lie in (0, 1]; AdamW's rate is a step size per update (the papers use 2.5e-4 to 1e-3)",
                    t.lr
                ),
            ));
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0 && t.lr * t.weight_decay < 1.0) {
            return Err(config_error(
                "train.weight_decay",
                format!(
                    "{} must be 0 or more with lr·weight_decay below 1 (lr = {}): AdamW multiplies each weight by 1 − lr·weight_decay every step, so a negative decay grows the weights and lr·weight_decay ≥ 1 zeroes or flips them; the papers use 0.1",
                    t.weight_decay, t.lr
                ),
            ));
        }
        if !(t.warmup_epochs.is_finite() && t.warmup_epochs >= 0.0) {
            return Err(config_error(
                "train.warmup_epochs",
                format!("{} must be 0 or more", t.warmup_epochs),
            ));
        }
        if t.warmup_epochs >= t.epochs as f64 {
            return Err(config_error(
                "train.warmup_epochs",
                format!(
                    "{} warm-up epochs leave none of the {} epochs for the cosine decay, so the rate would never fall; use fewer than `train.epochs`",
                    t.warmup_epochs, t.epochs
                ),
            ));
        }
        for (field, p) in [
            ("aggregator.dropout", self.aggregator.dropout),
            ("aggregator.attn_dropout", self.aggregator.attn_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(config_error(field, format!("{p} must lie in [0, 1)")));
            }
        }
        // The widths the model will really have: the encoder's output is the aggregator's input.
        let embed_dim = self
            .encoder
            .embed_dim()
            .map_err(|e| self.encoder_error(e))?;
        self.aggregator_config(AggregatorKind::Ips, embed_dim, vec![1])
            .validate()
            .map_err(aggregator_error)?;
        Ok(CheckedRun {
            config: self,
            grid,
            plans,
            embed_dim,
        })
    }

    /// What feature bags need: 1-px patches, the identity encoder at the files' width, no
    /// grid positions.
    fn validate_bags(&self, bags: &FeatureBagsConfig) -> Result<()> {
        if self.patch.size != 1 || self.patch.stride.is_some_and(|s| s != 1) {
            return Err(config_error(
                "patch.size",
                "feature bags hold one patch per column: use `\"patch\": { \"size\": 1 }`",
            ));
        }
        match &self.encoder {
            EncoderConfig::Identity(c) if c.feature_dim == bags.feature_dim => {}
            EncoderConfig::Identity(c) => {
                return Err(config_error(
                    "encoder.identity.feature_dim",
                    format!(
                        "{} differs from dataset.feature_bags.feature_dim = {}; the encoder reads the files' features as they are",
                        c.feature_dim, bags.feature_dim
                    ),
                ));
            }
            other => {
                return Err(config_error(
                    "encoder",
                    format!(
                        "`{}` cannot read precomputed features; use {{\"identity\": {{\"feature_dim\": {}, \"projector\": 512}}}}",
                        other.name(),
                        bags.feature_dim
                    ),
                ));
            }
        }
        if self.aggregator.positional {
            return Err(config_error(
                "aggregator.positional",
                "feature bags carry no patch positions; set it to false",
            ));
        }
        Ok(())
    }

    /// Patch side, stride and image size within their limits, checked before any grid is
    /// laid over them.
    fn validate_geometry(&self) -> Result<()> {
        let p = self.patch.size;
        if p > MAX_PATCH_SIDE {
            return Err(config_error(
                "patch.size",
                format!(
                    "{p} px is more than the {MAX_PATCH_SIDE} px a patch may be; the papers cut 28 to 256 px patches"
                ),
            ));
        }
        if let Some(stride) = self.patch.stride
            && p > 0
            && !(1..=p).contains(&stride)
        {
            return Err(config_error(
                "patch.stride",
                format!(
                    "{stride} must lie in 1..={p} (the patch size): a larger stride leaves pixels that no patch sees"
                ),
            ));
        }
        if let Some(mpp) = self.patch.mpp {
            if self.layout() != DataLayout::Slides {
                return Err(config_error(
                    "patch.mpp",
                    "a resolution in µm per pixel applies to slides (`dataset.slides`) only; drop it",
                ));
            }
            if !(mpp.is_finite() && mpp > 0.0 && mpp <= 100.0) {
                return Err(config_error(
                    "patch.mpp",
                    format!(
                        "{mpp} µm per pixel must lie in (0, 100] (0.25 is a 40× scan, 0.5 a 20× scan)"
                    ),
                ));
            }
        }
        let [h, w] = self.image_size();
        let pixels = (h as u64).saturating_mul(w as u64);
        if pixels > DEFAULT_MAX_PIXELS {
            return Err(config_error(
                self.dataset.size_key(),
                format!(
                    "{h}×{w} px is more than the {DEFAULT_MAX_PIXELS} pixels an image decoded whole may have; larger images belong in tiled slides (`dataset.slides`), read patch by patch"
                ),
            ));
        }
        Ok(())
    }

    /// An encoder setting's error under its JSON path (`encoder.resnet18.width`).
    fn encoder_error(&self, e: EncoderError) -> TrainError {
        let name = self.encoder.name();
        match e.field() {
            Some(field) => config_error(format!("encoder.{name}.{field}"), e.to_string()),
            None => config_error(format!("encoder.{name}"), e.to_string()),
        }
    }

    /// The checked plan of method `i` over a grid of `n` patches.
    fn method_plan(&self, i: usize, n: usize) -> Result<MethodPlan> {
        let method = &self.methods[i];
        let field = |name: &str| format!("methods[{i}].{name}");
        let count = |name: &str, value: i64, what: &str| -> Result<usize> {
            usize::try_from(value)
                .map_err(|_| config_error(field(name), format!("{value} is negative; {what}")))
        };
        let m = count("m", method.m, "M counts salient patches, use 1 or more")?;
        let s = count(
            "s",
            method.s,
            "S counts sub-salient patches, use 0 (IPS) or more",
        )?;
        let l = count(
            "l",
            method.l,
            "L counts patches per iteration, use 1 or more",
        )?;
        if l > MAX_PATCHES {
            return Err(config_error(
                field("l"),
                format!(
                    "{l} is more than the {MAX_PATCHES} patches an image may have; the papers stream 16 to 1,000 patches per iteration"
                ),
            ));
        }
        let m_eval = match method.m_eval {
            None => m,
            Some(value) => count(
                "m_eval",
                value,
                "M′ counts salient patches at evaluation, use 1 or more",
            )?,
        };
        for (name, value) in [("m", m), ("m_eval", m_eval)] {
            if value > n {
                let [h, w] = self.image_size();
                return Err(config_error(
                    field(name),
                    format!(
                        "{value} salient patches exceed the N = {n} patches of a {h}×{w} image cut into {p} px patches; lower `{name}` or use smaller patches",
                        p = self.patch.size
                    ),
                ));
            }
        }
        // Selection would keep only the N − M patches left after the winners: refuse rather
        // than train with fewer than the S the results would report.
        for (name, value) in [("m", m), ("m_eval", m_eval)] {
            if s > n - value {
                let [h, w] = self.image_size();
                return Err(config_error(
                    field("s"),
                    format!(
                        "{s} sub-salient patches exceed the N − {name} = {} patches a {h}×{w} image cut into {p} px patches has left after its {value} salient ones; lower `s` to at most {}",
                        n - value,
                        n - value,
                        p = self.patch.size
                    ),
                ));
            }
        }
        let drop =
            PatchDrop::new(method.drop).map_err(|e| config_error(field("drop"), e.to_string()))?;
        let buffers = |m: usize, name: &str| {
            DualBuffer::new(m, s, l)
                .map(|b| b.with_rule(method.selection))
                .map_err(|e| {
                    let key = match e {
                        SelectError::ZeroSalient => name,
                        SelectError::ZeroChunk => "l",
                    };
                    config_error(field(key), e.to_string())
                })
        };
        Ok(MethodPlan {
            buffer: buffers(m, "m")?,
            eval_buffer: buffers(m_eval, "m_eval")?,
            drop,
            aggregator: method.aggregator,
        })
    }

    /// The aggregator configuration for a method, an embedding width and the dataset's tasks.
    pub fn aggregator_config(
        &self,
        kind: AggregatorKind,
        embed_dim: usize,
        tasks: Vec<usize>,
    ) -> AggregatorConfig {
        AggregatorConfig {
            embed_dim,
            tasks,
            kind,
            attention: self.aggregator.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(edit: impl FnOnce(&mut serde_json::Value)) -> Result<CheckedRun> {
        let mut v: serde_json::Value = serde_json::from_str(QUICKSTART).unwrap();
        edit(&mut v);
        RunConfig::from_json(&v.to_string(), "test")
    }

    #[test]
    fn quickstart_is_valid() {
        RunConfig::quickstart().unwrap();
    }

    /// The lower crates name their own settings; the config layer adds the JSON path, once.
    #[test]
    fn encoder_and_aggregator_errors_get_their_json_path() {
        let err = with(|v| {
            v["encoder"] = serde_json::json!({"tiny_cnn": {"in_channels": 1, "width": 0}})
        })
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "config setting `encoder.tiny_cnn.width`: `width` must be at least 1"
        );
        let err = with(|v| v["aggregator"]["heads"] = 0.into())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "config setting `aggregator.heads`: `heads` must be at least 1"
        );
    }

    /// Command-line overrides are written into the JSON and checked with the rest: an
    /// out-of-range epoch count is refused as the file's would be, a weight file for an encoder
    /// that takes none is the option's fault.
    #[test]
    fn overrides_are_checked_with_the_config() {
        let run = RunConfig::quickstart_with(&ConfigOverrides {
            epochs: Some(3),
            seed: Some(9),
            weights: None,
        })
        .unwrap();
        assert_eq!((run.train.epochs, run.train.seed), (3, 9));
        let err = RunConfig::quickstart_with(&ConfigOverrides {
            epochs: Some(0),
            ..ConfigOverrides::default()
        })
        .unwrap_err();
        assert!(
            matches!(&err, TrainError::Config { field, .. } if field == "train.epochs"),
            "{err}"
        );
        let mut tiny: serde_json::Value = serde_json::from_str(QUICKSTART).unwrap();
        tiny["encoder"] = serde_json::json!({"tiny_cnn": {"in_channels": 1, "width": 4}});
        let tiny = tiny.to_string();
        let err = RunConfig::from_json_with(
            &tiny,
            "test",
            &ConfigOverrides {
                weights: Some("r18.pth".into()),
                ..ConfigOverrides::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                &err,
                TrainError::Option {
                    option: "--weights",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("`tiny_cnn`"), "{err}");
    }

    /// A run or method name that is not one plain folder name is refused, naming its key: a
    /// method named `../victim/IPS` once wrote into (and pruned) another run's directory, and
    /// an empty one wrote into the run root.
    #[test]
    fn names_that_leave_their_folder_are_refused() {
        for bad in [
            "../victim/IPS",
            "/tmp/x",
            "..",
            ".",
            "",
            "  ",
            "a\\b",
            "IPS\n",
            "a\0b",
        ] {
            let err = with(|v| v["methods"][1]["name"] = bad.into()).unwrap_err();
            assert!(
                matches!(&err, TrainError::Config { field, .. } if field == "methods[1].name"),
                "{bad:?}: {err}"
            );
            let err = with(|v| v["name"] = bad.into()).unwrap_err();
            assert!(
                matches!(&err, TrainError::Config { field, .. } if field == "name"),
                "{bad:?}: {err}"
            );
        }
        for good in ["IPS", "DBPS r=0.3", "dbps-s60_m12", "..x", "x.."] {
            with(|v| v["methods"][0]["name"] = good.into()).unwrap();
            with(|v| v["name"] = good.into()).unwrap();
        }
    }

    /// S beyond the N − M patches left after the winners was capped silently and reported
    /// as asked; it is refused (M′ at evaluation too).
    #[test]
    fn s_beyond_the_patches_left_is_refused() {
        let err = with(|v| v["methods"][1]["s"] = 247.into()).unwrap_err();
        assert!(
            matches!(&err, TrainError::Config { field, reason } if field == "methods[1].s" && reason.contains("at most 246")),
            "{err}"
        );
        with(|v| v["methods"][1]["s"] = 246.into()).unwrap();
        let err = with(|v| {
            v["methods"][1]["s"] = 240.into();
            v["methods"][1]["m_eval"] = 20.into();
        })
        .unwrap_err();
        assert!(
            matches!(&err, TrainError::Config { field, reason } if field == "methods[1].s" && reason.contains("N − m_eval = 236")),
            "{err}"
        );
    }

    /// A negative decay grows the weights every step; lr·decay ≥ 1 zeroes or flips them.
    #[test]
    fn weight_decay_outside_its_range_is_refused() {
        for bad in [-0.1, 4000.0, 1e300] {
            let err = with(|v| v["train"]["weight_decay"] = bad.into()).unwrap_err();
            assert!(
                matches!(&err, TrainError::Config { field, .. } if field == "train.weight_decay"),
                "{bad}: {err}"
            );
        }
        for good in [0.0, 0.1, 1.0] {
            with(|v| v["train"]["weight_decay"] = good.into()).unwrap();
        }
    }

    /// Every shipped config parses and validates (weight files are not at hand here, so
    /// `encoder.*.weights` is dropped before the check; data is not opened by `validate`).
    #[test]
    fn shipped_configs_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut seen = 0;
        let mut pending = vec![dir.clone()];
        let mut files = Vec::new();
        while let Some(folder) = pending.pop() {
            for entry in std::fs::read_dir(&folder).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else if path.extension().is_some_and(|e| e == "json")
                    // The paper's numbers, not a run config.
                    && path.file_name().is_some_and(|n| n != "tables.json")
                {
                    files.push(path);
                }
            }
        }
        for path in files {
            let mut v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            if let Some(arms) = v["encoder"].as_object_mut() {
                for settings in arms.values_mut() {
                    if let Some(settings) = settings.as_object_mut() {
                        settings.remove("weights");
                    }
                }
            }
            let config = RunConfig::from_json(&v.to_string(), &path.display().to_string())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // The paper's rows train as the official code did (method.md §9).
            if path.components().any(|c| c.as_os_str() == "paper") {
                assert_eq!(config.train.loss_eps, Some(1e-6), "{}", path.display());
                // DBPS rows select as the authors' code did, except megapixel MNIST's four
                // tasks, which that code cannot run (method.md §6).
                let name = path.file_name().unwrap().to_string_lossy();
                let mnist = path
                    .components()
                    .any(|c| c.as_os_str() == "megapixel-mnist");
                let want = if name.starts_with("dbps-") && !mnist {
                    BufferRule::Authors
                } else {
                    BufferRule::Paper
                };
                for method in &config.methods {
                    assert_eq!(method.selection, want, "{}", path.display());
                }
            }
            seen += 1;
        }
        // Four top-level configs and the 72 of configs/paper.
        assert!(seen >= 76, "only {seen} configs under {}", dir.display());
    }

    /// Issue criterion: the embedded default needs selection (N ≥ 100, M ≤ 10 % of N) and
    /// more context than M patches hold: the digits fill 2–4 × M cells, one patch each, and
    /// DBPS's S ≈ 2M lets it see about all of them.
    #[test]
    fn quickstart_task_needs_more_than_m_patches() {
        let config = RunConfig::quickstart().unwrap();
        let n = config.grid().len();
        assert!(n >= 100, "N = {n}");
        let DatasetConfig::SyntheticMajority(data) = &config.dataset else {
            panic!("the quickstart is the embedded majority task");
        };
        assert_eq!(data.cell, config.patch.size, "one item per patch");
        for i in 0..config.methods.len() {
            let plan = config.method_plan(i, n).unwrap();
            let (m, s) = (plan.buffer.salient(), plan.buffer.sub_salient());
            assert!(m * 10 <= n, "M = {m} is more than 10 % of N = {n}");
            assert!(
                data.total[0] >= 2 * m && data.total[1] <= 4 * m,
                "{data:?} for M = {m}"
            );
            if s > 0 {
                assert!(s >= 2 * m && m + s >= data.total[0], "S = {s}");
            }
        }
    }

    #[test]
    fn m_larger_than_n_is_rejected() {
        let err = with(|v| v["methods"][0]["m"] = 5000.into())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("methods[0].m") && err.contains("exceed the N"),
            "{err}"
        );
    }

    /// M = 0 and L = 0 name their own key and nothing else (before: "set `selection.m`", a
    /// key no config has, under the setting `methods[0].m/l`).
    #[test]
    fn zero_m_and_l_name_their_key() {
        for key in ["m", "l"] {
            let says = format!("config setting `methods[0].{key}`:");
            let err = with(|v| v["methods"][0][key] = 0.into())
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&says) && !err.contains("selection."),
                "{err}"
            );
        }
    }

    #[test]
    fn m_eval_larger_than_n_is_rejected() {
        let err = with(|v| v["methods"][0]["m_eval"] = 5000.into())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("methods[0].m_eval") && err.contains("exceed the N"),
            "{err}"
        );
    }

    #[test]
    fn negative_s_is_rejected() {
        let err = with(|v| v["methods"][1]["s"] = (-1).into())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("methods[1].s") && err.contains("negative"),
            "{err}"
        );
    }

    #[test]
    fn drop_ratio_outside_unit_interval_is_rejected() {
        for r in [1.0, -0.2, 2.0] {
            let err = with(|v| v["methods"][1]["drop"] = r.into())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("methods[1].drop") && err.contains("[0, 1)"),
                "{err}"
            );
        }
    }

    #[test]
    fn patch_larger_than_image_is_rejected() {
        let err = with(|v| v["patch"]["size"] = 300.into())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("larger than") && err.contains("`patch.size`"),
            "{err}"
        );
        let err = with(|v| v["patch"]["stride"] = 0.into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`patch.stride`"), "{err}");
    }

    #[test]
    fn warmup_as_long_as_training_is_rejected() {
        let epochs = RunConfig::quickstart().unwrap().train.epochs;
        let err = with(|v| v["train"]["warmup_epochs"] = (epochs as f64).into())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train.warmup_epochs") && err.contains("never fall"),
            "{err}"
        );
        with(|v| v["train"]["warmup_epochs"] = (epochs as f64 - 0.5).into()).unwrap();
    }

    /// The aggregator is checked at the width the encoder really outputs: ResNet-18 cut after
    /// layer2 with width 3 gives D = 6 (even), with a 7-wide projector D = 7, which sinusoidal
    /// positions cannot encode.
    #[test]
    fn aggregator_is_checked_at_the_encoders_real_width() {
        let positional = |v: &mut serde_json::Value| {
            v["aggregator"]["positional"] = true.into();
            v["encoder"] =
                serde_json::json!({"resnet18": {"stages": 2, "in_channels": 1, "width": 3}});
        };
        with(positional).unwrap();
        let err = with(|v| {
            positional(v);
            v["encoder"]["resnet18"]["projector"] = 7.into();
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("D = 7") && err.contains("aggregator.positional"),
            "{err}"
        );
    }

    #[test]
    fn unknown_encoder_is_rejected() {
        let err = with(|v| v["encoder"] = serde_json::json!({"vgg16": {}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("vgg16") && err.contains("resnet18"), "{err}");
    }

    #[test]
    fn unknown_field_is_rejected_with_the_origin() {
        let err = with(|v| v["train"]["epochz"] = 3.into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("epochz") && err.contains("test"), "{err}");
    }
}
