use std::path::PathBuf;
use std::sync::Arc;

use rand::{Rng, RngExt, SeedableRng, rngs::StdRng, seq::SliceRandom};
use serde::{Deserialize, Serialize};

use crate::generated_limits::{check_count, check_split_sizes};
use crate::{
    Canvas, DataError, IdxDigits, ImageSource, Sample, Split, Target, TaskKind, TaskSpec,
    read_idx_digits,
};

/// The most noise stamps per canvas, and noise patterns to draw them from (the benchmark uses
/// 50 of each; each pattern is a patch-sized array).
const MAX_NOISE: usize = 100_000;
/// Settings of [`MegapixelMnist`] (method.md §11; the defaults are the IPS protocol).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MegapixelMnistConfig {
    /// Folder with the IDX digit files; `DBPS_MNIST_DIR` overrides it.
    pub digits_dir: PathBuf,
    /// The IDX images file the train and valid pools (and, without `test_images`, the test
    /// pool) come from, relative to `digits_dir`. Files are always named, never discovered.
    pub images: PathBuf,
    /// Its labels file.
    pub labels: PathBuf,
    /// A separate IDX images file for the test split (MNIST's `t10k-images-idx3-ubyte.gz`).
    pub test_images: Option<PathBuf>,
    /// Its labels file.
    pub test_labels: Option<PathBuf>,
    /// Canvas side in pixels.
    pub canvas: usize,
    /// Noise stamps per canvas.
    pub noise_stamps: usize,
    /// Distinct noise line patterns per split.
    pub noise_patterns: usize,
    /// Images per split: train, valid, test.
    pub sizes: [usize; 3],
    /// Shares of the digits file used by the train, valid and test pools (disjoint, in file
    /// order); with `test_images` the test split uses all of that file instead.
    pub pools: [f64; 3],
    /// Seed of every draw.
    pub seed: u64,
}

impl Default for MegapixelMnistConfig {
    fn default() -> Self {
        Self {
            digits_dir: PathBuf::from("../shared/data/mnist"),
            images: PathBuf::from("digits8k-images-idx3-ubyte.gz"),
            labels: PathBuf::from("digits8k-labels-idx1-ubyte.gz"),
            test_images: None,
            test_labels: None,
            canvas: 1500,
            noise_stamps: 50,
            noise_patterns: 50,
            sizes: [5000, 1000, 1000],
            pools: [0.7, 0.1, 0.2],
            seed: 0,
        }
    }
}

impl MegapixelMnistConfig {
    /// The digits folder, with the `DBPS_MNIST_DIR` environment variable taking precedence.
    pub fn resolved_digits_dir(&self) -> PathBuf {
        std::env::var_os("DBPS_MNIST_DIR").map_or_else(|| self.digits_dir.clone(), PathBuf::from)
    }
}

const DIGITS_PER_IMAGE: usize = 5;
const TARGET_COPIES: usize = 3;

/// Megapixel MNIST: 3 digits of the target class and 2 others placed without overlap on a large
/// canvas over 50 line-noise stamps; tasks majority, max, top and multi.
#[derive(Debug, Clone)]
pub struct MegapixelMnist {
    config: MegapixelMnistConfig,
    split: Split,
    digits: Arc<IdxDigits>,
    /// Digit indices of this split's pool, per class.
    pool: Vec<Vec<usize>>,
    /// The split's shared noise patterns, 28×28 each.
    patterns: Vec<Vec<f32>>,
}

impl MegapixelMnist {
    /// The given split, reading the digits from the files the config names.
    pub fn new(config: &MegapixelMnistConfig, split: Split) -> Result<Self, DataError> {
        check_split_sizes("dataset.megapixel_mnist.sizes", config.sizes)?;
        check_count(
            "dataset.megapixel_mnist.noise_stamps",
            config.noise_stamps,
            MAX_NOISE,
        )?;
        check_count(
            "dataset.megapixel_mnist.noise_patterns",
            config.noise_patterns,
            MAX_NOISE,
        )?;
        let [train, valid, test] = Self::splits(config)?;
        Ok(match split {
            Split::Train => train,
            Split::Valid => valid,
            Split::Test => test,
        })
    }

