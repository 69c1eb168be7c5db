//! Photographs in class folders: `ROOT/{train,val,test}/<class>/*.{jpg,jpeg,png,tif,tiff,bmp}`
//! (CQU-BPDD, fMoW, MAME, DDR; method.md §11).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use image::ImageReader;
use rand::{RngExt, SeedableRng, rngs::StdRng, seq::SliceRandom};
use serde::{Deserialize, Serialize};

use crate::file_input::{DEFAULT_MAX_PIXELS, check_pixel_budget, decode, planar_resized};
use crate::{DataError, ImageSource, Pixels, Sample, Split, Target, TaskSpec};

/// File extensions read as images (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "tif", "tiff", "bmp"];
const LAYOUT: &str =
    "the layout is ROOT/{train,val,test}/<class>/*.{jpg,jpeg,png,tif,tiff,bmp} (val/ optional)";

/// The `image_folder` (and `traffic_signs`) dataset of a run config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageFolderConfig {
    /// The folder holding `train/`, `test/` and optionally `val/` (traffic signs: `Set1/`,
    /// `Set2/`).
    pub root: PathBuf,
    /// Every image is resized to this height…
    pub height: usize,
    /// … and width (pixels).
    pub width: usize,
    /// Share of each training class carved out for validation when there is no `val/`.
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    /// Colour jitter (brightness ±10 %) and random translation (up to ±`max_shift` px) on the
    /// training split.
    #[serde(default = "default_true")]
    pub augment: bool,
    /// Largest translation of the augmentation, in pixels (100 in the paper).
    #[serde(default = "default_shift")]
    pub max_shift: usize,
    /// Seed of the validation carve-out and the augmentation.
    #[serde(default)]
    pub seed: u64,
    /// Largest image decoded, in pixels; a file whose header declares more is refused
    /// before it is decoded (default [`DEFAULT_MAX_PIXELS`]).
    #[serde(default = "default_max_pixels")]
    pub max_pixels: u64,
}

fn default_max_pixels() -> u64 {
    DEFAULT_MAX_PIXELS
}

fn default_val_fraction() -> f64 {
    0.1
}

fn default_true() -> bool {
    true
}

fn default_shift() -> usize {
    100
}

/// One split of an image-folder dataset: files and labels, decoded on demand.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    config: ImageFolderConfig,
    classes: Arc<Vec<String>>,
    files: Vec<(PathBuf, usize)>,
    augment: bool,
    smallest: Option<(PathBuf, [u32; 2])>,
    /// Times each sample was drawn: with (seed, index) it seeds the augmentation, so every
    /// epoch sees new jitter and the result does not depend on which worker decodes it.
    draws: Arc<Vec<AtomicU32>>,
}

fn folder_error(path: &Path, problem: impl Into<String>, fix: impl Into<String>) -> DataError {
    DataError::Folder {
        path: path.to_path_buf(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| DataError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        paths.push(entry.path());
    }
    paths.sort();
    Ok(paths)
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The images of one split folder, by class: `(class index, files)`; every class folder must
/// be one of `classes` and hold at least one image.
fn scan_split(dir: &Path, classes: &[String]) -> Result<Vec<(usize, Vec<PathBuf>)>, DataError> {
    let mut out = Vec::new();
    for class_dir in read_dir_sorted(dir)?.into_iter().filter(|p| p.is_dir()) {
        let name = class_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(label) = classes.iter().position(|c| *c == name) else {
            return Err(folder_error(
                &class_dir,
                format!("class `{name}` is not among the training classes {classes:?}"),
                "every split uses the class folders of train/; rename or remove this folder",
            ));
        };
        let files: Vec<PathBuf> = read_dir_sorted(&class_dir)?
            .into_iter()
            .filter(|p| p.is_file() && is_image(p))
            .collect();
        if files.is_empty() {
            return Err(folder_error(
                &class_dir,
                "class folder holds no image",
                format!(
                    "add images ({}) or remove the folder",
                    IMAGE_EXTENSIONS.join(", ")
                ),
            ));
        }
        out.push((label, files));
    }
    Ok(out)
}

/// Without a validation folder: a seeded `fraction` of each class (at least one image stays in
/// training) is the validation split, the rest the training split.
pub(crate) fn carve_validation(
    by_class: Vec<(usize, Vec<PathBuf>)>,
    fraction: f64,
    seed: u64,
    split: Split,
) -> Vec<(usize, Vec<PathBuf>)> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7a11);
    by_class
        .into_iter()
        .map(|(label, mut files)| {
            files.shuffle(&mut rng);
            let held = ((files.len() as f64 * fraction).round() as usize)
                .min(files.len().saturating_sub(1));
            let kept = if split == Split::Valid {
                files[..held].to_vec()
            } else {
                files[held..].to_vec()
            };
            (label, kept)
        })
        .collect()
}

