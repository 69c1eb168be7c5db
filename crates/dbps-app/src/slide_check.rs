//! `dbps slides check LIST --out DIR`: a look at every slide before a run, as CLAM users take
//! one. Per slide, a thumbnail with the tissue mask tinted and the patches that would be
//! encoded outlined (`DIR/<name>.png`), and one row of `DIR/slides-check.csv`: the reader,
//! the pyramid, the resolution, the share of tissue, the candidate patches at the level read,
//! and what would go wrong. A slide that would stop a run (unreadable, no tissue, no level or
//! resolution to read, too small for one patch, a tile that does not decode) makes the
//! command fail after every slide was checked.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dbps_model::slide_source::tissue_patches;
use dbps_slide::{Resolution, Slide, SlideReader, SlideView, TissueMask};
use dbps_tiling::{PatchGrid, RemainderPolicy};
use dbps_train::RunConfig;
use dbps_train::config::DatasetConfig;

use crate::figure::Framebuffer;

use crate::shards::read_list;
use crate::{AppError, Result};

/// The CSV's name in the output folder.
pub const CHECK_CSV: &str = "slides-check.csv";

/// Longest side of each thumbnail written.
const THUMBNAIL: usize = 768;

/// How the slides will be read: what a run config says of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckPlan {
    /// Patch side in the pixels the model sees.
    pub patch: usize,
    /// Distance between patch origins.
    pub stride: usize,
    /// The level (downsample) or resolution (µm/px) read.
    pub resolution: Resolution,
    /// Only patches on tissue are candidates.
    pub tissue_mask: bool,
    /// Which reader opens the slides.
    pub reader: SlideReader,
    /// Decode every tile under a candidate patch (off: headers, thumbnail and mask only).
    pub decode_tiles: bool,
}

/// The command line's say on a check: each `Some` overrides the run config's setting.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CheckOptions {
    /// `--patch`.
    pub patch: Option<usize>,
    /// `--stride`.
    pub stride: Option<usize>,
    /// `--downsample`.
    pub downsample: Option<f64>,
    /// `--mpp`.
    pub mpp: Option<f64>,
    /// `--reader`.
    pub reader: Option<SlideReader>,
    /// `--no-tissue-mask`.
    pub no_tissue_mask: bool,
    /// `--quick`.
    pub quick: bool,
}

impl CheckPlan {
    /// How a run of `config` (a slides config, if given) would read the slides, with
    /// `options` over it; an option out of range, or a config of another dataset, is refused.
    pub fn new(config: Option<&RunConfig>, options: &CheckOptions) -> Result<Self> {
        let bad = |option: &'static str, reason: String| AppError::Option { option, reason };
        let slides = match config.map(|c| &c.dataset) {
            Some(DatasetConfig::Slides(slides)) => Some(slides),
            Some(_) => {
                return Err(bad(
                    "--config",
                    "its dataset is not `slides`; give a slides config, or --patch".into(),
                ));
            }
            None => None,
        };
        let patch = options
            .patch
            .or(config.map(|c| c.patch.size))
            .unwrap_or_default();
        let stride = options
            .stride
            .or(config.and_then(|c| c.patch.stride))
            .unwrap_or(patch);
        if patch == 0 || stride == 0 {
            return Err(bad(
                "--patch",
                format!("{patch} / --stride {stride}: both must be at least 1 px"),
            ));
        }
        let mpp = options.mpp.or(config.and_then(|c| c.patch.mpp));
        let resolution = match (options.downsample, mpp, slides) {
            (Some(d), _, _) => Resolution::Downsample(d),
            (None, _, Some(slides)) => slides.resolution(mpp),
            (None, Some(m), None) => Resolution::MicronsPerPixel(m),
            (None, None, None) => Resolution::Downsample(1.0),
        };
        match resolution {
            Resolution::Downsample(d) if !(d.is_finite() && (1.0..=65_536.0).contains(&d)) => {
                return Err(bad(
                    "--downsample",
                    format!("{d} must lie in [1, 65536] (1 = full resolution)"),
                ));
            }
            Resolution::MicronsPerPixel(m) if !(m.is_finite() && m > 0.0 && m <= 100.0) => {
                return Err(bad(
                    "--mpp",
                    format!(
                        "{m} must lie in (0, 100] µm per pixel (0.25 is a 40× scan, 0.5 a 20× scan)"
                    ),
                ));
            }
            _ => {}
        }
        Ok(Self {
            patch,
            stride,
            resolution,
            tissue_mask: !options.no_tissue_mask && slides.is_none_or(|s| s.tissue_mask),
            reader: options
                .reader
                .or(slides.map(|s| s.reader))
                .unwrap_or_default(),
            decode_tiles: !options.quick,
        })
    }
}

