//! `dbps explain`: where a trained model looked — the paper's Fig. 4. Per method, the image
//! with its M salient and S sub-salient patches outlined in two colours, beside a heatmap of the
//! scorer's attention over all N patches blended over the image; a legend below; and a JSON
//! sidecar with the geometry, so that every outline can be traced back to its grid index.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use dbps_data::{Pixels, Sample};
use dbps_tiling::PatchGrid;
use embedded_graphics::mono_font::{MonoTextStyle, ascii::FONT_7X13, ascii::FONT_9X15_BOLD};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::text::Text;
use serde::{Deserialize, Serialize};

use dbps_model::atomic_write::write_json_atomic;
use dbps_model::batch::host_images;
use dbps_model::candidates::HostCandidates;
use dbps_model::classifier::Mode;
use dbps_train::backend::{DeviceChoice, OnBackend};
use dbps_train::checkpoint::method_dirs;
use dbps_train::trained::TrainedMethod;
use dbps_train::{Result, TrainError};

use crate::figure::{Framebuffer, heat_color};
use crate::predict::{GridGeometry, Predict, SlideOptions, TaskPrediction, open_slide};

/// Outline colour of the M salient patches.
pub const SALIENT_COLOR: [u8; 3] = [230, 25, 75];
/// Outline colour of the S sub-salient patches.
pub const SUB_SALIENT_COLOR: [u8; 3] = [0, 200, 255];

const MARGIN: u32 = 12;
const TITLE: u32 = 24;
const LEGEND: u32 = 64;
/// Weight of the heat colour over the dimmed image.
const HEAT_ALPHA: f32 = 0.65;

/// How attention weights map onto the colour scale.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalisation {
    /// The weights as they are: 0 is the darkest colour, the largest weight the brightest.
    Raw,
    /// The smallest weight darkest, the largest brightest.
    MinMax,
    /// Weights clipped to the `low`–`high` percentiles, then min–max: one patch with most of
    /// the mass no longer flattens the rest.
    Percentile {
        /// Lower percentile (0–100).
        low: f64,
        /// Upper percentile (0–100).
        high: f64,
    },
}

impl FromStr for Normalisation {
    type Err = String;

    /// `raw`, `min-max`, `percentile` (1st–99th) or `percentile:LOW,HIGH`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || {
            format!(
                "`{s}` is not a normalisation; use raw, min-max, percentile or percentile:LOW,HIGH (e.g. percentile:5,95)"
            )
        };
        match s {
            "raw" => Ok(Self::Raw),
            "min-max" | "minmax" => Ok(Self::MinMax),
            "percentile" => Ok(Self::Percentile {
                low: 1.0,
                high: 99.0,
            }),
            _ => {
                let range = s.strip_prefix("percentile:").ok_or_else(bad)?;
                let (low, high) = range.split_once(',').ok_or_else(bad)?;
                let low: f64 = low.trim().parse().map_err(|_| bad())?;
                let high: f64 = high.trim().parse().map_err(|_| bad())?;
                if !(0.0..high).contains(&low) || high > 100.0 {
                    return Err(format!(
                        "percentiles {low},{high} must satisfy 0 ≤ LOW < HIGH ≤ 100"
                    ));
                }
                Ok(Self::Percentile { low, high })
            }
        }
    }
}

impl fmt::Display for Normalisation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Raw => write!(f, "raw"),
            Self::MinMax => write!(f, "min-max"),
            Self::Percentile { low, high } => write!(f, "percentiles {low}-{high}"),
        }
    }
}

/// Which attention map is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadChoice {
    /// The mean over heads.
    Mean,
    /// One head (0-based).
    Head(usize),
}

impl FromStr for HeadChoice {
    type Err = String;

    /// `mean` or a head number.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "mean" => Ok(Self::Mean),
            _ => s
                .parse()
                .map(Self::Head)
                .map_err(|_| format!("`{s}` is not a head; use mean or a head number (0, 1, …)")),
        }
    }
}

impl fmt::Display for HeadChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mean => write!(f, "mean over heads"),
            Self::Head(h) => write!(f, "head {h}"),
        }
    }
}

