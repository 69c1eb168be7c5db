//! Batching samples into tensors.

use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use dbps_data::{Pixels, Sample, SlideImage, Target, TaskKind, TaskSpec};
use dbps_tiling::{HostImages, HostPixels, PixelNorm, TilingError};

/// The ground truth of one task for a batch.
#[derive(Debug, Clone)]
pub enum TaskTargets<B: Backend> {
    /// Class indices `[B]`.
    Classes(Tensor<B, 1, Int>),
    /// Multi-hot `[B, classes]` in {0, 1}.
    MultiHot(Tensor<B, 2>),
}

/// The images `[B, C, H, W]` of a batch, and where they live.
#[derive(Debug, Clone)]
pub enum BatchImages<B: Backend> {
    /// In host memory (what the data loaders produce): selection cuts one chunk of candidates
    /// at a time and uploads only that chunk to `device`, then the M winners.
    Host {
        /// The decoded images.
        images: Arc<HostImages>,
        /// Where patches are uploaded.
        device: B::Device,
    },
    /// Already a tensor on the device; patches are cut from it (on an autodiff backend the
    /// winners stay on the tape, so gradients reach the pixels).
    Device(Tensor<B, 4>),
    /// Images of different sizes, each on a patch grid of its own: bags of precomputed
    /// features (`[1, D, 1, N_i]` in host memory) or slides left on disk. The model selects and
    /// aggregates image by image, so nothing is padded and no placeholder patch reaches
    /// selection or the aggregator.
    Separate {
        /// One entry per image of the batch.
        images: Vec<SingleImage>,
        /// Where patches are uploaded.
        device: B::Device,
    },
}

impl<B: Backend> BatchImages<B> {
    /// Host images, uploaded patch by patch to `device`.
    pub fn host(images: HostImages, device: &B::Device) -> Self {
        Self::Host {
            images: Arc::new(images),
            device: device.clone(),
        }
    }

    /// Images B.
    pub fn batch(&self) -> usize {
        match self {
            Self::Host { images, .. } => images.batch(),
            Self::Device(images) => images.dims()[0],
            Self::Separate { images, .. } => images.len(),
        }
    }

    /// The device patches go to.
    pub fn device(&self) -> B::Device {
        match self {
            Self::Host { device, .. } | Self::Separate { device, .. } => device.clone(),
            Self::Device(images) => images.device(),
        }
    }
}

impl<B: AutodiffBackend> BatchImages<B> {
    /// The same images for the inner backend (no autodiff graph): what selection reads.
    pub fn inner(&self) -> BatchImages<B::InnerBackend> {
        match self {
            Self::Host { images, device } => BatchImages::Host {
                images: Arc::clone(images),
                device: device.clone(),
            },
            Self::Device(images) => BatchImages::Device(images.clone().inner()),
            Self::Separate { images, device } => BatchImages::Separate {
                images: images.clone(),
                device: device.clone(),
            },
        }
    }
}

/// One image of a [`BatchImages::Separate`] batch.
#[derive(Debug, Clone)]
pub enum SingleImage {
    /// `[1, C, H, W]` in host memory (a bag of features: `[1, D, 1, N]`).
    Host(Arc<HostImages>),
    /// A whole-slide image whose patches are read from disk as selection asks for them.
    Slide(Arc<SlideImage>),
}

impl SingleImage {
    /// `[H, W]` of the image (of a slide: at the level read).
    pub fn size(&self) -> [usize; 2] {
        match self {
            Self::Host(images) => {
                let [_, _, h, w] = images.dims();
                [h, w]
            }
            Self::Slide(slide) => slide.size(),
        }
    }
}

/// A batch of images `[B, C, H, W]` with targets per task.
#[derive(Debug, Clone)]
pub struct ImageBatch<B: Backend> {
    /// The images.
    pub images: BatchImages<B>,
    /// One entry per task, in the dataset's task order.
    pub targets: Vec<TaskTargets<B>>,
    /// Where the batch sits in its epoch and in the global batch it is part of.
    pub key: BatchKey,
}

