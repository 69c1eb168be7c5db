//! Whole-slide images as a training dataset: slides (tiled (Big)TIFF pyramids, or any format
//! OpenSlide reads when dbps-slide has it) listed in a `labels.csv`. A sample is a handle on one open slide, not its pixels: the model reads the
//! patches it needs through the slide's tile cache, so a batch of slides costs the caches and
//! one chunk of patches, never a decoded slide.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::data_path::inside_root;
use crate::folder::carve_validation;
use crate::train_classes::check_train_classes;
use dbps_slide::{Resolution, Slide, SlideReader, SlideView, TissueMask};

use crate::{DataError, FileInput, ImageSource, Pixels, Sample, Split, Target, TaskSpec};

/// Settings of a slide dataset (`dataset.slides` in a run config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlidesConfig {
    /// The folder holding `labels.csv`; slide paths in it are relative to this folder.
    pub root: PathBuf,
    /// Requested downsample of level 0: each slide is read at its most reduced pyramid level
    /// that is not coarser than this (1 = full resolution, the default). A resolution in
    /// µm/px (`patch.mpp`) replaces it; given both, this one wins, with a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downsample: Option<f64>,
    /// Which reader opens the slides: `auto` (the built-in one; OpenSlide, when built in, for
    /// what it does not support), `builtin` or `openslide`.
    #[serde(default, skip_serializing_if = "is_auto")]
    pub reader: SlideReader,
    /// Encode only patches on tissue (Otsu threshold on a thumbnail, computed once per slide
    /// when the dataset opens).
    #[serde(default = "yes")]
    pub tissue_mask: bool,
    /// 3: RGB, ImageNet-normalised (pathology, satellite); 1: gray, value / 255.
    #[serde(default = "three")]
    pub channels: usize,
    /// Decoded tiles kept per open slide, in MiB (a batch holds one cache per slide).
    #[serde(default = "default_cache_mib")]
    pub cache_mib: usize,
    /// Share of each training class held out for validation when `labels.csv` lists no `val`
    /// slide.
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    /// Seed of the validation carve-out.
    #[serde(default)]
    pub seed: u64,
}

fn is_auto(reader: &SlideReader) -> bool {
    *reader == SlideReader::Auto
}

fn yes() -> bool {
    true
}

fn three() -> usize {
    3
}

fn default_cache_mib() -> usize {
    64
}

fn default_val_fraction() -> f64 {
    0.1
}

impl SlidesConfig {
    /// A config reading `root` with every other setting at its default.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            downsample: None,
            reader: SlideReader::Auto,
            tissue_mask: yes(),
            channels: three(),
            cache_mib: default_cache_mib(),
            val_fraction: default_val_fraction(),
            seed: 0,
        }
    }

    /// How the slides' pixels become model input.
    pub fn input(&self) -> FileInput {
        if self.channels == 1 {
            FileInput::Gray
        } else {
            FileInput::Rgb
        }
    }

    /// Where patches come from: `mpp` µm per pixel (from `patch.mpp`) unless a downsample is
    /// given too (which then wins, with a warning), else the downsample (1 when absent).
    pub fn resolution(&self, mpp: Option<f64>) -> Resolution {
        match (self.downsample, mpp) {
            (Some(d), Some(mpp)) => {
                tracing::warn!(
                    downsample = d,
                    mpp,
                    "dataset.slides.downsample overrides patch.mpp: slides are read at the downsample, not at {mpp} µm/px"
                );
                Resolution::Downsample(d)
            }
            (None, Some(mpp)) => Resolution::MicronsPerPixel(mpp),
            (d, None) => Resolution::Downsample(d.unwrap_or(1.0)),
        }
    }

    fn check(&self) -> Result<(), DataError> {
        let bad = |field, reason: String| Err(DataError::Config { field, reason });
        if let Some(d) = self.downsample
            && !(d.is_finite() && (1.0..=65_536.0).contains(&d))
        {
            return bad(
                "dataset.slides.downsample",
                format!(
                    "{d} must lie in [1, 65536] (1 = full resolution, 4 = a quarter of the width)"
                ),
            );
        }
        if !matches!(self.channels, 1 | 3) {
            return bad(
                "dataset.slides.channels",
                format!("{} is neither 3 (RGB) nor 1 (gray)", self.channels),
            );
        }
        if !(1..=1 << 20).contains(&self.cache_mib) {
            return bad(
                "dataset.slides.cache_mib",
                format!(
                    "{} must lie in 1..=1048576 (MiB of decoded tiles per open slide; the default is 64)",
                    self.cache_mib
                ),
            );
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return bad(
                "dataset.slides.val_fraction",
                format!("{} must lie in [0, 1)", self.val_fraction),
            );
        }
        Ok(())
    }
}