/// What `dbps explain` draws.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExplainOptions {
    /// Colour scale of the heatmap.
    pub normalisation: Normalisation,
    /// Which head's map.
    pub head: HeadChoice,
    /// Longest side of each panel in pixels: small images are enlarged by a whole factor
    /// (every patch outline lands on whole pixels), large ones shrunk to a thumbnail.
    pub panel: u32,
    /// How whole-slide images (tiled TIFF) are read.
    pub slides: SlideOptions,
}

impl Default for ExplainOptions {
    fn default() -> Self {
        Self {
            normalisation: Normalisation::MinMax,
            head: HeadChoice::Mean,
            panel: 512,
            slides: SlideOptions::default(),
        }
    }
}

/// The scorer's attention over all N patches of an image, per head.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchAttention {
    heads: usize,
    patches: usize,
    /// `[H, N]`, row-major.
    weights: Vec<f32>,
}

impl PatchAttention {
    /// a_{h,n} = (1/T) Σ_t softmax_n(q_t W_q^h · (x_n W_k^h)ᵀ / √d_k) from the logits
    /// `[1, H, T, N]` of T query tokens over all N patches (method.md §4, with the softmax over
    /// every patch of the image instead of the buffer and one chunk). Each head's weights sum to 1.
    pub fn from_logits<B: Backend>(logits: burn::tensor::Tensor<B, 4>) -> Self {
        let [_, heads, _, patches] = logits.dims();
        let weights = softmax(logits, 3)
            .mean_dim(2)
            .into_data()
            .iter::<f32>()
            .collect();
        Self {
            heads,
            patches,
            weights,
        }
    }

    /// Heads H.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Patches N.
    pub fn patches(&self) -> usize {
        self.patches
    }

    /// Every head's weights, `[H][N]`.
    pub fn per_head(&self) -> Vec<Vec<f32>> {
        self.weights
            .chunks(self.patches.max(1))
            .map(<[f32]>::to_vec)
            .collect()
    }

    /// The map `choice` picks: one head's weights, or their mean over heads.
    pub fn map(&self, choice: HeadChoice) -> Result<Vec<f32>> {
        let n = self.patches;
        match choice {
            HeadChoice::Head(h) if h < self.heads => Ok(self.weights[h * n..(h + 1) * n].to_vec()),
            HeadChoice::Head(h) => Err(TrainError::Option {
                option: "--head",
                reason: format!(
                    "the model has {} heads, so head {h} does not exist; use mean or 0-{}",
                    self.heads,
                    self.heads - 1
                ),
            }),
            HeadChoice::Mean => Ok((0..n)
                .map(|i| {
                    (0..self.heads)
                        .map(|h| self.weights[h * n + i])
                        .sum::<f32>()
                        / self.heads as f32
                })
                .collect()),
        }
    }
}

/// `values` mapped onto [0, 1] by `how`, with the raw values `[low, high]` that map to 0 and 1.
pub fn normalise(values: &[f32], how: Normalisation) -> (Vec<f32>, [f32; 2]) {
    let finite = || values.iter().copied().filter(|v| v.is_finite());
    let max = finite().fold(f32::NEG_INFINITY, f32::max);
    let min = finite().fold(f32::INFINITY, f32::min);
    let [low, high] = match how {
        Normalisation::Raw => [0.0, max],
        Normalisation::MinMax => [min, max],
        Normalisation::Percentile { low, high } => {
            let mut sorted: Vec<f32> = finite().collect();
            sorted.sort_by(f32::total_cmp);
            [percentile(&sorted, low), percentile(&sorted, high)]
        }
    };
    let span = high - low;
    let scaled = values
        .iter()
        .map(|&v| {
            if span > 0.0 && span.is_finite() {
                ((v - low) / span).clamp(0.0, 1.0)
            } else {
                0.0
            }
        })
        .collect();
    (scaled, [low, high])
}

/// The `q`-th percentile (0–100) of ascending `sorted`, interpolated linearly between ranks.
fn percentile(sorted: &[f32], q: f64) -> f32 {
    match sorted.len() {
        0 => f32::NAN,
        n => {
            let rank = q / 100.0 * (n - 1) as f64;
            let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
            let f = (rank - lo as f64) as f32;
            sorted[lo] + f * (sorted[hi] - sorted[lo])
        }
    }
}