    /// The train, valid and test splits, each digits file read once.
    pub fn splits(config: &MegapixelMnistConfig) -> Result<[Self; 3], DataError> {
        let dir = config.resolved_digits_dir();
        let read = |images: &PathBuf, labels: &PathBuf| {
            read_idx_digits(&dir.join(images), &dir.join(labels)).map(Arc::new)
        };
        let test_file = match (&config.test_images, &config.test_labels) {
            (Some(images), Some(labels)) => Some(read(images, labels)?),
            (None, None) => None,
            _ => {
                return Err(DataError::Config {
                    field: "dataset.megapixel_mnist.test_images",
                    reason: "`test_images` and `test_labels` go together; give both or neither"
                        .into(),
                });
            }
        };
        let digits = read(&config.images, &config.labels)?;
        let open = |split| match (&test_file, split) {
            (Some(test), Split::Test) => {
                Self::with_pool(config, split, Arc::clone(test), 0..test.len())
            }
            _ => Self::from_digits(config, split, Arc::clone(&digits)),
        };
        Ok([open(Split::Train)?, open(Split::Valid)?, open(Split::Test)?])
    }

    /// The given split over digits already read, its pool the split's share (`pools`) of them.
    pub fn from_digits(
        config: &MegapixelMnistConfig,
        split: Split,
        digits: Arc<IdxDigits>,
    ) -> Result<Self, DataError> {
        let which = split.index();
        let bound =
            |k: usize| (config.pools[..k].iter().sum::<f64>() * digits.len() as f64) as usize;
        let range = bound(which)..bound(which + 1);
        Self::with_pool(config, split, digits, range)
    }

    /// The given split drawing its digits from items `range` of `digits`.
    fn with_pool(
        config: &MegapixelMnistConfig,
        split: Split,
        digits: Arc<IdxDigits>,
        range: std::ops::Range<usize>,
    ) -> Result<Self, DataError> {
        let side = digits.rows.max(digits.cols);
        if config.canvas < side * 4 {
            return Err(DataError::Config {
                field: "dataset.megapixel_mnist.canvas",
                reason: format!(
                    "a {} px canvas cannot hold {DIGITS_PER_IMAGE} non-overlapping {side} px digits; use at least {}",
                    config.canvas,
                    side * 4
                ),
            });
        }
        if config.pools.iter().any(|p| !(0.0..=1.0).contains(p))
            || config.pools.iter().sum::<f64>() > 1.0 + 1e-9
        {
            return Err(DataError::Config {
                field: "dataset.megapixel_mnist.pools",
                reason: format!(
                    "{:?} must be shares in [0, 1] summing to at most 1",
                    config.pools
                ),
            });
        }
        if split == Split::Train {
            let absent = digits_absent(&digits.labels[range.clone()]);
            if !absent.is_empty() {
                tracing::warn!(
                    digits = ?absent,
                    "the training pool holds no digit {absent:?}: the `multi` task's label for it is never positive in training, and the other tasks never see it"
                );
            }
        }
        if config.noise_patterns == 0 && config.noise_stamps > 0 {
            return Err(DataError::Config {
                field: "dataset.megapixel_mnist.noise_patterns",
                reason: format!(
                    "0 noise patterns cannot draw {} noise stamps; use at least 1, or set `noise_stamps` to 0",
                    config.noise_stamps
                ),
            });
        }
        let (start, end) = (range.start, range.end);
        let mut pool = vec![Vec::new(); 10];
        for i in start..end {
            pool[digits.labels[i] as usize].push(i);
        }
        if let Some(class) = pool.iter().position(Vec::is_empty) {
            return Err(DataError::Config {
                field: "dataset.megapixel_mnist.pools",
                reason: format!(
                    "the {split:?} pool ({} digits) has no digit of class {class}; give it a larger share",
                    end - start
                ),
            });
        }
        let mut rng = StdRng::seed_from_u64(config.seed ^ split.salt() ^ 0x5eed);
        let patterns = noise_patterns(config.noise_patterns, side, &mut rng);
        Ok(Self {
            config: config.clone(),
            split,
            digits,
            pool,
            patterns,
        })
    }