/// One slide of a dataset as a sample carries it: the open file at the level (and scale) read,
/// how pixels become model input, and the tissue mask (if any) that decides which patches
/// exist.
#[derive(Debug)]
pub struct SlideImage {
    /// The open slide, with its tile cache, at the level and scale read.
    pub view: SlideView,
    /// How pixels become model input.
    pub input: FileInput,
    /// Background patches are never encoded when set.
    pub tissue: Option<Arc<TissueMask>>,
}

impl SlideImage {
    /// `[height, width]` of the view read.
    pub fn size(&self) -> [usize; 2] {
        self.view.size()
    }
}

impl PartialEq for SlideImage {
    /// The same file, level, input and mask: the same sample.
    fn eq(&self, other: &Self) -> bool {
        self.view.slide().path() == other.view.slide().path()
            && self.view.level() == other.view.level()
            && self.view.scale() == other.view.scale()
            && self.input == other.input
            && self.tissue == other.tissue
    }
}

/// One listed slide, as far as opening the dataset read it.
#[derive(Debug)]
struct SlideEntry {
    path: PathBuf,
    class: usize,
    size: [usize; 2],
    tissue: Option<Arc<TissueMask>>,
}

/// One split of a slide dataset.
///
/// `labels.csv` (header `slide,label,split`) names each slide's file relative to the root, its
/// class (any text; the classes are the distinct labels of the whole file, sorted) and its split
/// (`train`, `val` or `test`; without any `val` line a seeded `val_fraction` of each training
/// class is held out). Opening reads every slide's header and, with `tissue_mask`, its
/// thumbnail; a slide that is not a tiled TIFF or shows no tissue fails here, naming the file.
#[derive(Debug)]
pub struct SlideSet {
    slides: Vec<SlideEntry>,
    classes: Vec<String>,
    input: FileInput,
    cache_bytes: usize,
    reader: SlideReader,
    resolution: Resolution,
}

/// The lines of `labels.csv`: `(slide path, label, split)`, checked.
fn read_labels(config: &SlidesConfig) -> Result<Vec<(PathBuf, String, String)>, DataError> {
    let labels = config.root.join("labels.csv");
    let text = std::fs::read_to_string(&labels).map_err(|_| DataError::Missing {
        what: "labels.csv",
        path: labels.clone(),
        fix: "put labels.csv (slide,label,split) in dataset.slides.root",
    })?;
    let fix = "each line is slide,label,split: the slide's file relative to the root, its class, and train, val or test";
    let bad = |problem: String| DataError::Folder {
        path: labels.clone(),
        problem,
        fix: fix.into(),
    };
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header))
            if header
                .split(',')
                .map(str::trim)
                .eq(["slide", "label", "split"]) => {}
        _ => return Err(bad("line 1 is not the header `slide,label,split`".into())),
    }
    let mut rows = Vec::new();
    let mut seen = BTreeSet::new();
    for (number, line) in lines {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = |problem: String| bad(format!("line {}: {problem}", number + 1));
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [slide, label, split] = fields.as_slice() else {
            return Err(at(format!("{} fields, not 3", fields.len())));
        };
        if slide.is_empty() || label.is_empty() {
            return Err(at("the slide or the label is empty".into()));
        }
        if !matches!(*split, "train" | "val" | "test") {
            return Err(at(format!("split `{split}` is not train, val or test")));
        }
        let Some(inside) = inside_root(slide) else {
            return Err(at(format!(
                "slide `{slide}` is not a path inside {} (an absolute path or `..` would read outside it); name the slide relative to that folder",
                config.root.display()
            )));
        };
        if !seen.insert(inside.clone()) {
            return Err(at(format!("slide `{slide}` is listed twice")));
        }
        let path = config.root.join(inside);
        if !path.is_file() {
            return Err(DataError::Folder {
                path,
                problem: format!(
                    "slide `{slide}` of labels.csv line {} does not exist",
                    number + 1
                ),
                fix: "put the slide there, or drop its line from labels.csv".into(),
            });
        }
        rows.push((path, label.to_string(), split.to_string()));
    }
    Ok(rows)
}