/// What the check found for one slide.
#[derive(Debug, Clone, PartialEq)]
pub struct SlideCheck {
    /// The slide file.
    pub path: PathBuf,
    /// `builtin` or `openslide`; empty when no reader opened it.
    pub reader: String,
    /// Pyramid levels.
    pub levels: usize,
    /// `[height, width]` of level 0.
    pub size: [usize; 2],
    /// µm per level-0 pixel, when stated.
    pub mpp: Option<f64>,
    /// Level read.
    pub level: Option<usize>,
    /// Level-0 pixels per pixel read.
    pub downsample: Option<f64>,
    /// Share of the thumbnail that is tissue.
    pub tissue_fraction: Option<f64>,
    /// Patches that would be encoded.
    pub candidates: Option<usize>,
    /// What would stop a run.
    pub errors: Vec<String>,
    /// What looks wrong but would not stop a run.
    pub warnings: Vec<String>,
}

impl SlideCheck {
    fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            reader: String::new(),
            levels: 0,
            size: [0, 0],
            mpp: None,
            level: None,
            downsample: None,
            tissue_fraction: None,
            candidates: None,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Whether the slide would stop a run.
    pub fn fails(&self) -> bool {
        !self.errors.is_empty()
    }

    fn csv_row(&self) -> String {
        let opt = |v: Option<String>| v.unwrap_or_default();
        let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        [
            quote(&self.path.display().to_string()),
            self.reader.clone(),
            self.levels.to_string(),
            self.size[1].to_string(),
            self.size[0].to_string(),
            opt(self.mpp.map(|m| format!("{m:.4}"))),
            opt(self.level.map(|l| l.to_string())),
            opt(self.downsample.map(|d| format!("{d:.3}"))),
            opt(self.tissue_fraction.map(|f| format!("{f:.4}"))),
            opt(self.candidates.map(|c| c.to_string())),
            if self.fails() { "fail" } else { "ok" }.into(),
            quote(
                &self
                    .errors
                    .iter()
                    .chain(&self.warnings)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        ]
        .join(",")
    }
}

/// The CSV header.
const CSV_HEADER: &str = "file,reader,levels,width,height,mpp,level,downsample,tissue_fraction,candidate_patches,status,problems";

/// Checks every slide of `list` (a labels.csv or a text list of paths) as `plan` would read
/// it, writing thumbnails and the CSV into `out`; fails, after writing them all, when any
/// slide would stop a run.
pub fn check_slides(list: &Path, out: &Path, plan: &CheckPlan) -> Result<Vec<SlideCheck>> {
    let slides = read_list(list)?;
    std::fs::create_dir_all(out).map_err(|e| AppError::Option {
        option: "--out",
        reason: format!(
            "{} cannot be created ({e}); give a writable folder",
            out.display()
        ),
    })?;
    let bar = dbps_model::progress::progress_bar(slides.len(), "checking slides");
    let mut checks = Vec::with_capacity(slides.len());
    for listed in &slides {
        let check = check_one(
            &listed.path,
            &out.join(format!("{}.png", listed.name)),
            plan,
        );
        if check.fails() {
            tracing::warn!(slide = %listed.path.display(), problems = %check.errors.join("; "), "slide would fail the run");
        }
        checks.push(check);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut csv = String::from(CSV_HEADER);
    csv.push('\n');
    for c in &checks {
        csv.push_str(&c.csv_row());
        csv.push('\n');
    }
    dbps_model::atomic_write::write_atomic(&out.join(CHECK_CSV), csv.as_bytes())?;
    let failed: Vec<&SlideCheck> = checks.iter().filter(|c| c.fails()).collect();
    if let Some(first) = failed.first() {
        return Err(AppError::Check {
            failed: failed.len(),
            total: checks.len(),
            first: format!("{}: {}", first.path.display(), first.errors.join("; ")),
            csv: out.join(CHECK_CSV),
        });
    }
    Ok(checks)
}

fn check_one(path: &Path, thumbnail: &Path, plan: &CheckPlan) -> SlideCheck {
    let mut check = SlideCheck::new(path);
    let slide = match Slide::open_with(path, plan.reader, 16 << 20) {
        Ok(slide) => Arc::new(slide),
        Err(e) => {
            check.errors.push(format!("unreadable: {e}"));
            return check;
        }
    };
    check.reader = slide.reader_name().into();
    check.levels = slide.levels().len();
    check.size = slide.levels()[0].size;
    check.mpp = slide.mpp();
    let view = match SlideView::new(Arc::clone(&slide), plan.resolution) {
        Ok(view) => view,
        Err(e) => {
            check.errors.push(format!("level missing: {e}"));
            return check;
        }
    };
    check.level = Some(view.level());
    check.downsample = Some(view.level0_per_pixel());
    if let Resolution::Downsample(d) = plan.resolution
        && view.level0_per_pixel() < d / 1.5
    {
        check.warnings.push(format!(
            "level missing: downsample {d} asked, the nearest finer level has {:.2}, so patches see {:.1}× more detail than asked",
            view.level0_per_pixel(),
            d / view.level0_per_pixel()
        ));
    }
    let mask = match TissueMask::of_slide(&slide) {
        Ok(mask) => mask,
        Err(e) => {
            check.errors.push(format!("unreadable thumbnail: {e}"));
            return check;
        }
    };
    let fraction = mask.tissue_pixels() as f64 / (mask.size[0] * mask.size[1]).max(1) as f64;
    check.tissue_fraction = Some(fraction);
    if !mask.any() {
        let problem = format!("no tissue (Otsu threshold {})", mask.threshold);
        if plan.tissue_mask {
            check.errors.push(problem);
        } else {
            check.warnings.push(problem);
        }
    }
    let grid = match PatchGrid::new(
        view.size(),
        plan.patch,
        plan.stride,
        RemainderPolicy::default(),
    ) {
        Ok(grid) => grid,
        Err(e) => {
            check.errors.push(format!(
                "the {}×{} px read holds no {} px patch: {e}",
                view.size()[0],
                view.size()[1],
                plan.patch
            ));
            return check;
        }
    };
    let candidates: Vec<usize> = if plan.tissue_mask {
        tissue_patches(&grid, view.size(), &mask)
            .into_iter()
            .map(|i| i as usize)
            .collect()
    } else {
        (0..grid.len()).collect()
    };
    check.candidates = Some(candidates.len());
    if plan.tissue_mask && candidates.is_empty() && mask.any() {
        check
            .errors
            .push("the tissue mask keeps no whole patch".into());
    }
    if plan.decode_tiles
        && let Err(e) = decode_tiles(&view, &grid, &candidates)
    {
        check.errors.push(format!("unreadable tiles: {e}"));
    }
    if let Err(e) = draw(&slide, &view, &mask, &grid, &candidates, thumbnail) {
        check.warnings.push(format!("no thumbnail written: {e}"));
    }
    check
}

/// Decodes every tile of the level read that lies under a candidate patch, once.
fn decode_tiles(view: &SlideView, grid: &PatchGrid, candidates: &[usize]) -> Result<()> {
    let level = view.slide().levels()[view.level()];
    let [th, tw] = level.tile;
    let mut tiles = BTreeSet::new();
    for &i in candidates {
        let [[y0, x0], [y1, x1]] = view.level_span(grid.origin(i), [grid.patch(); 2]);
        let (y1, x1) = (
            y1.min(level.size[0]).max(y0 + 1),
            x1.min(level.size[1]).max(x0 + 1),
        );
        for ty in y0 / th..=(y1 - 1) / th {
            for tx in x0 / tw..=(x1 - 1) / tw {
                tiles.insert((ty, tx));
            }
        }
    }
    for (ty, tx) in tiles {
        view.slide()
            .read_region(view.level(), [ty * th, tx * tw], [th, tw])
            .map_err(dbps_train::TrainError::from)?;
    }
    Ok(())
}

/// The thumbnail, tissue tinted green, candidate patches outlined in blue.
fn draw(
    slide: &Slide,
    view: &SlideView,
    mask: &TissueMask,
    grid: &PatchGrid,
    candidates: &[usize],
    path: &Path,
) -> Result<()> {
    let (pixels, [h, w]) = slide
        .thumbnail_color(THUMBNAIL)
        .map_err(dbps_train::TrainError::from)?;
    let c = slide.channels();
    let mut fb = Framebuffer::new(w as u32, h as u32);
    let [mh, mw] = mask.size;
    for y in 0..h {
        for x in 0..w {
            let px = &pixels[(y * w + x) * c..(y * w + x) * c + c];
            let mut rgb = if c >= 3 {
                [px[0], px[1], px[2]]
            } else {
                [px[0]; 3]
            };
            if mask.is_tissue([(y * mh / h).min(mh - 1), (x * mw / w).min(mw - 1)]) {
                rgb = [
                    (0.65 * f32::from(rgb[0])) as u8,
                    (0.65 * f32::from(rgb[1]) + 0.35 * 200.0) as u8,
                    (0.65 * f32::from(rgb[2])) as u8,
                ];
            }
            fb.put(x as i64, y as i64, rgb);
        }
    }
    // Thumbnail pixels per view pixel.
    let [vh, vw] = view.size();
    let (sy, sx) = (h as f64 / vh as f64, w as f64 / vw as f64);
    for &i in candidates {
        let [y, x] = grid.origin(i);
        let p = grid.patch() as f64;
        let (x0, y0) = ((x as f64 * sx) as i64, (y as f64 * sy) as i64);
        let (x1, y1) = (((x as f64 + p) * sx) as i64, ((y as f64 + p) * sy) as i64);
        fb.outline(
            [x0, y0],
            [(x1 - x0).max(1), (y1 - y0).max(1)],
            1,
            [30, 60, 220],
        );
    }
    Ok(fb.save(path)?)
}
