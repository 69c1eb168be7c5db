//! The embedded default: which of two digits is in the majority. A canvas holds 2–4 × M
//! procedurally drawn digits of two kinds among clutter strokes, each in a cell of its own, the
//! majority ahead by a few. The M most salient patches are a small sample of the digits, whose
//! majority often disagrees with the canvas's; the sub-salient buffer's S more patches let the
//! model count (nearly) all of them — the context DBPS adds.

use rand::seq::index;
use rand::{RngExt, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::generated_limits::{check_noise, check_split_sizes};
use crate::glyphs::{draw_clutter, draw_digit};
use crate::{Canvas, DataError, ImageSource, Sample, Split, Target, TaskSpec};

/// Settings of the digit-counting dataset (`dataset.synthetic_majority` in a run config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticMajorityConfig {
    /// Canvas side in pixels (a multiple of `cell`).
    pub canvas: usize,
    /// Side of the cells items are drawn in; match it to `patch.size` so that one patch holds
    /// at most one item.
    pub cell: usize,
    /// Digit height range in pixels, `[min, max)`; a digit with its slant and stroke must fit
    /// a cell (10 px in a 16 px cell).
    pub digit_height: [usize; 2],
    /// The two digits that compete; class 0 means the first is in the majority.
    pub digits: [usize; 2],
    /// Digits per canvas, inclusive range.
    pub total: [usize; 2],
    /// How many more digits the majority has than the minority, inclusive range (at least 1).
    pub margin: [usize; 2],
    /// Clutter strokes per canvas, inclusive range (drawn independently of the class).
    pub clutter: [usize; 2],
    /// Side of a clutter stroke's box in pixels, at most `cell − 2`.
    pub clutter_size: usize,
    /// Peak amplitude of the uniform background noise.
    pub noise: f32,
    /// Images per split: train, valid, test.
    pub sizes: [usize; 3],
    /// Seed of every draw.
    pub seed: u64,
}

impl Default for SyntheticMajorityConfig {
    /// The embedded default of `configs/quickstart.json`: 256 cells, 0s against 1s, 20–36 digits
    /// (2–3.6 × M = 10) with the majority ahead by 2–6, 20–40 clutter strokes.
    fn default() -> Self {
        Self {
            canvas: 256,
            cell: 16,
            digit_height: [7, 11],
            digits: [0, 1],
            total: [20, 36],
            margin: [2, 6],
            clutter: [20, 40],
            clutter_size: 12,
            noise: 0.1,
            sizes: [2000, 200, 400],
            seed: 7,
        }
    }
}

/// The `[width, height]` in pixels a digit of `height` px may cover: its box (aspect up to 0.8)
/// plus the skeleton's jitter (±0.04), slant (±0.25 · 0.5 of the width), half a stroke (up to
/// 0.15 of the height) and a pixel of anti-aliasing on each side.
fn digit_extent(height: usize) -> [usize; 2] {
    let h = height as f32;
    let side = (0.165 * 0.8 * h + 0.075 * h).ceil() as usize + 1;
    let above = (0.04 * h + 0.075 * h).ceil() as usize + 1;
    [height * 4 / 5 + 2 * side, height + 2 * above]
}

/// Two kinds of digits among clutter on a noisy canvas; the class is the kind in the majority.
#[derive(Debug, Clone)]
pub struct SyntheticMajority {
    config: SyntheticMajorityConfig,
    split: Split,
    len: usize,
}

fn majority_error(field: &'static str, reason: String) -> DataError {
    DataError::Config { field, reason }
}

