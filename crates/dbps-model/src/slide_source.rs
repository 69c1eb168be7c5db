//! Candidates streamed from a whole-slide image: each chunk's patches are read through the
//! slide's tile cache and uploaded, so host memory holds one chunk and the cache, never the
//! slide.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use dbps_data::{DataError, FileInput, SlideImage};
use dbps_select::CandidateChunks;
use dbps_slide::{SlideView, TissueMask};
use dbps_tiling::PatchGrid;
use indicatif::ProgressBar;

use crate::progress::progress_bar;

/// How a slide's 8-bit pixels become model input: the training data's channels and scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
struct SlidePixels {
    channels: usize,
    imagenet: bool,
}

impl SlidePixels {
    fn new(input: FileInput) -> Self {
        Self {
            channels: input.channels(),
            imagenet: input.imagenet(),
        }
    }

    /// Interleaved slide pixels `[p·p, slide_channels]` to planar model input `[C, p, p]`
    /// (gray from RGB by luminance, RGB from gray by repetition).
    fn planar(&self, interleaved: &[u8], slide_channels: usize, out: &mut Vec<f32>) {
        const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
        const STD: [f32; 3] = [0.229, 0.224, 0.225];
        let pixels = interleaved.len() / slide_channels;
        for c in 0..self.channels {
            out.extend((0..pixels).map(|i| {
                let px = &interleaved[i * slide_channels..(i + 1) * slide_channels];
                let v = match (slide_channels, self.channels) {
                    // A gray pixel is its own luminance: a gray slide that a reader hands over
                    // as RGB (OpenSlide always does) reads as the gray values themselves.
                    (3, 1) if px[0] == px[1] && px[1] == px[2] => f32::from(px[0]),
                    (3, 1) => {
                        0.299 * f32::from(px[0])
                            + 0.587 * f32::from(px[1])
                            + 0.114 * f32::from(px[2])
                    }
                    (1, _) => f32::from(px[0]),
                    _ => f32::from(px[c]),
                } / 255.0;
                if self.imagenet {
                    (v - MEAN[c]) / STD[c]
                } else {
                    v
                }
            }));
        }
    }
}

/// The patches of one slide view (a level, at a scale) on a patch grid, restricted to
/// `indices` (all of them, or those a [`TissueMask`] keeps), as selection candidates.
#[derive(Debug)]
pub struct SlideCandidates<B: Backend> {
    view: SlideView,
    grid: PatchGrid,
    indices: Vec<i64>,
    pixels: SlidePixels,
    device: B::Device,
    touched: Mutex<BTreeSet<usize>>,
    bar: Option<ProgressBar>,
}

impl<B: Backend> SlideCandidates<B> {
    /// Candidates `indices` of `grid` over `view`, read as `input` reads a file, uploaded to
    /// `device`.
    pub fn new(
        view: SlideView,
        grid: PatchGrid,
        indices: Vec<i64>,
        input: FileInput,
        device: B::Device,
    ) -> Self {
        Self {
            view,
            grid,
            pixels: SlidePixels::new(input),
            device,
            bar: None,
            indices,
            touched: Mutex::default(),
        }
    }

    /// Candidates `indices` of `grid` over a dataset's slide, at its view and input.
    pub fn of_image(
        image: &SlideImage,
        grid: PatchGrid,
        indices: Vec<i64>,
        device: B::Device,
    ) -> Self {
        Self::new(image.view.clone(), grid, indices, image.input, device)
    }

    /// The same candidates, showing a progress bar as chunks are read (one slide read for
    /// `predict`; training steps read many and show none).
    pub fn with_progress(self) -> Self {
        Self {
            bar: Some(progress_bar(self.indices.len(), "slide patches")),
            ..self
        }
    }