/// Where one method's panels sit in the figure and what they show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodExplanation {
    /// Method name.
    pub method: String,
    /// Epoch of the weights (best on validation).
    pub epoch: usize,
    /// The prediction per task.
    pub tasks: Vec<TaskPrediction>,
    /// Grid indices of the salient patches (outlined in [`SALIENT_COLOR`]).
    pub salient: Vec<usize>,
    /// Grid indices of the sub-salient patches (outlined in [`SUB_SALIENT_COLOR`]).
    pub sub_salient: Vec<usize>,
    /// The drawn map's weights, before normalisation, of the patches in `candidates`.
    pub attention: Vec<f32>,
    /// The grid index of each weight: every patch in grid order for an image; the patches on
    /// tissue, in reading order, for a masked slide (the others were never encoded).
    pub candidates: Vec<usize>,
    /// Every head's weights over `candidates` (`[H][K]`), for exports such as GeoJSON; not
    /// written to the sidecar.
    #[serde(skip)]
    pub head_weights: Vec<Vec<f32>>,
    /// The weights that map to the darkest and brightest colour.
    pub range: [f32; 2],
    /// Top-left pixel `[x, y]` of the image panel (outlines).
    pub image_panel: [u32; 2],
    /// Top-left pixel `[x, y]` of the heatmap panel.
    pub heatmap_panel: [u32; 2],
}

/// The sidecar of an explanation figure (`FILE.json` beside `FILE.png`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// The image explained.
    pub image: PathBuf,
    /// The figure.
    pub figure: PathBuf,
    /// `[height, width]` of the image as the model saw it.
    pub size: [usize; 2],
    /// Its patch grid; patch `i` has its origin at row `i / cols`, column `i % cols`.
    pub grid: GridGeometry,
    /// Figure pixels per image pixel: patch `i` is drawn at panel corner +
    /// `floor(origin · scale)` up to `floor((origin + patch) · scale)`.
    pub scale: f64,
    /// `[width, height]` of each panel.
    pub panel: [u32; 2],
    /// Colour scale of the heatmaps.
    pub normalisation: Normalisation,
    /// Which head's map.
    pub head: HeadChoice,
    /// Heads of the scorer.
    pub heads: usize,
    /// Outline colour of salient patches.
    pub salient_color: [u8; 3],
    /// Outline colour of sub-salient patches.
    pub sub_salient_color: [u8; 3],
    /// One row of panels per method.
    pub methods: Vec<MethodExplanation>,
    /// How a slide was read (absent for an ordinary image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slide: Option<crate::predict::SlideReading>,
}

/// The display rectangle `[x0, y0, x1, y1)` of patch `index`, relative to its panel.
fn patch_rect(grid: &PatchGrid, index: usize, scale: f64) -> [i64; 4] {
    let [row, col] = grid.origin(index);
    let at = |v: usize| (v as f64 * scale).floor() as i64;
    let (x0, y0) = (at(col), at(row));
    let p = grid.patch();
    let (x1, y1) = (at(col + p).max(x0 + 1), at(row + p).max(y0 + 1));
    [x0, y0, x1, y1]
}

/// What the panels show under outlines and heat: the image, or a slide's thumbnail.
struct Backdrop {
    /// `[h, w]` row-major.
    rgb: Vec<[u8; 3]>,
    /// `[h, w]`.
    size: [usize; 2],
}

impl Backdrop {
    /// From interleaved 8-bit pixels of `channels` (1 or 3).
    fn rgb(pixels: &[u8], channels: usize, size: [usize; 2]) -> Self {
        let rgb = pixels
            .chunks_exact(channels)
            .map(|px| {
                if channels >= 3 {
                    [px[0], px[1], px[2]]
                } else {
                    [px[0]; 3]
                }
            })
            .collect();
        Self { rgb, size }
    }
}

/// The image's pixels as display RGB, `[h, w]` row-major.
fn display_rgb(sample: &Sample) -> Vec<[u8; 3]> {
    let plane = sample.height * sample.width;
    let c = sample.channels;
    let value = |channel: usize, i: usize| -> u8 {
        match &sample.image {
            Pixels::ImageNet8(v) => v[channel * plane + i],
            Pixels::F32(v) => (v[channel * plane + i].clamp(0.0, 1.0) * 255.0).round() as u8,
            // Slides are drawn on their thumbnail, never from a sample's pixels.
            Pixels::Slide(_) => 0,
        }
    };
    (0..plane)
        .map(|i| {
            if c >= 3 {
                [value(0, i), value(1, i), value(2, i)]
            } else {
                let g = value(0, i);
                [g, g, g]
            }
        })
        .collect()
}