impl SyntheticMajority {
    /// The given split of the dataset the config describes; settings under which items cannot
    /// be placed are errors naming their key.
    pub fn new(config: &SyntheticMajorityConfig, split: Split) -> Result<Self, DataError> {
        let c = config;
        check_noise("dataset.synthetic_majority.noise", c.noise)?;
        check_split_sizes("dataset.synthetic_majority.sizes", c.sizes)?;
        if c.cell == 0 || c.canvas == 0 || !c.canvas.is_multiple_of(c.cell) {
            return Err(majority_error(
                "dataset.synthetic_majority.cell",
                format!(
                    "the {} px canvas must be a whole number of {} px cells",
                    c.canvas, c.cell
                ),
            ));
        }
        let [lo, hi] = c.digit_height;
        let [wide, tall] = digit_extent(hi.saturating_sub(1));
        if lo == 0 || lo >= hi || wide > c.cell || tall > c.cell {
            return Err(majority_error(
                "dataset.synthetic_majority.digit_height",
                format!(
                    "[{lo}, {hi}) must be a non-empty range of heights whose digits, slanted and stroked ({wide}×{tall} px at {}), fit the {} px cell",
                    hi.saturating_sub(1),
                    c.cell
                ),
            ));
        }
        if c.clutter_size == 0 || c.clutter_size + 2 > c.cell {
            return Err(majority_error(
                "dataset.synthetic_majority.clutter_size",
                format!(
                    "must lie in 1..={} (the cell less a pixel each side)",
                    c.cell.saturating_sub(2)
                ),
            ));
        }
        for (field, [a, b]) in [
            ("dataset.synthetic_majority.total", c.total),
            ("dataset.synthetic_majority.margin", c.margin),
            ("dataset.synthetic_majority.clutter", c.clutter),
        ] {
            if a > b {
                return Err(majority_error(
                    field,
                    format!("[{a}, {b}] is an empty range"),
                ));
            }
        }
        let singles = c.total[0] == c.total[1] && c.margin[0] == c.margin[1];
        if singles && (c.total[0] - c.margin[0].min(c.total[0])) % 2 == 1 {
            return Err(majority_error(
                "dataset.synthetic_majority.margin",
                format!(
                    "a lead of {} among {} digits is impossible (odd difference); widen `total` or `margin`",
                    c.margin[0], c.total[0]
                ),
            ));
        }
        if c.digits[0] == c.digits[1] || c.digits.iter().any(|&d| d > 9) {
            return Err(majority_error(
                "dataset.synthetic_majority.digits",
                format!("{:?} must be two different digits 0–9", c.digits),
            ));
        }
        if c.margin[0] == 0 || c.margin[1] > c.total[0] {
            return Err(majority_error(
                "dataset.synthetic_majority.margin",
                format!(
                    "{:?} must lie in 1..={} (the fewest digits a canvas holds), so that one digit leads",
                    c.margin, c.total[0]
                ),
            ));
        }
        let cells = (c.canvas / c.cell).pow(2);
        if c.total[1] + c.clutter[1] > cells {
            return Err(majority_error(
                "dataset.synthetic_majority.clutter",
                format!(
                    "{} digits and {} clutter strokes do not fit the {cells} cells of the canvas",
                    c.total[1], c.clutter[1]
                ),
            ));
        }
        Ok(Self {
            config: config.clone(),
            split,
            len: config.sizes[split.index()],
        })
    }

    /// The single task: which digit leads (0: the first of `digits`, 1: the second).
    pub fn tasks() -> Vec<TaskSpec> {
        vec![TaskSpec::softmax("majority", 2)]
    }

