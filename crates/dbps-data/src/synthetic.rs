use rand::{RngExt, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::generated_limits::{check_noise, check_split_sizes};
use crate::glyphs::{draw_clutter, draw_digit};
use crate::{Canvas, DataError, ImageSource, Sample, Split, Target, TaskSpec};

/// Settings of the embedded [`SyntheticDigits`] dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticDigitsConfig {
    /// Canvas side in pixels.
    pub canvas: usize,
    /// Digit height range in pixels, `[min, max)`.
    pub digit_height: [usize; 2],
    /// Copies of the class digit per canvas (drawn separately, never overlapping).
    pub copies: usize,
    /// Clutter strokes per canvas.
    pub clutter: usize,
    /// Side of a clutter stroke's box in pixels.
    pub clutter_size: usize,
    /// Peak amplitude of the uniform background noise.
    pub noise: f32,
    /// Images per split: train, valid, test.
    pub sizes: [usize; 3],
    /// Seed of every draw.
    pub seed: u64,
}

impl Default for SyntheticDigitsConfig {
    /// The embedded default of earlier versions: 160² canvas, three 10–15 px copies, 20 clutter
    /// strokes.
    fn default() -> Self {
        Self {
            canvas: 160,
            digit_height: [10, 15],
            copies: 3,
            clutter: 20,
            clutter_size: 12,
            noise: 0.1,
            sizes: [2000, 200, 400],
            seed: 7,
        }
    }
}

/// Copies of one procedurally drawn digit (class = the digit) on a large noisy, cluttered canvas.
#[derive(Debug, Clone)]
pub struct SyntheticDigits {
    config: SyntheticDigitsConfig,
    split: Split,
    len: usize,
}

impl SyntheticDigits {
    /// The given split of the dataset the config describes.
    pub fn new(config: &SyntheticDigitsConfig, split: Split) -> Result<Self, DataError> {
        check_noise("dataset.synthetic_digits.noise", config.noise)?;
        check_split_sizes("dataset.synthetic_digits.sizes", config.sizes)?;
        let [lo, hi] = config.digit_height;
        if lo == 0 || lo >= hi || hi > config.canvas {
            return Err(DataError::Config {
                field: "dataset.synthetic_digits.digit_height",
                reason: format!(
                    "[{lo}, {hi}) must be a non-empty range of heights within the {} px canvas",
                    config.canvas
                ),
            });
        }
        if config.copies == 0 || config.copies * hi * hi * 4 > config.canvas * config.canvas {
            return Err(DataError::Config {
                field: "dataset.synthetic_digits.copies",
                reason: format!(
                    "{} copies of {hi} px digits do not fit a {} px canvas; use between 1 and {}",
                    config.copies,
                    config.canvas,
                    (config.canvas * config.canvas / (4 * hi * hi)).max(1)
                ),
            });
        }
        if config.clutter > 0 && (config.clutter_size == 0 || config.clutter_size >= config.canvas)
        {
            return Err(DataError::Config {
                field: "dataset.synthetic_digits.clutter_size",
                reason: format!(
                    "{} px clutter strokes do not fit a {} px canvas; use between 1 and {}",
                    config.clutter_size,
                    config.canvas,
                    config.canvas - 1
                ),
            });
        }
        let len = config.sizes[split.index()];
        Ok(Self {
            config: config.clone(),
            split,
            len,
        })
    }

    /// The single task: which digit (10 classes).
    pub fn tasks() -> Vec<TaskSpec> {
        vec![TaskSpec::softmax("digit", 10)]
    }