impl ImageFolder {
    /// Opens `split` under `config.root`. Every file's header is read now, so a file that is
    /// not an image fails here, naming it; without `val/`, a seeded `val_fraction` of each
    /// training class is the validation split (and is left out of training).
    /// `prepared(done, total)` follows the header reads, for a progress bar.
    pub fn open(
        config: &ImageFolderConfig,
        split: Split,
        prepared: impl FnMut(usize, usize),
    ) -> Result<Self, DataError> {
        if config.height == 0 || config.width == 0 {
            return Err(DataError::Config {
                field: "dataset.image_folder.height/width",
                reason: format!(
                    "{}×{} px: images need a positive size",
                    config.height, config.width
                ),
            });
        }
        if (config.height as u64).saturating_mul(config.width as u64) > config.max_pixels {
            return Err(DataError::Config {
                field: "dataset.image_folder.height/width",
                reason: format!(
                    "{}×{} px is more than `max_pixels` ({}); resize to fewer pixels or raise `max_pixels`",
                    config.height, config.width, config.max_pixels
                ),
            });
        }
        if config.max_shift >= config.height.min(config.width) {
            return Err(DataError::Config {
                field: "dataset.image_folder.max_shift",
                reason: format!(
                    "{} px must be less than the image's shorter side ({} px); the papers shift by up to 100 px",
                    config.max_shift,
                    config.height.min(config.width)
                ),
            });
        }
        if !(0.0..1.0).contains(&config.val_fraction) {
            return Err(DataError::Config {
                field: "dataset.image_folder.val_fraction",
                reason: format!("{} must lie in [0, 1)", config.val_fraction),
            });
        }
        if !config.root.is_dir() {
            return Err(DataError::Missing {
                what: "image folder root",
                path: config.root.clone(),
                fix: "point `dataset.image_folder.root` at the folder holding train/ and test/",
            });
        }
        let split_dir = |name: &str| -> Result<PathBuf, DataError> {
            let dir = config.root.join(name);
            if dir.is_dir() {
                Ok(dir)
            } else {
                Err(folder_error(
                    &dir,
                    format!("the {name}/ split is absent"),
                    LAYOUT,
                ))
            }
        };
        let train_dir = split_dir("train")?;
        let classes: Vec<String> = read_dir_sorted(&train_dir)?
            .into_iter()
            .filter(|p| p.is_dir())
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        if classes.is_empty() {
            return Err(folder_error(&train_dir, "no class folder", LAYOUT));
        }
        let carve = !config.root.join("val").is_dir();
        let by_class = match split {
            Split::Train | Split::Valid if carve => carve_validation(
                scan_split(&train_dir, &classes)?,
                config.val_fraction,
                config.seed,
                split,
            ),
            Split::Train => scan_split(&train_dir, &classes)?,
            Split::Valid => scan_split(&split_dir("val")?, &classes)?,
            Split::Test => scan_split(&split_dir("test")?, &classes)?,
        };
        let files = by_class
            .into_iter()
            .flat_map(|(label, files)| files.into_iter().map(move |f| (f, label)))
            .collect();
        Self::from_files(config, classes, files, split, prepared)
    }

