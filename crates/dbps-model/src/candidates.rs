//! The patch sources of selection: candidates cut out of the batch's images one chunk at a
//! time, so a step's working memory holds O(M + S + L) patches whatever N is.
//!
//! [`HostCandidates`] cuts from images in host memory and uploads only the chunk, preparing
//! the next chunk on a background thread while the current one is encoded;
//! [`ImageCandidates`] cuts from images already in a device tensor.

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use dbps_select::CandidateChunks;
use dbps_tiling::{HostImages, PatchGrid, TilingError, cut_patches};

use crate::classifier::CandidateOrder;

/// The `(image, grid index)` pairs of candidates `start..end` of every image, image-major.
fn chunk_picks(
    order: &CandidateOrder,
    batch: usize,
    start: usize,
    end: usize,
) -> Vec<(usize, usize)> {
    let k = order.per_image;
    (0..batch)
        .flat_map(|b| {
            order.indices[b * k + start..b * k + end]
                .iter()
                .map(move |&i| (b, i as usize))
        })
        .collect()
}

fn order_indices<B: Backend>(
    order: &CandidateOrder,
    batch: usize,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    Tensor::from_data(
        TensorData::new(order.indices.clone(), [batch, order.per_image]),
        device,
    )
}

/// `(image, grid index)` of selected indices `[B, k]`, image-major.
fn selected_picks(indices: &[i64], per_image: usize) -> Vec<(usize, usize)> {
    indices
        .iter()
        .enumerate()
        .map(|(i, &index)| (i / per_image.max(1), index as usize))
        .collect()
}

/// Uploads cut patches `[n, C, p, p]` to `device`.
fn upload<B: Backend>(
    values: Vec<f32>,
    patches: usize,
    channels: usize,
    grid: &PatchGrid,
    device: &B::Device,
) -> Tensor<B, 4> {
    let p = grid.patch();
    Tensor::from_data(TensorData::new(values, [patches, channels, p, p]), device)
}

/// A chunk being cut on a background thread.
#[derive(Debug)]
struct Prefetch {
    range: (usize, usize),
    cut: JoinHandle<Result<Vec<f32>, TilingError>>,
}

/// The candidates of a batch in processing order, cut from host images and uploaded a chunk
/// at a time. Asking for chunk `start..end` starts cutting `end..end + L` in the background,
/// so on a GPU the host copy overlaps the encoder; on the CPU it runs beside the thread pool.
#[derive(Debug)]
pub struct HostCandidates<'a, B: Backend> {
    grid: &'a PatchGrid,
    images: Arc<HostImages>,
    order: CandidateOrder,
    device: B::Device,
    next: Mutex<Option<Prefetch>>,
}

impl<'a, B: Backend> HostCandidates<'a, B> {
    /// Candidates `order` of `images` on `grid`, uploaded to `device`.
    pub fn new(
        grid: &'a PatchGrid,
        images: Arc<HostImages>,
        order: CandidateOrder,
        device: B::Device,
    ) -> Self {
        Self {
            grid,
            images,
            order,
            device,
            next: Mutex::new(None),
        }
    }

    fn prefetch(&self, start: usize) {
        let end = (start + self.order.chunk).min(self.order.per_image);
        if start >= end {
            return;
        }
        let picks = chunk_picks(&self.order, self.images.batch(), start, end);
        let (images, grid) = (Arc::clone(&self.images), *self.grid);
        let cut = std::thread::spawn(move || images.cut_serial(&grid, &picks));
        *self.next.lock().unwrap_or_else(PoisonError::into_inner) = Some(Prefetch {
            range: (start, end),
            cut,
        });
    }
}

impl<B: Backend> CandidateChunks<B> for HostCandidates<'_, B> {
    type Error = TilingError;

    fn batch(&self) -> usize {
        self.images.batch()
    }

    fn candidates(&self) -> usize {
        self.order.per_image
    }

    fn indices(&self) -> Tensor<B, 2, Int> {
        order_indices(&self.order, self.batch(), &self.device)
    }

    fn chunk(&self, start: usize, end: usize) -> Result<Tensor<B, 4>, TilingError> {
        let ready = self
            .next
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .filter(|p| p.range == (start, end))
            .and_then(|p| p.cut.join().ok());
        self.prefetch(end);
        let values = ready.unwrap_or_else(|| {
            self.images.cut(
                self.grid,
                &chunk_picks(&self.order, self.batch(), start, end),
            )
        });
        let channels = self.images.dims()[1];
        Ok(upload(
            values?,
            self.batch() * (end - start),
            channels,
            self.grid,
            &self.device,
        ))
    }
}

/// The patches at grid positions `indices` `[B, k]` of host `images`, uploaded to `device`:
/// `[B · k, C, p, p]`, image-major, without autodiff graph (what the gradient pass re-embeds).
pub fn cut_selected_host<B: Backend>(
    grid: &PatchGrid,
    images: &HostImages,
    indices: &[i64],
    per_image: usize,
    device: &B::Device,
) -> Result<Tensor<B, 4>, TilingError> {
    let picks = selected_picks(indices, per_image);
    let values = images.cut(grid, &picks)?;
    Ok(upload(values, picks.len(), images.dims()[1], grid, device))
}

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
    type Error = TilingError;

    fn batch(&self) -> usize {
        self.images.dims()[0]
    }

    fn candidates(&self) -> usize {
        self.order.per_image
    }

    fn indices(&self) -> Tensor<B, 2, Int> {
        order_indices(&self.order, self.batch(), &self.images.device())
    }

    fn chunk(&self, start: usize, end: usize) -> Result<Tensor<B, 4>, TilingError> {
        let picks = chunk_picks(&self.order, self.batch(), start, end);
        cut_patches(self.grid, &self.images, &picks)
    }
}

/// The patches at grid positions `indices` `[B, k]` of `images`: `[B · k, C, p, p]`,
/// image-major (what the gradient pass re-embeds).
pub fn cut_selected<B: Backend>(
    grid: &PatchGrid,
    images: &Tensor<B, 4>,
    indices: &[i64],
    per_image: usize,
) -> Result<Tensor<B, 4>, TilingError> {
    cut_patches(grid, images, &selected_picks(indices, per_image))
}