/// `rgb` (`[h, w]`) resampled to the panel size (nearest pixel).
fn resampled(rgb: &[[u8; 3]], [h, w]: [usize; 2], [pw, ph]: [u32; 2], scale: f64) -> Vec<[u8; 3]> {
    let mut out = Vec::with_capacity(pw as usize * ph as usize);
    for y in 0..ph as usize {
        let sy = ((y as f64 + 0.5) / scale).floor().min((h - 1) as f64) as usize;
        for x in 0..pw as usize {
            let sx = ((x as f64 + 0.5) / scale).floor().min((w - 1) as f64) as usize;
            out.push(rgb[sy * w + sx]);
        }
    }
    out
}

/// The heatmap panel: each pixel the mean normalised weight of the patches covering it, in
/// heat colours over the dimmed grayscale image; pixels no patch covers stay dimmed gray.
fn heatmap(
    base: &[[u8; 3]],
    [pw, ph]: [u32; 2],
    grid: &PatchGrid,
    scale: f64,
    candidates: &[usize],
    levels: &[f32],
) -> Vec<[u8; 3]> {
    let (pw, ph) = (pw as usize, ph as usize);
    let mut sum = vec![0f32; pw * ph];
    let mut count = vec![0u32; pw * ph];
    for (&index, &level) in candidates.iter().zip(levels) {
        let [x0, y0, x1, y1] = patch_rect(grid, index, scale);
        for y in y0.max(0) as usize..(y1 as usize).min(ph) {
            for x in x0.max(0) as usize..(x1 as usize).min(pw) {
                sum[y * pw + x] += level;
                count[y * pw + x] += 1;
            }
        }
    }
    base.iter()
        .enumerate()
        .map(|(i, rgb)| {
            let gray = 0.5
                * (0.299 * f32::from(rgb[0])
                    + 0.587 * f32::from(rgb[1])
                    + 0.114 * f32::from(rgb[2]));
            if count[i] == 0 {
                let g = gray.round() as u8;
                return [g, g, g];
            }
            let heat = heat_color(sum[i] / count[i] as f32);
            heat.map(|c| ((1.0 - HEAT_ALPHA) * gray + HEAT_ALPHA * f32::from(c)).round() as u8)
        })
        .collect()
}

/// A row's title: method, epoch, verdict per task, and the weights at the colour scale's ends.
fn row_title(prediction: &crate::predict::ImagePrediction, range: [f32; 2]) -> String {
    let verdict: Vec<String> = prediction
        .tasks
        .iter()
        .map(|t| match (t.classes.first(), t.labels.first()) {
            (Some(&c), Some(label)) => {
                format!("{}: {label} (p = {:.2})", t.task, t.probabilities[c])
            }
            (Some(&c), None) => format!("{}: class {c} (p = {:.2})", t.task, t.probabilities[c]),
            (None, _) => format!("{}: none", t.task),
        })
        .collect();
    format!(
        "{} (epoch {}) - {} - colours {:.1e} to {:.1e}",
        prediction.method,
        prediction.epoch,
        verdict.join("; "),
        range[0],
        range[1]
    )
}

/// Panel scale for an image of `[h, w]`: a whole enlargement factor when the image fits
/// `panel`, a shrink factor (a thumbnail) when it does not.
fn panel_scale([h, w]: [usize; 2], panel: u32) -> f64 {
    let long = h.max(w).max(1) as f64;
    let fit = f64::from(panel.max(1)) / long;
    if fit >= 1.0 { fit.floor() } else { fit }
}

/// [`explain`] on the backend of `device`.
pub fn explain_on(
    device: DeviceChoice,
    checkpoint: &Path,
    image: &Path,
    out: &Path,
    options: &ExplainOptions,
) -> Result<Explanation> {
    struct Run<'a>(&'a Path, &'a Path, &'a Path, &'a ExplainOptions);
    impl OnBackend for Run<'_> {
        type Output = Result<Explanation>;
        fn run<B: Backend>(self, device: B::Device, _name: &str) -> Self::Output {
            explain::<B>(self.0, self.1, self.2, self.3, &device)
        }
    }
    device.dispatch(Run(checkpoint, image, out, options))
}