impl SlideSet {
    /// Opens `split` with patches at `mpp` µm per pixel when given (see
    /// [`SlidesConfig::resolution`]), calling `prepared(done, total)` after each slide's header
    /// (and tissue mask) has been read, so that a caller can show progress.
    pub fn open(
        config: &SlidesConfig,
        mpp: Option<f64>,
        split: Split,
        mut prepared: impl FnMut(usize, usize),
    ) -> Result<Self, DataError> {
        config.check()?;
        let resolution = config.resolution(mpp);
        let rows = read_labels(config)?;
        let classes: Vec<String> = rows
            .iter()
            .map(|(_, label, _)| label.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let class_of = |label: &str| classes.iter().position(|c| c == label).unwrap_or(0);
        let has_val = rows.iter().any(|(_, _, s)| s == "val");
        let listed = |want: &str| -> Vec<(usize, Vec<PathBuf>)> {
            let mut by_class: Vec<(usize, Vec<PathBuf>)> =
                (0..classes.len()).map(|c| (c, Vec::new())).collect();
            for (path, label, which) in &rows {
                if which == want {
                    by_class[class_of(label)].1.push(path.clone());
                }
            }
            by_class
        };
        let chosen = match split {
            Split::Test => listed("test"),
            Split::Valid if has_val => listed("val"),
            Split::Train if has_val => listed("train"),
            Split::Train | Split::Valid => {
                carve_validation(listed("train"), config.val_fraction, config.seed, split)
            }
        };
        if split == Split::Train {
            check_train_classes(
                &config.root.join("labels.csv"),
                &classes,
                &chosen,
                "list slides of at least two classes with split `train` in labels.csv",
            )?;
        }
        let total = chosen.iter().map(|(_, files)| files.len()).sum();
        let mut slides = Vec::with_capacity(total);
        for (class, files) in chosen {
            for path in files {
                // Headers and the thumbnail only: a small cache is enough.
                let slide = Arc::new(Slide::open_with(&path, config.reader, 8 << 20)?);
                let size = SlideView::new(Arc::clone(&slide), resolution)?.size();
                let tissue = if config.tissue_mask {
                    let mask = TissueMask::of_slide(&slide)?;
                    if !mask.any() {
                        return Err(DataError::Folder {
                            path,
                            problem: format!(
                                "the tissue mask (Otsu threshold {}) finds no tissue",
                                mask.threshold
                            ),
                            fix: "drop the slide from labels.csv, or set dataset.slides.tissue_mask to false".into(),
                        });
                    }
                    Some(Arc::new(mask))
                } else {
                    None
                };
                slides.push(SlideEntry {
                    path,
                    class,
                    size,
                    tissue,
                });
                prepared(slides.len(), total);
            }
        }
        slides.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Self {
            slides,
            classes,
            input: config.input(),
            cache_bytes: config.cache_mib.saturating_mul(1 << 20),
            reader: config.reader,
            resolution,
        })
    }

    /// The class names, in target order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }
}

impl ImageSource for SlideSet {
    fn tasks(&self) -> Vec<TaskSpec> {
        vec![TaskSpec::softmax("label", self.classes.len()).with_class_names(self.classes.clone())]
    }

    fn image_size(&self) -> [usize; 3] {
        let largest = |i: usize| self.slides.iter().map(|s| s.size[i]).max().unwrap_or(0);
        [self.input.channels(), largest(0), largest(1)]
    }

    fn variable_size(&self) -> bool {
        true
    }

    fn len(&self) -> usize {
        self.slides.len()
    }