/// Where a training batch sits: the global step of its epoch, and which images of that step's
/// global batch it holds (a replica or rank holds a contiguous part of it; a single process
/// holds all of it). The random draws of selection are keyed by this, never by the order in
/// which batches are processed, and the loss is weighted by the part's share of the global
/// batch, so that the replicas' gradients sum to the gradient of the global batch's mean loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchKey {
    /// Epoch, 1-based (0 outside a training run).
    pub epoch: usize,
    /// Global step within the epoch, 0-based.
    pub step: usize,
    /// Index of this batch's first image within the global batch.
    pub first: usize,
    /// Images in the global batch, over every replica and rank.
    pub global: usize,
    /// The configured global batch size: every step of an epoch but the last holds this many.
    pub batch_size: usize,
}

impl BatchKey {
    /// A batch that is a whole global batch of `len` images, at step 0 of no epoch (tests,
    /// benchmarks, anything outside a run's data loader).
    pub fn whole(len: usize) -> Self {
        Self {
            epoch: 0,
            step: 0,
            first: 0,
            global: len,
            batch_size: len,
        }
    }

    /// The draw of a batch of one image size: one per global step, this part's images after
    /// the `first` of the global batch.
    pub fn batch_draw(&self) -> crate::classifier::DrawKey {
        crate::classifier::DrawKey {
            epoch: self.epoch,
            draw: self.step as u64,
            skip: self.first,
        }
    }

    /// The draw of image `index` of this batch when each image has a grid of its own: one per
    /// image, numbered by the image's place in the epoch.
    pub fn image_draw(&self, index: usize) -> crate::classifier::DrawKey {
        crate::classifier::DrawKey {
            epoch: self.epoch,
            draw: (self.step * self.batch_size + self.first + index) as u64,
            skip: 0,
        }
    }

    /// This part's share of the global batch, `local / global`: the weight of its mean loss.
    pub fn share(&self, local: usize) -> f64 {
        if local == self.global {
            1.0
        } else {
            local as f64 / self.global.max(1) as f64
        }
    }
}

/// The samples' pixels as one host batch: 8-bit photographs stay 8-bit (normalised with the
/// ImageNet statistics as patches are cut), everything else is f32.
pub fn host_images(items: &[Sample], dims: [usize; 4]) -> Result<HostImages, TilingError> {
    // A slide's pixels stay on disk (read patch by patch): none of its values are here.
    if items.iter().any(|s| matches!(s.image, Pixels::Slide(_))) {
        return Err(TilingError::PixelCount { dims, got: 0 });
    }
    let bytes: Option<Vec<u8>> = items
        .iter()
        .map(|s| match &s.image {
            Pixels::ImageNet8(v) => Some(v.as_slice()),
            Pixels::F32(_) | Pixels::Slide(_) => None,
        })
        .collect::<Option<Vec<_>>>()
        .map(|parts| parts.concat());
    if let Some(bytes) = bytes {
        return HostImages::new(HostPixels::U8(bytes), dims, PixelNorm::imagenet());
    }
    let imagenet = PixelNorm::imagenet();
    let mut values = Vec::with_capacity(dims.iter().product());
    for s in items {
        match &s.image {
            Pixels::F32(v) => values.extend_from_slice(v),
            Pixels::ImageNet8(v) => values.extend(imagenet.apply_planar(v, s.height * s.width)),
            Pixels::Slide(_) => {}
        }
    }
    HostImages::new(HostPixels::F32(values), dims, PixelNorm::identity(dims[1]))
}

/// Stacks [`Sample`]s into an [`ImageBatch`].
#[derive(Debug, Clone)]
pub struct ImageBatcher {
    tasks: Vec<TaskSpec>,
    separate: bool,
}

impl ImageBatcher {
    /// A batcher for a dataset with these tasks.
    pub fn new(tasks: Vec<TaskSpec>) -> Self {
        Self {
            tasks,
            separate: false,
        }
    }

    /// A batcher for a split: samples of different sizes (bags, slides) stay separate.
    pub fn for_split(tasks: Vec<TaskSpec>, split: &crate::image_dataset::ImageDataset) -> Self {
        Self {
            tasks,
            separate: split.source().variable_size(),
        }
    }
}

