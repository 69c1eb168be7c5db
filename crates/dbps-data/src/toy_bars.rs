//! The worked example of `docs/extending.md` for datasets: one [`ImageSource`], one
//! [`DatasetSpec`] impl on its config, one line in the `datasets!` list.

use rand::{RngExt, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::dataset_spec::{OpenSplits, each_split};
use crate::generated_limits::check_split_sizes;
use crate::{
    DataError, DatasetSpec, FileInput, ImageSource, Pixels, Sample, Split, Target, TaskSpec,
};

/// Settings of [`ToyBars`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToyBarsConfig {
    /// Canvas side in pixels.
    pub canvas: usize,
    /// Bar length in pixels (the bar is 2 px thick).
    pub length: usize,
    /// Images per split: train, valid, test.
    pub sizes: [usize; 3],
    /// Seed of every draw.
    #[serde(default)]
    pub seed: u64,
}

/// One bright bar on a dark canvas; the class is its direction (horizontal, vertical), so a
/// model must find the one patch that holds it.
#[derive(Debug, Clone)]
pub struct ToyBars {
    config: ToyBarsConfig,
    split: Split,
}

impl ToyBars {
    /// The given split; a bar that does not fit on the canvas is an error naming the setting.
    pub fn new(config: &ToyBarsConfig, split: Split) -> Result<Self, DataError> {
        check_split_sizes("dataset.toy_bars.sizes", config.sizes)?;
        if config.length < 2 || config.length > config.canvas {
            return Err(DataError::Config {
                field: "dataset.toy_bars.length",
                reason: format!(
                    "{} px must lie in 2..={} (the canvas side)",
                    config.length, config.canvas
                ),
            });
        }
        Ok(Self {
            config: config.clone(),
            split,
        })
    }
}

impl ImageSource for ToyBars {
    fn tasks(&self) -> Vec<TaskSpec> {
        vec![TaskSpec::softmax("direction", 2)]
    }

    fn image_size(&self) -> [usize; 3] {
        [1, self.config.canvas, self.config.canvas]
    }

    fn len(&self) -> usize {
        self.config.sizes[self.split.index()]
    }

    fn sample(&self, index: usize) -> Result<Sample, DataError> {
        if index >= self.len() {
            return Err(DataError::IndexOutOfRange {
                index,
                len: self.len(),
            });
        }
        let side = self.config.canvas;
        let seed = self.config.seed ^ ((self.split.index() as u64) << 32) ^ index as u64;
        let mut rng = StdRng::seed_from_u64(seed);
        let vertical = rng.random_bool(0.5);
        let (h, w) = if vertical {
            (self.config.length, 2)
        } else {
            (2, self.config.length)
        };
        let (top, left) = (
            rng.random_range(0..=side - h),
            rng.random_range(0..=side - w),
        );
        let mut image = vec![0.0; side * side];
        for y in top..top + h {
            image[y * side + left..y * side + left + w].fill(1.0);
        }
        Ok(Sample {
            image: Pixels::F32(image),
            channels: 1,
            height: side,
            width: side,
            targets: vec![Target::Class(usize::from(vertical))],
        })
    }
}

impl DatasetSpec for ToyBarsConfig {
    fn open_splits(
        &self,
        _: Option<f64>,
        _: &mut dyn FnMut(Split, usize, usize),
    ) -> Result<OpenSplits, DataError> {
        each_split(|split| ToyBars::new(self, split))
    }

    fn image_size(&self) -> Option<[usize; 2]> {
        Some([self.canvas, self.canvas])
    }

    fn size_setting(&self) -> Option<&'static str> {
        Some("canvas")
    }

    fn file_input(&self) -> Option<FileInput> {
        Some(FileInput::Gray)
    }

    fn root(&self) -> Option<&std::path::Path> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sample_holds_one_bar_whose_direction_is_the_class() {
        let config = ToyBarsConfig {
            canvas: 32,
            length: 8,
            sizes: [6, 1, 1],
            seed: 3,
        };
        let bars = ToyBars::new(&config, Split::Train).unwrap();
        for i in 0..bars.len() {
            let sample = bars.sample(i).unwrap();
            let Pixels::F32(image) = &sample.image else {
                panic!("generated pixels are f32")
            };
            let lit: Vec<(usize, usize)> = (0..32 * 32)
                .filter(|&k| image[k] == 1.0)
                .map(|k| (k / 32, k % 32))
                .collect();
            assert_eq!(lit.len(), 16);
            let rows = lit
                .iter()
                .map(|p| p.0)
                .collect::<std::collections::BTreeSet<_>>();
            let vertical = rows.len() == 8;
            assert_eq!(sample.targets, vec![Target::Class(usize::from(vertical))]);
        }
    }

    #[test]
    fn a_bar_longer_than_the_canvas_names_the_setting() {
        let config = ToyBarsConfig {
            canvas: 8,
            length: 9,
            sizes: [1, 1, 1],
            seed: 0,
        };
        let err = ToyBars::new(&config, Split::Train).unwrap_err().to_string();
        assert!(err.contains("dataset.toy_bars.length"), "{err}");
    }
}