    fn sample(&self, index: usize) -> Result<Sample, DataError> {
        let entry = self.slides.get(index).ok_or(DataError::IndexOutOfRange {
            index,
            len: self.slides.len(),
        })?;
        let slide = Slide::open_with(&entry.path, self.reader, self.cache_bytes)?;
        let view = SlideView::new(Arc::new(slide), self.resolution)?;
        if view.size() != entry.size {
            return Err(DataError::Folder {
                path: entry.path.clone(),
                problem: "its pyramid changed since the dataset was opened".into(),
                fix: "leave the slides alone while a run reads them, then start the run again"
                    .into(),
            });
        }
        let image = SlideImage {
            view,
            input: self.input,
            tissue: entry.tissue.clone(),
        };
        Ok(Sample {
            image: Pixels::Slide(Arc::new(image)),
            channels: self.input.channels(),
            height: entry.size[0],
            width: entry.size[1],
            targets: vec![Target::Class(entry.class)],
        })
    }

    fn smallest_file(&self) -> Option<(&Path, [usize; 2])> {
        self.slides
            .iter()
            .min_by_key(|s| s.size[0].min(s.size[1]))
            .map(|s| (s.path.as_path(), [s.size[1], s.size[0]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbps_slide::{PyramidSpec, TileCompression, write_tiled_tiff};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dbps-slideset-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A 128 × 192 gray slide with a half-size level, black but for a bright square.
    fn slide(path: &Path) {
        let spec = PyramidSpec {
            mpp: Some(0.5),
            ..PyramidSpec::new(vec![[128, 192], [64, 96]], 32, 1, TileCompression::Deflate)
        };
        write_tiled_tiff(path, &spec, |level, [y, x], side| {
            let d = 1 << level;
            let mut tile = vec![0u8; side * side];
            for ty in 0..side {
                for tx in 0..side {
                    let (fy, fx) = ((y + ty) * d, (x + tx) * d);
                    if (32..64).contains(&fy) && (64..96).contains(&fx) {
                        tile[ty * side + tx] = 220;
                    }
                }
            }
            tile
        })
        .unwrap();
    }

    fn dataset(root: &Path, lines: &[&str]) {
        for line in lines {
            let name = line.split(',').next().unwrap();
            slide(&root.join(name));
        }
        let text = format!("slide,label,split\n{}\n", lines.join("\n"));
        std::fs::write(root.join("labels.csv"), text).unwrap();
    }

    #[test]
    fn splits_classes_levels_and_masks_come_from_labels_csv() {
        let root = scratch("ok");
        dataset(
            &root,
            &[
                "a.tif,tumor,train",
                "b.tif,normal,train",
                "c.tif,tumor,val",
                "d.tif,normal,test",
            ],
        );
        let config = SlidesConfig {
            downsample: Some(2.0),
            channels: 1,
            ..SlidesConfig::new(&root)
        };
        let mut progress = Vec::new();
        let train =
            SlideSet::open(&config, None, Split::Train, |d, t| progress.push((d, t))).unwrap();
        assert_eq!(progress, [(1, 2), (2, 2)]);
        assert_eq!(train.classes(), ["normal", "tumor"]);
        assert_eq!(train.len(), 2);
        assert_eq!(train.image_size(), [1, 64, 96]);
        let a = train.sample(0).unwrap();
        assert_eq!(a.targets, [Target::Class(1)], "a.tif is tumor");
        let Pixels::Slide(image) = &a.image else {
            panic!("a slide sample holds a slide handle")
        };
        assert_eq!((image.view.level(), image.size()), (1, [64, 96]));
        let mask = image.tissue.as_ref().expect("tissue_mask defaults to true");
        // The bright square covers level-1 pixels [16, 32) × [32, 48).
        assert!(mask.covers([64, 96], [20, 36], [4, 4]));
        assert!(!mask.covers([64, 96], [50, 2], [8, 8]));
        let valid = SlideSet::open(&config, None, Split::Valid, |_, _| {}).unwrap();
        assert_eq!(valid.slides[0].path, root.join("c.tif"));
        let test = SlideSet::open(&config, None, Split::Test, |_, _| {}).unwrap();
        assert_eq!(test.sample(0).unwrap().targets, [Target::Class(0)]);

        // In µm: 1.0 µm/px is level 1 of these 0.5 µm/px slides, as it is; 0.75 µm/px is
        // level 0 shrunk by 1.5. A downsample given too wins.
        let microns = SlidesConfig {
            downsample: None,
            ..config.clone()
        };
        let view_at = |mpp: f64| {
            let set = SlideSet::open(&microns, Some(mpp), Split::Test, |_, _| {}).unwrap();
            let Pixels::Slide(image) = set.sample(0).unwrap().image else {
                panic!("a slide")
            };
            (image.view.level(), image.view.scale(), image.size())
        };
        assert_eq!(view_at(1.0), (1, 1.0, [64, 96]));
        assert_eq!(view_at(0.75), (0, 1.5, [85, 128]));
        let set = SlideSet::open(&config, Some(0.75), Split::Test, |_, _| {}).unwrap();
        assert_eq!(set.image_size(), [1, 64, 96], "downsample 2 wins");
    }

    #[test]
    fn bad_labels_and_slides_are_named() {
        let root = scratch("bad");
        dataset(&root, &["a.tif,x,train"]);
        let config = SlidesConfig::new(&root);
        let error = |text: &str| {
            std::fs::write(root.join("labels.csv"), text).unwrap();
            SlideSet::open(&config, None, Split::Train, |_, _| {})
                .unwrap_err()
                .to_string()
        };
        let e = error("slide,label,split\nmissing.tif,x,train\n");
        assert!(
            e.contains("missing.tif") && e.contains("does not exist"),
            "{e}"
        );
        for outside in ["../a.tif", "/etc/passwd", "sub/../../a.tif"] {
            let e = error(&format!("slide,label,split\n{outside},x,train\n"));
            assert!(
                e.contains("line 2") && e.contains("not a path inside"),
                "{outside}: {e}"
            );
        }
        let e = error("slide,label,split\na.tif,x,train\n./a.tif,y,test\n");
        assert!(e.contains("line 3") && e.contains("listed twice"), "{e}");
        let e = error("slide,label,split\na.tif,x,training\n");
        assert!(e.contains("line 2") && e.contains("`training`"), "{e}");
        let e = error("name,label\n");
        assert!(e.contains("header"), "{e}");
        let e = error("slide,label,split\na.tif,x,train\na.tif,y,test\n");
        assert!(e.contains("listed twice"), "{e}");
        std::fs::write(root.join("not-a-slide.tif"), b"hello").unwrap();
        let e = error("slide,label,split\nnot-a-slide.tif,x,train\na.tif,y,train\n");
        assert!(e.contains("not-a-slide.tif"), "{e}");
        let e = SlideSet::open(
            &SlidesConfig {
                downsample: Some(0.5),
                ..config.clone()
            },
            None,
            Split::Train,
            |_, _| {},
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("dataset.slides.downsample"), "{e}");
        // A blank slide has no tissue to find.
        write_tiled_tiff(
            &root.join("blank.tif"),
            &PyramidSpec::new(vec![[64, 64]], 32, 1, TileCompression::None),
            |_, _, side| vec![0; side * side],
        )
        .unwrap();
        // µm asked of a slide that states no resolution.
        std::fs::write(
            root.join("labels.csv"),
            "slide,label,split\na.tif,x,train\nblank.tif,y,train\n",
        )
        .unwrap();
        let e = SlideSet::open(&config, Some(0.5), Split::Train, |_, _| {});
        let e = e.unwrap_err().to_string();
        assert!(
            e.contains("blank.tif") && e.contains("states no resolution"),
            "{e}"
        );
        let e = error("slide,label,split\nblank.tif,x,train\na.tif,y,train\n");
        assert!(e.contains("blank.tif") && e.contains("no tissue"), "{e}");
        // Class `y` only in test: training would see one class (before: trained on it).
        let e = error("slide,label,split\na.tif,x,train\nblank.tif,y,test\n");
        assert!(
            e.contains("labels.csv") && e.contains("one class only (`x`)") && e.contains("`y`"),
            "{e}"
        );
    }
}