    /// Draws canvas `index`, returning it with its digit and the digits' boxes `[x, y, w, h]`.
    pub fn draw(&self, index: usize) -> (Canvas, usize, Vec<[usize; 4]>) {
        let cfg = &self.config;
        let seed =
            cfg.seed ^ self.split.salt() ^ (index as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
        let mut rng = StdRng::seed_from_u64(seed);
        let side = cfg.canvas;
        let mut canvas = Canvas::new(side, side);
        for p in &mut canvas.pixels {
            *p = rng.random::<f32>() * cfg.noise;
        }
        let clutter = cfg.clutter_size as f32;
        for _ in 0..cfg.clutter {
            let at = (
                rng.random_range(0.0..(side as f32 - clutter)),
                rng.random_range(0.0..(side as f32 - clutter)),
            );
            draw_clutter(&mut canvas, at, clutter, &mut rng);
        }
        let digit = rng.random_range(0..10usize);
        let mut boxes: Vec<[usize; 4]> = Vec::with_capacity(cfg.copies);
        while boxes.len() < cfg.copies {
            let height = rng.random_range(cfg.digit_height[0]..cfg.digit_height[1]);
            let x = rng.random_range(0..=side - height);
            let y = rng.random_range(0..=side - height);
            let apart = |b: &[usize; 4]| {
                x >= b[0] + b[2] || b[0] >= x + height || y >= b[1] + b[3] || b[1] >= y + height
            };
            if boxes.iter().all(apart) {
                draw_digit(
                    &mut canvas,
                    digit,
                    (x as f32, y as f32),
                    height as f32,
                    &mut rng,
                );
                boxes.push([x, y, height, height]);
            }
        }
        (canvas, digit, boxes)
    }
}

impl ImageSource for SyntheticDigits {
    fn tasks(&self) -> Vec<TaskSpec> {
        Self::tasks()
    }

    fn image_size(&self) -> [usize; 3] {
        [1, self.config.canvas, self.config.canvas]
    }

    fn len(&self) -> usize {
        self.len
    }

    fn sample(&self, index: usize) -> Result<Sample, DataError> {
        if index >= self.len {
            return Err(DataError::IndexOutOfRange {
                index,
                len: self.len,
            });
        }
        let (canvas, digit, _) = self.draw(index);
        Ok(canvas.into_sample(vec![Target::Class(digit)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_splits_differ() {
        let cfg = SyntheticDigitsConfig::default();
        let a = SyntheticDigits::new(&cfg, Split::Train).unwrap();
        let b = SyntheticDigits::new(&cfg, Split::Test).unwrap();
        assert_eq!(a.sample(3).unwrap().image, a.sample(3).unwrap().image);
        assert_ne!(a.sample(3).unwrap().image, b.sample(3).unwrap().image);
        assert!(a.sample(cfg.sizes[0]).is_err());
    }

    #[test]
    fn evidence_covers_at_most_five_percent() {
        let cfg = SyntheticDigitsConfig::default();
        let data = SyntheticDigits::new(&cfg, Split::Train).unwrap();
        for i in 0..20 {
            let (_, _, boxes) = data.draw(i);
            let area: usize = boxes.iter().map(|[_, _, w, h]| w * h).sum();
            assert!(area as f64 / (cfg.canvas * cfg.canvas) as f64 <= 0.05);
        }
    }

    #[test]
    fn every_class_appears() {
        let data = SyntheticDigits::new(&SyntheticDigitsConfig::default(), Split::Train).unwrap();
        let mut seen = [false; 10];
        for i in 0..200 {
            seen[data.draw(i).1] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    /// Settings under which drawing would panic or never end are rejected, naming their key.
    #[test]
    fn canvas_too_small_for_its_clutter_or_digits_is_rejected() {
        let base = SyntheticDigitsConfig::default();
        let clutter = SyntheticDigitsConfig {
            clutter_size: base.canvas,
            ..base.clone()
        };
        let err = SyntheticDigits::new(&clutter, Split::Train)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dataset.synthetic_digits.clutter_size"),
            "{err}"
        );
        let crowded = SyntheticDigitsConfig {
            copies: 1000,
            ..base.clone()
        };
        let err = SyntheticDigits::new(&crowded, Split::Train)
            .unwrap_err()
            .to_string();
        assert!(err.contains("dataset.synthetic_digits.copies"), "{err}");
        // Without clutter strokes their size does not matter.
        let bare = SyntheticDigitsConfig {
            clutter: 0,
            clutter_size: base.canvas,
            ..base
        };
        let data = SyntheticDigits::new(&bare, Split::Train).unwrap();
        data.draw(0);
    }
}
