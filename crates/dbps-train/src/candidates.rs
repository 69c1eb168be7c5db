//! The patch source of selection: candidates cut out of the batch's images one chunk at a
//! time, so a step's working memory holds O(M + S + L) patches whatever N is.

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use dbps_select::CandidateChunks;
use dbps_tiling::{PatchGrid, cut_patches};

use crate::CandidateOrder;

/// The candidates of a batch in processing order, cut from `[B, C, H, W]` images on demand.
#[derive(Debug, Clone)]
pub struct ImageCandidates<'a, B: Backend> {
    grid: &'a PatchGrid,
    images: Tensor<B, 4>,
    order: CandidateOrder,
}

impl<'a, B: Backend> ImageCandidates<'a, B> {
    /// Candidates `order` of `images` on `grid`.
    pub fn new(grid: &'a PatchGrid, images: Tensor<B, 4>, order: CandidateOrder) -> Self {
        Self {
            grid,
            images,
            order,
        }
    }
}

impl<B: Backend> CandidateChunks<B> for ImageCandidates<'_, B> {
    fn batch(&self) -> usize {
        self.images.dims()[0]
    }

    fn candidates(&self) -> usize {
        self.order.per_image
    }

    fn indices(&self) -> Tensor<B, 2, Int> {
        Tensor::from_data(
            TensorData::new(
                self.order.indices.clone(),
                [self.batch(), self.order.per_image],
            ),
            &self.images.device(),
        )
    }

    fn chunk(&self, start: usize, end: usize) -> Tensor<B, 4> {
        let k = self.order.per_image;
        let picks: Vec<(usize, usize)> = (0..self.batch())
            .flat_map(|b| {
                self.order.indices[b * k + start..b * k + end]
                    .iter()
                    .map(move |&i| (b, i as usize))
            })
            .collect();
        cut_patches(self.grid, &self.images, &picks)
            .expect("image size checked against the patch grid when the dataset was opened")
    }
}

/// The patches at grid positions `indices` `[B, k]` of `images`: `[B · k, C, p, p]`,
/// image-major (what the gradient pass re-embeds).
pub fn cut_selected<B: Backend>(
    grid: &PatchGrid,
    images: &Tensor<B, 4>,
    indices: &[i64],
    per_image: usize,
) -> Tensor<B, 4> {
    let picks: Vec<(usize, usize)> = indices
        .iter()
        .enumerate()
        .map(|(i, &index)| (i / per_image.max(1), index as usize))
        .collect();
    cut_patches(grid, images, &picks)
        .expect("image size checked against the patch grid when the dataset was opened")
}