    /// A split over labelled `files` (`(path, label)`), decoded and augmented as `config`
    /// says; every file's header is read now, `prepared(done, total)` following the reads.
    /// Other layouts (the traffic signs) build on this.
    pub fn from_files(
        config: &ImageFolderConfig,
        classes: Vec<String>,
        files: Vec<(PathBuf, usize)>,
        split: Split,
        mut prepared: impl FnMut(usize, usize),
    ) -> Result<Self, DataError> {
        let mut smallest: Option<(PathBuf, [u32; 2])> = None;
        for (done, (path, _)) in files.iter().enumerate() {
            let [w, h] = image_size(path)?;
            check_pixel_budget(path, [w, h], config.max_pixels)?;
            prepared(done + 1, files.len());
            if smallest
                .as_ref()
                .is_none_or(|(_, [sw, sh])| w.min(h) < (*sw).min(*sh))
            {
                smallest = Some((path.clone(), [w, h]));
            }
        }
        Ok(Self {
            config: config.clone(),
            classes: Arc::new(classes),
            draws: Arc::new((0..files.len()).map(|_| AtomicU32::new(0)).collect()),
            files,
            augment: config.augment && split == Split::Train,
            smallest,
        })
    }

    /// Class names, in label order (the sorted folder names of `train/`).
    pub fn classes(&self) -> &[String] {
        &self.classes
    }
}

/// `[width, height]` from the file's header.
fn image_size(path: &Path) -> Result<[u32; 2], DataError> {
    let not_image = |e: &dyn std::fmt::Display| {
        folder_error(
            path,
            format!("not a readable image: {e}"),
            "replace or remove the file",
        )
    };
    let (w, h) = ImageReader::open(path)
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .with_guessed_format()
        .map_err(|e| not_image(&e))?
        .into_dimensions()
        .map_err(|e| not_image(&e))?;
    Ok([w, h])
}

/// Brightness ×U(0.9, 1.1) (torchvision's `ColorJitter(0.1)`) and a shift of up to ±`max`
/// pixels in each direction with black fill (`RandomAffine(translate=…)`), on `[3, H, W]`
/// 8-bit values.
fn augment(pixels: &mut [u8], [h, w]: [usize; 2], max: usize, rng: &mut StdRng) {
    let gain = rng.random_range(0.9f32..1.1);
    let shift = |rng: &mut StdRng, side: usize| {
        let m = max.min(side.saturating_sub(1)) as i64;
        rng.random_range(-m..=m) as isize
    };
    let (dy, dx) = (shift(rng, h), shift(rng, w));
    let source = pixels.to_vec();
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let (sy, sx) = (y as isize - dy, x as isize - dx);
                let inside = (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx);
                pixels[(c * h + y) * w + x] = if inside {
                    let v = f32::from(source[(c * h + sy as usize) * w + sx as usize]) * gain;
                    v.round().clamp(0.0, 255.0) as u8
                } else {
                    0
                };
            }
        }
    }
}

impl ImageSource for ImageFolder {
    fn tasks(&self) -> Vec<TaskSpec> {
        vec![TaskSpec::softmax("class", self.classes.len()).with_class_names(self.classes.to_vec())]
    }

    fn image_size(&self) -> [usize; 3] {
        [3, self.config.height, self.config.width]
    }

    fn len(&self) -> usize {
        self.files.len()
    }

    fn smallest_file(&self) -> Option<(&Path, [usize; 2])> {
        self.smallest
            .as_ref()
            .map(|(p, [w, h])| (p.as_path(), [*w as usize, *h as usize]))
    }