    /// Distinct tiles of the level that the chunks read so far touched.
    pub fn tiles_read(&self) -> usize {
        self.touched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The grid indices of the candidates.
    pub fn grid_indices(&self) -> &[i64] {
        &self.indices
    }
}

/// The patches of `grid` over an image of `image_size` that overlap tissue on `mask`.
pub fn tissue_patches(grid: &PatchGrid, image_size: [usize; 2], mask: &TissueMask) -> Vec<i64> {
    let p = grid.patch();
    let cols = grid.cols();
    let ys: Vec<usize> = (0..grid.rows()).map(|r| grid.origin(r * cols)[0]).collect();
    let xs: Vec<usize> = (0..cols).map(|c| grid.origin(c)[1]).collect();
    mask.covered_cells(image_size, &ys, &xs, [p, p])
        .into_iter()
        .map(|i| i as i64)
        .collect()
}

impl<B: Backend> CandidateChunks<B> for SlideCandidates<B> {
    type Error = DataError;

    fn batch(&self) -> usize {
        1
    }

    fn candidates(&self) -> usize {
        self.indices.len()
    }

    fn indices(&self) -> Tensor<B, 2, Int> {
        Tensor::from_data(
            TensorData::new(self.indices.clone(), [1, self.indices.len()]),
            &self.device,
        )
    }

    fn chunk(&self, start: usize, end: usize) -> Result<Tensor<B, 4>, DataError> {
        let p = self.grid.patch();
        let c = self.pixels.channels;
        let mut values = Vec::with_capacity((end - start) * c * p * p);
        for &index in &self.indices[start..end] {
            let origin = self.grid.origin(index as usize);
            let level = self.view.slide().levels()[self.view.level()];
            let [th, tw] = level.tile;
            let [[y0, x0], [y1, x1]] = self.view.level_span(origin, [p, p]);
            let mut touched = self.touched.lock().unwrap_or_else(PoisonError::into_inner);
            let last = |v0: usize, v1: usize, full: usize, t: usize| {
                v1.min(full).max(v0 + 1).saturating_sub(1) / t
            };
            for ty in y0 / th..=last(y0, y1, level.size[0], th) {
                for tx in x0 / tw..=last(x0, x1, level.size[1], tw) {
                    touched.insert(ty * level.tiles_across() + tx);
                }
            }
            drop(touched);
            let region = self.view.read_region(origin, [p, p])?;
            self.pixels
                .planar(&region, self.view.slide().channels(), &mut values);
        }
        // Selection and the attention map each read every chunk once, from 0.
        if let Some(bar) = &self.bar {
            if start == 0 {
                bar.reset();
            }
            bar.set_position(end as u64);
            if end == self.indices.len() {
                bar.finish_and_clear();
            }
        }
        Ok(Tensor::from_data(
            TensorData::new(values, [end - start, c, p, p]),
            &self.device,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slide_pixels_follow_the_training_input() {
        let gray = SlidePixels::new(FileInput::Gray);
        let mut out = Vec::new();
        gray.planar(&[255, 0, 0, 51], 1, &mut out);
        assert_eq!(out, vec![1.0, 0.0, 0.0, 0.2]);
        out.clear();
        // RGB slide, gray model: luminance; a gray pixel in RGB is its gray value exactly.
        gray.planar(&[255, 255, 255, 255, 0, 0, 93, 93, 93], 3, &mut out);
        assert!((out[0] - 1.0).abs() < 1e-6 && (out[1] - 0.299).abs() < 1e-6);
        assert_eq!(
            out[2],
            93.0 / 255.0,
            "not 0.299·93 + 0.587·93 + 0.114·93, one ulp off"
        );
        out.clear();
        let photo = SlidePixels::new(FileInput::Photo {
            height: 8,
            width: 8,
        });
        photo.planar(&[255, 0, 0], 3, &mut out);
        let expected = [
            (1.0 - 0.485) / 0.229,
            (0.0 - 0.456) / 0.224,
            (0.0 - 0.406) / 0.225,
        ];
        assert!(
            out.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6),
            "{out:?}"
        );
    }
}