    /// The four tasks of the IPS protocol.
    pub fn tasks() -> Vec<TaskSpec> {
        vec![
            TaskSpec::softmax("majority", 10),
            TaskSpec::softmax("max", 10),
            TaskSpec::softmax("top", 10),
            TaskSpec {
                name: "multi".into(),
                kind: TaskKind::MultiLabel,
                classes: 10,
                class_names: Vec::new(),
            },
        ]
    }

    /// Draws canvas `index` with its targets and the top-left `(x, y)` of its five digit boxes.
    pub fn draw(&self, index: usize) -> (Canvas, Vec<Target>, Vec<(usize, usize)>) {
        let cfg = &self.config;
        let seed =
            cfg.seed ^ self.split.salt() ^ (index as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
        let mut rng = StdRng::seed_from_u64(seed);
        let side = self.digits.rows.max(self.digits.cols);
        let mut canvas = Canvas::new(cfg.canvas, cfg.canvas);
        let max_xy = cfg.canvas - side;
        // Noise first, each stamp overwriting its whole box, placed `side` px clear of the
        // edges as the reference places it; the digits then overwrite theirs.
        for _ in 0..cfg.noise_stamps {
            let pattern = &self.patterns[rng.random_range(0..self.patterns.len())];
            let mut at = || rng.random_range(side..=cfg.canvas - 2 * side);
            let (x, y) = (at(), at());
            canvas.paste_box(pattern, side, x, y);
        }
        let target = rng.random_range(0..10usize);
        let mut classes = vec![target; TARGET_COPIES];
        while classes.len() < DIGITS_PER_IMAGE {
            let other = rng.random_range(0..9usize);
            classes.push(if other >= target { other + 1 } else { other });
        }
        let mut boxes: Vec<(usize, usize)> = Vec::new();
        while boxes.len() < DIGITS_PER_IMAGE {
            let (x, y) = (rng.random_range(0..=max_xy), rng.random_range(0..=max_xy));
            if boxes
                .iter()
                .all(|&(bx, by)| bx.abs_diff(x) >= side || by.abs_diff(y) >= side)
            {
                boxes.push((x, y));
            }
        }
        for (&class, &(x, y)) in classes.iter().zip(&boxes) {
            let pool = &self.pool[class];
            let digit = self.digits.digit(pool[rng.random_range(0..pool.len())]);
            canvas.paste_box(&digit, side, x, y);
        }
        let top = classes[(0..DIGITS_PER_IMAGE)
            .min_by_key(|&i| boxes[i].1)
            .unwrap_or(0)];
        let mut present = vec![false; 10];
        classes.iter().for_each(|&c| present[c] = true);
        let targets = vec![
            Target::Class(target),
            Target::Class(classes.iter().copied().max().unwrap_or(target)),
            Target::Class(top),
            Target::MultiHot(present),
        ];
        (canvas, targets, boxes)
    }
}

/// The reference generator's noise patterns (method.md §11), `side`² each: pattern i is the
/// union of a one-pixel straight stroke from the box's corner at a random slope tan(U·π/2.5)
/// (56 points, rounded) and the stroke of another pattern, mirrored left–right with the
/// reference's odds (its two flips with p = 0.33 both act on columns, so a mirror happens when
/// exactly one fires); stroke pixels take values U(0.8, 1).
fn noise_patterns<R: Rng + ?Sized>(count: usize, side: usize, rng: &mut R) -> Vec<Vec<f32>> {
    let end = side as f32 - 0.51;
    let strokes: Vec<Vec<bool>> = (0..count)
        .map(|_| {
            let slope = (rng.random_range(0.0f32..1.0) * std::f32::consts::PI / 2.5).tan();
            let reach = end.min(end / slope);
            let mut stroke = vec![false; side * side];
            for k in 0..56 {
                let row = reach * k as f32 / 55.0;
                let col = slope * row;
                let (r, c) = (row.round() as usize, col.round() as usize);
                if r < side && c < side {
                    stroke[r * side + c] = true;
                }
            }
            stroke
        })
        .collect();
    let mut partners: Vec<usize> = (0..count).collect();
    partners.shuffle(rng);
    (0..count)
        .map(|i| {
            let mirror =
                (rng.random_range(0.0f32..1.0) < 0.33) ^ (rng.random_range(0.0f32..1.0) < 0.33);
            let partner = &strokes[partners[i]];
            (0..side * side)
                .map(|p| {
                    let (r, c) = (p / side, p % side);
                    let mirrored = if mirror { side - 1 - c } else { c };
                    if strokes[i][p] || partner[r * side + mirrored] {
                        rng.random_range(0.8f32..1.0)
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect()
}

impl ImageSource for MegapixelMnist {
    fn tasks(&self) -> Vec<TaskSpec> {
        Self::tasks()
    }

    fn image_size(&self) -> [usize; 3] {
        [1, self.config.canvas, self.config.canvas]
    }

    fn len(&self) -> usize {
        self.config.sizes[self.split.index()]
    }

    fn sample(&self, index: usize) -> Result<Sample, DataError> {
        let len = self.len();
        if index >= len {
            return Err(DataError::IndexOutOfRange { index, len });
        }
        let (canvas, targets, _) = self.draw(index);
        Ok(canvas.into_sample(targets))
    }
}

/// The digits 0–9 that no label of `labels` names.
fn digits_absent(labels: &[u8]) -> Vec<u8> {
    let mut seen = [false; 10];
    for &l in labels {
        if let Some(s) = seen.get_mut(usize::from(l)) {
            *s = true;
        }
    }
    (0..10).filter(|&d| !seen[usize::from(d)]).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn digits_never_in_a_pool_are_found() {
        assert_eq!(
            digits_absent(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 3]),
            Vec::<u8>::new()
        );
        assert_eq!(digits_absent(&[1, 1, 9]), vec![0, 2, 3, 4, 5, 6, 7, 8]);
    }

    use super::*;

    fn digits() -> Arc<IdxDigits> {
        // Digit i is a solid block of value (label+1)/10, 28×28, labels cycling 0..9.
        let n = 200;
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let pixels = labels
            .iter()
            .flat_map(|&l| vec![(l + 1) * 25; 28 * 28])
            .collect();
        Arc::new(IdxDigits {
            pixels,
            labels,
            rows: 28,
            cols: 28,
        })
    }

    #[test]
    fn targets_follow_the_protocol() {
        let cfg = MegapixelMnistConfig {
            canvas: 200,
            sizes: [20, 5, 5],
            ..Default::default()
        };
        let data = MegapixelMnist::from_digits(&cfg, Split::Train, digits()).unwrap();
        for i in 0..20 {
            let (_, t, _) = data.draw(i);
            let (Target::Class(majority), Target::Class(max), Target::MultiHot(present)) =
                (&t[0], &t[1], &t[3])
            else {
                panic!("unexpected targets {t:?}");
            };
            assert!(present[*majority]);
            assert!(present.iter().filter(|p| **p).count() <= 3);
            assert_eq!(*max, present.iter().rposition(|p| *p).unwrap());
        }
    }

    /// `top` is the class of the digit placed highest on the canvas, read back from the pixels:
    /// without noise, the first non-blank row belongs to that digit alone (boxes never overlap),
    /// and the test digits' values say their class.
    #[test]
    fn top_is_the_class_of_the_highest_digit_on_the_canvas() {
        let cfg = MegapixelMnistConfig {
            canvas: 200,
            noise_stamps: 0,
            sizes: [40, 5, 5],
            ..Default::default()
        };
        let data = MegapixelMnist::from_digits(&cfg, Split::Train, digits()).unwrap();
        let mut checked = 0;
        for i in 0..40 {
            let (canvas, t, _) = data.draw(i);
            let Target::Class(top) = t[2] else {
                panic!("top is a class target: {t:?}")
            };
            let row = |y: usize| &canvas.pixels[y * 200..(y + 1) * 200];
            let first = (0..200)
                .find(|&y| row(y).iter().any(|&v| v > 0.0))
                .expect("five digits are drawn");
            // Digit of class l is a block of value (l + 1)·25 / 255.
            let mut classes: Vec<usize> = row(first)
                .iter()
                .filter(|&&v| v > 0.0)
                .map(|&v| (v * 255.0 / 25.0).round() as usize - 1)
                .collect();
            classes.dedup();
            // Two digits starting on the same row: `top` is either; nothing to read back.
            if classes.len() == 1 {
                assert_eq!(top, classes[0], "image {i}");
                checked += 1;
            }
        }
        assert!(checked >= 30, "only {checked} images had one highest digit");
    }

    /// Digits overwrite their whole box (zeros included) over the noise; noise strokes are
    /// one pixel wide with values in [0.8, 1).
    #[test]
    fn digits_overwrite_their_box_over_reference_noise() {
        let cfg = MegapixelMnistConfig {
            canvas: 200,
            noise_stamps: 60,
            noise_patterns: 10,
            sizes: [10, 5, 5],
            ..Default::default()
        };
        // Digits whose left half is blank: a paste of non-zero pixels only would leave noise.
        let mut half = (*digits()).clone();
        for d in 0..half.len() {
            for r in 0..28 {
                half.pixels[(d * 28 + r) * 28..(d * 28 + r) * 28 + 14].fill(0);
            }
        }
        let data = MegapixelMnist::from_digits(&cfg, Split::Train, Arc::new(half)).unwrap();
        for i in 0..10 {
            let (canvas, _, boxes) = data.draw(i);
            for (x, y) in boxes {
                for r in 0..28 {
                    let row = &canvas.pixels[(y + r) * 200 + x..(y + r) * 200 + x + 28];
                    assert!(
                        row[..14].iter().all(|&v| v == 0.0),
                        "noise left in a digit box"
                    );
                    assert!(row[14..].iter().all(|&v| v > 0.0));
                }
            }
        }
        for pattern in &data.patterns {
            let lit: Vec<f32> = pattern.iter().copied().filter(|&v| v > 0.0).collect();
            assert!(lit.iter().all(|v| (0.8..1.0).contains(v)), "{lit:?}");
            // Two one-pixel strokes of 56 rounded points across a 28 px box.
            assert!((28..=112).contains(&lit.len()), "{} lit pixels", lit.len());
        }
    }

    #[test]
    fn pools_are_disjoint() {
        let cfg = MegapixelMnistConfig::default();
        let d = digits();
        let pools: Vec<Vec<usize>> = Split::ALL
            .iter()
            .map(|&s| {
                MegapixelMnist::from_digits(&cfg, s, d.clone())
                    .unwrap()
                    .pool
                    .concat()
            })
            .collect();
        for a in 0..3 {
            for b in a + 1..3 {
                assert!(pools[a].iter().all(|i| !pools[b].contains(i)));
            }
        }
    }

    #[test]
    fn no_noise_patterns_for_noise_stamps_is_rejected() {
        let cfg = MegapixelMnistConfig {
            canvas: 200,
            noise_patterns: 0,
            ..Default::default()
        };
        let err = MegapixelMnist::from_digits(&cfg, Split::Train, digits()).unwrap_err();
        assert!(
            err.to_string()
                .contains("dataset.megapixel_mnist.noise_patterns"),
            "{err}"
        );
        let quiet = MegapixelMnistConfig {
            noise_stamps: 0,
            ..cfg
        };
        let data = MegapixelMnist::from_digits(&quiet, Split::Train, digits()).unwrap();
        data.draw(0);
    }

    #[test]
    fn a_test_images_file_needs_its_labels() {
        let cfg = MegapixelMnistConfig {
            test_images: Some("t10k-images-idx3-ubyte.gz".into()),
            ..Default::default()
        };
        let err = MegapixelMnist::new(&cfg, Split::Train)
            .unwrap_err()
            .to_string();
        assert!(err.contains("test_labels"), "{err}");
    }

    #[test]
    fn small_canvas_is_rejected() {
        let cfg = MegapixelMnistConfig {
            canvas: 60,
            ..Default::default()
        };
        let err = MegapixelMnist::from_digits(&cfg, Split::Train, digits()).unwrap_err();
        assert!(
            err.to_string().contains("dataset.megapixel_mnist.canvas"),
            "{err}"
        );
    }
}