    fn sample(&self, index: usize) -> Result<Sample, DataError> {
        let (path, label) = self.files.get(index).ok_or(DataError::IndexOutOfRange {
            index,
            len: self.files.len(),
        })?;
        let (h, w) = (self.config.height, self.config.width);
        let mut pixels = planar_resized(&decode(path, self.config.max_pixels)?.to_rgb8(), [h, w]);
        if self.augment {
            let draw = self.draws[index].fetch_add(1, Ordering::Relaxed);
            let seed = self.config.seed
                ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                ^ u64::from(draw).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            augment(
                &mut pixels,
                [h, w],
                self.config.max_shift,
                &mut StdRng::seed_from_u64(seed),
            );
        }
        Ok(Sample {
            image: Pixels::ImageNet8(pixels),
            channels: 3,
            height: h,
            width: w,
            targets: vec![Target::Class(*label)],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;

    fn tree(name: &str, per_class: u8) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("dbps-data-folder-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for class in ["a", "b"] {
            for split in ["train", "test"] {
                let dir = root.join(split).join(class);
                std::fs::create_dir_all(&dir).unwrap();
                for i in 0..per_class {
                    let value =
                        |x: u32, y: u32| image::Rgb([i * 10 + x as u8 * 5, y as u8 * 10, 0]);
                    RgbImage::from_fn(20, 10, value)
                        .save(dir.join(format!("{i}.png")))
                        .unwrap();
                }
            }
        }
        root
    }

    fn config(root: PathBuf) -> ImageFolderConfig {
        ImageFolderConfig {
            root,
            height: 10,
            width: 20,
            val_fraction: 0.3,
            augment: true,
            max_shift: 4,
            seed: 5,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }

    /// Without `val/`, a seeded 30 % of each class is validation and leaves training; the
    /// carve-out is the same on every open.
    #[test]
    fn validation_is_a_seeded_disjoint_share_of_each_training_class() {
        let cfg = config(tree("carve", 10));
        let train = ImageFolder::open(&cfg, Split::Train, |_, _| {}).unwrap();
        let valid = ImageFolder::open(&cfg, Split::Valid, |_, _| {}).unwrap();
        assert_eq!((train.len(), valid.len()), (14, 6));
        for (path, _) in &valid.files {
            assert!(
                !train.files.iter().any(|(p, _)| p == path),
                "{path:?} in both"
            );
        }
        for label in 0..2 {
            assert_eq!(valid.files.iter().filter(|(_, l)| *l == label).count(), 3);
        }
        let again = ImageFolder::open(&cfg, Split::Valid, |_, _| {}).unwrap();
        assert_eq!(again.files, valid.files);
        let other = ImageFolder::open(
            &ImageFolderConfig { seed: 6, ..cfg },
            Split::Valid,
            |_, _| {},
        )
        .unwrap();
        assert_ne!(other.files, valid.files);
    }

    /// Evaluation splits are never augmented: ImageNet-normalised pixels of the resized file;
    /// training draws differ from one epoch to the next.
    #[test]
    fn only_training_samples_are_augmented() {
        let cfg = config(tree("augment", 2));
        let mut progress = Vec::new();
        let test = ImageFolder::open(&cfg, Split::Test, |d, t| progress.push((d, t))).unwrap();
        let n = test.len();
        assert_eq!(progress, (1..=n).map(|d| (d, n)).collect::<Vec<_>>());
        let a = test.sample(1).unwrap();
        assert_eq!(a.image, test.sample(1).unwrap().image);
        let Pixels::ImageNet8(values) = &a.image else {
            panic!("photographs stay 8-bit")
        };
        // Pixel (0, 0) of class a, file 1: red 10, green 0; pixel (0, 1): red 15.
        assert_eq!((values[0], values[1], values[200]), (10, 15, 0));
        let train = ImageFolder::open(&cfg, Split::Train, |_, _| {}).unwrap();
        let first = train.sample(0).unwrap();
        let second = train.sample(0).unwrap();
        assert_eq!(first.image.len(), 3 * 10 * 20);
        assert!(first.image != second.image, "a new draw each epoch");
        assert_eq!(test.tasks()[0].classes, 2);
    }
}