/// Explains `image` with every method under `checkpoint` (a run directory or one method
/// folder): writes the figure to `out` (PNG) and its geometry beside it (`out` with `.json`).
pub fn explain<B: Backend>(
    checkpoint: &Path,
    image: &Path,
    out: &Path,
    options: &ExplainOptions,
    device: &B::Device,
) -> Result<Explanation> {
    if out.extension().and_then(|e| e.to_str()) != Some("png") {
        return Err(TrainError::Option {
            option: "--out",
            reason: format!("{} must name a .png file", out.display()),
        });
    }
    let methods = method_dirs(checkpoint)?
        .iter()
        .map(|dir| TrainedMethod::<B>::open(dir, device))
        .collect::<Result<Vec<_>>>()?;
    let slide = open_slide(image, &options.slides)?;
    let mut rows = Vec::with_capacity(methods.len());
    let mut layout = None;
    for method in &methods {
        // The backdrop is drawn once, from the first method's reading of the image.
        let first = layout.is_none();
        let (prediction, logits, candidates, grid, backdrop) = match &slide {
            Some(slide) => {
                let (prediction, logits, candidates, grid) =
                    method.explain_slide(slide, &options.slides, device)?;
                let backdrop = if first {
                    let (thumbnail, size) = slide.thumbnail_color(options.panel as usize)?;
                    Some(Backdrop::rgb(&thumbnail, slide.channels(), size))
                } else {
                    None
                };
                (prediction, logits, candidates, grid, backdrop)
            }
            None => {
                let sample = method.read(image, options.slides.max_pixels)?;
                let model = method.fitted(image, &sample)?;
                let grid = model.plan().grid;
                let images = Arc::new(
                    host_images(
                        std::slice::from_ref(&sample),
                        [1, sample.channels, sample.height, sample.width],
                    )
                    .map_err(dbps_model::ModelError::from)?,
                );
                // The order evaluation reads the image in: the picks are predict's.
                let order = model.plan().candidates(1, Mode::Eval);
                let candidates: Vec<usize> = order.indices.iter().map(|&i| i as usize).collect();
                let source = HostCandidates::new(&grid, images, order, device.clone());
                let (out, logits) = model.forward_eval_with_attention(&source)?;
                let prediction = method.prediction(image, &model, out);
                let backdrop = first.then(|| Backdrop {
                    rgb: display_rgb(&sample),
                    size: [sample.height, sample.width],
                });
                (prediction, logits, candidates, grid, backdrop)
            }
        };
        let attention = PatchAttention::from_logits(logits);
        if let Some(backdrop) = backdrop {
            layout = Some((grid, backdrop, attention.heads()));
        }
        let (weights, heads) = (attention.map(options.head)?, attention.per_head());
        tracing::info!(method = %prediction.method, patches = grid.len(), scored = candidates.len(), heads = heads.len(), "attention over the candidates");
        rows.push((prediction, weights, candidates, heads));
    }
    let Some((grid, backdrop, heads)) = layout else {
        return Err(TrainError::Checkpoint {
            what: "run",
            path: checkpoint.to_path_buf(),
            reason: "holds no trained method".into(),
        });
    };
    let size = grid.image_size();
    let scale = panel_scale(size, options.panel);
    let panel = [
        ((size[1] as f64 * scale).floor() as u32).max(1),
        ((size[0] as f64 * scale).floor() as u32).max(1),
    ];
    // A slide's backdrop is a thumbnail, not the level itself: resample it to the panel.
    let backdrop_scale = f64::from(panel[0]) / backdrop.size[1] as f64;
    let base = resampled(&backdrop.rgb, backdrop.size, panel, backdrop_scale);
    let rows: Vec<_> = rows
        .into_iter()
        .map(|(prediction, weights, candidates, heads)| {
            let (levels, range) = normalise(&weights, options.normalisation);
            let title = row_title(&prediction, range);
            (prediction, weights, candidates, heads, levels, range, title)
        })
        .collect();
    let caption = format!(
        "attention over all patches, {} ({}; weights at the ends in each title)",
        options.head, options.normalisation
    );
    // The fonts are 9 (titles) and 7 (legend) pixels wide per character.
    let title_w = rows
        .iter()
        .map(|r| 9 * r.6.chars().count() as u32)
        .max()
        .unwrap_or(0);
    let row_h = TITLE + panel[1] + MARGIN;
    let width = (3 * MARGIN + 2 * panel[0])
        .max(2 * MARGIN + title_w)
        .max(2 * MARGIN + 266 + 7 * caption.chars().count() as u32);
    let height = MARGIN + row_h * rows.len() as u32 + LEGEND;
    let mut fb = Framebuffer::new(width, height);
    let text = MonoTextStyle::new(&FONT_7X13, Rgb888::BLACK);
    let bold = MonoTextStyle::new(&FONT_9X15_BOLD, Rgb888::BLACK);

    let mut explained = Vec::with_capacity(rows.len());
    let mut reading = None;
    for (r, (prediction, weights, candidates, head_weights, levels, range, title)) in
        rows.into_iter().enumerate()
    {
        reading = reading.or(prediction.slide.clone());
        let top = MARGIN + r as u32 * row_h;
        let left = [MARGIN, top + TITLE];
        let right = [2 * MARGIN + panel[0], top + TITLE];
        let _ = Text::new(&title, Point::new(MARGIN as i32, top as i32 + 16), bold).draw(&mut fb);

        fb.blit(
            i64::from(left[0]),
            i64::from(left[1]),
            [panel[1] as usize, panel[0] as usize],
            &base,
        );
        // Thick enough to see, thin enough that neighbouring outlines stay apart.
        let cell = (grid.patch() as f64 * scale).floor() as i64;
        let thickness = if cell >= 8 { 2 } else { 1 };
        // Sub-salient first, so a salient outline is never painted over.
        for (indices, color) in [
            (&prediction.sub_salient, SUB_SALIENT_COLOR),
            (&prediction.salient, SALIENT_COLOR),
        ] {
            for &i in indices {
                let [x0, y0, x1, y1] = patch_rect(&grid, i, scale);
                fb.outline(
                    [i64::from(left[0]) + x0, i64::from(left[1]) + y0],
                    [x1 - x0, y1 - y0],
                    thickness,
                    color,
                );
            }
        }

        let heat = heatmap(&base, panel, &grid, scale, &candidates, &levels);
        fb.blit(
            i64::from(right[0]),
            i64::from(right[1]),
            [panel[1] as usize, panel[0] as usize],
            &heat,
        );

        explained.push(MethodExplanation {
            method: prediction.method,
            epoch: prediction.epoch,
            tasks: prediction.tasks,
            salient: prediction.salient,
            sub_salient: prediction.sub_salient,
            attention: weights,
            candidates,
            head_weights,
            range,
            image_panel: left,
            heatmap_panel: right,
        });
    }

    // Legend: the two outline colours, then the colour bar with the weights at its ends.
    let y = (MARGIN + row_h * explained.len() as u32) as i64;
    let m = i64::from(MARGIN);
    let swatch = |x: i64, color: [u8; 3], label: &str, fb: &mut Framebuffer| {
        fb.outline([x, y], [14, 14], 2, color);
        let _ = Text::new(label, Point::new(x as i32 + 20, y as i32 + 11), text).draw(fb);
    };
    swatch(m, SALIENT_COLOR, "salient (M)", &mut fb);
    swatch(m + 130, SUB_SALIENT_COLOR, "sub-salient (S)", &mut fb);
    let bar_y = y + 26;
    let bar_w = 256i64;
    for x in 0..bar_w {
        let color = heat_color(x as f32 / (bar_w - 1) as f32);
        for dy in 0..12 {
            fb.put(m + x, bar_y + dy, color);
        }
    }
    let _ = Text::new(
        &caption,
        Point::new((m + bar_w + 10) as i32, bar_y as i32 + 10),
        text,
    )
    .draw(&mut fb);

    fb.save(out)?;
    let explanation = Explanation {
        image: image.to_path_buf(),
        figure: out.to_path_buf(),
        size,
        grid: GridGeometry::of(&grid),
        scale,
        panel,
        normalisation: options.normalisation,
        head: options.head,
        heads,
        salient_color: SALIENT_COLOR,
        sub_salient_color: SUB_SALIENT_COLOR,
        methods: explained,
        slide: reading,
    };
    write_json_atomic(&out.with_extension("json"), &explanation)?;
    Ok(explanation)
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::Tensor;

    use super::*;

    #[test]
    fn normalisations_map_onto_the_unit_interval() {
        let values = [0.1, 0.2, 0.3, 0.4];
        let (raw, range) = normalise(&values, Normalisation::Raw);
        assert_eq!(range, [0.0, 0.4]);
        assert!((raw[0] - 0.25).abs() < 1e-6 && (raw[3] - 1.0).abs() < 1e-6);
        let (minmax, range) = normalise(&values, Normalisation::MinMax);
        assert_eq!(range, [0.1, 0.4]);
        assert_eq!(minmax[0], 0.0);
        assert!((minmax[1] - 1.0 / 3.0).abs() < 1e-6);
        // Percentiles of 0.1..0.4 by rank: the 50th lies halfway between 0.2 and 0.3.
        let (clipped, range) = normalise(
            &values,
            Normalisation::Percentile {
                low: 50.0,
                high: 100.0,
            },
        );
        assert!((range[0] - 0.25).abs() < 1e-6 && (range[1] - 0.4).abs() < 1e-6);
        assert_eq!(clipped[0], 0.0);
        assert_eq!(clipped[1], 0.0);
        // A flat map is all dark rather than NaN.
        assert_eq!(normalise(&[0.5; 3], Normalisation::MinMax).0, vec![0.0; 3]);
    }

    #[test]
    fn options_parse_and_name_the_fix() {
        assert_eq!("min-max".parse(), Ok(Normalisation::MinMax));
        assert_eq!(
            "percentile:5,95".parse(),
            Ok(Normalisation::Percentile {
                low: 5.0,
                high: 95.0
            })
        );
        assert!("percentile:95,5".parse::<Normalisation>().is_err());
        assert!(
            "log"
                .parse::<Normalisation>()
                .unwrap_err()
                .contains("min-max")
        );
        assert_eq!("3".parse(), Ok(HeadChoice::Head(3)));
        assert!("first".parse::<HeadChoice>().unwrap_err().contains("mean"));
    }

    /// Softmax over all patches per head and query token by hand, then the mean over tokens.
    #[test]
    fn attention_is_a_softmax_over_patches_averaged_over_tokens() {
        // [1, H = 2, T = 2, N = 3]
        let logits = [
            [0.0f32, 0.0, 0.0],
            [0.0, 0.0, 2f32.ln()],
            [1.0, 1.0, 1.0],
            [3f32.ln(), 0.0, 0.0],
        ];
        let flat: Vec<f32> = logits.iter().flatten().copied().collect();
        let tensor = Tensor::<Flex, 1>::from_floats(flat.as_slice(), &Default::default())
            .reshape([1, 2, 2, 3]);
        let attention = PatchAttention::from_logits(tensor);
        // Head 0: tokens (1/3, 1/3, 1/3) and (1/4, 1/4, 1/2); head 1: (1/3, 1/3, 1/3) and (3/5, 1/5, 1/5).
        let head0 = [
            (1.0 / 3.0 + 0.25) / 2.0,
            (1.0 / 3.0 + 0.25) / 2.0,
            (1.0 / 3.0 + 0.5) / 2.0,
        ];
        let head1 = [
            (1.0 / 3.0 + 0.6) / 2.0,
            (1.0 / 3.0 + 0.2) / 2.0,
            (1.0 / 3.0 + 0.2) / 2.0,
        ];
        let close = |a: &[f32], b: &[f64]| {
            a.iter()
                .zip(b)
                .all(|(x, y)| (f64::from(*x) - y).abs() < 1e-6)
        };
        assert!(close(&attention.map(HeadChoice::Head(0)).unwrap(), &head0));
        assert!(close(&attention.map(HeadChoice::Head(1)).unwrap(), &head1));
        let mean: Vec<f64> = head0
            .iter()
            .zip(&head1)
            .map(|(a, b)| (a + b) / 2.0)
            .collect();
        assert!(close(&attention.map(HeadChoice::Mean).unwrap(), &mean));
        let err = attention.map(HeadChoice::Head(2)).unwrap_err().to_string();
        assert!(err.contains("--head") && err.contains("0-1"), "{err}");
    }

    #[test]
    fn small_images_enlarge_by_whole_factors_and_large_ones_shrink() {
        assert_eq!(panel_scale([256, 256], 512), 2.0);
        assert_eq!(panel_scale([200, 300], 512), 1.0);
        assert_eq!(panel_scale([100_000, 50_000], 500), 0.005);
    }
}
