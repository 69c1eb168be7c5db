//! Batching samples into tensors.

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use dbps_data::{Sample, Target, TaskKind, TaskSpec};

/// The ground truth of one task for a batch.
#[derive(Debug, Clone)]
pub enum TaskTargets<B: Backend> {
    /// Class indices `[B]`.
    Classes(Tensor<B, 1, Int>),
    /// Multi-hot `[B, classes]` in {0, 1}.
    MultiHot(Tensor<B, 2>),
}

/// A batch of images `[B, C, H, W]` with targets per task.
#[derive(Debug, Clone)]
pub struct ImageBatch<B: Backend> {
    /// The images.
    pub images: Tensor<B, 4>,
    /// One entry per task, in the dataset's task order.
    pub targets: Vec<TaskTargets<B>>,
}

/// Stacks [`Sample`]s into an [`ImageBatch`].
#[derive(Debug, Clone)]
pub struct ImageBatcher {
    tasks: Vec<TaskSpec>,
}

impl ImageBatcher {
    /// A batcher for a dataset with these tasks.
    pub fn new(tasks: Vec<TaskSpec>) -> Self {
        Self { tasks }
    }
}

impl<B: Backend> Batcher<B, Sample, ImageBatch<B>> for ImageBatcher {
    fn batch(&self, items: Vec<Sample>, device: &B::Device) -> ImageBatch<B> {
        let (c, h, w) = (items[0].channels, items[0].height, items[0].width);
        let b = items.len();
        let pixels: Vec<f32> = items.iter().flat_map(|s| s.image.iter().copied()).collect();
        let images = Tensor::from_data(TensorData::new(pixels, [b, c, h, w]), device);
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
        ImageBatch { images, targets }
    }
}