    /// Draws canvas `index`: the canvas, its class, and the cells (row-major) holding each of
    /// the two digits.
    pub fn draw(&self, index: usize) -> (Canvas, usize, [Vec<usize>; 2]) {
        let c = &self.config;
        let seed = c.seed ^ self.split.salt() ^ (index as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut canvas = Canvas::new(c.canvas, c.canvas);
        for p in &mut canvas.pixels {
            *p = rng.random::<f32>() * c.noise;
        }
        let class = rng.random_range(0..2usize);
        // A margin of the total's parity, so that the majority leads by exactly that much (`new`
        // checks that such a pair exists).
        let (total, margin) = loop {
            let total = rng.random_range(c.total[0]..=c.total[1]);
            let fitting: Vec<usize> = (c.margin[0]..=c.margin[1])
                .filter(|m| (total - m) % 2 == 0)
                .collect();
            if !fitting.is_empty() {
                break (total, fitting[rng.random_range(0..fitting.len())]);
            }
        };
        let minority = (total - margin) / 2;
        let counts = if class == 0 {
            [minority + margin, minority]
        } else {
            [minority, minority + margin]
        };
        let digits = total;
        let clutter = rng.random_range(c.clutter[0]..=c.clutter[1]);
        let per_row = c.canvas / c.cell;
        let cells = index::sample(&mut rng, per_row * per_row, digits + clutter).into_vec();
        let corner = |cell: usize| ((cell % per_row) * c.cell, (cell / per_row) * c.cell);
        for (k, &cell) in cells[..digits].iter().enumerate() {
            let height = rng.random_range(c.digit_height[0]..c.digit_height[1]);
            let (x, y) = corner(cell);
            let [wide, tall] = digit_extent(height);
            let [left, top] = [(wide - height * 4 / 5) / 2, (tall - height) / 2];
            let dx = rng.random_range(0..=c.cell - wide);
            let dy = rng.random_range(0..=c.cell - tall);
            let digit = c.digits[usize::from(k >= counts[0])];
            let at = ((x + left + dx) as f32, (y + top + dy) as f32);
            draw_digit(&mut canvas, digit, at, height as f32, &mut rng);
        }
        for &cell in &cells[digits..] {
            let (x, y) = corner(cell);
            let room = (c.cell - c.clutter_size - 2) as f32;
            let at = (
                (x + 1) as f32 + rng.random_range(0.0..=room),
                (y + 1) as f32 + rng.random_range(0.0..=room),
            );
            draw_clutter(&mut canvas, at, c.clutter_size as f32, &mut rng);
        }
        let mut first = cells[..counts[0]].to_vec();
        let mut second = cells[counts[0]..digits].to_vec();
        first.sort_unstable();
        second.sort_unstable();
        (canvas, class, [first, second])
    }
}

impl ImageSource for SyntheticMajority {
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
        let (canvas, class, _) = self.draw(index);
        Ok(canvas.into_sample(vec![Target::Class(class)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digits are found back in the pixels: a cell holds a digit exactly when it has a
    /// pixel brighter than any clutter stroke (0.7) or noise can make, and the class's digit
    /// holds more cells, by a margin in range.
    #[test]
    fn class_matches_the_digits_on_the_canvas() {
        let cfg = SyntheticMajorityConfig::default();
        let data = SyntheticMajority::new(&cfg, Split::Train).unwrap();
        let per_row = cfg.canvas / cfg.cell;
        let bright_pixels = |canvas: &Canvas, cell: usize| {
            let (x0, y0) = ((cell % per_row) * cfg.cell, (cell / per_row) * cfg.cell);
            (y0..y0 + cfg.cell)
                .flat_map(|y| (x0..x0 + cfg.cell).map(move |x| (x, y)))
                .filter(|&(x, y)| canvas.pixels[y * cfg.canvas + x] > 0.705)
                .count()
        };
        let mut seen = [0; 2];
        let mut ink = [0usize; 2];
        for i in 0..40 {
            let (canvas, class, cells) = data.draw(i);
            let bright: Vec<usize> = (0..per_row * per_row)
                .filter(|&c| bright_pixels(&canvas, c) > 0)
                .collect();
            let mut digits: Vec<usize> = cells.concat();
            digits.sort_unstable();
            assert_eq!(bright, digits, "canvas {i}");
            let [ours, theirs] = [cells[class].len(), cells[1 - class].len()];
            assert!(
                (cfg.margin[0]..=cfg.margin[1]).contains(&(ours - theirs)),
                "canvas {i}"
            );
            assert!(
                (cfg.total[0]..=cfg.total[1]).contains(&(ours + theirs)),
                "canvas {i}"
            );
            for (kind, cells) in cells.iter().enumerate() {
                ink[kind] += cells
                    .iter()
                    .map(|&c| bright_pixels(&canvas, c))
                    .sum::<usize>()
                    / cells.len().max(1);
            }
            seen[class] += 1;
        }
        assert!(seen[0] > 5 && seen[1] > 5, "{seen:?}");
        // A 0 is a ring, a 1 a bar: the first kind carries more ink per cell.
        assert!(ink[0] > ink[1] * 3 / 2, "{ink:?}");
    }

    #[test]
    fn deterministic_and_splits_differ() {
        let cfg = SyntheticMajorityConfig::default();
        let a = SyntheticMajority::new(&cfg, Split::Train).unwrap();
        let b = SyntheticMajority::new(&cfg, Split::Test).unwrap();
        assert_eq!(a.sample(3).unwrap().image, a.sample(3).unwrap().image);
        assert_ne!(a.sample(3).unwrap().image, b.sample(3).unwrap().image);
        assert!(a.sample(cfg.sizes[0]).is_err());
    }

    #[test]
    fn settings_that_cannot_be_drawn_are_rejected() {
        let base = SyntheticMajorityConfig::default();
        let cases = [
            (
                SyntheticMajorityConfig {
                    cell: 15,
                    ..base.clone()
                },
                "cell",
            ),
            (
                SyntheticMajorityConfig {
                    digit_height: [9, 13],
                    ..base.clone()
                },
                "digit_height",
            ),
            (
                SyntheticMajorityConfig {
                    margin: [0, 3],
                    ..base.clone()
                },
                "margin",
            ),
            (
                SyntheticMajorityConfig {
                    digits: [4, 4],
                    ..base.clone()
                },
                "digits",
            ),
            (
                SyntheticMajorityConfig {
                    total: [30, 20],
                    ..base.clone()
                },
                "total",
            ),
            (
                SyntheticMajorityConfig {
                    clutter: [20, 240],
                    ..base.clone()
                },
                "clutter",
            ),
            (
                SyntheticMajorityConfig {
                    clutter_size: 0,
                    ..base.clone()
                },
                "clutter_size",
            ),
        ];
        for (config, key) in cases {
            let err = SyntheticMajority::new(&config, Split::Train)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("dataset.synthetic_majority.{key}")),
                "{key}: {err}"
            );
        }
    }
}
