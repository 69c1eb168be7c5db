use std::path::PathBuf;
use std::sync::Arc;

use rand::{Rng, RngExt, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::{
    Canvas, DataError, IdxDigits, ImageSource, Sample, Split, Target, TaskKind, TaskSpec,
    read_idx_digits,
};

/// Settings of [`MegapixelMnist`] (method.md §11; the defaults are the IPS protocol).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MegapixelMnistConfig {
    /// Folder with the IDX digit files; `DBPS_MNIST_DIR` overrides it.
    pub digits_dir: PathBuf,
    /// Canvas side in pixels.
    pub canvas: usize,
    /// Noise stamps per canvas.
    pub noise_stamps: usize,
    /// Distinct noise line patterns per split.
    pub noise_patterns: usize,
    /// Images per split: train, valid, test.
    pub sizes: [usize; 3],
    /// Share of the digit files used by the train, valid and test pools (disjoint, in file order).
    pub pools: [f64; 3],
    /// Seed of every draw.
    pub seed: u64,
}

impl Default for MegapixelMnistConfig {
    fn default() -> Self {
        Self {
            digits_dir: PathBuf::from("../shared/data/mnist"),
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
    /// The given split, reading the digits from the configured folder.
    pub fn new(config: &MegapixelMnistConfig, split: Split) -> Result<Self, DataError> {
        let digits = Arc::new(read_idx_digits(&config.resolved_digits_dir())?);
        Self::from_digits(config, split, digits)
    }

    /// The given split over digits already read (share one read between splits).
    pub fn from_digits(
        config: &MegapixelMnistConfig,
        split: Split,
        digits: Arc<IdxDigits>,
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
        if config.noise_patterns == 0 && config.noise_stamps > 0 {
            return Err(DataError::Config {
                field: "dataset.megapixel_mnist.noise_patterns",
                reason: format!(
                    "0 noise patterns cannot draw {} noise stamps; use at least 1, or set `noise_stamps` to 0",
                    config.noise_stamps
                ),
            });
        }
        let which = split.index();
        let bound =
            |k: usize| (config.pools[..k].iter().sum::<f64>() * digits.len() as f64) as usize;
        let (start, end) = (bound(which), bound(which + 1));
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
        let patterns = (0..config.noise_patterns)
            .map(|_| noise_pattern(side, &mut rng))
            .collect();
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
            },
        ]
    }

    /// Draws canvas `index` with its targets.
    pub fn draw(&self, index: usize) -> (Canvas, Vec<Target>) {
        let cfg = &self.config;
        let seed =
            cfg.seed ^ self.split.salt() ^ (index as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
        let mut rng = StdRng::seed_from_u64(seed);
        let side = self.digits.rows.max(self.digits.cols);
        let mut canvas = Canvas::new(cfg.canvas, cfg.canvas);
        let max_xy = cfg.canvas - side;
        for _ in 0..cfg.noise_stamps {
            let pattern = &self.patterns[rng.random_range(0..self.patterns.len())];
            let (x, y) = (rng.random_range(0..=max_xy), rng.random_range(0..=max_xy));
            canvas.paste_max(pattern, side, x, y);
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
            canvas.paste_over(&digit, side, x, y);
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
        (canvas, targets)
    }
}

/// Union of two random straight strokes through a `side`² box, values U(0.8, 1).
fn noise_pattern<R: Rng + ?Sized>(side: usize, rng: &mut R) -> Vec<f32> {
    let mut canvas = Canvas::new(side, side);
    let s = side as f32;
    for _ in 0..2 {
        let a = (rng.random_range(0.0..s), rng.random_range(0.0..s));
        let b = (rng.random_range(0.0..s), rng.random_range(0.0..s));
        canvas.polyline(&[a, b], rng.random_range(1.5f32..3.0), 1.0);
    }
    canvas
        .pixels
        .into_iter()
        .map(|v| {
            if v > 0.0 {
                v * rng.random_range(0.8f32..1.0)
            } else {
                0.0
            }
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
        let (canvas, targets) = self.draw(index);
        Ok(Sample {
            image: canvas.pixels,
            channels: 1,
            height: canvas.height,
            width: canvas.width,
            targets,
        })
    }
}

#[cfg(test)]
mod tests {
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
            let (_, t) = data.draw(i);
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
            let (canvas, t) = data.draw(i);
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