impl<B: Backend> Batcher<B, Sample, ImageBatch<B>> for ImageBatcher {
    fn batch(&self, items: Vec<Sample>, device: &B::Device) -> ImageBatch<B> {
        let b = items.len();
        let images = if self.separate {
            let images = items
                .iter()
                .map(|s| match &s.image {
                    Pixels::Slide(slide) => Ok(SingleImage::Slide(Arc::clone(slide))),
                    _ => {
                        let dims = [1, s.channels, s.height, s.width];
                        host_images(std::slice::from_ref(s), dims)
                            .map(|h| SingleImage::Host(Arc::new(h)))
                    }
                })
                .collect::<Result<Vec<_>, _>>()
                .expect("ImageDataset::get hands on only samples whose values fill their C×H×W");
            BatchImages::Separate {
                images,
                device: device.clone(),
            }
        } else {
            let (c, h, w) = (items[0].channels, items[0].height, items[0].width);
            let images = host_images(&items, [b, c, h, w])
                .expect("ImageDataset::get hands on only samples of the dataset's one C×H×W size");
            BatchImages::host(images, device)
        };
        let targets = self
            .tasks
            .iter()
            .enumerate()
            .map(|(t, spec)| match spec.kind {
                TaskKind::Softmax => {
                    let classes: Vec<i64> = items
                        .iter()
                        .map(|s| match &s.targets[t] {
                            Target::Class(c) => *c as i64,
                            Target::MultiHot(_) => {
                                unreachable!("datasets emit targets matching their tasks")
                            }
                        })
                        .collect();
                    TaskTargets::Classes(Tensor::from_data(TensorData::new(classes, [b]), device))
                }
                TaskKind::MultiLabel => {
                    let hot: Vec<f32> = items
                        .iter()
                        .flat_map(|s| match &s.targets[t] {
                            Target::MultiHot(v) => {
                                v.iter().map(|&x| x as u8 as f32).collect::<Vec<_>>()
                            }
                            Target::Class(_) => {
                                unreachable!("datasets emit targets matching their tasks")
                            }
                        })
                        .collect();
                    TaskTargets::MultiHot(Tensor::from_data(
                        TensorData::new(hot, [b, spec.classes]),
                        device,
                    ))
                }
            })
            .collect();
        ImageBatch {
            images,
            targets,
            key: BatchKey::whole(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbps_tiling::{PatchGrid, RemainderPolicy};

    fn sample(image: Pixels) -> Sample {
        Sample {
            image,
            channels: 3,
            height: 2,
            width: 2,
            targets: vec![Target::Class(0)],
        }
    }

    /// Photographs stay 8-bit in the batch (one byte per pixel) and come out of the cut
    /// ImageNet-normalised; a batch that mixes them with f32 samples is normalised up front, to
    /// the same values.
    #[test]
    fn eight_bit_samples_stay_eight_bit_until_cut() {
        let raw: Vec<u8> = (0..12).map(|i| i * 20).collect();
        let photo = sample(Pixels::ImageNet8(raw.clone()));
        let grid = PatchGrid::new([2, 2], 2, 2, RemainderPolicy::Drop).unwrap();
        let bytes = host_images(&[photo.clone(), photo.clone()], [2, 3, 2, 2]).unwrap();
        assert_eq!(bytes.bytes(), 2 * 12);
        let (mean, std) = ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]);
        let want: Vec<f32> = raw
            .iter()
            .enumerate()
            .map(|(i, &v)| (f32::from(v) / 255.0 - mean[i / 4]) / std[i / 4])
            .collect();
        let close = |got: Vec<f32>| {
            assert!(
                got.iter().zip(&want).all(|(g, w)| (g - w).abs() < 1e-5),
                "{got:?}"
            );
        };
        close(bytes.cut(&grid, &[(1, 0)]).unwrap());
        let mixed =
            host_images(&[sample(Pixels::F32(vec![0.0; 12])), photo], [2, 3, 2, 2]).unwrap();
        assert_eq!(mixed.bytes(), 2 * 12 * 4);
        close(mixed.cut(&grid, &[(1, 0)]).unwrap());
    }
}
